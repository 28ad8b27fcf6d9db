//! `internvl retrieve`: image→text and text→image rankings.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use internvl::tasks::contrastive::ImageTransform;
use serde_json::{json, Value};

use super::{warn_truncated, ClipArgs};

/// Arguments of `internvl retrieve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    clip: ClipArgs,
    /// A folder of images, or a text file listing image paths (one per line).
    #[arg(long)]
    images: PathBuf,
    /// A text file with one caption per line.
    #[arg(long)]
    texts: PathBuf,
    /// Entries per ranking.
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// Print one JSON document.
    #[arg(long)]
    json: bool,
}

/// The images of a folder (sorted) or of a list file (relative paths resolve against its folder).
pub fn image_list(path: &Path) -> Result<Vec<PathBuf>> {
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("reading {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        return Ok(files);
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| base.join(l))
        .collect())
}

fn ranking(scores: &[f32], top_k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    order.truncate(top_k);
    order
}

/// Embeds both sides and prints the top-k of each ranking by cosine similarity.
pub fn run(args: Args) -> Result<()> {
    let images = image_list(&args.images)?;
    let texts: Vec<String> = std::fs::read_to_string(&args.texts)
        .with_context(|| format!("reading {}", args.texts.display()))?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if images.is_empty() {
        bail!("no images in {}", args.images.display());
    }
    if texts.is_empty() {
        bail!("no texts in {}", args.texts.display());
    }
    let session = args.clip.open(ImageTransform::Retrieval)?;
    let head = args.clip.head()?;
    warn_truncated(&session, &texts)?;
    let text_embeds = session.text_embeds_normalized(&texts)?;
    let image_embeds = session.image_embeds_normalized(&images, head)?;
    let mut errors = Vec::new();
    let mut good = Vec::new();
    let mut rows = Vec::new();
    for (i, r) in image_embeds.iter().enumerate() {
        match r {
            Ok(v) => {
                good.push(i);
                rows.push(Tensor::new(v.as_slice(), text_embeds.device())?);
            }
            Err(e) => errors.push(json!({"image": images[i], "error": e})),
        }
    }
    if rows.is_empty() {
        bail!(
            "no image could be read: {}",
            errors[0]["error"].as_str().unwrap_or_default()
        );
    }
    let sim = Tensor::stack(&rows, 0)?
        .matmul(&text_embeds.t()?)?
        .to_vec2::<f32>()?;
    let image_to_text: Vec<Value> = good
        .iter()
        .zip(&sim)
        .map(|(&i, row)| {
            let hits: Vec<Value> = ranking(row, args.top_k)
                .into_iter()
                .map(|t| json!({"index": t, "text": texts[t], "score": row[t]}))
                .collect();
            json!({"image": images[i], "texts": hits})
        })
        .collect();
    let text_to_image: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(t, text)| {
            let column: Vec<f32> = sim.iter().map(|row| row[t]).collect();
            let hits: Vec<Value> = ranking(&column, args.top_k)
                .into_iter()
                .map(|r| json!({"index": good[r], "image": images[good[r]], "score": column[r]}))
                .collect();
            json!({"text": text, "images": hits})
        })
        .collect();
    let mut out = json!({"head": head.name(), "image_to_text": image_to_text, "text_to_image": text_to_image});
    if !errors.is_empty() {
        out["errors"] = Value::Array(errors.clone());
    }
    if args.json {
        println!("{}", serde_json::to_string(&out)?);
    } else {
        for entry in out["image_to_text"].as_array().into_iter().flatten() {
            let best = &entry["texts"][0];
            println!(
                "{} → {} ({:.3})",
                entry["image"].as_str().unwrap_or_default(),
                best["text"].as_str().unwrap_or_default(),
                best["score"].as_f64().unwrap_or(0.0)
            );
        }
        for entry in out["text_to_image"].as_array().into_iter().flatten() {
            let best = &entry["images"][0];
            println!(
                "{} → {} ({:.3})",
                entry["text"].as_str().unwrap_or_default(),
                best["image"].as_str().unwrap_or_default(),
                best["score"].as_f64().unwrap_or(0.0)
            );
        }
    }
    if !errors.is_empty() {
        bail!(
            "{} of {} images failed (see `errors`)",
            errors.len(),
            images.len()
        );
    }
    Ok(())
}
