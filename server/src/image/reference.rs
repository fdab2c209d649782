//! Image references: `[REGISTRY[:PORT]/]REPOSITORY[:TAG][@DIGEST]`, normalized the way docker does
//! (`alpine` is `docker.io/library/alpine:latest`).

use std::fmt;

/// The registry a reference without a registry part points at.
pub const DEFAULT_REGISTRY: &str = "docker.io";
const DEFAULT_TAG: &str = "latest";
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// A parsed, normalized image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host with optional port, e.g. "docker.io" or "127.0.0.1:5000".
    pub registry: String,
    /// Repository path, e.g. "library/alpine".
    pub repository: String,
    /// Tag; "latest" when neither a tag nor a digest was given.
    pub tag: Option<String>,
    /// Manifest digest, "sha256:<64 hex>".
    pub digest: Option<String>,
}

/// What is wrong with a reference string.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid image reference {input:?}: {reason}")]
pub struct ReferenceError {
    input: String,
    reason: String,
}

fn invalid(input: &str, reason: impl Into<String>) -> ReferenceError {
    ReferenceError { input: input.to_string(), reason: reason.into() }
}

impl Reference {
    /// Parses and normalizes a reference.
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        if input.is_empty() {
            return Err(invalid(input, "it is empty"));
        }
        if input.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(input, "it contains whitespace or control characters"));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((rest, digest)) => {
                validate_digest(digest).map_err(|r| invalid(input, r))?;
                (rest, Some(digest.to_string()))
            }
            None => (input, None),
        };
        // A tag follows the last ':' that comes after the last '/' (a ':' before it is a registry port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let tag = &rest[last_slash + i + 1..];
                validate_tag(tag).map_err(|r| invalid(input, r))?;
                (&rest[..last_slash + i], Some(tag.to_string()))
            }
            None => (rest, None),
        };
        if name.is_empty() {
            return Err(invalid(input, "the repository name is missing"));
        }
        let (registry, path) = split_registry(name);
        if let Some(registry) = registry {
            validate_registry(registry).map_err(|r| invalid(input, r))?;
        }
        validate_path(path).map_err(|r| invalid(input, r))?;
        let registry = match registry {
            None | Some("index.docker.io") | Some("registry-1.docker.io") => DEFAULT_REGISTRY,
            Some(r) => r,
        };
        let repository = if registry == DEFAULT_REGISTRY && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        if registry.len() + 1 + repository.len() > MAX_NAME_LEN {
            return Err(invalid(input, format!("the name is longer than {MAX_NAME_LEN} characters")));
        }
        let tag = match (&tag, &digest) {
            (None, None) => Some(DEFAULT_TAG.to_string()),
            _ => tag,
        };
        Ok(Reference { registry: registry.to_string(), repository, tag, digest })
    }

    /// The same repository pinned to a manifest digest (tag dropped).
    pub fn with_digest(&self, digest: &str) -> Reference {
        Reference { tag: None, digest: Some(digest.to_string()), ..self.clone() }
    }

    /// The reference in oci-client's terms.
    pub fn to_oci(&self) -> oci_client::Reference {
        match (&self.tag, &self.digest) {
            (Some(tag), Some(digest)) => oci_client::Reference::with_tag_and_digest(
                self.registry.clone(),
                self.repository.clone(),
                tag.clone(),
                digest.clone(),
            ),
            (_, Some(digest)) => {
                oci_client::Reference::with_digest(self.registry.clone(), self.repository.clone(), digest.clone())
            }
            (tag, None) => oci_client::Reference::with_tag(
                self.registry.clone(),
                self.repository.clone(),
                tag.clone().unwrap_or_else(|| DEFAULT_TAG.to_string()),
            ),
        }
    }

    /// The registry host without its port.
    pub fn registry_host(&self) -> &str {
        host_of(&self.registry)
    }
}

/// The host part of `host[:port]` (IPv6 literals in brackets keep their brackets).
pub fn host_of(registry: &str) -> &str {
    if registry.starts_with('[') {
        return registry.find(']').map_or(registry, |i| &registry[..=i]);
    }
    registry.split(':').next().unwrap_or(registry)
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Splits off the registry: the first path component is a registry when it contains '.' or ':' or is
/// "localhost" (docker's rule); otherwise the whole name is a Docker Hub repository.
fn split_registry(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" || first.starts_with('[') =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

fn validate_registry(registry: &str) -> Result<(), String> {
    let host = host_of(registry);
    let port = &registry[host.len()..];
    if host.is_empty() {
        return Err("the registry host is empty".into());
    }
    let host_ok = if host.starts_with('[') {
        host.ends_with(']') && host[1..host.len() - 1].parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        host.split('.').all(|label| {
            !label.is_empty()
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
    };
    if !host_ok {
        return Err(format!("registry host {host:?} is not a valid host name or address"));
    }
    if !port.is_empty() {
        let digits = port.strip_prefix(':').unwrap_or("");
        if digits.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!("registry port {digits:?} is not a port number (1-65535)"));
        }
    }
    Ok(())
}

/// Repository path components: lowercase letters and digits, separated by '.', '_', '__' or '-'s.
fn validate_path(path: &str) -> Result<(), String> {
    for component in path.split('/') {
        if component.is_empty() {
            return Err("the repository path has an empty component".into());
        }
        if component.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(format!("repository name component {component:?} must be lowercase"));
        }
        if !component_ok(component) {
            return Err(format!(
                "repository name component {component:?} may only hold lowercase letters, digits and \
                 single separators ('.', '_', '__', '-') between them"
            ));
        }
    }
    Ok(())
}

fn component_ok(c: &str) -> bool {
    let bytes = c.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    // Separators: '.', '_', '__', or one or more '-'.
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if alnum(b) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-')) {
            return false;
        }
    }
    true
}

fn validate_tag(tag: &str) -> Result<(), String> {
    let ok = !tag.is_empty()
        && tag.len() <= MAX_TAG_LEN
        && tag.chars().next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tag {tag:?} must be 1-{MAX_TAG_LEN} letters, digits, '_', '.' or '-', not starting with '.' or '-'"
        ))
    }
}

/// Checks `sha256:<64 lowercase hex>` (other algorithms are refused: we verify every digest ourselves).
pub fn validate_digest(digest: &str) -> Result<(), String> {
    match digest.split_once(':') {
        Some(("sha256", hex))
            if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(())
        }
        Some(("sha256", _)) => Err(format!("digest {digest:?} must be sha256: followed by 64 lowercase hex digits")),
        Some((alg, _)) => Err(format!("digest algorithm {alg:?} is not supported (only sha256)")),
        None => Err(format!("digest {digest:?} must look like sha256:<64 hex digits>")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        Reference::parse(s).unwrap().to_string()
    }

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn short_names_mean_docker_hub_library_latest() {
        assert_eq!(norm("alpine"), "docker.io/library/alpine:latest");
        assert_eq!(norm("alpine:3.20"), "docker.io/library/alpine:3.20");
        assert_eq!(norm("user/app"), "docker.io/user/app:latest");
        assert_eq!(norm("docker.io/alpine"), "docker.io/library/alpine:latest");
        assert_eq!(norm("index.docker.io/library/alpine"), "docker.io/library/alpine:latest");
    }

    #[test]
    fn registry_is_recognized_by_dot_colon_or_localhost() {
        let r = Reference::parse("127.0.0.1:5000/test/busybox:v1").unwrap();
        assert_eq!((r.registry.as_str(), r.repository.as_str()), ("127.0.0.1:5000", "test/busybox"));
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.registry_host(), "127.0.0.1");
        assert_eq!(Reference::parse("localhost/app").unwrap().registry, "localhost");
        assert_eq!(Reference::parse("ghcr.io/org/app").unwrap().repository, "org/app");
        assert_eq!(Reference::parse("[::1]:5000/app").unwrap().registry_host(), "[::1]");
    }

    #[test]
    fn port_is_not_taken_for_a_tag() {
        let r = Reference::parse("localhost:5000/app").unwrap();
        assert_eq!(r.registry, "localhost:5000");
        assert_eq!(r.tag.as_deref(), Some("latest"));
    }

    #[test]
    fn digests_pin_and_drop_the_default_tag() {
        let r = Reference::parse(&format!("alpine@{D}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_deref(), Some(D));
        assert_eq!(r.to_string(), format!("docker.io/library/alpine@{D}"));
        let r = Reference::parse(&format!("alpine:3@{D}")).unwrap();
        assert_eq!(r.to_string(), format!("docker.io/library/alpine:3@{D}"));
    }

    #[test]
    fn malformed_references_say_what_is_wrong() {
        let err = |s: &str| Reference::parse(s).unwrap_err().to_string();
        assert!(err("").contains("empty"));
        assert!(err("Alpine").contains("lowercase"));
        assert!(err("alpine:").contains("tag"));
        assert!(err("alpine:-x").contains("tag"));
        assert!(err("alpine@sha256:abc").contains("64"));
        assert!(err("alpine@md5:abc").contains("not supported"));
        assert!(err("a//b").contains("empty component"));
        assert!(err("a b").contains("whitespace"));
        assert!(err("app-").contains("separators"));
        assert!(err("a..b").contains("separators"));
        assert!(err("host:99999/app").contains("port"));
        assert!(err(":tag").contains("missing"));
        assert!(err(&"a".repeat(300)).contains("longer"));
    }

    #[test]
    fn separators_follow_the_distribution_grammar() {
        assert!(Reference::parse("a_b__c-d--e.f").is_ok());
        assert!(Reference::parse("a___b").is_err());
        assert!(Reference::parse("_a").is_err());
    }

    #[test]
    fn to_oci_keeps_registry_repository_tag_and_digest() {
        let r = Reference::parse("127.0.0.1:5000/x/y:t").unwrap().to_oci();
        assert_eq!((r.registry(), r.repository(), r.tag()), ("127.0.0.1:5000", "x/y", Some("t")));
        let r = Reference::parse(&format!("alpine@{D}")).unwrap().to_oci();
        assert_eq!(r.digest(), Some(D));
        assert_eq!(r.resolve_registry(), "index.docker.io");
    }
}
