//! `events`: the server's lifecycle events as they happen (after the kept ones since a time, when asked), one
//! line each, until interrupted.

use std::io::Write;

use cm_api::v1 as pb;
use serde_json::json;

use crate::connect::Client;
use crate::error::status_error;
use crate::format::rfc3339;
use crate::parse;

/// What `events` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `TIME TYPE ACTION ID (key=value, ...)`, as docker events.
    Text,
    /// One JSON object per event.
    Json,
}

#[derive(clap::Args, Debug)]
pub struct EventsArgs {
    /// Only events matching KEY=VALUE; keys: type (container, exec, image), action, id, container, image. The
    /// same key twice: either; different keys: both.
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    filter: Vec<String>,
    /// First the events kept since a time (RFC 3339, a duration ago like 10m, or unix seconds); the server keeps
    /// the last 1000.
    #[arg(long, value_name = "TIME", value_parser = parse::parse_since_now)]
    since: Option<prost_types::Timestamp>,
    /// Output: text lines, or json (one object per line).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// `events`: prints until the stream ends.
pub async fn events(client: &mut Client, args: EventsArgs) -> anyhow::Result<i32> {
    let EventsArgs { filter: filters, since, format } = args;
    let mut stream = client.events(pb::EventsRequest { since, filters }).await.map_err(status_error)?.into_inner();
    let mut out = std::io::stdout();
    while let Some(event) = stream.message().await.map_err(status_error)? {
        let line = match format {
            Format::Text => text_line(&event),
            Format::Json => json_line(&event),
        };
        writeln!(out, "{line}")?;
        out.flush()?;
    }
    Ok(0)
}

fn time(event: &pb::EventsResponse) -> String {
    event.time.as_ref().map(rfc3339).unwrap_or_default()
}

/// `2024-05-01T10:00:00.5Z container die 3f2a... (exitCode=0, image=busybox, name=web)`, attributes sorted.
pub fn text_line(event: &pb::EventsResponse) -> String {
    let mut attributes: Vec<(&String, &String)> = event.attributes.iter().collect();
    attributes.sort();
    let attributes: Vec<String> = attributes.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut line = format!("{} {} {} {}", time(event), event.r#type, event.action, event.id);
    if !attributes.is_empty() {
        line.push_str(&format!(" ({})", attributes.join(", ")));
    }
    line
}

/// `{"time": ..., "type": ..., "action": ..., "id": ..., "attributes": {...}}`.
pub fn json_line(event: &pb::EventsResponse) -> String {
    let attributes: serde_json::Map<String, serde_json::Value> =
        event.attributes.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    json!({
        "time": time(event),
        "type": event.r#type,
        "action": event.action,
        "id": event.id,
        "attributes": attributes,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> pb::EventsResponse {
        pb::EventsResponse {
            time: Some(prost_types::Timestamp { seconds: 1_714_557_600, nanos: 500_000_000 }),
            r#type: "container".into(),
            action: "die".into(),
            id: "abc".into(),
            attributes: [("name", "web"), ("exitCode", "0")].map(|(k, v)| (k.to_string(), v.to_string())).into(),
        }
    }

    #[test]
    fn text_lines_read_like_docker_events() {
        assert_eq!(text_line(&event()), "2024-05-01T10:00:00.5Z container die abc (exitCode=0, name=web)");
        let bare = pb::EventsResponse { attributes: Default::default(), ..event() };
        assert_eq!(text_line(&bare), "2024-05-01T10:00:00.5Z container die abc");
    }

    #[test]
    fn json_lines_parse_back() {
        let value: serde_json::Value = serde_json::from_str(&json_line(&event())).unwrap();
        assert_eq!(value["action"], "die");
        assert_eq!(value["attributes"]["exitCode"], "0");
        assert_eq!(value["time"], "2024-05-01T10:00:00.5Z");
    }
}
