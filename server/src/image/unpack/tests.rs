//! The unpacker's tests: every kind of entry, hostile names, links and whiteouts, limits and malformed input,
//! on archives built header by header with [`cm_test_tar`] and unpacked into a temporary directory.

use super::*;
use cm_test_tar::{Raw, Tar};
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::PathBuf;

/// A temporary directory holding the snapshot `root` and, beside it, `outside/secret`.
struct Fixture {
    tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        fs::create_dir(&root).unwrap();
        fs::create_dir(tmp.path().join("outside")).unwrap();
        fs::write(tmp.path().join("outside/secret"), b"secret").unwrap();
        Fixture { tmp, root }
    }

    fn unpack(&self, layer: &Tar) -> Result<Stats, UnpackError> {
        self.unpack_with(layer, &Limits::default())
    }

    fn unpack_with(&self, layer: &Tar, limits: &Limits) -> Result<Stats, UnpackError> {
        unpack_layer(layer.finish().as_slice(), &self.root, limits)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn secret(&self) -> PathBuf {
        self.tmp.path().join("outside/secret")
    }

    /// Asserts that nothing beside `root` was created, changed or linked.
    fn assert_outside_untouched(&self) {
        let mut top: Vec<_> = fs::read_dir(self.tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        top.sort();
        assert_eq!(top, ["outside", "root"]);
        let outside: Vec<_> =
            fs::read_dir(self.tmp.path().join("outside")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(outside, ["secret"]);
        assert_eq!(fs::read(self.secret()).unwrap(), b"secret");
        let meta = fs::symlink_metadata(self.secret()).unwrap();
        assert_eq!(meta.nlink(), 1);
        assert_eq!(meta.mode() & 0o7777, 0o644);
    }
}

fn lmeta(path: impl AsRef<Path>) -> fs::Metadata {
    fs::symlink_metadata(path).unwrap()
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = [0u8; 256];
    rfs::lgetxattr(path, name, &mut buf).ok().map(|n| buf[..n].to_vec())
}

#[test]
fn plain_entries_get_their_content_type_owner_and_mode() {
    let fx = Fixture::new();
    let mut layer = Tar::default();
    layer
        .dir("bin/")
        .raw(Raw { data: b"#!/bin/sh\n", mode: 0o4755, uid: 1000, gid: 1001, ..Raw::new("bin/su", EntryType::Regular) })
        .raw(Raw { mode: 0o1777, ..Raw::new("tmp/", EntryType::Directory) })
        .raw(Raw { mode: 0o2750, uid: 1000, gid: 1000, ..Raw::new("home/u/", EntryType::Directory) })
        .raw(Raw { link: b"../bin/su", uid: 1000, gid: 1001, ..Raw::new("usr/su", EntryType::Symlink) })
        .hardlink("bin/su-again", "bin/su")
        .file("./etc/hostname", b"box\n");
    let stats = fx.unpack(&layer).unwrap();

    assert_eq!(stats.entries, 7);
    assert_eq!(stats.bytes, 14);
    assert!(stats.skipped.is_empty(), "{:?}", stats.skipped);
    let su = lmeta(fx.path("bin/su"));
    assert_eq!(fs::read(fx.path("bin/su")).unwrap(), b"#!/bin/sh\n");
    assert_eq!((su.uid(), su.gid(), su.mode() & 0o7777), (1000, 1001, 0o4755));
    assert_eq!(lmeta(fx.path("tmp")).mode() & 0o7777, 0o1777);
    let home = lmeta(fx.path("home/u"));
    assert!(home.is_dir());
    assert_eq!((home.uid(), home.gid(), home.mode() & 0o7777), (1000, 1000, 0o2750));
    // "home" was not listed: made 0755 and root-owned.
    let parent = lmeta(fx.path("home"));
    assert_eq!((parent.uid(), parent.mode() & 0o7777), (0, 0o755));
    let link = lmeta(fx.path("usr/su"));
    assert!(link.file_type().is_symlink());
    assert_eq!((link.uid(), link.gid()), (1000, 1001));
    assert_eq!(fs::read_link(fx.path("usr/su")).unwrap(), Path::new("../bin/su"));
    let again = lmeta(fx.path("bin/su-again"));
    assert_eq!(again.ino(), su.ino());
    assert_eq!(again.nlink(), 2);
    assert_eq!(fs::read(fx.path("etc/hostname")).unwrap(), b"box\n");
    fx.assert_outside_untouched();
}

#[test]
fn dotdot_and_absolute_names_are_clamped_inside_the_root() {
    let fx = Fixture::new();
    let mut layer = Tar::default();
    layer.file("../../escape", b"1").file("/abs/path", b"2").file("./a/../../b", b"3").file("../outside/secret", b"4");
    fx.unpack(&layer).unwrap();

    assert_eq!(fs::read(fx.path("escape")).unwrap(), b"1");
    assert_eq!(fs::read(fx.path("abs/path")).unwrap(), b"2");
    assert_eq!(fs::read(fx.path("b")).unwrap(), b"3");
    assert_eq!(fs::read(fx.path("outside/secret")).unwrap(), b"4");
    fx.assert_outside_untouched();
}

#[test]
fn names_ending_in_dotdot_are_skipped_and_remove_nothing() {
    let fx = Fixture::new();
    let mut layer = Tar::default();
    layer.dir("sub/").file("sub/..", b"x").symlink("..", "/").dir("../..");
    let stats = fx.unpack(&layer).unwrap();

    assert!(fx.path("sub").is_dir());
    assert_eq!(stats.skipped.len(), 3, "{:?}", stats.skipped);
    assert!(stats.skipped[0].contains("sub/.."));
    fx.assert_outside_untouched();
}

#[test]
fn files_written_through_planted_symlinks_stay_inside_the_root() {
    let fx = Fixture::new();
    let unique = fx.tmp.path().file_name().unwrap().to_str().unwrap().to_owned();
    let (pwned, pwned2) = (format!("pwned-{unique}"), format!("pwned2-{unique}"));
    let mut layer = Tar::default();
    layer
        .symlink("evil", "/")
        .file(&format!("evil/{pwned}"), b"x")
        .symlink("evil2", "../../..")
        .file(&format!("evil2/{pwned2}"), b"y")
        .dir("outside/")
        .symlink("up", "../outside")
        .file("up/planted", b"z");
    fx.unpack(&layer).unwrap();

    assert_eq!(fs::read(fx.path(&pwned)).unwrap(), b"x");
    assert_eq!(fs::read(fx.path(&pwned2)).unwrap(), b"y");
    assert_eq!(fs::read(fx.path("outside/planted")).unwrap(), b"z");
    assert!(!Path::new("/").join(&pwned).exists());
    assert!(!Path::new("/").join(&pwned2).exists());
    fx.assert_outside_untouched();
}

#[test]
fn parent_through_a_dangling_symlink_is_an_error_not_an_escape() {
    let fx = Fixture::new();
    let mut layer = Tar::default();
    layer.symlink("up", "../outside").file("up/planted", b"z");
    let err = fx.unpack(&layer).unwrap_err();
    assert!(
        matches!(&err, UnpackError::Io { path, source }
            if path == "up/planted" && source.kind() == io::ErrorKind::NotFound),
        "{err}"
    );
    assert!(!fx.path("outside").exists());
    fx.assert_outside_untouched();
}

#[test]
fn entries_replace_a_symlink_instead_of_following_it() {
    let fx = Fixture::new();
    let secret = fx.secret();
    let outside_dir = fx.tmp.path().join("outside");
    let mut layer = Tar::default();
    layer
        .symlink("file", secret.to_str().unwrap())
        .file("file", b"mine")
        .symlink("dir", outside_dir.to_str().unwrap())
        .raw(Raw { mode: 0o777, ..Raw::new("dir/", EntryType::Directory) })
        .symlink("fifo", secret.to_str().unwrap())
        .raw(Raw::new("fifo", EntryType::Fifo));
    fx.unpack(&layer).unwrap();

    assert_eq!(fs::read(fx.path("file")).unwrap(), b"mine");
    assert!(lmeta(fx.path("dir")).is_dir());
    assert!(lmeta(fx.path("fifo")).file_type().is_fifo());
    assert_eq!(lmeta(&outside_dir).mode() & 0o777, 0o755);
    fx.assert_outside_untouched();
}

#[test]
fn hardlinks_cannot_reach_files_outside_the_root() {
    let fx = Fixture::new();
    let absolute = fx.secret().to_str().unwrap().to_owned();
    for target in ["../outside/secret", "../../outside/secret", absolute.as_str()] {
        let mut layer = Tar::default();
        layer.hardlink("stolen", target);
        let err = fx.unpack(&layer).unwrap_err();
        assert!(matches!(err, UnpackError::Hardlink { .. }), "{target}: {err}");
        assert!(!fx.path("stolen").exists());
    }
    // Through a planted symlink to the outside directory.
    let mut layer = Tar::default();
    layer.symlink("esc", "../outside").hardlink("stolen", "esc/secret");
    let err = fx.unpack(&layer).unwrap_err();
    assert!(matches!(err, UnpackError::Hardlink { .. }), "{err}");
    assert!(!fx.path("stolen").exists());
    fx.assert_outside_untouched();
}

#[test]
fn hardlink_to_a_missing_target_names_both_paths() {
    let fx = Fixture::new();
    let mut layer = Tar::default();
    layer.hardlink("usr/bin/b", "usr/bin/nope");
    let err = fx.unpack(&layer).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("usr/bin/b") && message.contains("usr/bin/nope"), "{message}");
}

#[test]
fn hardlink_to_a_symlink_links_the_symlink_itself() {
    let fx = Fixture::new();
    let mut layer = Tar::default();
    layer.symlink("s", "/etc/passwd").hardlink("h", "s");
    fx.unpack(&layer).unwrap();

    let (s, h) = (lmeta(fx.path("s")), lmeta(fx.path("h")));
    assert!(h.file_type().is_symlink());
    assert_eq!(h.ino(), s.ino());
    assert_eq!(fs::read_link(fx.path("h")).unwrap(), Path::new("/etc/passwd"));
}

#[test]
fn hardlink_onto_its_own_target_keeps_the_file() {
    let fx = Fixture::new();
    let mut layer = Tar::default();
    layer.file("a", b"data").hardlink("b", "a").hardlink("b", "a").hardlink("a", "a");
    fx.unpack(&layer).unwrap();

    assert_eq!(fs::read(fx.path("a")).unwrap(), b"data");
    assert_eq!(lmeta(fx.path("a")).nlink(), 2);
}

#[test]
fn symlink_replaces_a_directory_and_later_entries_follow_the_new_symlink() {
    let fx = Fixture::new();
    let mut layer = Tar::default();
    layer.dir("target/").dir("d/").file("d/f1", b"1").file("d/f1b", b"1b").symlink("d", "/target").file("d/f2", b"2");
    fx.unpack(&layer).unwrap();

    assert!(lmeta(fx.path("d")).file_type().is_symlink());
    assert_eq!(fs::read(fx.path("target/f2")).unwrap(), b"2");
    assert!(!fx.path("target/f1").exists());
    fx.assert_outside_untouched();
}

#[test]
fn cached_parent_is_resolved_afresh_after_a_replacement() {
    // "a/x/.." names "a" only while "a/x" is a directory. Once a file replaces "a/x", the
    // same parent name must fail to resolve, as it would without the cache.
    let fx = Fixture::new();
    let mut layer = Tar::default();
    layer.dir("a/x/").file("a/x/../f", b"f").file("a/x/../x", b"now a file").file("a/x/../g", b"g");
    let err = fx.unpack(&layer).unwrap_err();
    assert!(
        matches!(&err, UnpackError::Io { path, source }
            if path == "a/x/../g" && source.raw_os_error() == Some(Errno::NOTDIR.raw_os_error())),
        "{err}"
    );
    assert_eq!(fs::read(fx.path("a/f")).unwrap(), b"f");
    assert_eq!(fs::read(fx.path("a/x")).unwrap(), b"now a file");
    assert!(!fx.path("a/g").exists());
}

#[test]
fn directory_replaces_a_symlink_and_a_file() {
    let fx = Fixture::new();
    let mut layer = Tar::default();
    layer.symlink("s", "/").dir("s/").file("s/inner", b"i").file("f", b"was a file").dir("f/");
    fx.unpack(&layer).unwrap();

    assert!(lmeta(fx.path("s")).is_dir());
    assert_eq!(fs::read(fx.path("s/inner")).unwrap(), b"i");
    assert!(!fx.path("inner").exists());
    assert!(lmeta(fx.path("f")).is_dir());
}

#[test]
fn file_replaces_a_deep_directory_tree() {
    let fx = Fixture::new();
    let deep = "x/".repeat(300);
    let mut layer = Tar::default();
    layer.dir("d/").file("d/a", b"a").dir("d/empty/").file("d/b/c/e", b"e");
    layer.pax(&[("path", format!("d/{deep}leaf").as_bytes())]).file("placeholder", b"l");
    layer.file("d", b"now a file");
    fx.unpack(&layer).unwrap();

    assert_eq!(fs::read(fx.path("d")).unwrap(), b"now a file");
    let mut left: Vec<_> = fs::read_dir(&fx.root).unwrap().map(|e| e.unwrap().file_name()).collect();
    left.sort();
    assert_eq!(left, ["d"]);
    fx.assert_outside_untouched();
}

#[test]
fn device_nodes_are_skipped_with_a_note() {
    let fx = Fixture::new();
    let mut layer = Tar::default();
    layer
        .raw_with(Raw::new("dev/null", EntryType::Char), |h| {
            h.set_device_major(1).unwrap();
            h.set_device_minor(3).unwrap();
        })
        .raw_with(Raw::new("dev/sda", EntryType::Block), |h| {
            h.set_device_major(8).unwrap();
        })
        .raw(Raw::new("dev/wh0", EntryType::Char));
    let stats = fx.unpack(&layer).unwrap();

    assert!(!fx.path("dev/null").exists());
    assert!(!fx.path("dev/sda").exists());
    assert!(!fx.path("dev/wh0").exists());
    assert_eq!(
        stats.skipped,
        ["skipped character device dev/null", "skipped block device dev/sda", "skipped character device dev/wh0"]
    );
}

#[test]
fn fifo_is_created_with_owner_mode_and_mtime() {
    let fx = Fixture::new();
    let mut layer = Tar::default();
    layer.raw(Raw { mode: 0o640, uid: 7, gid: 8, mtime: 1_234_567, ..Raw::new("run/pipe", EntryType::Fifo) });
    fx.unpack(&layer).unwrap();

    let meta = lmeta(fx.path("run/pipe"));
    assert!(meta.file_type().is_fifo());
    assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o7777), (7, 8, 0o640));
    assert_eq!(meta.mtime(), 1_234_567);
}

#[test]
fn whiteout_becomes_a_0_0_character_device() {
    let fx = Fixture::new();
    let mut layer = Tar::default();
    layer
        .file(".wh.gone", b"")
        .dir("a/")
        .file("a/b", b"replaced")
        .file("a/.wh.b", b"")
        .file("c/.wh.d", b"")
        .file(".wh..wh.plnk", b"")
        .file("x/.wh..", b"");
    let stats = fx.unpack(&layer).unwrap();

    for path in ["gone", "a/b", "c/d"] {
        let meta = lmeta(fx.path(path));
        assert!(meta.file_type().is_char_device(), "{path}");
        assert_eq!(meta.rdev(), 0, "{path}");
    }
    assert!(!fx.path(".wh.gone").exists());
    assert!(!fx.path("a/.wh.b").exists());
    assert!(!fx.path(".wh..wh.plnk").exists());
    assert!(!fx.path("x").exists());
    assert_eq!(stats.skipped, ["skipped unsupported whiteout .wh..wh.plnk", "skipped unsupported whiteout x/.wh.."]);
}

#[test]
fn opaque_marker_sets_trusted_overlay_opaque() {
    let fx = Fixture::new();
    let mut layer = Tar::default();
    layer.dir("etc/").file("etc/.wh..wh..opq", b"").file("etc/kept", b"k").file("new/dir/.wh..wh..opq", b"");
    fx.unpack(&layer).unwrap();

    assert_eq!(xattr(&fx.path("etc"), "trusted.overlay.opaque").as_deref(), Some(&b"y"[..]));
    assert_eq!(xattr(&fx.path("new/dir"), "trusted.overlay.opaque").as_deref(), Some(&b"y"[..]));
    assert!(!fx.path("etc/.wh..wh..opq").exists());
    assert_eq!(fs::read(fx.path("etc/kept")).unwrap(), b"k");
}

#[test]
fn pax_xattrs_apply_user_and_capability_but_never_trusted() {
    let fx = Fixture::new();
    // VFS_CAP_REVISION_2, effective, CAP_NET_BIND_SERVICE permitted.
    let mut cap = Vec::new();
    for word in [0x0200_0001u32, 1 << 10, 0, 0, 0] {
        cap.extend_from_slice(&word.to_le_bytes());
    }
    let mut layer = Tar::default();
    layer
        .pax(&[
            ("SCHILY.xattr.user.comment", b"hello"),
            ("SCHILY.xattr.trusted.overlay.redirect", b"/elsewhere"),
            ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
            ("SCHILY.xattr.security.capability", &cap),
            ("SCHILY.xattr.security.selinux", b"system_u:object_r:shadow_t:s0"),
        ])
        .raw(Raw { uid: 1000, data: b"x", ..Raw::new("bin/ping", EntryType::Regular) })
        .pax(&[("SCHILY.xattr.trusted.overlay.opaque", b"y")])
        .dir("d/");
    let stats = fx.unpack(&layer).unwrap();

    let ping = fx.path("bin/ping");
    assert_eq!(xattr(&ping, "user.comment").as_deref(), Some(&b"hello"[..]));
    assert!(xattr(&ping, "security.capability").is_some());
    assert_eq!(xattr(&ping, "trusted.overlay.redirect"), None);
    assert_eq!(xattr(&ping, "trusted.overlay.opaque"), None);
    assert_eq!(xattr(&fx.path("d"), "trusted.overlay.opaque"), None);
    assert_eq!(
        stats.skipped,
        [
            "ignored xattr trusted.overlay.redirect on bin/ping",
            "ignored xattr trusted.overlay.opaque on bin/ping",
            "ignored xattr security.selinux on bin/ping",
            "ignored xattr trusted.overlay.opaque on d/"
        ]
    );
}

#[test]
fn max_entries_is_enforced() {
    let fx = Fixture::new();
    let mut layer = Tar::default();
    layer.file("a", b"").file("b", b"").file("c", b"");
    let limits = Limits { max_entries: 2, ..Limits::default() };
    let err = fx.unpack_with(&layer, &limits).unwrap_err();
    assert!(matches!(err, UnpackError::TooManyEntries { limit: 2 }), "{err}");
    assert!(!fx.path("c").exists());
}

#[test]
fn max_path_len_is_enforced_on_names_and_link_targets() {
    let fx = Fixture::new();
    let limits = Limits { max_path_len: 8, ..Limits::default() };
    let mut ok = Tar::default();
    ok.file("12345678", b"");
    fx.unpack_with(&ok, &limits).unwrap();

    let mut long = Tar::default();
    long.file("123456789", b"");
    let err = fx.unpack_with(&long, &limits).unwrap_err();
    assert!(matches!(err, UnpackError::PathTooLong { limit: 8, .. }), "{err}");

    let mut long_link = Tar::default();
    long_link.symlink("s", "123456789");
    let err = fx.unpack_with(&long_link, &limits).unwrap_err();
    assert!(matches!(err, UnpackError::LinkTargetTooLong { limit: 8, .. }), "{err}");

    // A PAX path beyond the default limit.
    let mut pax = Tar::default();
    pax.pax(&[("path", "a/".repeat(2100).as_bytes())]).file("short", b"");
    let err = fx.unpack(&pax).unwrap_err();
    assert!(matches!(err, UnpackError::PathTooLong { limit: 4096, .. }), "{err}");
}

#[test]
fn max_bytes_is_enforced_before_writing() {
    let fx = Fixture::new();
    let mut layer = Tar::default();
    layer.file("a", b"123456").file("b", b"789012");
    let limits = Limits { max_bytes: 10, ..Limits::default() };
    let err = fx.unpack_with(&layer, &limits).unwrap_err();
    assert!(matches!(err, UnpackError::TooLarge { limit: 10, .. }), "{err}");
    assert!(fx.path("a").exists());
    assert!(!fx.path("b").exists());
}

#[test]
fn garbage_and_truncated_input_are_tar_errors() {
    let fx = Fixture::new();
    let garbage = b"this is not a tar archive ".repeat(40);
    let err = unpack_layer(garbage.as_slice(), &fx.root, &Limits::default()).unwrap_err();
    assert!(matches!(err, UnpackError::Tar(_)), "{err}");

    let mut layer = Tar::default();
    layer.file("big", &[7; 2000]);
    let truncated = &layer.finish()[..1024];
    let err = unpack_layer(truncated, &fx.root, &Limits::default()).unwrap_err();
    assert!(matches!(err, UnpackError::Tar(_)), "{err}");
}

#[test]
fn missing_destination_is_a_dest_error() {
    let fx = Fixture::new();
    let missing = fx.tmp.path().join("missing");
    let err = unpack_layer(Tar::default().finish().as_slice(), &missing, &Limits::default()).unwrap_err();
    assert!(matches!(&err, UnpackError::Dest { path, .. } if *path == missing), "{err}");
}

#[test]
fn blank_numeric_fields_read_as_zero_and_garbage_ones_are_tar_errors() {
    let fx = Fixture::new();
    let blank = |h: &mut tar::Header| {
        let old = h.as_old_mut();
        old.uid = [0; 8];
        old.gid = [b' '; 8];
        old.mtime = [0; 12];
    };
    let mut layer = Tar::default();
    layer.raw_with(Raw { uid: 5, data: b"x", ..Raw::new("f", EntryType::Regular) }, blank);
    fx.unpack(&layer).unwrap();
    let meta = lmeta(fx.path("f"));
    assert_eq!((meta.uid(), meta.gid(), meta.mtime()), (0, 0, 0));

    let mut layer = Tar::default();
    layer.raw_with(Raw::new("g", EntryType::Regular), |h| h.as_old_mut().uid = *b"12x4567\0");
    let err = fx.unpack(&layer).unwrap_err();
    assert!(matches!(err, UnpackError::Tar(_)), "{err}");
}

#[test]
fn uid_minus_one_is_rejected_without_panicking() {
    let fx = Fixture::new();
    let mut layer = Tar::default();
    layer.raw(Raw { uid: u64::from(u32::MAX), ..Raw::new("f", EntryType::Regular) });
    let err = fx.unpack(&layer).unwrap_err();
    assert!(matches!(err, UnpackError::Tar(_)), "{err}");
}

#[test]
fn input_is_read_to_eof_after_the_end_marker() {
    /// Counts bytes read and remembers whether EOF was reached.
    struct Counting<R> {
        inner: R,
        read: usize,
        eof: bool,
    }
    impl<R: Read> Read for Counting<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.read += n;
            self.eof |= n == 0 && !buf.is_empty();
            Ok(n)
        }
    }
    let fx = Fixture::new();
    let mut layer = Tar::default();
    layer.file("a", b"a");
    let mut stream = layer.finish();
    stream.extend_from_slice(&[0xAB; 10_000]);
    let mut reader = Counting { inner: stream.as_slice(), read: 0, eof: false };
    unpack_layer(&mut reader, &fx.root, &Limits::default()).unwrap();
    assert_eq!(reader.read, stream.len());
    assert!(reader.eof);
}

#[test]
fn directory_mtimes_survive_later_entries() {
    let fx = Fixture::new();
    let mut layer = Tar::default();
    layer
        .raw(Raw { mode: 0o750, mtime: 500_000, ..Raw::new("./", EntryType::Directory) })
        .raw(Raw { mtime: 1_000_000, ..Raw::new("d/", EntryType::Directory) })
        .raw(Raw { mtime: 3_000_000, ..Raw::new("d/sub/", EntryType::Directory) })
        .raw(Raw { mtime: 2_000_000, data: b"f", ..Raw::new("d/f", EntryType::Regular) })
        .raw(Raw { mtime: 4_000_000, link: b"f", ..Raw::new("d/sub/l", EntryType::Symlink) })
        .file("d/sub/g", b"g");
    fx.unpack(&layer).unwrap();

    assert_eq!(lmeta(&fx.root).mtime(), 500_000);
    assert_eq!(lmeta(&fx.root).permissions().mode() & 0o7777, 0o750);
    assert_eq!(lmeta(fx.path("d")).mtime(), 1_000_000);
    assert_eq!(lmeta(fx.path("d/sub")).mtime(), 3_000_000);
    assert_eq!(lmeta(fx.path("d/f")).mtime(), 2_000_000);
    assert_eq!(lmeta(fx.path("d/sub/l")).mtime(), 4_000_000);
}

#[test]
fn non_directory_naming_the_root_is_skipped() {
    let fx = Fixture::new();
    let mut layer = Tar::default();
    layer.file(".", b"x").symlink("/", "/etc");
    let stats = fx.unpack(&layer).unwrap();

    assert!(lmeta(&fx.root).is_dir());
    assert_eq!(stats.skipped.len(), 2, "{:?}", stats.skipped);
    fx.assert_outside_untouched();
}

#[test]
fn old_style_directory_with_trailing_slash_is_a_directory() {
    let fx = Fixture::new();
    let mut layer = Tar::default();
    layer.raw(Raw { mode: 0o711, ..Raw::new("old/", EntryType::Regular) });
    fx.unpack(&layer).unwrap();
    let meta = lmeta(fx.path("old"));
    assert!(meta.is_dir());
    assert_eq!(meta.mode() & 0o7777, 0o711);
}

#[test]
fn notes_are_capped_at_one_hundred() {
    let fx = Fixture::new();
    let mut layer = Tar::default();
    for i in 0..150 {
        layer.raw(Raw::new(&format!("dev/n{i}"), EntryType::Char));
    }
    let stats = fx.unpack(&layer).unwrap();
    assert_eq!(stats.skipped.len(), 100);
    assert_eq!(stats.skipped[99], "... and 51 more notes");
}

#[test]
fn normalize_keeps_dotdot_in_the_parent_only() {
    let child = |parent: &str, name: &str| Name::Child(EntryPath { parent: parent.into(), name: name.into() });
    assert_eq!(normalize(b""), Name::Root);
    assert_eq!(normalize(b"./"), Name::Root);
    assert_eq!(normalize(b"//./."), Name::Root);
    assert_eq!(normalize(b"/a//b/./c/"), child("a/b", "c"));
    assert_eq!(normalize(b"../../x"), child("../..", "x"));
    assert_eq!(normalize(b"a/.."), Name::EndsInDotDot);
    assert_eq!(whiteout(b".wh..wh..opq"), Whiteout::Opaque);
    assert_eq!(whiteout(b".wh.x"), Whiteout::Hide(b"x"));
    assert_eq!(whiteout(b".wh..wh.plnk"), Whiteout::Unsupported);
    assert_eq!(whiteout(b".wh."), Whiteout::Unsupported);
    assert_eq!(whiteout(b"x.wh.y"), Whiteout::None);
}
