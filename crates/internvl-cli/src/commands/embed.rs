//! `internvl embed`.

use std::path::PathBuf;

use anyhow::{bail, Result};
use internvl::tasks::contrastive::ImageTransform;
use serde_json::{json, Value};

use super::{tensor_rows, warn_truncated, ClipArgs};

/// Arguments of `internvl embed`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    clip: ClipArgs,
    /// An image file to embed (repeatable).
    #[arg(long = "image")]
    images: Vec<PathBuf>,
    /// A text to embed (repeatable).
    #[arg(long = "text")]
    texts: Vec<String>,
    /// Print one JSON document (otherwise a short human-readable summary).
    #[arg(long)]
    json: bool,
}

/// Embeds the images and texts: L2-normalised embeddings and, when both are given,
/// `logits_per_image = exp(logit_scale) · cosine`. An image that fails to decode gets `null` and an
/// entry in `errors`; the command then exits with status 1 after printing the document.
pub fn run(args: Args) -> Result<()> {
    if args.images.is_empty() && args.texts.is_empty() {
        bail!("nothing to embed: give --image and/or --text");
    }
    let session = args.clip.open(ImageTransform::Retrieval)?;
    let head = args.clip.head()?;
    let mut out = json!({ "head": head.name() });
    let images = session.image_embeds_normalized(&args.images, head)?;
    let mut errors = Vec::new();
    if !args.images.is_empty() {
        let rows: Vec<Value> = images
            .iter()
            .zip(&args.images)
            .map(|(r, path)| match r {
                Ok(v) => json!(v),
                Err(e) => {
                    errors.push(json!({"image": path, "error": e}));
                    Value::Null
                }
            })
            .collect();
        out["image_embeds"] = Value::Array(rows);
    }
    if !args.texts.is_empty() {
        let truncated = warn_truncated(&session, &args.texts)?;
        let texts = session.text_embeds_normalized(&args.texts)?;
        out["text_embeds"] = json!(tensor_rows(&texts)?);
        if !truncated.is_empty() {
            out["truncated_texts"] = json!(truncated);
        }
        if !args.images.is_empty() {
            let logits = images
                .iter()
                .map(|r| match r {
                    Ok(v) => Ok(json!(session.logits_for(v, &texts)?)),
                    Err(_) => Ok(Value::Null),
                })
                .collect::<Result<Vec<Value>>>()?;
            out["logits_per_image"] = Value::Array(logits);
        }
    }
    if !errors.is_empty() {
        out["errors"] = Value::Array(errors.clone());
    }
    if args.json {
        println!("{}", serde_json::to_string(&out)?);
    } else {
        print_summary(&out);
    }
    match errors.first() {
        Some(first) => bail!(
            "{} of {} images failed; first: {}",
            errors.len(),
            args.images.len(),
            first["error"].as_str().unwrap_or_default()
        ),
        None => Ok(()),
    }
}

fn print_summary(out: &Value) {
    let count = |key: &str| out[key].as_array().map_or(0, Vec::len);
    let dim = out["image_embeds"][0]
        .as_array()
        .or(out["text_embeds"][0].as_array())
        .map_or(0, Vec::len);
    println!(
        "head {}: {} image and {} text embeddings of dimension {dim}",
        out["head"].as_str().unwrap_or_default(),
        count("image_embeds"),
        count("text_embeds")
    );
    if let Some(rows) = out["logits_per_image"].as_array() {
        for (i, row) in rows.iter().enumerate() {
            println!("image {i} logits: {row}");
        }
    }
}
