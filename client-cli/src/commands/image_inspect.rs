//! `image inspect`: images' configs as JSON.

use cm_api::v1 as pb;

use crate::connect::Client;
use crate::error::status_error;

#[derive(clap::Args, Debug)]
pub struct ImageInspectArgs {
    /// Image reference or id.
    #[arg(required = true)]
    images: Vec<String>,
}

/// `image inspect`: a JSON array; the first image not found ends the command.
pub async fn inspect_image(client: &mut Client, args: ImageInspectArgs) -> anyhow::Result<i32> {
    let mut out = Vec::new();
    for image in args.images {
        let r = client.inspect_image(pb::InspectImageRequest { image }).await.map_err(status_error)?.into_inner();
        let config: serde_json::Value = serde_json::from_str(&r.config_json)?;
        let image = r.image.unwrap_or_default();
        out.push(serde_json::json!({
            "Id": image.id,
            "RepoTags": image.references,
            "ManifestDigest": image.manifest_digest,
            "Size": image.size,
            "Layers": image.layers,
            "Config": config,
        }));
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(0)
}
