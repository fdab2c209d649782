//! `images` (and `image ls`): the image table.

use cm_api::v1 as pb;

use crate::connect::Client;
use crate::error::status_error;
use crate::format;

#[derive(clap::Args, Debug)]
pub struct ImagesArgs {
    /// Only show image ids.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Show digests.
    #[arg(long)]
    digests: bool,
    /// Don't truncate ids.
    #[arg(long)]
    no_trunc: bool,
}

/// `images`: newest pull first, a row per reference.
pub async fn images(client: &mut Client, args: ImagesArgs) -> anyhow::Result<i32> {
    let mut images = client.list_images(pb::ListImagesRequest {}).await.map_err(status_error)?.into_inner().images;
    images.sort_by(|a, b| b.pulled.as_ref().map(|t| t.seconds).cmp(&a.pulled.as_ref().map(|t| t.seconds)));
    let id = |i: &pb::Image| if args.no_trunc { i.id.clone() } else { format::short_id(&i.id).to_string() };
    if args.quiet {
        for image in &images {
            println!("{}", id(image));
        }
        return Ok(0);
    }
    let mut rows = Vec::new();
    for image in &images {
        for reference in &image.references {
            let (repo, tag) = format::repo_and_tag(reference);
            let mut row = vec![repo, tag];
            if args.digests {
                row.push(image.manifest_digest.clone());
            }
            row.extend([id(image), format::size(image.size), format::ago(image.created.as_ref().map(|t| t.seconds))]);
            rows.push(row);
        }
    }
    let header: &[&str] = if args.digests {
        &["REPOSITORY", "TAG", "DIGEST", "IMAGE ID", "SIZE", "CREATED"]
    } else {
        &["REPOSITORY", "TAG", "IMAGE ID", "SIZE", "CREATED"]
    };
    print!("{}", format::table(header, &rows));
    Ok(0)
}
