//! Image removal as the container domain allows it: an image a container was created from stays unless the
//! removal is forced.

use super::Containers;
use crate::events::Event;
use crate::image::ImageError;
use crate::image::store::Removed;

impl Containers {
    /// Removes an image reference (or the image by id), refusing an image in use unless `force`; publishes
    /// the untag and delete events.
    pub async fn remove_image(&self, name: &str, force: bool) -> Result<Removed, ImageError> {
        let name = name.trim().to_string();
        let store = self.images.clone();
        if !force
            && let Ok(image) = store.resolve(&name)
            && self.uses_image(&image.id)
        {
            return Err(ImageError::InUse(name));
        }
        let removed = tokio::task::spawn_blocking(move || store.remove(&name))
            .await
            .map_err(|source| ImageError::Task { what: "remove task", source })??;
        for name in &removed.untagged {
            self.events.publish(Event::new("image", "untag", name).with("name", name));
        }
        for id in &removed.deleted {
            self.events.publish(Event::new("image", "delete", id).with("imageID", id));
        }
        Ok(removed)
    }
}
