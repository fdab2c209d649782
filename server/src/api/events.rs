//! The Events RPC: the kept events since a time (when asked), then live ones, through the request's filters.

use std::sync::Arc;

use cm_api::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::{RpcStream, timestamp};
use crate::events::{Event, Events, Filter, Lagged, SUBSCRIBER_QUEUE};

pub fn events(hub: &Events, request: pb::EventsRequest) -> Result<RpcStream<pb::EventsResponse>, Status> {
    let filter = Filter::parse(&request.filters).map_err(Status::invalid_argument)?;
    let since = request.since.map(|t| t.seconds.saturating_mul(1_000_000_000).saturating_add(t.nanos as i64));
    let mut subscription = hub.subscribe(since);
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                next = subscription.next() => next,
                _ = tx.closed() => return,
            };
            let message = match next {
                None => return,
                Some(Ok(event)) if !filter.matches(&event) => continue,
                Some(Ok(event)) => Ok(to_proto(&event)),
                Some(Err(Lagged { missed })) => Err(Status::resource_exhausted(format!(
                    "this client fell more than {SUBSCRIBER_QUEUE} events behind and {missed} events were dropped \
                     for it; call Events again with since = the time of the last event received"
                ))),
            };
            let failed = message.is_err();
            if tx.send(message).await.is_err() || failed {
                return;
            }
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

fn to_proto(event: &Arc<Event>) -> pb::EventsResponse {
    pb::EventsResponse {
        time: timestamp(event.unix_nanos),
        r#type: event.kind.to_string(),
        action: event.action.to_string(),
        id: event.id.clone(),
        attributes: event.attributes.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    }
}
