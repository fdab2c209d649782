//! Address allocation on the bridge's subnet. The allocation of each container is persisted in its record
//! (written atomically when it is created); at start the allocator is rebuilt from the records, so an address
//! is never handed out twice, across concurrent creates (one lock) and across server restarts.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::subnet::Ipv4Net;

/// Who holds which address on one subnet.
#[derive(Debug)]
pub struct Ipam {
    subnet: Ipv4Net,
    owners: BTreeMap<Ipv4Addr, String>,
    /// The last address handed out: the next search starts after it, so a released address is not reused at
    /// once (a stale ARP entry or connection would reach the wrong container).
    last: Option<Ipv4Addr>,
}

impl Ipam {
    pub fn new(subnet: Ipv4Net) -> Ipam {
        Ipam { subnet, owners: BTreeMap::new(), last: None }
    }

    /// Records an existing allocation (from a container record). Fails when the address is outside the
    /// subnet, is reserved, or is held by someone else.
    pub fn claim(&mut self, address: Ipv4Addr, owner: &str) -> Result<(), String> {
        let (first, last) = self.subnet.host_range();
        if !(first..=last).contains(&u32::from(address)) {
            return Err(format!("{address} is not a container address of {}", self.subnet));
        }
        match self.owners.get(&address) {
            Some(holder) if holder != owner => Err(format!("{address} is already held by {holder}")),
            _ => {
                self.owners.insert(address, owner.to_string());
                self.last = self.last.max(Some(address));
                Ok(())
            }
        }
    }

    /// An address for `owner`: the one it holds, or the next free one.
    pub fn allocate(&mut self, owner: &str) -> Result<Ipv4Addr, String> {
        if let Some(address) = self.address_of(owner) {
            return Ok(address);
        }
        let (first, last) = self.subnet.host_range();
        let size = last - first + 1;
        let start = self.last.map_or(first, |a| u32::from(a).wrapping_add(1));
        for i in 0..size {
            let candidate = first + (start.wrapping_sub(first).wrapping_add(i)) % size;
            let address = Ipv4Addr::from(candidate);
            if let std::collections::btree_map::Entry::Vacant(slot) = self.owners.entry(address) {
                slot.insert(owner.to_string());
                self.last = Some(address);
                return Ok(address);
            }
        }
        Err(format!("no free address left on {} ({} containers hold them all)", self.subnet, self.owners.len()))
    }

    /// Frees what `owner` holds; returns it.
    pub fn release(&mut self, owner: &str) -> Option<Ipv4Addr> {
        let address = self.address_of(owner)?;
        self.owners.remove(&address);
        Some(address)
    }

    pub fn address_of(&self, owner: &str) -> Option<Ipv4Addr> {
        self.owners.iter().find(|(_, o)| o.as_str() == owner).map(|(a, _)| *a)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.owners.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipam(subnet: &str) -> Ipam {
        Ipam::new(subnet.parse().unwrap())
    }

    #[test]
    fn hands_out_distinct_addresses_after_the_gateway() {
        let mut ipam = ipam("10.1.0.0/24");
        assert_eq!(ipam.allocate("a").unwrap(), Ipv4Addr::new(10, 1, 0, 2));
        assert_eq!(ipam.allocate("b").unwrap(), Ipv4Addr::new(10, 1, 0, 3));
        assert_eq!(ipam.allocate("a").unwrap(), Ipv4Addr::new(10, 1, 0, 2), "idempotent per owner");
        assert_eq!(ipam.len(), 2);
    }

    #[test]
    fn released_addresses_come_back_only_after_wrapping() {
        let mut ipam = ipam("10.1.0.0/29"); // .2 to .6
        for owner in ["a", "b", "c"] {
            ipam.allocate(owner).unwrap();
        }
        assert_eq!(ipam.release("a"), Some(Ipv4Addr::new(10, 1, 0, 2)));
        assert_eq!(ipam.allocate("d").unwrap(), Ipv4Addr::new(10, 1, 0, 5));
        assert_eq!(ipam.allocate("e").unwrap(), Ipv4Addr::new(10, 1, 0, 6));
        assert_eq!(ipam.allocate("f").unwrap(), Ipv4Addr::new(10, 1, 0, 2), "wraps to the freed one");
        let err = ipam.allocate("g").unwrap_err();
        assert!(err.contains("no free address left on 10.1.0.0/29"), "{err}");
        assert_eq!(ipam.release("nobody"), None);
    }

    #[test]
    fn claims_rebuild_the_state_and_refuse_conflicts() {
        let mut ipam = ipam("10.1.0.0/24");
        ipam.claim(Ipv4Addr::new(10, 1, 0, 7), "a").unwrap();
        assert!(ipam.claim(Ipv4Addr::new(10, 1, 0, 7), "b").unwrap_err().contains("already held by a"));
        assert!(ipam.claim(Ipv4Addr::new(10, 1, 0, 1), "b").unwrap_err().contains("not a container address"));
        assert!(ipam.claim(Ipv4Addr::new(10, 2, 0, 9), "b").unwrap_err().contains("not a container address"));
        assert_eq!(ipam.allocate("c").unwrap(), Ipv4Addr::new(10, 1, 0, 8), "continues after the claims");
    }
}
