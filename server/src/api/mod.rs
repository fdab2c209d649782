//! The tonic service: validate requests, call the domain, map results and errors to the cm.v1 contract.
//! Thin by design: no Linux work happens here.

mod bounds;
mod containers;
pub mod cri;
mod events;
mod exec;
mod images;
mod logs;
mod session;
mod stats;
mod status;

use std::pin::Pin;
use std::sync::Arc;

use cm_api::v1 as pb;
use cm_api::v1::container_service_server::ContainerService;
use futures::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::containers::{Containers, DEFAULT_STOP_TIMEOUT};
use crate::image::{ImageStore, RegistryOptions};
use bounds::Bounded;

/// Server-side state shared by every call.
pub struct ContainerApi {
    images: Arc<ImageStore>,
    registry: RegistryOptions,
    containers: Arc<Containers>,
}

impl ContainerApi {
    pub fn new(images: Arc<ImageStore>, registry: RegistryOptions, containers: Arc<Containers>) -> Self {
        ContainerApi { images, registry, containers }
    }
}

type RpcStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Unix nanoseconds as a protobuf Timestamp; None for "never" (0).
fn timestamp(unix_nanos: i64) -> Option<prost_types::Timestamp> {
    (unix_nanos > 0).then(|| prost_types::Timestamp {
        seconds: unix_nanos.div_euclid(1_000_000_000),
        nanos: unix_nanos.rem_euclid(1_000_000_000) as i32,
    })
}

#[tonic::async_trait]
impl ContainerService for ContainerApi {
    type PullImageStream = RpcStream<pb::PullImageResponse>;
    type AttachStream = RpcStream<pb::AttachResponse>;
    type ExecStream = RpcStream<pb::ExecResponse>;
    type LogsStream = RpcStream<pb::LogsResponse>;
    type StatsStream = RpcStream<pb::StatsResponse>;
    type EventsStream = RpcStream<pb::EventsResponse>;

    async fn pull_image(
        &self,
        request: Request<pb::PullImageRequest>,
    ) -> Result<Response<Self::PullImageStream>, Status> {
        request.get_ref().check_bounds()?;
        images::pull(self.images.clone(), &self.registry, request.into_inner(), self.containers.events().clone())
    }

    async fn list_images(
        &self,
        _request: Request<pb::ListImagesRequest>,
    ) -> Result<Response<pb::ListImagesResponse>, Status> {
        let images = self.images.list().iter().map(images::to_proto).collect();
        Ok(Response::new(pb::ListImagesResponse { images }))
    }

    async fn inspect_image(
        &self,
        request: Request<pb::InspectImageRequest>,
    ) -> Result<Response<pb::InspectImageResponse>, Status> {
        request.get_ref().check_bounds()?;
        images::inspect(&self.images, &request.into_inner().image).map(Response::new)
    }

    async fn remove_image(
        &self,
        request: Request<pb::RemoveImageRequest>,
    ) -> Result<Response<pb::RemoveImageResponse>, Status> {
        request.get_ref().check_bounds()?;
        let request = request.into_inner();
        if request.image.trim().is_empty() {
            return Err(Status::invalid_argument("RemoveImage needs an image reference or id"));
        }
        let removed = self.containers.remove_image(&request.image, request.force).await?;
        Ok(Response::new(pb::RemoveImageResponse {
            untagged: removed.untagged,
            deleted: removed.deleted,
            reclaimed_bytes: removed.reclaimed_bytes as i64,
        }))
    }

    async fn create(&self, request: Request<pb::CreateRequest>) -> Result<Response<pb::CreateResponse>, Status> {
        request.get_ref().check_bounds()?;
        let spec = containers::create_spec(request.into_inner().spec)?;
        let c = self.containers.create(spec)?;
        Ok(Response::new(pb::CreateResponse { id: c.id.clone() }))
    }

    async fn start(&self, request: Request<pb::StartRequest>) -> Result<Response<pb::StartResponse>, Status> {
        request.get_ref().check_bounds()?;
        let c = self.containers.get(&request.into_inner().container)?;
        self.containers.start(&c, None).await?;
        Ok(Response::new(pb::StartResponse {}))
    }

    async fn run(&self, request: Request<pb::RunRequest>) -> Result<Response<pb::RunResponse>, Status> {
        request.get_ref().check_bounds()?;
        let spec = containers::create_spec(request.into_inner().spec)?;
        let c = self.containers.run(spec).await?;
        Ok(Response::new(pb::RunResponse { id: c.id.clone() }))
    }

    async fn attach(
        &self,
        request: Request<Streaming<pb::AttachRequest>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        containers::attach(self.containers.clone(), request.into_inner()).await.map(Response::new)
    }

    async fn exec(&self, request: Request<Streaming<pb::ExecRequest>>) -> Result<Response<Self::ExecStream>, Status> {
        exec::exec(self.containers.clone(), request.into_inner()).await.map(Response::new)
    }

    async fn wait(&self, request: Request<pb::WaitRequest>) -> Result<Response<pb::WaitResponse>, Status> {
        request.get_ref().check_bounds()?;
        let request = request.into_inner();
        let c = self.containers.get(&request.container)?;
        if !request.exec_id.is_empty() {
            let exit = self.containers.wait_exec(&c, &request.exec_id).await?;
            return Ok(Response::new(pb::WaitResponse { status: Some(containers::exit_to_proto(&exit)) }));
        }
        let exit = self.containers.wait(&c).await?;
        Ok(Response::new(pb::WaitResponse { status: Some(containers::exit_to_proto(&exit)) }))
    }

    async fn stop(&self, request: Request<pb::StopRequest>) -> Result<Response<pb::StopResponse>, Status> {
        request.get_ref().check_bounds()?;
        let request = request.into_inner();
        let c = self.containers.get(&request.container)?;
        let timeout = match request.timeout {
            Some(d) if d.seconds < 0 || d.nanos < 0 => {
                return Err(Status::invalid_argument("the stop timeout must not be negative"));
            }
            Some(d) => std::time::Duration::new(d.seconds as u64, d.nanos as u32),
            None => DEFAULT_STOP_TIMEOUT,
        };
        self.containers.stop(&c, timeout).await?;
        Ok(Response::new(pb::StopResponse {}))
    }

    async fn kill(&self, request: Request<pb::KillRequest>) -> Result<Response<pb::KillResponse>, Status> {
        request.get_ref().check_bounds()?;
        let request = request.into_inner();
        let c = self.containers.get(&request.container)?;
        let signal = if request.signal.is_empty() { "SIGKILL" } else { request.signal.as_str() };
        if !request.exec_id.is_empty() {
            self.containers.kill_exec(&c, &request.exec_id, signal).await?;
            return Ok(Response::new(pb::KillResponse {}));
        }
        self.containers.kill(&c, signal).await?;
        Ok(Response::new(pb::KillResponse {}))
    }

    async fn remove(&self, request: Request<pb::RemoveRequest>) -> Result<Response<pb::RemoveResponse>, Status> {
        request.get_ref().check_bounds()?;
        let request = request.into_inner();
        let c = self.containers.get(&request.container)?;
        self.containers.remove(&c, request.force).await?;
        Ok(Response::new(pb::RemoveResponse {}))
    }

    async fn list(&self, request: Request<pb::ListRequest>) -> Result<Response<pb::ListResponse>, Status> {
        let all = request.into_inner().all;
        let containers = self
            .containers
            .list()
            .iter()
            .map(|c| containers::to_proto(c))
            .filter(|c| all || c.state == pb::ContainerState::Running as i32)
            .collect();
        Ok(Response::new(pb::ListResponse { containers }))
    }

    async fn inspect(&self, request: Request<pb::InspectRequest>) -> Result<Response<pb::InspectResponse>, Status> {
        request.get_ref().check_bounds()?;
        let c = self.containers.get(&request.into_inner().container)?;
        Ok(Response::new(pb::InspectResponse { container: Some(containers::to_proto(&c)) }))
    }

    async fn logs(&self, request: Request<pb::LogsRequest>) -> Result<Response<Self::LogsStream>, Status> {
        request.get_ref().check_bounds()?;
        logs::logs(self.containers.clone(), request.into_inner()).map(Response::new)
    }

    async fn stats(&self, request: Request<pb::StatsRequest>) -> Result<Response<Self::StatsStream>, Status> {
        request.get_ref().check_bounds()?;
        stats::stats(self.containers.clone(), request.into_inner()).await.map(Response::new)
    }

    async fn events(&self, request: Request<pb::EventsRequest>) -> Result<Response<Self::EventsStream>, Status> {
        request.get_ref().check_bounds()?;
        events::events(self.containers.events(), request.into_inner()).map(Response::new)
    }
}
