//! `internvl features`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use internvl::models::ModelFolder;
use internvl::tasks::features::{extract, parse_size, preprocess_all, Preprocess};
use serde_json::json;

use super::ModelArgs;

/// Arguments of `internvl features`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Resize every image to HxW (PIL bicubic) and interpolate the position embeddings; without it
    /// the model's own preprocessing is used.
    #[arg(long)]
    size: Option<String>,
    /// Also write `hidden_states` [L+1, N, T, C].
    #[arg(long)]
    all_hidden_states: bool,
    /// Images per forward pass.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Output safetensors file.
    #[arg(long)]
    out: PathBuf,
    /// Print a JSON summary of what was written.
    #[arg(long)]
    json: bool,
    /// Image files (PNG, JPEG, WebP, GIF, BMP).
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

/// Extracts and writes the features.
pub fn run(args: Args) -> Result<()> {
    let size = args.size.as_deref().map(parse_size).transpose()?;
    let folder = ModelFolder::open(&args.model.folder()?)?;
    let preprocess = match size {
        Some((height, width)) => Preprocess::Resize { height, width },
        None => Preprocess::for_model(&folder)?,
    };
    let device = args.model.device();
    let pixel_values = preprocess_all(&preprocess, &args.images, &device)?;
    let model = folder.load_vision(args.model.dtype()?, &device)?;
    let features = extract(
        &model,
        &pixel_values,
        args.all_hidden_states,
        args.batch_size,
    )?;
    features
        .save(&args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    let mut written = vec![
        json!({"name": "pixel_values", "shape": features.pixel_values.dims()}),
        json!({"name": "last_hidden_state", "shape": features.last_hidden_state.dims()}),
        json!({"name": "pooler_output", "shape": features.pooler_output.dims()}),
    ];
    if let Some(h) = &features.hidden_states {
        written.push(json!({"name": "hidden_states", "shape": h.dims()}));
    }
    if args.json {
        let summary = json!({"out": args.out, "images": args.images, "tensors": written});
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        eprintln!(
            "wrote {} ({} images)",
            args.out.display(),
            args.images.len()
        );
    }
    Ok(())
}
