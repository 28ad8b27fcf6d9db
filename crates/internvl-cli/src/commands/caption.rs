//! `internvl caption`: InternVL-G zero-shot captioning through QLLaMA.

use std::path::PathBuf;

use anyhow::{bail, Result};
use internvl::models::internvl_cg::CaptionOptions;
use internvl::tasks::contrastive::ImageTransform;
use serde_json::json;

use super::ClipArgs;

/// Arguments of `internvl caption`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    clip: ClipArgs,
    /// Prompt the caption continues (BOS added, no EOS).
    #[arg(long, default_value = "English caption:")]
    prompt: String,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 30)]
    max_new_tokens: usize,
    /// EOS is forbidden before this many tokens (the model card uses 8).
    #[arg(long, default_value_t = 8)]
    min_new_tokens: usize,
    /// Beam width (1 = greedy; the release's evaluation uses 5).
    #[arg(long, default_value_t = 1)]
    num_beams: usize,
    /// Print one JSON document.
    #[arg(long)]
    json: bool,
    /// Image files.
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

/// Captions each image: `[{"image", "text", "token_ids"}]` (generated ids, without the BOS the
/// release's `generate` puts first; a failed image has `error` instead).
pub fn run(args: Args) -> Result<()> {
    if args.num_beams == 0 || args.max_new_tokens == 0 {
        bail!("--num-beams and --max-new-tokens must be at least 1");
    }
    let session = args.clip.open(ImageTransform::Retrieval)?;
    let options = CaptionOptions {
        max_new_tokens: args.max_new_tokens,
        min_new_tokens: args.min_new_tokens,
        num_beams: args.num_beams,
        eos_token_id: None,
    };
    let captions = session.caption(&args.images, &args.prompt, &options)?;
    let mut failures = 0;
    let items: Vec<_> = args
        .images
        .iter()
        .zip(&captions)
        .map(|(image, c)| match c {
            Ok((text, ids)) => json!({"image": image, "text": text, "token_ids": ids}),
            Err(e) => {
                failures += 1;
                json!({"image": image, "error": e})
            }
        })
        .collect();
    if args.json {
        println!("{}", serde_json::to_string(&items)?);
    } else {
        for item in &items {
            match item.get("error") {
                Some(e) => println!(
                    "{}: error: {}",
                    item["image"].as_str().unwrap_or_default(),
                    e.as_str().unwrap_or_default()
                ),
                None => println!(
                    "{}: {}",
                    item["image"].as_str().unwrap_or_default(),
                    item["text"].as_str().unwrap_or_default()
                ),
            }
        }
    }
    if failures > 0 {
        bail!(
            "{failures} of {} images failed (see their `error` entries)",
            items.len()
        );
    }
    Ok(())
}
