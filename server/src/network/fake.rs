//! A network driver for tests: addresses from a small pool, no links or rules, every call recorded, failures
//! on demand.

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Mutex;

use super::driver::{Attachment, BoxFuture, Endpoint, NetworkDriver};
use super::{NetError, PortConfig};

/// What the driver was asked, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Allocate(String),
    Claim(String, Ipv4Addr),
    Release(String),
    Attach { id: String, pid: i32, address: Option<Ipv4Addr>, ports: Vec<PortConfig> },
    Detach(String),
    Readopt { id: String, address: Option<Ipv4Addr>, ports: Vec<PortConfig> },
    Reconcile(Vec<String>),
}

pub struct FakeNetwork {
    name: String,
    publishes: bool,
    /// The pool: 10.99.0.2 up to 10.99.0.(1 + size).
    size: u8,
    held: Mutex<BTreeMap<String, Ipv4Addr>>,
    calls: Mutex<Vec<Call>>,
    /// Make attach fail with this.
    attach_error: Mutex<Option<String>>,
}

impl FakeNetwork {
    /// A network named `name` with `size` addresses that publishes ports if `publishes`.
    pub fn new(name: &str, size: u8, publishes: bool) -> FakeNetwork {
        FakeNetwork {
            name: name.to_string(),
            publishes,
            size,
            held: Mutex::default(),
            calls: Mutex::default(),
            attach_error: Mutex::default(),
        }
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// The address `id` holds.
    pub fn held(&self, id: &str) -> Option<Ipv4Addr> {
        self.held.lock().unwrap().get(id).copied()
    }

    /// Makes attach fail with `message` (None: succeed again).
    pub fn fail_attach(&self, message: Option<&str>) {
        *self.attach_error.lock().unwrap() = message.map(String::from);
    }

    fn record(&self, call: Call) {
        self.calls.lock().unwrap().push(call);
    }

    fn in_pool(&self, address: Ipv4Addr) -> bool {
        let [a, b, c, d] = address.octets();
        (a, b, c) == (10, 99, 0) && (2..2 + u16::from(self.size)).contains(&u16::from(d))
    }
}

impl NetworkDriver for FakeNetwork {
    fn name(&self) -> &str {
        &self.name
    }

    fn publishes_ports(&self) -> bool {
        self.publishes
    }

    fn allocate(&self, id: &str) -> Result<Option<Ipv4Addr>, NetError> {
        self.record(Call::Allocate(id.to_string()));
        let mut held = self.held.lock().unwrap();
        if let Some(address) = held.get(id) {
            return Ok(Some(*address));
        }
        let free = (2..2 + self.size)
            .map(|d| Ipv4Addr::new(10, 99, 0, d))
            .find(|a| !held.values().any(|h| h == a))
            .ok_or_else(|| NetError::Unavailable(format!("no free address left on {}", self.name)))?;
        held.insert(id.to_string(), free);
        Ok(Some(free))
    }

    fn claim(&self, id: &str, address: Ipv4Addr) -> Result<(), NetError> {
        self.record(Call::Claim(id.to_string(), address));
        let mut held = self.held.lock().unwrap();
        if !self.in_pool(address) || held.iter().any(|(other, a)| *a == address && other != id) {
            return Err(NetError::Unavailable(format!("{address} is not free")));
        }
        held.insert(id.to_string(), address);
        Ok(())
    }

    fn release(&self, id: &str) {
        self.record(Call::Release(id.to_string()));
        self.held.lock().unwrap().remove(id);
    }

    fn attach<'a>(&'a self, endpoint: Endpoint<'a>) -> BoxFuture<'a, Result<Attachment, NetError>> {
        self.record(Call::Attach {
            id: endpoint.id.to_string(),
            pid: endpoint.pid,
            address: endpoint.address,
            ports: endpoint.ports.to_vec(),
        });
        let result = match self.attach_error.lock().unwrap().clone() {
            Some(message) => Err(NetError::System(anyhow::anyhow!(message))),
            None => Ok(Attachment { ports: endpoint.ports.to_vec() }),
        };
        Box::pin(std::future::ready(result))
    }

    fn detach<'a>(&'a self, id: &'a str) -> BoxFuture<'a, ()> {
        self.record(Call::Detach(id.to_string()));
        Box::pin(std::future::ready(()))
    }

    fn readopt<'a>(&'a self, endpoint: Endpoint<'a>) -> BoxFuture<'a, ()> {
        self.record(Call::Readopt {
            id: endpoint.id.to_string(),
            address: endpoint.address,
            ports: endpoint.ports.to_vec(),
        });
        Box::pin(std::future::ready(()))
    }

    fn reconcile<'a>(&'a self, running: &'a HashSet<String>) -> BoxFuture<'a, Result<(), NetError>> {
        let mut running: Vec<String> = running.iter().cloned().collect();
        running.sort();
        self.record(Call::Reconcile(running));
        Box::pin(std::future::ready(Ok(())))
    }
}
