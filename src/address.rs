//! Server addresses: `unix:/path`, `unix:///path`, or `tcp://host:port`.

use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

/// A place cm-server listens on and cm-client connects to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// A unix socket path.
    Unix(PathBuf),
    /// A TCP socket.
    Tcp(SocketAddr),
}

/// Why an address string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddressError {
    #[error("address {0:?} has no scheme: use unix:/path/to.sock or tcp://host:port")]
    NoScheme(String),
    #[error("address {0:?} has unknown scheme {1:?}: use unix:/path/to.sock or tcp://host:port")]
    UnknownScheme(String, String),
    #[error("unix address {0:?} needs an absolute socket path, e.g. unix:/run/cm.sock")]
    RelativeUnixPath(String),
    #[error("tcp address {0:?} must be tcp://host:port: {1}")]
    BadTcp(String, String),
}

impl Address {
    /// Parses `unix:/path`, `unix:///path`, `unix://path` is refused (ambiguous), `tcp://host:port`.
    pub fn parse(s: &str) -> Result<Self, AddressError> {
        let Some((scheme, rest)) = s.split_once(':') else {
            return Err(AddressError::NoScheme(s.to_string()));
        };
        match scheme {
            "unix" => {
                // unix:///run/cm.sock and unix:/run/cm.sock are the same place.
                let path = rest.strip_prefix("//").unwrap_or(rest);
                if !path.starts_with('/') {
                    return Err(AddressError::RelativeUnixPath(s.to_string()));
                }
                Ok(Address::Unix(PathBuf::from(path)))
            }
            "tcp" => {
                let hostport =
                    rest.strip_prefix("//").ok_or_else(|| AddressError::BadTcp(s.to_string(), "missing //".into()))?;
                let hostport = hostport.trim_end_matches('/');
                let addr = hostport
                    .to_socket_addrs()
                    .map_err(|e| AddressError::BadTcp(s.to_string(), e.to_string()))?
                    .next()
                    .ok_or_else(|| AddressError::BadTcp(s.to_string(), "resolves to nothing".into()))?;
                Ok(Address::Tcp(addr))
            }
            other => Err(AddressError::UnknownScheme(s.to_string(), other.to_string())),
        }
    }

    /// True for unix sockets and TCP addresses on loopback.
    pub fn is_local(&self) -> bool {
        match self {
            Address::Unix(_) => true,
            Address::Tcp(a) => is_loopback(a.ip()),
        }
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Unix(p) => write!(f, "unix:{}", p.display()),
            Address::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

impl std::str::FromStr for Address {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Address::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_forms_are_equivalent() {
        assert_eq!(Address::parse("unix:/run/cm.sock").unwrap(), Address::Unix("/run/cm.sock".into()));
        assert_eq!(Address::parse("unix:///run/cm.sock").unwrap(), Address::Unix("/run/cm.sock".into()));
    }

    #[test]
    fn relative_unix_path_is_refused() {
        assert!(matches!(Address::parse("unix:cm.sock"), Err(AddressError::RelativeUnixPath(_))));
        assert!(matches!(Address::parse("unix://cm.sock"), Err(AddressError::RelativeUnixPath(_))));
    }

    #[test]
    fn tcp_needs_host_and_port() {
        let a = Address::parse("tcp://127.0.0.1:7000").unwrap();
        assert_eq!(a, Address::Tcp("127.0.0.1:7000".parse().unwrap()));
        assert!(a.is_local());
        assert!(Address::parse("tcp://127.0.0.1").is_err());
        assert!(Address::parse("tcp:127.0.0.1:80").is_err());
        assert!(!Address::parse("tcp://10.1.2.3:80").unwrap().is_local());
        assert!(Address::parse("tcp://[::1]:80").unwrap().is_local());
    }

    #[test]
    fn unknown_or_missing_scheme_is_named() {
        assert!(matches!(Address::parse("/run/cm.sock"), Err(AddressError::NoScheme(_))));
        assert!(matches!(Address::parse("http://x:1"), Err(AddressError::UnknownScheme(_, _))));
    }
}
