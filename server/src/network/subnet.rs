//! IPv4 networks: parsing `--subnet`, overlap tests, and picking a private subnet that collides with nothing
//! the host already routes (the seed's conflict-free allocation).

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 network, `address/prefix`, with no host bits set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ipv4Net {
    network: Ipv4Addr,
    prefix: u8,
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) }
}

impl Ipv4Net {
    /// The network containing `address` with this prefix (host bits cleared).
    pub fn containing(address: Ipv4Addr, prefix: u8) -> Ipv4Net {
        let prefix = prefix.min(32);
        Ipv4Net { network: Ipv4Addr::from(u32::from(address) & mask(prefix)), prefix }
    }

    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !mask(self.prefix))
    }

    /// The first usable address: the bridge's (gateway) address.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    pub fn contains(&self, address: Ipv4Addr) -> bool {
        u32::from(address) & mask(self.prefix) == u32::from(self.network)
    }

    /// Whether the two networks share any address.
    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        self.contains(other.network) || other.contains(self.network)
    }

    /// Addresses containers may get: all but the network, gateway and broadcast addresses.
    pub fn host_range(&self) -> (u32, u32) {
        (u32::from(self.network) + 2, u32::from(self.broadcast()) - 1)
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Ipv4Net {
    type Err = String;

    /// Parses a network for containers: `10.88.0.0/16`. Host bits must be zero and the prefix leave room
    /// for a gateway and at least one container (at most /30).
    fn from_str(text: &str) -> Result<Self, String> {
        let (address, prefix) =
            text.split_once('/').ok_or_else(|| format!("{text:?} is not a network: expected ADDRESS/PREFIX"))?;
        let address: Ipv4Addr =
            address.parse().map_err(|_| format!("{text:?} is not a network: {address:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("{text:?} is not a network: the prefix length must be 0 to 32"))?;
        let net = Ipv4Net::containing(address, prefix);
        if net.network != address {
            return Err(format!("{text:?} is not a network: host bits are set (the network is {net})"));
        }
        if !(8..=30).contains(&prefix) {
            return Err(format!("{text:?}: the prefix length must be between /8 and /30 to hold containers"));
        }
        Ok(net)
    }
}

impl TryFrom<String> for Ipv4Net {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl From<Ipv4Net> for String {
    fn from(net: Ipv4Net) -> String {
        net.to_string()
    }
}

/// Something on the host a container subnet must not overlap: an address's network or a route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostNet {
    pub net: Ipv4Net,
    /// The interface it belongs to, for messages.
    pub interface: String,
    /// "address" or "route".
    pub kind: &'static str,
}

impl fmt::Display for HostNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the {} {} on {}", self.kind, self.net, self.interface)
    }
}

/// What `subnet` collides with, if anything. The default route (0.0.0.0/0) collides with nothing.
pub fn conflict<'a>(subnet: &Ipv4Net, host: &'a [HostNet]) -> Option<&'a HostNet> {
    host.iter().find(|h| h.net.prefix > 0 && h.net.overlaps(subnet))
}

/// The candidates tried when no `--subnet` is given, in order: podman's 10.88.0.0/16 and its neighbours,
/// then docker's 172.17-31.0.0/16, then 192.168.x.0/24 at the top of that range.
pub fn candidates() -> impl Iterator<Item = Ipv4Net> {
    let tens = (88..=127u8).map(|b| Ipv4Net::containing(Ipv4Addr::new(10, b, 0, 0), 16));
    let docker = (17..=31u8).map(|b| Ipv4Net::containing(Ipv4Addr::new(172, b, 0, 0), 16));
    let home = (200..=254u8).map(|c| Ipv4Net::containing(Ipv4Addr::new(192, 168, c, 0), 24));
    tens.chain(docker).chain(home)
}

/// The first of `preferred` (a subnet used before) and then the candidates that collides with nothing.
pub fn choose(preferred: Option<Ipv4Net>, host: &[HostNet]) -> Option<Ipv4Net> {
    preferred.into_iter().chain(candidates()).find(|net| conflict(net, host).is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn host(s: &str, kind: &'static str) -> HostNet {
        let (a, p) = s.split_once('/').unwrap();
        HostNet { net: Ipv4Net::containing(a.parse().unwrap(), p.parse().unwrap()), interface: "eth0".into(), kind }
    }

    #[test]
    fn parses_networks_and_names_what_is_wrong() {
        assert_eq!(net("10.88.0.0/16").to_string(), "10.88.0.0/16");
        assert_eq!(net("192.168.5.0/24").gateway(), Ipv4Addr::new(192, 168, 5, 1));
        assert_eq!(net("192.168.5.0/24").broadcast(), Ipv4Addr::new(192, 168, 5, 255));
        let err = "10.88.0.1/16".parse::<Ipv4Net>().unwrap_err();
        assert!(err.contains("host bits are set (the network is 10.88.0.0/16)"), "{err}");
        assert!("10.88.0.0".parse::<Ipv4Net>().unwrap_err().contains("ADDRESS/PREFIX"));
        assert!("10.88.0.0/33".parse::<Ipv4Net>().unwrap_err().contains("0 to 32"));
        assert!("10.0.0.0/31".parse::<Ipv4Net>().unwrap_err().contains("/30"));
        assert!("cm/24".parse::<Ipv4Net>().unwrap_err().contains("not an IPv4 address"));
        assert_eq!(net("10.1.2.0/30").host_range(), (u32::from(Ipv4Addr::new(10, 1, 2, 2)), 0x0a01_0202));
    }

    #[test]
    fn overlaps_in_both_directions() {
        assert!(net("10.0.0.0/8").overlaps(&net("10.88.0.0/16")));
        assert!(net("10.88.0.0/16").overlaps(&net("10.0.0.0/8")));
        assert!(!net("10.88.0.0/16").overlaps(&net("10.89.0.0/16")));
    }

    #[test]
    fn choose_skips_what_the_host_uses() {
        let hosts = [
            host("0.0.0.0/0", "route"),
            host("192.0.2.0/24", "address"),
            host("10.88.0.0/16", "route"),
            host("10.89.3.0/24", "address"),
        ];
        assert_eq!(choose(None, &hosts), Some(net("10.90.0.0/16")));
        assert_eq!(choose(Some(net("10.200.0.0/24")), &hosts), Some(net("10.200.0.0/24")));
        assert_eq!(choose(Some(net("10.88.1.0/24")), &hosts), Some(net("10.90.0.0/16")));
        let everything = [host("10.0.0.0/8", "route"), host("172.16.0.0/12", "route"), host("192.168.0.0/16", "route")];
        assert_eq!(choose(None, &everything), None);
        assert_eq!(conflict(&net("10.89.0.0/16"), &hosts).unwrap().to_string(), "the address 10.89.3.0/24 on eth0");
    }
}
