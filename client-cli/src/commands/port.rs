//! `port`: a container's published ports.

use anyhow::bail;
use cm_api::v1 as pb;

use crate::connect::Client;
use crate::error::status_error;
use crate::format::{host_address, protocol};

#[derive(clap::Args, Debug)]
pub struct PortArgs {
    /// Container id, id prefix or name.
    container: String,
    /// Only this container port, e.g. 80 or 53/udp.
    #[arg(value_name = "PRIVATE_PORT[/PROTO]")]
    port: Option<String>,
}

/// `port CONTAINER [PRIVATE_PORT[/PROTO]]`: "80/tcp -> 0.0.0.0:32768" lines, or the addresses of one port.
pub async fn port(client: &mut Client, args: PortArgs) -> anyhow::Result<i32> {
    let PortArgs { container, port: filter } = args;
    let request = pb::InspectRequest { container: container.clone() };
    let c = client.inspect(request).await.map_err(status_error)?.into_inner().container.unwrap_or_default();
    let bound = c.ports.iter().filter(|p| p.host_port != 0);
    let Some(filter) = filter else {
        for p in bound {
            println!("{}/{} -> {}", p.container_port, protocol(p), host_address(p));
        }
        return Ok(0);
    };
    let (port, proto) = filter.split_once('/').unwrap_or((&filter, "tcp"));
    let matching: Vec<_> =
        bound.filter(|p| p.container_port.to_string() == port && protocol(p).eq_ignore_ascii_case(proto)).collect();
    if matching.is_empty() {
        bail!("no public port '{port}/{proto}' published for {container}");
    }
    for p in matching {
        println!("{}", host_address(p));
    }
    Ok(0)
}
