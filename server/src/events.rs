//! Lifecycle events (container create/start/kill/stop/oom/die/destroy, exec start/die, image pull/untag/delete):
//! published by the domain as things happen, kept in a bounded in-memory ring for replays (`since`), and
//! broadcast to live subscribers.
//!
//! Publishing never waits for subscribers: each has a bounded queue ([`SUBSCRIBER_QUEUE`] events); one that
//! falls further behind is told so ([`Subscription::next`] returns [`Lagged`]) instead of slowing the server.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::clock::now_nanos;

/// Events kept for replays: the last 1000, whatever their age (nothing survives a server restart).
pub const KEPT: usize = 1000;
/// Events a live subscriber may fall behind before it is cut off.
pub const SUBSCRIBER_QUEUE: usize = 1024;

/// One event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Unix time in ns; never earlier than the event before it.
    pub unix_nanos: i64,
    /// "container", "exec" or "image".
    pub kind: &'static str,
    /// "create", "start", "kill", "stop", "oom", "die", "destroy", "exec_start", "exec_die", "pull", "untag",
    /// "delete".
    pub action: &'static str,
    /// Container id, exec id, or image reference or id.
    pub id: String,
    pub attributes: BTreeMap<String, String>,
}

impl Event {
    /// An event to publish (its time is set when it is published).
    pub fn new(kind: &'static str, action: &'static str, id: impl Into<String>) -> Event {
        Event { unix_nanos: 0, kind, action, id: id.into(), attributes: BTreeMap::new() }
    }

    /// Adds an attribute; empty values are left out.
    pub fn with(mut self, key: &str, value: impl Into<String>) -> Event {
        let value = value.into();
        if !value.is_empty() {
            self.attributes.insert(key.to_string(), value);
        }
        self
    }
}

/// The event hub of a server.
pub struct Events {
    ring: Mutex<VecDeque<Arc<Event>>>,
    live: broadcast::Sender<Arc<Event>>,
}

/// A subscriber fell more than [`SUBSCRIBER_QUEUE`] events behind; `missed` events were dropped for it.
#[derive(Debug, PartialEq, Eq)]
pub struct Lagged {
    pub missed: u64,
}

/// Past events (for `since`) and the live ones after them, with neither gaps nor repeats between the two.
pub struct Subscription {
    past: VecDeque<Arc<Event>>,
    live: broadcast::Receiver<Arc<Event>>,
}

impl Subscription {
    /// The next event: the replayed ones first, then live ones as they are published. None when the hub is
    /// gone.
    pub async fn next(&mut self) -> Option<Result<Arc<Event>, Lagged>> {
        if let Some(event) = self.past.pop_front() {
            return Some(Ok(event));
        }
        match self.live.recv().await {
            Ok(event) => Some(Ok(event)),
            Err(broadcast::error::RecvError::Lagged(missed)) => Some(Err(Lagged { missed })),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

impl Default for Events {
    fn default() -> Self {
        Events { ring: Mutex::new(VecDeque::with_capacity(KEPT)), live: broadcast::channel(SUBSCRIBER_QUEUE).0 }
    }
}

impl Events {
    /// Stamps the event with the time and hands it to the ring and every subscriber. Never blocks.
    pub fn publish(&self, mut event: Event) {
        let mut ring = self.ring.lock().unwrap();
        event.unix_nanos = now_nanos().max(ring.back().map_or(0, |e| e.unix_nanos));
        tracing::debug!(kind = event.kind, action = event.action, id = %event.id, "event");
        let event = Arc::new(event);
        if ring.len() == KEPT {
            ring.pop_front();
        }
        ring.push_back(event.clone());
        // No subscriber is fine.
        let _ = self.live.send(event);
    }

    /// Subscribes to the events published from now on, preceded by the kept ones at or after `since` (unix ns)
    /// when given.
    pub fn subscribe(&self, since: Option<i64>) -> Subscription {
        // Under the ring's lock: no event can be published between the snapshot and the subscription.
        let ring = self.ring.lock().unwrap();
        let past = match since {
            Some(since) => ring.iter().filter(|e| e.unix_nanos >= since).cloned().collect(),
            None => VecDeque::new(),
        };
        Subscription { past, live: self.live.subscribe() }
    }
}

/// The filter keys Events understands.
pub const FILTER_KEYS: &[&str] = &["type", "action", "id", "container", "image"];
const TYPES: &[&str] = &["container", "exec", "image"];

/// Event filters, docker's rules: values of the same key are alternatives (any may match), different keys must
/// all match.
#[derive(Debug, Default)]
pub struct Filter {
    by_key: BTreeMap<&'static str, Vec<String>>,
}

impl Filter {
    /// Parses "key=value" filters. Keys: type (container, exec or image), action, id (an event's id or a
    /// prefix of it), container (a container's name, id or id prefix: its container and exec events), image
    /// (the image reference or id: image events and the events of containers created from it).
    pub fn parse(filters: &[String]) -> Result<Filter, String> {
        let mut filter = Filter::default();
        for text in filters {
            let Some((key, value)) = text.split_once('=') else {
                return Err(format!("filter {text:?} is not key=value (keys: {})", FILTER_KEYS.join(", ")));
            };
            let key = key.trim();
            let Some(key) = FILTER_KEYS.iter().copied().find(|k| *k == key) else {
                return Err(format!("unknown filter key {key:?}: use one of {}", FILTER_KEYS.join(", ")));
            };
            if value.is_empty() {
                return Err(format!("filter {text:?} has no value"));
            }
            if key == "type" && !TYPES.contains(&value) {
                return Err(format!(
                    "unknown event type {value:?} in filter {text:?}: use one of {}",
                    TYPES.join(", ")
                ));
            }
            filter.by_key.entry(key).or_default().push(value.to_string());
        }
        Ok(filter)
    }

    pub fn matches(&self, event: &Event) -> bool {
        self.by_key.iter().all(|(key, values)| values.iter().any(|value| matches_one(key, value, event)))
    }
}

fn matches_one(key: &str, value: &str, event: &Event) -> bool {
    let attribute = |name: &str| event.attributes.get(name).map(String::as_str);
    match key {
        "type" => event.kind == value,
        "action" => event.action == value,
        "id" => event.id.starts_with(value),
        "container" => {
            let id = match event.kind {
                "container" => Some(event.id.as_str()),
                "exec" => attribute("container"),
                _ => None,
            };
            id.is_some_and(|id| id.starts_with(value)) || (event.kind != "image" && attribute("name") == Some(value))
        }
        "image" => match event.kind {
            "image" => event.id == value || attribute("imageID") == Some(value) || attribute("name") == Some(value),
            _ => attribute("image") == Some(value) || attribute("imageID") == Some(value),
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(action: &'static str, id: &str, name: &str) -> Event {
        Event::new("container", action, id).with("name", name).with("image", "busybox")
    }

    async fn actions(s: &mut Subscription, n: usize) -> Vec<&'static str> {
        let mut got = Vec::new();
        for _ in 0..n {
            got.push(s.next().await.unwrap().unwrap().action);
        }
        got
    }

    #[tokio::test]
    async fn subscribers_get_replayed_events_then_live_ones_in_order() {
        let events = Events::default();
        events.publish(container("create", "aaa", "web"));
        events.publish(container("start", "aaa", "web"));
        let since = events.ring.lock().unwrap().back().unwrap().unix_nanos;
        let mut everything = events.subscribe(Some(0));
        let mut from_start = events.subscribe(Some(since));
        let mut live = events.subscribe(None);
        events.publish(container("die", "aaa", "web").with("exitCode", "0"));
        assert_eq!(actions(&mut everything, 3).await, ["create", "start", "die"]);
        assert_eq!(actions(&mut from_start, 2).await, ["start", "die"]);
        assert_eq!(actions(&mut live, 1).await, ["die"]);
        let times: Vec<i64> = events.ring.lock().unwrap().iter().map(|e| e.unix_nanos).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]) && times[0] > 0, "{times:?}");
    }

    #[tokio::test]
    async fn the_ring_keeps_the_last_events_only() {
        let events = Events::default();
        for i in 0..KEPT + 5 {
            events.publish(Event::new("image", "pull", format!("img{i}")));
        }
        let mut replay = events.subscribe(Some(0));
        let first = replay.next().await.unwrap().unwrap();
        assert_eq!(first.id, "img5");
        assert_eq!(replay.past.len(), KEPT - 1);
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_too_far_behind_is_told_how_much_it_missed() {
        let events = Events::default();
        let mut slow = events.subscribe(None);
        for i in 0..SUBSCRIBER_QUEUE + 10 {
            events.publish(Event::new("image", "pull", format!("img{i}")));
        }
        assert_eq!(slow.next().await.unwrap(), Err(Lagged { missed: 10 }));
    }

    #[test]
    fn filters_of_one_key_are_alternatives_and_different_keys_must_all_match() {
        let filter = Filter::parse(&["type=container".into(), "action=start".into(), "action=die".into()]).unwrap();
        assert!(filter.matches(&container("start", "aaa", "web")));
        assert!(filter.matches(&container("die", "aaa", "web")));
        assert!(!filter.matches(&container("create", "aaa", "web")));
        assert!(!filter.matches(&Event::new("exec", "exec_die", "e1").with("container", "aaa")));
        assert!(Filter::parse(&[]).unwrap().matches(&container("create", "aaa", "web")));
    }

    #[test]
    fn container_filter_matches_name_id_prefix_and_the_containers_execs() {
        let by_name = Filter::parse(&["container=web".into()]).unwrap();
        let by_prefix = Filter::parse(&["container=aa".into()]).unwrap();
        let exec = Event::new("exec", "exec_start", "e1").with("container", "aaa").with("name", "web");
        for filter in [&by_name, &by_prefix] {
            assert!(filter.matches(&container("create", "aaa", "web")));
            assert!(filter.matches(&exec));
            assert!(!filter.matches(&container("create", "bbb", "db")));
        }
        assert!(!by_prefix.matches(&Event::new("image", "pull", "aa")), "image events have no container");
        let id = Filter::parse(&["id=e".into()]).unwrap();
        assert!(id.matches(&exec) && !id.matches(&container("create", "aaa", "web")));
        let image = Filter::parse(&["image=busybox".into()]).unwrap();
        assert!(image.matches(&container("create", "aaa", "web")));
        assert!(image.matches(&Event::new("image", "pull", "busybox")));
        assert!(!image.matches(&Event::new("image", "pull", "alpine")));
    }

    #[test]
    fn bad_filters_are_refused_naming_the_key_or_value() {
        let err = Filter::parse(&["colour=red".into()]).unwrap_err();
        assert!(err.contains("\"colour\"") && err.contains("type, action, id, container, image"), "{err}");
        assert!(Filter::parse(&["type".into()]).unwrap_err().contains("key=value"));
        assert!(Filter::parse(&["type=volume".into()]).unwrap_err().contains("\"volume\""));
        assert!(Filter::parse(&["id=".into()]).unwrap_err().contains("no value"));
    }
}
