//! The tonic service: validate requests, call the domain, map results and errors to the cm.v1 contract.
//! Thin by design: no Linux work happens here.

mod images;

use std::pin::Pin;
use std::sync::Arc;

use cm_api::v1 as pb;
use cm_api::v1::container_service_server::ContainerService;
use futures::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::image::{ImageError, ImageStore, RegistryOptions};

/// Server-side state shared by every call.
pub struct ContainerApi {
    images: Arc<ImageStore>,
    registry: RegistryOptions,
}

impl ContainerApi {
    pub fn new(images: Arc<ImageStore>, registry: RegistryOptions) -> Self {
        ContainerApi { images, registry }
    }
}

type RpcStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

impl From<ImageError> for Status {
    fn from(e: ImageError) -> Self {
        Status::new(e.code(), e.to_string())
    }
}

/// The answer of an RPC whose issue has not landed yet.
fn not_yet(rpc: &str) -> Status {
    Status::unimplemented(format!(
        "{rpc} is not implemented by this cm-server yet: this version pulls and manages images only \
         (containers come with the run issue)"
    ))
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
        images::pull(self.images.clone(), &self.registry, request.into_inner())
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
        images::inspect(&self.images, &request.into_inner().image).map(Response::new)
    }

    async fn remove_image(
        &self,
        request: Request<pb::RemoveImageRequest>,
    ) -> Result<Response<pb::RemoveImageResponse>, Status> {
        images::remove(self.images.clone(), request.into_inner()).await.map(Response::new)
    }

    async fn create(&self, _: Request<pb::CreateRequest>) -> Result<Response<pb::CreateResponse>, Status> {
        Err(not_yet("Create"))
    }

    async fn start(&self, _: Request<pb::StartRequest>) -> Result<Response<pb::StartResponse>, Status> {
        Err(not_yet("Start"))
    }

    async fn run(&self, _: Request<pb::RunRequest>) -> Result<Response<pb::RunResponse>, Status> {
        Err(not_yet("Run"))
    }

    async fn attach(&self, _: Request<Streaming<pb::AttachRequest>>) -> Result<Response<Self::AttachStream>, Status> {
        Err(not_yet("Attach"))
    }

    async fn exec(&self, _: Request<Streaming<pb::ExecRequest>>) -> Result<Response<Self::ExecStream>, Status> {
        Err(not_yet("Exec"))
    }

    async fn wait(&self, _: Request<pb::WaitRequest>) -> Result<Response<pb::WaitResponse>, Status> {
        Err(not_yet("Wait"))
    }

    async fn stop(&self, _: Request<pb::StopRequest>) -> Result<Response<pb::StopResponse>, Status> {
        Err(not_yet("Stop"))
    }

    async fn kill(&self, _: Request<pb::KillRequest>) -> Result<Response<pb::KillResponse>, Status> {
        Err(not_yet("Kill"))
    }

    async fn remove(&self, _: Request<pb::RemoveRequest>) -> Result<Response<pb::RemoveResponse>, Status> {
        Err(not_yet("Remove"))
    }

    async fn list(&self, _: Request<pb::ListRequest>) -> Result<Response<pb::ListResponse>, Status> {
        Err(not_yet("List"))
    }

    async fn inspect(&self, _: Request<pb::InspectRequest>) -> Result<Response<pb::InspectResponse>, Status> {
        Err(not_yet("Inspect"))
    }

    async fn logs(&self, _: Request<pb::LogsRequest>) -> Result<Response<Self::LogsStream>, Status> {
        Err(not_yet("Logs"))
    }

    async fn stats(&self, _: Request<pb::StatsRequest>) -> Result<Response<Self::StatsStream>, Status> {
        Err(not_yet("Stats"))
    }

    async fn events(&self, _: Request<pb::EventsRequest>) -> Result<Response<Self::EventsStream>, Status> {
        Err(not_yet("Events"))
    }
}
