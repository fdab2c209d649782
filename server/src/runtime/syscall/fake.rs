//! A recording [`Syscall`] for unit tests: every call is written down (magic-link targets resolved and shown
//! relative to the container's root) and succeeds, so tests pin the init's sequence without root.

use std::cell::RefCell;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use rustix::io::Errno;

use super::{HostDevice, Syscall};

/// One recorded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Mount {
        source: Option<String>,
        target: String,
        fstype: Option<String>,
        flags: MsFlags,
        data: Option<String>,
    },
    Umount2 {
        target: String,
        flags: MntFlags,
    },
    PivotRoot {
        new_root: String,
        put_old: String,
    },
    Chdir(String),
    Sethostname(String),
    Unshare(CloneFlags),
    Setns(i32),
    Mknod {
        name: String,
        mode: u32,
        major: u32,
        minor: u32,
    },
    Symlink {
        target: String,
        name: String,
    },
    LoopbackUp,
    /// A detached mount attached at the target.
    MoveMount(String),
    /// Not a kernel call: a step a test hooked into the sequence (e.g. attaching the console).
    Step(&'static str),
}

/// Records calls. `root` is the container's root directory on the test's disk: paths inside it are shown
/// as `/…`, the way the container sees them. `dirs` are the paths `is_dir` calls directories (others
/// exist as files); `mountinfo` is what `mountinfo` returns.
pub struct Recorder {
    pub root: PathBuf,
    pub dirs: Vec<&'static str>,
    pub mountinfo: String,
    /// What `host_devices` returns.
    pub host_devices: Vec<HostDevice>,
    pub calls: RefCell<Vec<Call>>,
}

impl Recorder {
    pub fn new(root: &Path) -> Recorder {
        Recorder {
            root: root.to_path_buf(),
            dirs: Vec::new(),
            mountinfo: String::new(),
            host_devices: Vec::new(),
            calls: RefCell::default(),
        }
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.borrow().clone()
    }

    pub fn step(&self, name: &'static str) {
        self.record(Call::Step(name));
    }

    fn record(&self, call: Call) {
        self.calls.borrow_mut().push(call);
    }

    /// A path as the container sees it: magic links resolved, the root's prefix shown as `/`.
    fn show(&self, path: &Path) -> String {
        let resolved = if path.starts_with("/proc/self/fd") {
            std::fs::read_link(path).unwrap_or(path.into())
        } else {
            path.into()
        };
        match resolved.strip_prefix(&self.root) {
            Ok(rel) => format!("/{}", rel.display()),
            Err(_) => resolved.display().to_string(),
        }
    }

    fn dir_name(&self, dir: BorrowedFd<'_>, name: &str) -> String {
        let dir = self.show(Path::new(&format!("/proc/self/fd/{}", dir.as_raw_fd())));
        format!("{}/{name}", dir.trim_end_matches('/'))
    }
}

impl Syscall for Recorder {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()> {
        self.record(Call::Mount {
            source: source.map(|s| s.display().to_string()),
            target: self.show(target),
            fstype: fstype.map(str::to_string),
            flags,
            data: data.map(str::to_string),
        });
        Ok(())
    }

    fn umount2(&self, target: &Path, flags: MntFlags) -> nix::Result<()> {
        self.record(Call::Umount2 { target: self.show(target), flags });
        Ok(())
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> nix::Result<()> {
        self.record(Call::PivotRoot { new_root: self.show(new_root), put_old: self.show(put_old) });
        Ok(())
    }

    fn chdir(&self, path: &Path) -> nix::Result<()> {
        self.record(Call::Chdir(self.show(path)));
        Ok(())
    }

    fn sethostname(&self, name: &str) -> nix::Result<()> {
        self.record(Call::Sethostname(name.to_string()));
        Ok(())
    }

    fn unshare(&self, flags: CloneFlags) -> nix::Result<()> {
        self.record(Call::Unshare(flags));
        Ok(())
    }

    fn setns(&self, _pidfd: BorrowedFd<'_>, flags: i32) -> nix::Result<()> {
        self.record(Call::Setns(flags));
        Ok(())
    }

    fn mknod_char(&self, dir: BorrowedFd<'_>, name: &str, mode: u32, major: u32, minor: u32) -> Result<(), Errno> {
        self.record(Call::Mknod { name: self.dir_name(dir, name), mode, major, minor });
        Ok(())
    }

    fn mknod(
        &self,
        dir: BorrowedFd<'_>,
        name: &str,
        _block: bool,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), Errno> {
        self.record(Call::Mknod { name: self.dir_name(dir, name), mode, major, minor });
        Ok(())
    }

    fn host_devices(&self) -> Vec<HostDevice> {
        self.host_devices.clone()
    }

    fn symlink(&self, target: &str, dir: BorrowedFd<'_>, name: &str) -> Result<(), Errno> {
        self.record(Call::Symlink { target: target.to_string(), name: self.dir_name(dir, name) });
        Ok(())
    }

    fn is_dir(&self, path: &Path) -> Option<bool> {
        Some(self.dirs.iter().any(|d| Path::new(d) == path))
    }

    fn mountinfo(&self) -> String {
        self.mountinfo.clone()
    }

    fn loopback_up(&self) -> nix::Result<()> {
        self.record(Call::LoopbackUp);
        Ok(())
    }

    fn move_mount(&self, _mount: BorrowedFd<'_>, target: &Path) -> nix::Result<()> {
        self.record(Call::MoveMount(self.show(target)));
        Ok(())
    }
}
