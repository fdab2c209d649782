//! Entry names as the unpacker sees them: lexical normalization (the root, a child, or a name ending in
//! `..`), OCI whiteout classification, and how names are shown in messages.

/// Longest entry name shown in errors and notes, in characters.
pub(super) const SHOWN_NAME_MAX: usize = 256;

/// An OCI opaque-directory marker's name.
pub(super) const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// Prefix of OCI whiteout names.
pub(super) const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// Prefix of OCI whiteout names reserved for metadata (`.wh..wh.plnk` and the like).
pub(super) const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";

/// A non-root entry name after lexical normalization.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct EntryPath {
    /// The directory part: components joined by `/`, possibly with `..` (clamped at resolution);
    /// empty for the root.
    pub(super) parent: Vec<u8>,
    /// The last component: never empty, `.`, `..`, and without `/`.
    pub(super) name: Vec<u8>,
}

/// What an entry name refers to.
#[derive(Debug, PartialEq)]
pub(super) enum Name {
    /// The root itself (`""`, `.`, `/`, `./`).
    Root,
    /// Something below the root.
    Child(EntryPath),
    /// A name whose last component is `..`; it can only name an ancestor, so it is not used.
    EndsInDotDot,
}

/// What an entry's last component says about OCI whiteouts.
#[derive(Debug, PartialEq)]
pub(super) enum Whiteout<'a> {
    /// Not a whiteout.
    None,
    /// `.wh..wh..opq`: the parent directory hides everything below it in lower layers.
    Opaque,
    /// `.wh.NAME`: NAME is deleted.
    Hide(&'a [u8]),
    /// Any other `.wh.` name (`.wh..wh.plnk`, `.wh.`, `.wh..`, ...).
    Unsupported,
}

impl EntryPath {
    /// The normalized name, for messages.
    pub(super) fn shown(&self) -> String {
        if self.parent.is_empty() {
            shown(&self.name)
        } else {
            shown(&[self.parent.as_slice(), b"/", self.name.as_slice()].concat())
        }
    }
}

/// An entry name for messages: lossy UTF-8, cut to `SHOWN_NAME_MAX` characters.
pub(super) fn shown(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    if text.chars().count() <= SHOWN_NAME_MAX {
        return text.into_owned();
    }
    let mut cut: String = text.chars().take(SHOWN_NAME_MAX).collect();
    cut.push_str("...");
    cut
}

/// Lexically normalizes an entry name: leading `/` and `./`, empty and `.` components go; `..`
/// components stay (openat2 clamps them at the root), except as the last component.
pub(super) fn normalize(raw: &[u8]) -> Name {
    let mut components = raw.split(|&b| b == b'/').filter(|c| !c.is_empty() && *c != b".");
    let Some(name) = components.next_back() else {
        return Name::Root;
    };
    if name == b".." {
        return Name::EndsInDotDot;
    }
    let mut parent = Vec::new();
    for component in components {
        if !parent.is_empty() {
            parent.push(b'/');
        }
        parent.extend_from_slice(component);
    }
    Name::Child(EntryPath { parent, name: name.to_vec() })
}

/// Classifies an entry's last component as an OCI whiteout or not.
pub(super) fn whiteout(name: &[u8]) -> Whiteout<'_> {
    if name == OPAQUE_MARKER {
        return Whiteout::Opaque;
    }
    if name.starts_with(WHITEOUT_META_PREFIX) {
        return Whiteout::Unsupported;
    }
    match name.strip_prefix(WHITEOUT_PREFIX) {
        None => Whiteout::None,
        Some(b"" | b"." | b"..") => Whiteout::Unsupported,
        Some(hidden) => Whiteout::Hide(hidden),
    }
}
