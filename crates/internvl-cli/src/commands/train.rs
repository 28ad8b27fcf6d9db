//! `internvl train`: training objectives and data, checkable from outside.
//!
//! * `internvl train loss`: an objective's loss (and gradients) on a pre-built batch;
//! * `internvl train preview`: what the SFT data loader feeds the model;
//! * `internvl train contrastive`: stage 1 (InternVL-C InfoNCE) on image-caption JSON Lines.

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
    /// Stage 1: contrastive training of InternVL-C on image-caption JSON Lines.
    Contrastive(ContrastiveArgs),
}

/// The recipe options every training command shares.
#[derive(Debug, clap::Args)]
pub struct RecipeArgs {
    /// Optimizer steps.
    #[arg(long, default_value_t = 100)]
    steps: u64,
    /// Samples per micro-batch.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Micro-batches per optimizer step (gradient accumulation).
    #[arg(long, default_value_t = 1)]
    accumulation: usize,
    /// Peak learning rate (cosine schedule).
    #[arg(long, default_value_t = 1e-4)]
    lr: f64,
    /// AdamW weight decay (norms, biases, embeddings and query tokens excluded).
    #[arg(long, default_value_t = 0.05)]
    weight_decay: f64,
    /// Linear warm-up steps.
    #[arg(long, default_value_t = 10)]
    warmup_steps: u64,
    /// Clip the global gradient norm (0 = off).
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f64,
    /// Seed of the data order and augmentation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Trainable parameters: comma-separated `*` patterns over released names, `!` excludes.
    #[arg(long, default_value = "*")]
    trainable: String,
    /// Layer-wise learning-rate decay `VIT,QLLAMA` (e.g. 0.9,0.9), as the release's optimizer.
    #[arg(long)]
    layer_decay: Option<String>,
    /// Also keep `checkpoint-N/` every N steps (`last/` is always written at the end).
    #[arg(long)]
    save_every: Option<u64>,
}

impl RecipeArgs {
    fn options(&self) -> Result<internvl::training::trainer::TrainOptions> {
        let layer_decay = match &self.layer_decay {
            None => None,
            Some(spec) => {
                let parts: Vec<f64> = spec
                    .split(',')
                    .map(|p| p.trim().parse::<f64>())
                    .collect::<std::result::Result<_, _>>()
                    .with_context(|| {
                        format!("--layer-decay `{spec}`: expected VIT,QLLAMA rates")
                    })?;
                match parts.as_slice() {
                    [v, q] => Some((*v, *q)),
                    _ => bail!("--layer-decay `{spec}`: expected two rates VIT,QLLAMA"),
                }
            }
        };
        let options = internvl::training::trainer::TrainOptions {
            steps: self.steps,
            batch_size: self.batch_size,
            accumulation: self.accumulation,
            lr: self.lr,
            weight_decay: self.weight_decay,
            warmup_steps: self.warmup_steps,
            max_grad_norm: (self.max_grad_norm > 0.0).then_some(self.max_grad_norm),
            seed: self.seed,
            adam: Default::default(),
            layer_decay,
            trainable: self.trainable.clone(),
            save_every: self.save_every,
        };
        options.validate()?;
        Ok(options)
    }
}

/// Arguments of `internvl train contrastive`.
#[derive(Debug, clap::Args)]
pub struct ContrastiveArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Image-caption JSON Lines (`{"image": ..., "caption": ...}` per line).
    #[arg(long)]
    data: PathBuf,
    /// Folder the image paths are relative to (default: the data file's folder).
    #[arg(long)]
    image_root: Option<PathBuf>,
    /// Output folder: metrics.jsonl, loss.png, last/ (a release-format model folder).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    recipe: RecipeArgs,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    resume: bool,
    /// No RandomResizedCrop / flip augmentation.
    #[arg(long)]
    no_augment: bool,
    /// Stop after this many steps (saving), to resume later.
    #[arg(long)]
    stop_after: Option<u64>,
    /// Print the final record as JSON.
    #[arg(long)]
    json: bool,
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
        Command::Contrastive(args) => contrastive(args),
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

fn contrastive(args: ContrastiveArgs) -> Result<()> {
    use internvl::training::contrastive::{train_contrastive, ContrastiveRun};
    let run = ContrastiveRun {
        model: args.model.folder()?,
        data: args.data.clone(),
        image_root: args.image_root.clone(),
        out_dir: args.out.clone(),
        options: args.recipe.options()?,
        resume: args.resume,
        augment: !args.no_augment,
        progress: !args.json,
        stop_after: args.stop_after,
    };
    let records = train_contrastive(&run)?;
    let last = records.last();
    if args.json {
        println!(
            "{}",
            json!({"steps_run": records.len(), "last": last, "model": args.out.join("last")})
        );
    } else if let Some(r) = last {
        eprintln!(
            "step {}: loss {:.4}; model in {}, metrics in {}",
            r.step,
            r.loss,
            args.out.join("last").display(),
            args.out.join("metrics.jsonl").display()
        );
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
