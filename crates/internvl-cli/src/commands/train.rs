//! `internvl train`: training objectives and data, checkable from outside.
//!
//! * `internvl train loss`: an objective's loss (and gradients) on a pre-built batch;
//! * `internvl train preview`: what the SFT data loader feeds the model;
//! * `internvl train contrastive`: stage 1 (InternVL-C InfoNCE) on image-caption JSON Lines;
//! * `internvl train stage2`: stage 2 (InternVL-G ITC + ITM + ITG) on image-caption JSON Lines;
//! * `internvl train sft`: stage 3 (InternVL-Chat) on conversation JSON Lines;
//! * `internvl train probe`: linear / attention-pooling probing on frozen InternViT features;
//! * `internvl train init-cg` / `init-chat` / `prepare-fashion-mnist`: the toy reproduction's
//!   models and data.

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
    /// Stage 2: generative training of InternVL-G (ITC + ITM + ITG) on image-caption JSON Lines.
    Stage2(Stage2Args),
    /// Stage 3: supervised fine-tuning of InternVL-Chat on conversation JSON Lines.
    Sft(SftArgs),
    /// Linear or attention-pooling probing of frozen InternViT features on image folders.
    Probe(ProbeArgs),
    /// Create a fresh InternVL-C/G: small InternViT from scratch, QLLaMA from a llama GGUF.
    InitCg(InitArgs),
    /// Create a fresh InternVL-Chat: a trained InternViT, a new mlp1 and a GGUF LLM.
    InitChat(InitChatArgs),
    /// Write a trained folder without its training state, weights in another dtype (shipping).
    Export(ExportArgs),
    /// Fashion-MNIST (scripts/fetch_fashion_mnist.sh) as image folders + caption JSON Lines.
    PrepareFashionMnist(PrepareArgs),
}

/// What every training run takes on the command line.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Training data: image-caption JSON Lines (`{"image", "caption"}` per line; contrastive,
    /// stage2) or the release's conversation JSON Lines (sft).
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
    /// Stop after this many steps (saving), to resume later.
    #[arg(long)]
    stop_after: Option<u64>,
    /// Print the final record as JSON.
    #[arg(long)]
    json: bool,
}

impl RunArgs {
    /// The library's run settings, with `options` (the recipe, possibly adjusted).
    fn spec(
        &self,
        options: internvl::training::trainer::TrainOptions,
    ) -> Result<internvl::training::trainer::RunSpec> {
        Ok(internvl::training::trainer::RunSpec {
            model: self.model.folder()?,
            data: self.data.clone(),
            image_root: self.image_root.clone(),
            out_dir: self.out.clone(),
            options,
            resume: self.resume,
            progress: !self.json,
            stop_after: self.stop_after,
        })
    }

    /// Prints the last step (JSON or a line on stderr).
    fn report(&self, records: &[internvl::training::trainer::StepRecord]) {
        let (out, last) = (&self.out, records.last());
        if self.json {
            println!(
                "{}",
                json!({"steps_run": records.len(), "last": last, "model": out.join("last")})
            );
        } else if let Some(r) = last {
            eprintln!(
                "step {}: loss {:.4}; model in {}, metrics in {}, curve in {}",
                r.step,
                r.loss,
                out.join("last").display(),
                out.join("metrics.jsonl").display(),
                out.join("loss.png").display()
            );
        }
    }
}

/// Arguments of `internvl train stage2`.
#[derive(Debug, clap::Args)]
pub struct Stage2Args {
    #[command(flatten)]
    run: RunArgs,
    /// No BLIP-2 crop / flip augmentation.
    #[arg(long)]
    no_augment: bool,
}

/// Arguments of `internvl train sft`.
#[derive(Debug, clap::Args)]
pub struct SftArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Most tiles per image (default: the model's max_dynamic_patch).
    #[arg(long)]
    max_dynamic_patch: Option<u32>,
}

/// Arguments of `internvl train probe`.
#[derive(Debug, clap::Args)]
pub struct ProbeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Training image folder (one sub-folder per class).
    #[arg(long)]
    train: PathBuf,
    /// Test image folder (the same class folders).
    #[arg(long)]
    test: PathBuf,
    /// Output folder: probe.safetensors (release names), probe.json, metrics.jsonl, loss.png.
    #[arg(long)]
    out: PathBuf,
    /// linear (CLS + patch mean, the release's cls_patch_concat) or attention-pooling.
    #[arg(long, default_value = "linear")]
    head: String,
    /// Heads of the attention-pooling block.
    #[arg(long, default_value_t = 4)]
    pool_heads: usize,
    /// Epochs.
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    /// Batch size.
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Learning rate (default 0.1 · batch / 512, the release's).
    #[arg(long)]
    lr: Option<f64>,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `internvl train init-cg`.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// A llama-architecture GGUF (e.g. SmolLM2-135M-Instruct) for QLLaMA's body and tokenizer.
    #[arg(long)]
    qllama_gguf: PathBuf,
    /// Output model folder.
    #[arg(long)]
    out: PathBuf,
    /// Image side.
    #[arg(long, default_value_t = 28)]
    image_size: usize,
    /// Patch side.
    #[arg(long, default_value_t = 4)]
    patch_size: usize,
    /// ViT width.
    #[arg(long, default_value_t = 192)]
    vit_width: usize,
    /// ViT blocks.
    #[arg(long, default_value_t = 6)]
    vit_layers: usize,
    /// ViT heads.
    #[arg(long, default_value_t = 3)]
    vit_heads: usize,
    /// Joint embedding size.
    #[arg(long, default_value_t = 256)]
    embed_dim: usize,
    /// Attention-pooling heads.
    #[arg(long, default_value_t = 4)]
    pool_heads: usize,
    /// Every how many QLLaMA layers one gets cross-attention.
    #[arg(long, default_value_t = 2)]
    cross_attention_frequency: usize,
    /// Keep only the LLM's first N blocks as QLLaMA (default: all).
    #[arg(long)]
    qllama_layers: Option<usize>,
    /// Initialisation seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Pad token (default: the GGUF's). The release's stage-2 ITG masks pad ids out of its
    /// labels, so it must not be the EOS (SmolLM2's pad is `<|im_end|>`: use `<|endoftext|>`).
    #[arg(long)]
    pad_token: Option<String>,
}

/// Arguments of `internvl train export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// A model folder (e.g. a run's `last`).
    #[arg(long)]
    model: PathBuf,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// Storage dtype of the weights: f32, bf16 or f16 (GGUF base weights stay in the GGUF).
    #[arg(long, default_value = "bf16")]
    dtype: String,
}

/// Arguments of `internvl train init-chat`.
#[derive(Debug, clap::Args)]
pub struct InitChatArgs {
    /// A model folder whose InternViT is taken (e.g. a stage-1 InternVL-C).
    #[arg(long)]
    vision_from: PathBuf,
    /// A llama-architecture GGUF (e.g. SmolLM2-135M-Instruct) as the language model, kept by
    /// reference (`llm_gguf` in config.json).
    #[arg(long)]
    llm_gguf: PathBuf,
    /// Output model folder.
    #[arg(long)]
    out: PathBuf,
    /// Conversation template.
    #[arg(long, default_value = "internvl2_5")]
    template: String,
    /// System message (default: the template's).
    #[arg(long)]
    system_message: Option<String>,
    /// Pad token (default: the GGUF's). The release's SFT hides pad ids from attention, so it
    /// must not be the turn separator (SmolLM2's pad is `<|im_end|>`: use `<|endoftext|>`).
    #[arg(long)]
    pad_token: Option<String>,
    /// Seed of mlp1's initialisation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Arguments of `internvl train prepare-fashion-mnist`.
#[derive(Debug, clap::Args)]
pub struct PrepareArgs {
    /// Folder with the four IDX files (assets/fashion-mnist after the fetch script).
    #[arg(long, default_value = "assets/fashion-mnist")]
    source: PathBuf,
    /// Output folder: train/ and test/ class folders, train.jsonl, test.jsonl, classes.json.
    #[arg(long)]
    out: PathBuf,
    /// Image side to write (28 keeps the source pixels).
    #[arg(long, default_value_t = 28)]
    image_size: u32,
    /// Caption seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Only the first TRAIN,TEST images of each split.
    #[arg(long)]
    limit: Option<String>,
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
    /// Trainable parameters: comma-separated `*` patterns over released names, `!` excludes
    /// (stage2's default `*` means its stage-2 set: queries, cross-attention, heads).
    #[arg(long, default_value = "*")]
    trainable: String,
    /// Layer-wise learning-rate decay `VIT,QLLAMA` (e.g. 0.9,0.9), as the release's optimizer.
    #[arg(long)]
    layer_decay: Option<String>,
    /// Also keep `checkpoint-N/` every N steps (`last/` is always written at the end).
    #[arg(long)]
    save_every: Option<u64>,
    /// Learning-rate factor for parameters matching a `*` pattern, `PATTERN=FACTOR` (repeatable;
    /// the first match applies), e.g. `query_tokens=10`.
    #[arg(long = "lr-scale", value_name = "PATTERN=FACTOR")]
    lr_scales: Vec<String>,
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
        let mut lr_scales = Vec::new();
        for spec in &self.lr_scales {
            let parsed = spec
                .split_once('=')
                .and_then(|(p, f)| Some((p.trim().to_string(), f.trim().parse::<f64>().ok()?)));
            match parsed {
                Some((pattern, factor))
                    if !pattern.is_empty() && factor.is_finite() && factor >= 0.0 =>
                {
                    lr_scales.push((pattern, factor))
                }
                _ => bail!("--lr-scale `{spec}`: expected PATTERN=FACTOR with a factor >= 0"),
            }
        }
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
            lr_scales,
        };
        options.validate()?;
        Ok(options)
    }
}

/// Arguments of `internvl train contrastive`.
#[derive(Debug, clap::Args)]
pub struct ContrastiveArgs {
    #[command(flatten)]
    run: RunArgs,
    /// No RandomResizedCrop / flip augmentation.
    #[arg(long)]
    no_augment: bool,
    /// Positives of the InfoNCE targets: `caption` (identical captions) or `label` (same
    /// `label` field: templated captions of one class are paraphrases).
    #[arg(long, default_value = "caption")]
    positives: String,
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
    keep_freed_memory();
    match args.command {
        Command::Loss(args) => loss(args),
        Command::Preview(args) => preview(args),
        Command::Contrastive(args) => contrastive(args),
        Command::Stage2(args) => stage2(args),
        Command::Sft(args) => sft(args),
        Command::Probe(args) => probe(args),
        Command::InitCg(args) => init_cg(args),
        Command::InitChat(args) => init_chat(args),
        Command::Export(args) => export(args),
        Command::PrepareFashionMnist(args) => prepare_fashion_mnist(args),
    }
}

/// Makes glibc's allocator keep freed memory for reuse instead of returning it to the system.
/// A training step allocates and frees the same gigabytes of activations and gradients every
/// time; by default each large buffer is a fresh `mmap` whose pages the kernel zeroes on first
/// touch, which took as much time as the arithmetic (toy stage 2, 3 steps of 8: 90.5 s with
/// 78 s of system time by default, 72.3 s with 41.5 s with this; steps after the first 16 s
/// instead of 25 s).
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning parameters; it is called before the
    // command's threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, -1); // -1: never trim (man mallopt)
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

fn stage2(args: Stage2Args) -> Result<()> {
    use internvl::training::stage2::{train_stage2, Stage2Run, DEFAULT_TRAINABLE};
    let mut options = args.run.recipe.options()?;
    if options.trainable == "*" {
        // The stage-2 default: queries, cross-attention and heads (ViT and QLLaMA body frozen).
        options.trainable = DEFAULT_TRAINABLE.into();
    }
    let run = Stage2Run {
        spec: args.run.spec(options)?,
        augment: !args.no_augment,
    };
    args.run.report(&train_stage2(&run)?);
    Ok(())
}

fn sft(args: SftArgs) -> Result<()> {
    use internvl::training::sft::{train_sft, SftRun};
    let run = SftRun {
        spec: args.run.spec(args.run.recipe.options()?)?,
        max_dynamic_patch: args.max_dynamic_patch,
    };
    args.run.report(&train_sft(&run)?);
    Ok(())
}

fn probe(args: ProbeArgs) -> Result<()> {
    use internvl::training::probe::{train_probe, ProbeHead, ProbeOptions};
    let head = match args.head.as_str() {
        "linear" => ProbeHead::Linear,
        "attention-pooling" | "attention_pooling" => ProbeHead::AttentionPooling {
            heads: args.pool_heads,
        },
        other => bail!("unknown --head `{other}` (linear, attention-pooling)"),
    };
    let options = ProbeOptions {
        head,
        epochs: args.epochs,
        batch_size: args.batch_size,
        lr: args.lr,
        seed: args.seed,
        ..ProbeOptions::default()
    };
    let report = train_probe(
        &args.model.folder()?,
        &args.train,
        &args.test,
        &args.out,
        &options,
    )?;
    if args.json {
        println!(
            "{}",
            json!({
                "classes": report.classes,
                "train_accuracy": report.train_accuracy,
                "test_accuracy": report.test_accuracy,
                "per_class_recall": report.per_class_recall,
                "confusion": report.confusion,
            })
        );
    } else {
        println!(
            "test accuracy {:.2}% (train {:.2}%); head in {}",
            100.0 * report.test_accuracy,
            100.0 * report.train_accuracy,
            args.out.display()
        );
    }
    Ok(())
}

fn init_cg(args: InitArgs) -> Result<()> {
    use internvl::training::init::{init_internvl_cg, InitSpec};
    let spec = InitSpec {
        image_size: args.image_size,
        patch_size: args.patch_size,
        vit_width: args.vit_width,
        vit_layers: args.vit_layers,
        vit_heads: args.vit_heads,
        embed_dim: args.embed_dim,
        pool_heads: args.pool_heads,
        cross_attention_frequency: args.cross_attention_frequency,
        qllama_layers: args.qllama_layers,
        seed: args.seed,
        pad_token: args.pad_token,
        ..InitSpec::default()
    };
    init_internvl_cg(&args.qllama_gguf, &spec, &args.out)?;
    eprintln!("new InternVL-C/G in {}", args.out.display());
    Ok(())
}

fn export(args: ExportArgs) -> Result<()> {
    let dtype = super::parse_dtype(&args.dtype)?;
    let folder = ModelFolder::open(&args.model)?;
    internvl::training::trainer::export_model(&folder, dtype, &args.out)?;
    let size = std::fs::metadata(args.out.join("model.safetensors"))
        .map(|m| m.len())
        .unwrap_or(0);
    eprintln!(
        "{} ({:.1} MB of {} weights)",
        args.out.display(),
        size as f64 / 1e6,
        args.dtype
    );
    Ok(())
}

fn init_chat(args: InitChatArgs) -> Result<()> {
    use internvl::training::init::{init_internvl_chat, ChatInitSpec};
    let spec = ChatInitSpec {
        template: args.template,
        system_message: args.system_message,
        pad_token: args.pad_token,
        seed: args.seed,
    };
    init_internvl_chat(&args.vision_from, &args.llm_gguf, &spec, &args.out)?;
    eprintln!("new InternVL-Chat in {}", args.out.display());
    Ok(())
}

fn prepare_fashion_mnist(args: PrepareArgs) -> Result<()> {
    use internvl::training::datasets::{prepare_fashion_mnist, PrepareOptions};
    let limit_per_split = match &args.limit {
        None => None,
        Some(spec) => {
            let parts: Vec<usize> = spec
                .split(',')
                .map(|p| p.trim().parse())
                .collect::<std::result::Result<_, _>>()
                .with_context(|| format!("--limit `{spec}`: expected TRAIN,TEST counts"))?;
            match parts.as_slice() {
                [train, test] => Some((*train, *test)),
                _ => bail!("--limit `{spec}`: expected TRAIN,TEST counts"),
            }
        }
    };
    let options = PrepareOptions {
        image_size: args.image_size,
        seed: args.seed,
        limit_per_split,
    };
    let prepared = prepare_fashion_mnist(&args.source, &args.out, &options)?;
    // clip_benchmark-style class names and templates for `internvl eval zeroshot --dataset fashion_mnist`.
    use internvl::training::datasets::{CAPTION_TEMPLATES, FASHION_MNIST_CLASSES};
    std::fs::write(
        args.out.join("classnames.json"),
        json!({"fashion_mnist": FASHION_MNIST_CLASSES}).to_string(),
    )?;
    std::fs::write(
        args.out.join("templates.json"),
        json!({"fashion_mnist": CAPTION_TEMPLATES}).to_string(),
    )?;
    eprintln!(
        "{} train and {} test images in {}",
        prepared.train.count,
        prepared.test.count,
        args.out.display()
    );
    Ok(())
}

fn contrastive(args: ContrastiveArgs) -> Result<()> {
    use internvl::training::contrastive::{train_contrastive, ContrastiveRun};
    let run = ContrastiveRun {
        spec: args.run.spec(args.run.recipe.options()?)?,
        augment: !args.no_augment,
        positives: args.positives.parse()?,
    };
    args.run.report(&train_contrastive(&run)?);
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
