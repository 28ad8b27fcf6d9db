//! `internvl classify`: zero-shot classification of images or videos.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use internvl::tasks::contrastive::{
    class_probabilities, frames_from_folder, frames_from_video, video_embedding,
    ContrastiveSession, ImageTransform, ItemResult,
};
use serde_json::{json, Value};

use super::ClipArgs;

/// Arguments of `internvl classify`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    clip: ClipArgs,
    /// Comma-separated class names ("cat,dog,一只熊猫").
    #[arg(long)]
    labels: Option<String>,
    /// clip_benchmark class-name JSON ({"dataset": [names]} or a list); with --dataset.
    #[arg(long)]
    classnames: Option<PathBuf>,
    /// clip_benchmark template JSON ({"dataset": ["a photo of a {c}.", ...]} or a list).
    #[arg(long)]
    templates: Option<PathBuf>,
    /// Key to read from --classnames / --templates JSON objects (default imagenet1k for templates).
    #[arg(long)]
    dataset: Option<String>,
    /// Video files (decoded with the system ffmpeg) or folders of frames, instead of images.
    #[arg(long = "video")]
    videos: Vec<PathBuf>,
    /// Frames sampled uniformly per video.
    #[arg(long, default_value_t = 8)]
    frames: usize,
    /// Print one JSON document.
    #[arg(long)]
    json: bool,
    /// Image files.
    images: Vec<PathBuf>,
}

/// Reads names from a clip_benchmark JSON: either a list, or an object keyed by dataset.
pub fn read_json_list(path: &Path, key: Option<&str>, fallback_key: &str) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    let list = match &value {
        Value::Array(_) => value.clone(),
        Value::Object(map) => {
            let key = key.unwrap_or(fallback_key);
            map.get(key)
                .cloned()
                .with_context(|| format!("{} has no entry `{key}`", path.display()))?
        }
        _ => bail!("{} must hold a list or an object of lists", path.display()),
    };
    list.as_array()
        .with_context(|| format!("{}: entry is not a list", path.display()))?
        .iter()
        .map(|v| {
            v.as_str()
                .map(String::from)
                .with_context(|| format!("{}: non-string entry", path.display()))
        })
        .collect()
}

fn class_names(args: &Args) -> Result<Vec<String>> {
    let names: Vec<String> = match (&args.labels, &args.classnames) {
        (Some(labels), None) => labels
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        (None, Some(path)) => read_json_list(path, args.dataset.as_deref(), "imagenet1k")?,
        (Some(_), Some(_)) => bail!("give either --labels or --classnames, not both"),
        (None, None) => bail!("give the classes with --labels or --classnames"),
    };
    if names.is_empty() {
        bail!("empty label list");
    }
    Ok(names)
}

/// Classifies every image (or video) and prints the probabilities and the top label.
pub fn run(args: Args) -> Result<()> {
    let classes = class_names(&args)?;
    let templates = match &args.templates {
        Some(path) => read_json_list(path, args.dataset.as_deref(), "imagenet1k")?,
        None => Vec::new(),
    };
    if args.images.is_empty() && args.videos.is_empty() {
        bail!("no images or videos given");
    }
    let session = args.clip.open(ImageTransform::Classification)?;
    let head = args.clip.head()?;
    let weights = session.classifier(&classes, &templates)?;
    let scale = session.model().logit_scale()?;
    let mut items: Vec<(Value, ItemResult<candle_core::Tensor>)> = Vec::new();
    for (path, embed) in args
        .images
        .iter()
        .zip(session.image_embeds_raw(&args.images, head)?)
    {
        items.push((json!({"image": path}), embed));
    }
    for video in &args.videos {
        items.push((
            json!({"video": video}),
            embed_video(&session, video, args.frames, head),
        ));
    }
    let mut results = Vec::new();
    let mut failures = 0;
    for (mut item, embed) in items {
        match embed {
            Ok(e) => {
                let probs = class_probabilities(&e.unsqueeze(0)?, &weights, scale)?
                    .squeeze(0)?
                    .to_vec1::<f32>()?;
                let best = probs
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map_or(0, |(i, _)| i);
                item["label"] = json!(classes[best]);
                item["probabilities"] = Value::Object(
                    classes
                        .iter()
                        .cloned()
                        .zip(probs.iter().map(|&p| json!(p)))
                        .collect(),
                );
            }
            Err(e) => {
                failures += 1;
                item["error"] = json!(e);
            }
        }
        results.push(item);
    }
    let out = json!({"head": head.name(), "labels": classes, "templates": templates.len().max(1), "results": results});
    if args.json {
        println!("{}", serde_json::to_string(&out)?);
    } else {
        for r in out["results"].as_array().into_iter().flatten() {
            let name = r
                .get("image")
                .or(r.get("video"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            match r.get("error") {
                Some(e) => println!("{name}: error: {}", e.as_str().unwrap_or_default()),
                None => println!(
                    "{name}: {} ({:.3})",
                    r["label"].as_str().unwrap_or_default(),
                    r["probabilities"][r["label"].as_str().unwrap_or_default()]
                        .as_f64()
                        .unwrap_or(0.0)
                ),
            }
        }
    }
    if failures > 0 {
        bail!(
            "{failures} of {} inputs failed (see their `error` entries)",
            results.len()
        );
    }
    Ok(())
}

fn embed_video(
    session: &ContrastiveSession,
    video: &Path,
    frames: usize,
    head: internvl::models::internvl_cg::Head,
) -> ItemResult<candle_core::Tensor> {
    let scratch = tempfile_dir().map_err(|e| e.to_string())?;
    let files = if video.is_dir() {
        frames_from_folder(video, frames)
    } else {
        frames_from_video(video, frames, &scratch)
    }
    .map_err(|e| e.to_string())?;
    let embeds = session
        .image_embeds_raw(&files, head)
        .map_err(|e| e.to_string())?;
    let embeds: Vec<_> = embeds.into_iter().collect::<Result<_, _>>()?;
    let result = video_embedding(&embeds).map_err(|e| e.to_string());
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

fn tempfile_dir() -> std::io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "internvl-frames-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
