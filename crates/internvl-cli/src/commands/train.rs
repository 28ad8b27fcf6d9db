//! `internvl train`: training objectives and data, checkable from outside.
//!
//! * `internvl train loss`: an objective's loss (and gradients) on a pre-built batch;
//! * `internvl train preview`: what the SFT data loader feeds the model.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};
use internvl::models::ModelFolder;
use internvl::training::objectives::{self, Batch, Objective};
use internvl::training::params::NamePatterns;
use serde_json::{json, Value};

use super::ModelArgs;

/// Arguments of `internvl train`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Evaluate a training objective (and its gradients) on a pre-built batch.
    Loss(LossArgs),
    /// Show what the SFT loader makes of a conversation jsonl (ids, labels, positions, tiles).
    Preview(PreviewArgs),
}

/// Arguments of `internvl train preview`.
#[derive(Debug, clap::Args)]
pub struct PreviewArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Conversation jsonl in the release's format.
    #[arg(long)]
    data: PathBuf,
    /// Folder the image paths are relative to (default: the jsonl's folder).
    #[arg(long)]
    image_root: Option<PathBuf>,
    /// Only the first N records.
    #[arg(long)]
    limit: Option<usize>,
    /// Chat template (default: the model's `template`).
    #[arg(long)]
    template: Option<String>,
    /// Most tiles per image (default: the model's `max_dynamic_patch`).
    #[arg(long)]
    max_dynamic_patch: Option<u32>,
    /// Truncate sequences to this many tokens (default 8192, the release's).
    #[arg(long)]
    max_seq_length: Option<usize>,
    /// Print one JSON document.
    #[arg(long)]
    json: bool,
}

/// Arguments of `internvl train loss`.
#[derive(Debug, clap::Args)]
pub struct LossArgs {
    /// stage2 (ITC + ITM + ITG), clip (InternVL-C InfoNCE), retrieval (retrieval fine-tuning) or
    /// sft (InternVL-Chat next-token loss on assistant tokens).
    #[arg(long)]
    objective: String,
    #[command(flatten)]
    model: ModelArgs,
    /// safetensors with the official forward's arguments (`pixel_values`, `input_ids`, ...).
    #[arg(long)]
    batch: PathBuf,
    /// Read the batch tensors under this name prefix (e.g. `retrieval/`). By default the plain
    /// names, or `<objective>/` names when only those exist.
    #[arg(long)]
    prefix: Option<String>,
    /// Write `grad/<parameter name>` for every parameter (all treated as trainable) here.
    #[arg(long)]
    grads_out: Option<PathBuf>,
    /// Only these parameters' gradients (comma-separated names or `*` patterns).
    #[arg(long)]
    grads: Option<String>,
    /// Print one JSON document.
    #[arg(long)]
    json: bool,
}

/// Runs `internvl train`.
pub fn run(args: Args) -> Result<()> {
    match args.command {
        Command::Loss(args) => loss(args),
        Command::Preview(args) => preview(args),
    }
}

fn loss(args: LossArgs) -> Result<()> {
    let objective: Objective = args.objective.parse()?;
    if args.model.dtype()? != DType::F32 {
        bail!("train loss runs in f32 (the official check's precision); drop --dtype");
    }
    let device = args.model.device();
    let folder = ModelFolder::open(&args.model.folder()?)?;
    let batch = Batch::load(&args.batch, "", &device)?;
    let prefix = match &args.prefix {
        Some(p) => p.clone(),
        None => default_prefix(&batch, &args.batch, objective)?,
    };
    let batch = batch.with_prefix(&prefix);
    let trainable = match &args.grads {
        Some(spec) => NamePatterns::parse(spec)?,
        None => NamePatterns::all(),
    };
    let with_gradients = args.grads_out.is_some();
    let evaluation = objectives::evaluate(
        objective,
        &folder,
        &batch,
        trainable,
        with_gradients,
        &device,
    )?;
    let output = &evaluation.output;
    let scalar = |t: &Tensor| -> Result<f32> { Ok(t.to_dtype(DType::F32)?.to_scalar::<f32>()?) };
    let mut components = serde_json::Map::new();
    for (name, value) in &output.components {
        components.insert(name.clone(), json!(scalar(value)?));
    }
    if let Some(path) = &args.grads_out {
        if evaluation.gradients.is_empty() {
            bail!(
                "no parameter matches --grads {}",
                args.grads.as_deref().unwrap_or("*")
            );
        }
        let named: HashMap<String, Tensor> = evaluation
            .gradients
            .iter()
            .map(|(name, g)| (format!("grad/{name}"), g.clone()))
            .collect();
        candle_core::safetensors::save(&named, path)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let doc = json!({
        "objective": objective.name(),
        "loss": scalar(&output.loss)?,
        "components": Value::Object(components),
        "gradients": evaluation.gradients.len(),
    });
    if args.json {
        println!("{doc}");
    } else {
        println!("{} loss = {}", objective.name(), doc["loss"]);
        for (name, value) in doc["components"].as_object().into_iter().flatten() {
            println!("  {name} = {value}");
        }
        if let Some(path) = &args.grads_out {
            println!(
                "{} gradients written to {}",
                evaluation.gradients.len(),
                path.display()
            );
        }
    }
    Ok(())
}

fn preview(args: PreviewArgs) -> Result<()> {
    use internvl::processing::tokenizer::Tokenizer;
    use internvl::training::sft_data::{build_sample, read_jsonl, SftDataConfig};
    let folder = ModelFolder::open(&args.model.folder()?)?;
    let mut config = SftDataConfig::from_model_config(folder.config())?;
    if let Some(t) = &args.template {
        config.template = t.clone();
    }
    if let Some(m) = args.max_dynamic_patch {
        config.max_dynamic_patch = m;
    }
    if let Some(m) = args.max_seq_length {
        config.max_seq_length = m;
    }
    let tokenizer = Tokenizer::from_folder(folder.dir())?;
    let root = match &args.image_root {
        Some(r) => r.clone(),
        None => args
            .data
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default(),
    };
    let records = read_jsonl(&args.data)?;
    let take = args.limit.unwrap_or(records.len());
    let mut samples = Vec::new();
    for record in records.iter().take(take) {
        let sample = build_sample(record, &root, &tokenizer, &config)?;
        samples.push(json!({
            "input_ids": sample.input_ids,
            "labels": sample.labels,
            "position_ids": sample.position_ids,
            "num_tiles": sample.num_tiles,
            "image_flags": sample.image_flags,
        }));
    }
    let doc = json!({"template": config.template, "samples": samples});
    if args.json {
        println!("{doc}");
        return Ok(());
    }
    for (i, s) in doc["samples"].as_array().into_iter().flatten().enumerate() {
        let ids: Vec<u32> = serde_json::from_value(s["input_ids"].clone())?;
        let labels: Vec<i64> = serde_json::from_value(s["labels"].clone())?;
        let targets: Vec<u32> = labels
            .iter()
            .filter(|&&l| l >= 0)
            .map(|&l| l as u32)
            .collect();
        println!(
            "sample {i}: {} tokens, {} tiles, {} targets: {:?}",
            ids.len(),
            s["num_tiles"],
            targets.len(),
            tokenizer.decode(&targets, false)?
        );
    }
    Ok(())
}

/// `""` when the batch has `pixel_values`; `<objective>/` when only that prefixed name exists.
fn default_prefix(batch: &Batch, path: &std::path::Path, objective: Objective) -> Result<String> {
    let prefixed = format!("{}/", objective.name());
    if batch.contains("pixel_values") {
        return Ok(String::new());
    }
    if batch.contains(&format!("{prefixed}pixel_values")) {
        return Ok(prefixed);
    }
    bail!(
        "{} has no `pixel_values` (nor `{prefixed}pixel_values`): is it a batch for `{}`?",
        path.display(),
        objective.name()
    )
}
