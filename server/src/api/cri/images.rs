//! The CRI image service over cm's image store: PullImage (with registry credentials), ImageStatus (empty
//! when absent; uid or username from the image config), ListImages, RemoveImage (idempotent), ImageFsInfo.

use std::sync::Arc;

use cm_api::cri as pb;
use cm_api::cri::image_service_server::ImageService;
use oci_client::secrets::RegistryAuth;
use tonic::{Request, Response, Status};

use super::CriStream;
use crate::containers::Containers;
use crate::events::Event;
use crate::image::{ImageError, ImageRecord, ImageStore, Pull, Reference, RegistryOptions};

#[derive(Clone)]
pub struct CriImages {
    images: Arc<ImageStore>,
    registry: Arc<RegistryOptions>,
    containers: Arc<Containers>,
}

impl CriImages {
    pub fn new(images: Arc<ImageStore>, registry: RegistryOptions, containers: Arc<Containers>) -> Self {
        CriImages { images, registry: Arc::new(registry), containers }
    }

    /// The image a CRI image spec names, None when it is not in the store.
    fn find(&self, spec: Option<pb::ImageSpec>) -> Result<Option<ImageRecord>, Status> {
        let name = spec.map(|s| s.image).unwrap_or_default();
        let name = name.trim();
        if name.is_empty() {
            return Err(Status::invalid_argument("an image name or id is required"));
        }
        match self.images.resolve(name) {
            Ok(image) => Ok(Some(image)),
            Err(ImageError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn to_proto(&self, image: &ImageRecord) -> pb::Image {
        let user = self
            .images
            .read_blob(&image.id)
            .ok()
            .flatten()
            .and_then(|b| serde_json::from_slice::<crate::image::manifest::ImageConfig>(&b).ok())
            .and_then(|c| c.config)
            .and_then(|c| c.user)
            .unwrap_or_default();
        // "name", "uid", "name:group" or "uid:gid": the user part decides.
        let user = user.split(':').next().unwrap_or_default().to_string();
        let (uid, username) = match user.parse::<i64>() {
            Ok(uid) => (Some(pb::Int64Value { value: uid }), String::new()),
            Err(_) if user.is_empty() => (Some(pb::Int64Value { value: 0 }), String::new()),
            Err(_) => (None, user),
        };
        let repo_tags: Vec<String> = image.references.iter().filter(|r| !r.contains('@')).cloned().collect();
        let repo_digests = image.repo_digests();
        pb::Image {
            id: image.id.clone(),
            repo_tags,
            repo_digests,
            size: image.size(),
            uid,
            username,
            spec: Some(pb::ImageSpec { image: image.id.clone(), ..Default::default() }),
            pinned: false,
        }
    }
}

#[tonic::async_trait]
impl ImageService for CriImages {
    type StreamImagesStream = CriStream<pb::StreamImagesResponse>;

    async fn list_images(
        &self,
        request: Request<pb::ListImagesRequest>,
    ) -> Result<Response<pb::ListImagesResponse>, Status> {
        let filter = request.into_inner().filter.and_then(|f| f.image).map(|i| i.image).unwrap_or_default();
        let images = if filter.trim().is_empty() {
            self.images.list().iter().map(|i| self.to_proto(i)).collect()
        } else {
            self.find(Some(pb::ImageSpec { image: filter, ..Default::default() }))?
                .iter()
                .map(|i| self.to_proto(i))
                .collect()
        };
        Ok(Response::new(pb::ListImagesResponse { images }))
    }

    async fn stream_images(
        &self,
        _r: Request<pb::StreamImagesRequest>,
    ) -> Result<Response<Self::StreamImagesStream>, Status> {
        Err(Status::unimplemented("StreamImages is not supported by cm"))
    }

    async fn image_status(
        &self,
        request: Request<pb::ImageStatusRequest>,
    ) -> Result<Response<pb::ImageStatusResponse>, Status> {
        let request = request.into_inner();
        let image = self.find(request.image)?.map(|i| self.to_proto(&i));
        Ok(Response::new(pb::ImageStatusResponse { image, info: Default::default() }))
    }

    async fn pull_image(
        &self,
        request: Request<pb::PullImageRequest>,
    ) -> Result<Response<pb::PullImageResponse>, Status> {
        let request = request.into_inner();
        let name = request.image.map(|i| i.image).unwrap_or_default();
        let reference = Reference::parse(name.trim()).map_err(ImageError::from)?;
        let auth = match request.auth {
            Some(a) if !a.username.is_empty() => RegistryAuth::Basic(a.username, a.password),
            Some(a) if !a.auth.is_empty() => {
                use base64_decode as decode;
                let (user, password) = decode(&a.auth)
                    .and_then(|text| text.split_once(':').map(|(u, p)| (u.to_string(), p.to_string())))
                    .ok_or_else(|| Status::invalid_argument("auth.auth must be base64 of user:password"))?;
                RegistryAuth::Basic(user, password)
            }
            _ => RegistryAuth::Anonymous,
        };
        let (events_tx, mut events_rx) = tokio::sync::mpsc::channel(64);
        // Progress is not part of the CRI: drained and dropped.
        tokio::spawn(async move { while events_rx.recv().await.is_some() {} });
        tracing::info!(reference = %reference, "CRI pull started");
        let pull = Pull::new(self.images.clone(), &self.registry, reference, auth, events_tx)?;
        let done = match tokio::spawn(pull.run()).await {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => {
                let store = self.images.clone();
                let _ = tokio::task::spawn_blocking(move || store.gc()).await;
                return Err(e.into());
            }
            Err(source) => return Err(ImageError::Task { what: "pull task failed", source }.into()),
        };
        self.containers.events().publish(
            Event::new("image", "pull", &done.reference).with("name", &done.reference).with("imageID", &done.image_id),
        );
        Ok(Response::new(pb::PullImageResponse { image_ref: done.image_id }))
    }

    async fn remove_image(
        &self,
        request: Request<pb::RemoveImageRequest>,
    ) -> Result<Response<pb::RemoveImageResponse>, Status> {
        let Some(image) = self.find(request.into_inner().image)? else {
            return Ok(Response::new(pb::RemoveImageResponse {}));
        };
        // The CRI removes the image (every tag of it), not one reference.
        match self.containers.remove_image(&image.id, false).await {
            Ok(_) | Err(ImageError::NotFound(_)) => Ok(Response::new(pb::RemoveImageResponse {})),
            Err(e) => Err(e.into()),
        }
    }

    async fn image_fs_info(
        &self,
        _r: Request<pb::ImageFsInfoRequest>,
    ) -> Result<Response<pb::ImageFsInfoResponse>, Status> {
        let dir = self.images.snapshots_dir();
        let store = dir.clone();
        let used = tokio::task::spawn_blocking(move || crate::image::store::disk_usage(&store)).await.unwrap_or(0);
        let usage = pb::FilesystemUsage {
            timestamp: crate::clock::now_nanos(),
            fs_id: Some(pb::FilesystemIdentifier { mountpoint: dir.display().to_string() }),
            used_bytes: Some(pb::UInt64Value { value: used }),
            inodes_used: Some(pb::UInt64Value { value: 0 }),
        };
        Ok(Response::new(pb::ImageFsInfoResponse {
            image_filesystems: vec![usage.clone()],
            container_filesystems: vec![usage],
        }))
    }
}

/// Standard base64 (with or without padding) to text.
fn base64_decode(text: &str) -> Option<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits: u32 = 0;
    let mut count = 0;
    let mut out = Vec::new();
    for b in text.trim().trim_end_matches('=').bytes() {
        let v = ALPHABET.iter().position(|&a| a == b)? as u32;
        bits = (bits << 6) | v;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_credentials_decode() {
        assert_eq!(super::base64_decode("dXNlcjpwYXNz").as_deref(), Some("user:pass"));
        assert_eq!(super::base64_decode("YQ==").as_deref(), Some("a"));
        assert!(super::base64_decode("!!").is_none());
    }
}
