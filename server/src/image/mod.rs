//! Images: references, registry access, the content store and layer snapshots.

pub mod error;
pub mod manifest;
pub mod pull;
pub mod reference;
pub mod store;
pub mod trust;
pub(crate) mod unpack;

pub use error::ImageError;
pub use pull::{Phase, Pull, PullEvent, RegistryMirror, RegistryOptions};
pub use reference::Reference;
pub use store::{ImageRecord, ImageStore};
