//! Bounds on every request field of cm.v1: counts and sizes, checked before anything else looks at a request.
//! A request past a bound is INVALID_ARGUMENT naming the field and the limit (and the size it had, never its
//! content). The process limits (argv and env) sit under Linux's own (MAX_ARG_STRLEN 128 KiB a string, ARG_MAX
//! 2 MiB by default) and under the monitor's frame limit, so an Exec the API accepts always reaches the monitor.

use cm_api::v1 as pb;
use tonic::Status;

use crate::containers::MAX_STDIN_FRAME;
use crate::runtime::protocol::MAX_FRAME;

/// A container id, id prefix or name in a request.
pub const MAX_CONTAINER_REF: usize = 256;
/// A container's name.
pub const MAX_NAME: usize = 253;
/// An image reference or id.
pub const MAX_IMAGE_REF: usize = 1024;
/// One argument or environment entry (Linux's MAX_ARG_STRLEN).
pub const MAX_ARG: usize = 128 << 10;
/// Arguments (entrypoint and command, or argv) of one process.
pub const MAX_ARGS: usize = 4096;
/// Environment entries of one request.
pub const MAX_ENV: usize = 4096;
/// All argument and environment bytes of one request together.
pub const MAX_PROCESS_BYTES: usize = 1 << 20;
/// A path (working directory, mount source or target; Linux's PATH_MAX).
pub const MAX_PATH: usize = 4096;
/// A `user[:group]`, a hostname, a signal, an exec id, a mount type or port protocol, an IP address.
pub const MAX_SHORT: usize = 256;
/// Labels of one container, and the bytes of one label's key and value.
pub const MAX_LABELS: usize = 256;
pub const MAX_LABEL_KEY: usize = 256;
pub const MAX_LABEL_VALUE: usize = 4096;
/// Mounts and published ports of one container.
pub const MAX_MOUNTS: usize = 128;
pub const MAX_PORTS: usize = 1024;
/// Registry credentials (a token can be a long JWT).
pub const MAX_CREDENTIAL: usize = 64 << 10;
/// Containers named by one Stats call, filters of one Events call and the bytes of one filter.
pub const MAX_STATS_CONTAINERS: usize = 1024;
pub const MAX_FILTERS: usize = 64;
pub const MAX_FILTER: usize = 1024;

// JSON escapes a control byte as 6 bytes: the largest process the API takes still fits a monitor frame.
const _: () = assert!(6 * MAX_PROCESS_BYTES + 64 * 1024 < MAX_FRAME);
const _: () = assert!(MAX_STDIN_FRAME <= MAX_FRAME);

fn too_long(field: &str, len: usize, limit: usize) -> Status {
    Status::invalid_argument(format!("{field} is {len} bytes, longer than the limit of {limit}"))
}

fn too_many(field: &str, count: usize, limit: usize) -> Status {
    Status::invalid_argument(format!("{field} has {count} entries, more than the limit of {limit}"))
}

fn text(field: &str, value: &str, limit: usize) -> Result<(), Status> {
    if value.len() > limit { Err(too_long(field, value.len(), limit)) } else { Ok(()) }
}

fn list<'a>(
    field: &str,
    values: impl ExactSizeIterator<Item = &'a String>,
    count: usize,
    each: usize,
) -> Result<(), Status> {
    if values.len() > count {
        return Err(too_many(field, values.len(), count));
    }
    for (i, v) in values.enumerate() {
        if v.len() > each {
            return Err(too_long(&format!("{field}[{i}]"), v.len(), each));
        }
    }
    Ok(())
}

/// Arguments and environment of one process: counts, each entry, and their bytes together.
fn process(prefix: &str, args: &[(&str, &[String])], env: &[String]) -> Result<(), Status> {
    for (field, values) in args {
        list(&format!("{prefix}{field}"), values.iter(), MAX_ARGS, MAX_ARG)?;
    }
    list(&format!("{prefix}env"), env.iter(), MAX_ENV, MAX_ARG)?;
    let total: usize = args.iter().flat_map(|(_, v)| v.iter()).chain(env).map(String::len).sum();
    if total > MAX_PROCESS_BYTES {
        let fields: Vec<String> = args.iter().map(|(f, _)| format!("{prefix}{f}")).collect();
        return Err(Status::invalid_argument(format!(
            "{} and {prefix}env are {total} bytes together, more than the limit of {MAX_PROCESS_BYTES}",
            fields.join(", ")
        )));
    }
    Ok(())
}

/// A request message whose fields are bounded.
pub trait Bounded {
    /// INVALID_ARGUMENT naming the first field past its bound.
    fn check_bounds(&self) -> Result<(), Status>;
}

impl Bounded for pb::ContainerSpec {
    fn check_bounds(&self) -> Result<(), Status> {
        text("spec.image", &self.image, MAX_IMAGE_REF)?;
        text("spec.name", &self.name, MAX_NAME)?;
        process("spec.", &[("entrypoint", &self.entrypoint), ("command", &self.command)], &self.env)?;
        text("spec.workdir", &self.workdir, MAX_PATH)?;
        text("spec.user", &self.user, MAX_SHORT)?;
        text("spec.hostname", &self.hostname, MAX_SHORT)?;
        text("spec.stop_signal", &self.stop_signal, MAX_SHORT)?;
        if self.ports.len() > MAX_PORTS {
            return Err(too_many("spec.ports", self.ports.len(), MAX_PORTS));
        }
        for (i, p) in self.ports.iter().enumerate() {
            text(&format!("spec.ports[{i}].host_ip"), &p.host_ip, MAX_SHORT)?;
            text(&format!("spec.ports[{i}].protocol"), &p.protocol, MAX_SHORT)?;
        }
        if self.mounts.len() > MAX_MOUNTS {
            return Err(too_many("spec.mounts", self.mounts.len(), MAX_MOUNTS));
        }
        for (i, m) in self.mounts.iter().enumerate() {
            text(&format!("spec.mounts[{i}].type"), &m.r#type, MAX_SHORT)?;
            text(&format!("spec.mounts[{i}].source"), &m.source, MAX_PATH)?;
            text(&format!("spec.mounts[{i}].target"), &m.target, MAX_PATH)?;
        }
        if self.labels.len() > MAX_LABELS {
            return Err(too_many("spec.labels", self.labels.len(), MAX_LABELS));
        }
        for (k, v) in &self.labels {
            if k.len() > MAX_LABEL_KEY {
                return Err(too_long("a key of spec.labels", k.len(), MAX_LABEL_KEY));
            }
            text(&format!("spec.labels[{k:?}]"), v, MAX_LABEL_VALUE)?;
        }
        Ok(())
    }
}

fn spec(spec: &Option<pb::ContainerSpec>) -> Result<(), Status> {
    spec.as_ref().map_or(Ok(()), Bounded::check_bounds)
}

impl Bounded for pb::CreateRequest {
    fn check_bounds(&self) -> Result<(), Status> {
        spec(&self.spec)
    }
}

impl Bounded for pb::RunRequest {
    fn check_bounds(&self) -> Result<(), Status> {
        spec(&self.spec)
    }
}

impl Bounded for pb::PullImageRequest {
    fn check_bounds(&self) -> Result<(), Status> {
        text("reference", &self.reference, MAX_IMAGE_REF)?;
        if let Some(auth) = &self.auth {
            text("auth.username", &auth.username, MAX_CREDENTIAL)?;
            text("auth.password", &auth.password, MAX_CREDENTIAL)?;
        }
        Ok(())
    }
}

impl Bounded for pb::InspectImageRequest {
    fn check_bounds(&self) -> Result<(), Status> {
        text("image", &self.image, MAX_IMAGE_REF)
    }
}

impl Bounded for pb::RemoveImageRequest {
    fn check_bounds(&self) -> Result<(), Status> {
        text("image", &self.image, MAX_IMAGE_REF)
    }
}

/// Requests that name a container and nothing unbounded else.
macro_rules! names_a_container {
    ($($t:ty),*) => {$(
        impl Bounded for $t {
            fn check_bounds(&self) -> Result<(), Status> {
                text("container", &self.container, MAX_CONTAINER_REF)
            }
        }
    )*};
}
names_a_container!(pb::StartRequest, pb::StopRequest, pb::RemoveRequest, pb::InspectRequest, pb::LogsRequest);

impl Bounded for pb::WaitRequest {
    fn check_bounds(&self) -> Result<(), Status> {
        text("container", &self.container, MAX_CONTAINER_REF)?;
        text("exec_id", &self.exec_id, MAX_SHORT)
    }
}

impl Bounded for pb::KillRequest {
    fn check_bounds(&self) -> Result<(), Status> {
        text("container", &self.container, MAX_CONTAINER_REF)?;
        text("signal", &self.signal, MAX_SHORT)?;
        text("exec_id", &self.exec_id, MAX_SHORT)
    }
}

impl Bounded for pb::StatsRequest {
    fn check_bounds(&self) -> Result<(), Status> {
        list("containers", self.containers.iter(), MAX_STATS_CONTAINERS, MAX_CONTAINER_REF)
    }
}

impl Bounded for pb::EventsRequest {
    fn check_bounds(&self) -> Result<(), Status> {
        list("filters", self.filters.iter(), MAX_FILTERS, MAX_FILTER)
    }
}

impl Bounded for pb::AttachStart {
    fn check_bounds(&self) -> Result<(), Status> {
        text("start.container", &self.container, MAX_CONTAINER_REF)
    }
}

impl Bounded for pb::ExecStart {
    fn check_bounds(&self) -> Result<(), Status> {
        text("start.container", &self.container, MAX_CONTAINER_REF)?;
        process("start.", &[("argv", &self.argv)], &self.env)?;
        text("start.workdir", &self.workdir, MAX_PATH)?;
        text("start.user", &self.user, MAX_SHORT)?;
        text("start.exec_id", &self.exec_id, MAX_SHORT)
    }
}

/// A signal frame of an Attach or Exec stream (the stdin frames are bounded by the session).
pub fn signal_frame(signal: &str) -> Result<(), String> {
    if signal.len() > MAX_SHORT {
        return Err(format!("signal is {} bytes, longer than the limit of {MAX_SHORT}", signal.len()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> pb::ContainerSpec {
        pb::ContainerSpec { image: "busybox".into(), ..Default::default() }
    }

    fn refused(r: Result<(), Status>) -> String {
        let status = r.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().len() < 200, "the message stays short: {}", status.message());
        status.message().to_string()
    }

    #[test]
    fn counts_are_bounded_and_named_with_their_limit() {
        assert!(spec().check_bounds().is_ok());
        let env = pb::ContainerSpec { env: vec!["A=b".into(); 100_000], ..spec() };
        assert_eq!(refused(env.check_bounds()), "spec.env has 100000 entries, more than the limit of 4096");
        let ports = pb::ContainerSpec { ports: vec![pb::PortMapping::default(); MAX_PORTS + 1], ..spec() };
        assert!(refused(ports.check_bounds()).starts_with("spec.ports has 1025 entries"));
        let mounts = pb::ContainerSpec { mounts: vec![pb::Mount::default(); MAX_MOUNTS + 1], ..spec() };
        assert!(refused(mounts.check_bounds()).starts_with("spec.mounts has"));
        let labels = (0..=MAX_LABELS).map(|i| (i.to_string(), String::new())).collect();
        assert!(refused(pb::ContainerSpec { labels, ..spec() }.check_bounds()).starts_with("spec.labels has"));
        let filters = pb::EventsRequest { filters: vec!["type=image".into(); MAX_FILTERS + 1], ..Default::default() };
        assert!(refused(filters.check_bounds()).starts_with("filters has"));
    }

    #[test]
    fn sizes_are_bounded_without_echoing_the_input() {
        let big = "x".repeat(1 << 20);
        let name = pb::ContainerSpec { name: big.clone(), ..spec() };
        assert_eq!(refused(name.check_bounds()), "spec.name is 1048576 bytes, longer than the limit of 253");
        let env = pb::ContainerSpec { env: vec!["A=b".into(), format!("B={big}")], ..spec() };
        assert!(refused(env.check_bounds()).starts_with("spec.env[1] is 1048578 bytes"));
        let label = pb::ContainerSpec { labels: [(big.clone(), String::new())].into(), ..spec() };
        assert!(refused(label.check_bounds()).starts_with("a key of spec.labels is"));
        let start = pb::ExecStart { container: big.clone(), ..Default::default() };
        assert!(refused(start.check_bounds()).starts_with("start.container is"));
        let kill = pb::KillRequest { signal: big.clone(), ..Default::default() };
        assert!(refused(kill.check_bounds()).starts_with("signal is"));
        assert!(signal_frame(&big).is_err() && signal_frame("SIGTERM").is_ok());
    }

    #[test]
    fn a_process_is_bounded_as_a_whole() {
        let entry = format!("A={}", "x".repeat(100 << 10));
        let start = pb::ExecStart { env: vec![entry.clone(); 9], argv: vec![entry.clone(); 2], ..Default::default() };
        let message = refused(start.check_bounds());
        assert!(message.starts_with("start.argv and start.env are 1126422 bytes together"), "{message}");
        assert!(message.ends_with("the limit of 1048576"), "{message}");
        let start = pb::ExecStart { env: vec![entry; 9], argv: vec!["sh".into()], ..Default::default() };
        assert!(start.check_bounds().is_ok());
    }

    #[test]
    fn the_largest_accepted_exec_fits_a_monitor_frame() {
        use crate::runtime::bundle::{ExecSpec, Process};
        use crate::runtime::protocol::{Decoder, ToMonitor};
        // Control bytes are the worst case of JSON escaping.
        let entry = format!("A={}", "\u{1}".repeat(MAX_ARG - 2));
        let n = MAX_PROCESS_BYTES / MAX_ARG;
        let start = pb::ExecStart { env: vec![entry; n], argv: vec![], ..Default::default() };
        assert!(start.check_bounds().is_ok());
        let process = Process { env: start.env.clone(), ..Default::default() };
        let frame = ToMonitor::Exec(ExecSpec { exec_id: "e".into(), process, ..Default::default() }).encode().unwrap();
        let mut decoder = Decoder::default();
        decoder.push(&frame);
        assert!(matches!(decoder.next_to_monitor(), Ok(Some(ToMonitor::Exec(_)))));
    }
}
