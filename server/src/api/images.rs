//! Image RPCs: PullImage streaming, ListImages, InspectImage, RemoveImage.

use std::sync::Arc;

use cm_api::v1 as pb;
use oci_client::secrets::RegistryAuth;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Response, Status};

use super::RpcStream;
use crate::events::{Event, Events};
use crate::image::{ImageError, ImageRecord, ImageStore, Phase, Pull, PullEvent, Reference, RegistryOptions};

/// Starts a pull and streams its progress. The pull runs in its own task; if the client goes away the pull
/// is cancelled and whatever it had stored but not yet recorded is garbage-collected.
pub fn pull(
    store: Arc<ImageStore>,
    registry: &RegistryOptions,
    request: pb::PullImageRequest,
    events: Arc<Events>,
) -> Result<Response<RpcStream<pb::PullImageResponse>>, Status> {
    let reference = Reference::parse(request.reference.trim()).map_err(ImageError::from)?;
    let auth = match request.auth {
        Some(a) if !a.username.is_empty() => RegistryAuth::Basic(a.username, a.password),
        _ => RegistryAuth::Anonymous,
    };
    let (out_tx, out_rx) = mpsc::channel(64);
    let (events_tx, mut events_rx) = mpsc::channel(64);
    let name = reference.to_string();
    tracing::info!(reference = %name, "pull started");
    let pull = Pull::new(store.clone(), registry, reference, auth, events_tx)?;
    tokio::spawn(async move {
        let mut task = tokio::spawn(pull.run());
        // Forward progress until the pull stops sending (it has finished) or the client is gone.
        let client_gone = loop {
            tokio::select! {
                event = events_rx.recv() => match event {
                    Some(event) => if out_tx.send(Ok(event_to_proto(event))).await.is_err() { break true },
                    None => break false,
                },
                _ = out_tx.closed() => break true,
            }
        };
        if client_gone {
            task.abort();
            let _ = (&mut task).await;
            tracing::info!(reference = %name, "pull cancelled: the client went away");
            collect_garbage(store).await;
            return;
        }
        let result = match task.await {
            Ok(r) => r,
            Err(source) => Err(ImageError::Task { what: "pull task failed", source }),
        };
        match result {
            Ok(done) => {
                tracing::info!(reference = %name, image = %done.image_id, bytes = done.downloaded_bytes, "pull done");
                events.publish(
                    Event::new("image", "pull", &done.reference)
                        .with("name", &done.reference)
                        .with("imageID", &done.image_id),
                );
                let _ = out_tx
                    .send(Ok(pb::PullImageResponse {
                        event: Some(pb::pull_image_response::Event::Done(pb::PullDone {
                            image_id: done.image_id,
                            reference: done.reference,
                            manifest_digest: done.manifest_digest,
                            downloaded_bytes: done.downloaded_bytes,
                            up_to_date: done.up_to_date,
                        })),
                    }))
                    .await;
            }
            Err(e) => {
                tracing::warn!(reference = %name, error = %e, "pull failed");
                collect_garbage(store).await;
                let _ = out_tx.send(Err(e.into())).await;
            }
        }
    });
    Ok(Response::new(Box::pin(ReceiverStream::new(out_rx))))
}

/// Removes content an interrupted or failed pull committed but no image records.
async fn collect_garbage(store: Arc<ImageStore>) {
    match tokio::task::spawn_blocking(move || store.gc()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "garbage collection after a failed pull"),
        Err(e) => tracing::warn!(error = %e, "garbage collection task"),
    }
}

fn phase_to_proto(phase: Phase) -> pb::LayerPhase {
    match phase {
        Phase::Waiting => pb::LayerPhase::Waiting,
        Phase::Downloading => pb::LayerPhase::Downloading,
        Phase::Verifying => pb::LayerPhase::Verifying,
        Phase::Extracting => pb::LayerPhase::Extracting,
        Phase::Done => pb::LayerPhase::Done,
        Phase::AlreadyExists => pb::LayerPhase::AlreadyExists,
    }
}

fn platform_to_proto(p: &crate::image::manifest::Platform) -> pb::Platform {
    pb::Platform {
        os: p.os.clone(),
        architecture: p.architecture.clone(),
        variant: p.variant.clone().unwrap_or_default(),
    }
}

fn event_to_proto(event: PullEvent) -> pb::PullImageResponse {
    use pb::pull_image_response::Event;
    let event = match event {
        PullEvent::Resolved { reference, manifest_digest, index_digest, platform, layers } => {
            Event::Resolved(pb::PullResolved {
                reference,
                manifest_digest,
                index_digest: index_digest.unwrap_or_default(),
                platform: Some(platform_to_proto(&platform)),
                total_bytes: layers.iter().map(|l| l.size).sum(),
                layers: layers
                    .into_iter()
                    .map(|l| pb::LayerDescriptor { digest: l.digest, size: l.size, media_type: l.media_type })
                    .collect(),
            })
        }
        PullEvent::Layer { digest, phase, current, total } => Event::Layer(pb::LayerProgress {
            digest,
            phase: phase_to_proto(phase).into(),
            current_bytes: current,
            total_bytes: total,
        }),
        PullEvent::Summary { current, total, layers_done, layers_total } => Event::Summary(pb::PullSummary {
            current_bytes: current,
            total_bytes: total,
            layers_done: layers_done as i32,
            layers_total: layers_total as i32,
        }),
    };
    pb::PullImageResponse { event: Some(event) }
}

/// An image record as the API describes it.
pub fn to_proto(record: &ImageRecord) -> pb::Image {
    pb::Image {
        id: record.id.clone(),
        references: record.references.clone(),
        manifest_digest: record.manifest_digest.clone(),
        platform: Some(platform_to_proto(&record.platform)),
        size: record.size() as i64,
        created: record.created.as_deref().and_then(|c| c.parse().ok()),
        pulled: Some(prost_types::Timestamp { seconds: record.pulled_unix, nanos: 0 }),
        layers: record.layers.iter().map(|l| l.digest.clone()).collect(),
    }
}

pub fn inspect(store: &ImageStore, name: &str) -> Result<pb::InspectImageResponse, Status> {
    if name.trim().is_empty() {
        return Err(Status::invalid_argument("InspectImage needs an image reference or id"));
    }
    let record = store.resolve(name.trim())?;
    let config = store.read_blob(&record.id).map_err(ImageError::from)?.ok_or_else(|| {
        Status::data_loss(format!("the config blob of image {} is missing from the store", record.id))
    })?;
    Ok(pb::InspectImageResponse {
        image: Some(to_proto(&record)),
        config_json: String::from_utf8_lossy(&config).into_owned(),
    })
}
