//! `internvl eval zeroshot | retrieval | caption | chat-classify`: the evaluation harness. Each
//! run writes `results.json`, `results.md` (and `confusion_matrix.png` / `captions.json` /
//! `answers.jsonl`) to `--out`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use internvl::evaluation::{
    markdown_table, save_confusion_matrix_png, EvalResult, RetrievalDataset, ZeroShotDataset,
};
use internvl::models::internvl_cg::CaptionOptions;
use internvl::models::{ModelFolder, ModelKind};
use internvl::tasks::contrastive::{ContrastiveSession, ImageTransform};
use internvl::tasks::evaluate;
use serde_json::json;

use super::classify::read_json_list;
use super::ClipArgs;

/// Arguments of `internvl eval`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Zero-shot classification: top-1 / top-5 accuracy, mean per-class recall, confusion matrix.
    Zeroshot(ZeroshotArgs),
    /// Image–text retrieval on a Karpathy-split JSON (COCO / Flickr30K format): R@1/5/10.
    Retrieval(RetrievalArgs),
    /// Captioning: BLEU-1..4 and CIDEr-D as pycocoevalcap computes them.
    Caption(CaptionArgs),
    /// Classification by a generative model: ask a chat model about each image (or caption it
    /// with an InternVL-G model), score the class its text names.
    ChatClassify(ChatClassifyArgs),
}

#[derive(Debug, clap::Args)]
struct ChatClassifyArgs {
    #[command(flatten)]
    model: super::ModelArgs,
    /// An image folder with one sub-folder per class.
    #[arg(long)]
    images: PathBuf,
    /// clip_benchmark-style class-name JSON (default: the folder names, `_` as spaces, without
    /// a leading `<digits>_`).
    #[arg(long)]
    classnames: Option<PathBuf>,
    /// Key in the class-name JSON.
    #[arg(long)]
    dataset: Option<String>,
    /// The question asked about every image (chat models).
    #[arg(long, default_value = "What is in this image?")]
    question: String,
    /// The caption prompt (InternVL-G models, which caption each image instead: greedy, EOS
    /// allowed from the first token).
    #[arg(long, default_value = "English caption:")]
    caption_prompt: String,
    /// Only the first N images of each class (sorted file order).
    #[arg(long)]
    per_class: Option<usize>,
    /// Most tokens per answer.
    #[arg(long, default_value_t = 16)]
    max_new_tokens: usize,
    /// Folder for results.json, results.md, answers.jsonl and confusion_matrix.png.
    #[arg(long, default_value = "eval-results")]
    out: PathBuf,
    /// Name of the dataset in the report (default: the image folder's name).
    #[arg(long)]
    name: Option<String>,
    /// Print the results as one JSON document instead of the Markdown table.
    #[arg(long)]
    json: bool,
}

/// Options every evaluation takes.
#[derive(Debug, clap::Args)]
struct Common {
    #[command(flatten)]
    clip: ClipArgs,
    /// Folder for results.json, results.md and the plots.
    #[arg(long, default_value = "eval-results")]
    out: PathBuf,
    /// Name of the dataset in the report (default: the data path's file name).
    #[arg(long)]
    name: Option<String>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Print the results as one JSON document instead of the Markdown table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct ZeroshotArgs {
    #[command(flatten)]
    common: Common,
    /// An image folder with one sub-folder per class, or a CSV / JSONL list (path,label).
    #[arg(long)]
    images: Option<PathBuf>,
    /// A folder with one sub-folder per class holding video files or frame folders.
    #[arg(long)]
    videos: Option<PathBuf>,
    /// Frames sampled per video.
    #[arg(long, default_value_t = 8)]
    frames: usize,
    /// clip_benchmark class-name JSON (default: the class folder names / list labels).
    #[arg(long)]
    classnames: Option<PathBuf>,
    /// clip_benchmark template JSON (default: the class name alone).
    #[arg(long)]
    templates: Option<PathBuf>,
    /// Key in the class-name / template JSON.
    #[arg(long)]
    dataset: Option<String>,
}

#[derive(Debug, clap::Args)]
struct RetrievalArgs {
    #[command(flatten)]
    common: Common,
    /// Karpathy-split JSON, COCO captions JSON, caption list JSON or Flickr txt.
    #[arg(long)]
    data: PathBuf,
    /// Folder the image paths of --data are relative to (default: the data file's folder).
    #[arg(long)]
    image_root: Option<PathBuf>,
    /// Split of a Karpathy JSON.
    #[arg(long, default_value = "test")]
    split: String,
    /// Only the first N images (and their captions).
    #[arg(long)]
    limit: Option<usize>,
}

#[derive(Debug, clap::Args)]
struct CaptionArgs {
    #[command(flatten)]
    retrieval: RetrievalArgs,
    /// Caption prompt.
    #[arg(long, default_value = "English caption:")]
    prompt: String,
    /// Beam width (the release's evaluation: 5).
    #[arg(long, default_value_t = 5)]
    num_beams: usize,
    /// Most tokens per caption.
    #[arg(long, default_value_t = 30)]
    max_new_tokens: usize,
    /// EOS forbidden before this many tokens.
    #[arg(long, default_value_t = 8)]
    min_new_tokens: usize,
}

/// Runs the chosen evaluation.
pub fn run(args: Args) -> Result<()> {
    match args.task {
        Task::Zeroshot(a) => zeroshot(a),
        Task::Retrieval(a) => retrieval(a),
        Task::Caption(a) => caption(a),
        Task::ChatClassify(a) => chat_classify(a),
    }
}

fn dataset_name(common: &Common, data: &Path) -> String {
    common.name.clone().unwrap_or_else(|| {
        data.file_stem()
            .or(data.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| data.display().to_string())
    })
}

fn write_report(common: &Common, result: &EvalResult) -> Result<()> {
    write_results(&common.out, common.json, result)
}

/// `results.json` and `results.md` in `out`; the table (or with `json` the JSON) on stdout.
fn write_results(out: &Path, json: bool, result: &EvalResult) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    result.save_json(out.join("results.json"))?;
    let table = markdown_table(std::slice::from_ref(result));
    std::fs::write(out.join("results.md"), &table)
        .with_context(|| format!("writing {}", out.display()))?;
    if json {
        println!("{}", result.to_json());
    } else {
        print!("{table}");
    }
    eprintln!("results in {}", out.display());
    Ok(())
}

fn zeroshot(a: ZeroshotArgs) -> Result<()> {
    let common = &a.common;
    let session = common.clip.open(ImageTransform::Classification)?;
    let head = common.clip.head()?;
    let templates = match &a.templates {
        Some(p) => read_json_list(p, a.dataset.as_deref(), "imagenet1k")?,
        None => Vec::new(),
    };
    let (data, metrics, names, samples) = match (&a.images, &a.videos) {
        (Some(images), None) => {
            let set = if images.is_dir() {
                ZeroShotDataset::from_image_folder(images)?
            } else {
                ZeroShotDataset::from_list(images, None)?
            };
            let names = class_names(&a, &set.class_names)?;
            let m =
                evaluate::zero_shot(&session, &set, &names, &templates, head, common.batch_size)?;
            (images.clone(), m, names, set.samples.len())
        }
        (None, Some(videos)) => {
            let set = evaluate::video_folder(videos)?;
            let names = class_names(&a, &set.class_names)?;
            let m = evaluate::zero_shot_videos(
                &session,
                &set.samples,
                &names,
                &templates,
                head,
                a.frames,
            )?;
            (videos.clone(), m, names, set.samples.len())
        }
        _ => bail!("give exactly one of --images and --videos"),
    };
    let result = evaluate::classification_result(
        &common.clip.model.model,
        &dataset_name(common, &data),
        samples,
        &metrics,
    );
    write_report(common, &result)?;
    let png = common.out.join("confusion_matrix.png");
    save_confusion_matrix_png(&metrics.confusion, &names, &png)?;
    eprintln!("confusion matrix: {}", png.display());
    Ok(())
}

/// The class names for the prompts: from --classnames when given (same count as the folders).
fn class_names(a: &ZeroshotArgs, folders: &[String]) -> Result<Vec<String>> {
    match &a.classnames {
        None => Ok(folders.iter().map(|n| n.replace('_', " ")).collect()),
        Some(p) => {
            let names = read_json_list(p, a.dataset.as_deref(), "imagenet1k")?;
            if names.len() != folders.len() {
                bail!(
                    "{} lists {} class names but the data has {} classes",
                    p.display(),
                    names.len(),
                    folders.len()
                );
            }
            Ok(names)
        }
    }
}

fn load_retrieval(a: &RetrievalArgs) -> Result<RetrievalDataset> {
    let root = a
        .image_root
        .clone()
        .unwrap_or_else(|| a.data.parent().map(Path::to_path_buf).unwrap_or_default());
    let dataset = RetrievalDataset::load(&a.data, &a.split, &root)?;
    Ok(match a.limit {
        Some(n) => dataset.truncated(n),
        None => dataset,
    })
}

fn retrieval(a: RetrievalArgs) -> Result<()> {
    let dataset = load_retrieval(&a)?;
    let session = a.common.clip.open(ImageTransform::Retrieval)?;
    let head = a.common.clip.head()?;
    let name = dataset_name(&a.common, &a.data);
    let result = evaluate::retrieval(
        &session,
        &dataset,
        head,
        a.common.batch_size,
        &a.common.clip.model.model,
        &name,
    )?;
    write_report(&a.common, &result)
}

fn caption(a: CaptionArgs) -> Result<()> {
    let r = &a.retrieval;
    let dataset = load_retrieval(r)?;
    let session = r.common.clip.open(ImageTransform::Retrieval)?;
    let options = CaptionOptions {
        max_new_tokens: a.max_new_tokens,
        min_new_tokens: a.min_new_tokens,
        num_beams: a.num_beams.max(1),
        eos_token_id: None,
    };
    let name = dataset_name(&r.common, &r.data);
    let (result, captions) = evaluate::captioning(
        &session,
        &dataset,
        &a.prompt,
        &options,
        &r.common.clip.model.model,
        &name,
    )?;
    write_report(&r.common, &result)?;
    let listing: Vec<_> = captions
        .iter()
        .map(|(image, text)| json!({"image": image, "caption": text}))
        .collect();
    let path = r.common.out.join("captions.json");
    std::fs::write(&path, serde_json::to_string_pretty(&listing)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn chat_classify(a: ChatClassifyArgs) -> Result<()> {
    use internvl::tasks::chat::ChatModel;
    let mut set = ZeroShotDataset::from_image_folder(&a.images)?;
    if let Some(n) = a.per_class {
        let mut seen = vec![0usize; set.class_names.len()];
        set.samples.retain(|(_, class)| {
            seen[*class] += 1;
            seen[*class] <= n
        });
    }
    let names = match &a.classnames {
        Some(p) => {
            let names = read_json_list(p, a.dataset.as_deref(), "imagenet1k")?;
            if names.len() != set.class_names.len() {
                bail!(
                    "{} lists {} class names but {} has {} class folders",
                    p.display(),
                    names.len(),
                    a.images.display(),
                    set.class_names.len()
                );
            }
            names
        }
        None => set
            .class_names
            .iter()
            .map(|n| n.trim_start_matches(|c: char| c.is_ascii_digit()))
            .map(|n| n.strip_prefix('_').unwrap_or(n).replace('_', " "))
            .collect(),
    };
    let folder = a.model.folder()?;
    let opened = ModelFolder::open(&folder)?;
    let run = if opened.kind() == ModelKind::InternVLCG {
        let (dtype, device) = (a.model.dtype()?, a.model.device());
        let session = ContrastiveSession::open(&opened, ImageTransform::Retrieval, dtype, &device)?;
        let options = CaptionOptions {
            max_new_tokens: a.max_new_tokens,
            min_new_tokens: 1,
            num_beams: 1,
            eos_token_id: None,
        };
        evaluate::caption_classification(&session, &set, &names, &a.caption_prompt, &options)?
    } else {
        drop(opened);
        let model = ChatModel::open(&folder, None, None, a.model.dtype()?, &a.model.device())?;
        evaluate::chat_classification(&model, &set, &names, &a.question, a.max_new_tokens)?
    };
    let name = a.name.clone().unwrap_or_else(|| {
        a.images
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| a.images.display().to_string())
    });
    let result = evaluate::chat_classification_result(&a.model.model, &name, &run);
    write_results(&a.out, a.json, &result)?;
    let mut lines = String::new();
    for (image, truth, answer, named) in &run.answers {
        let line = json!({
            "image": image,
            "class": names[*truth],
            "answer": answer,
            "named": named.map(|c| names[c].as_str()),
        });
        lines.push_str(&line.to_string());
        lines.push('\n');
    }
    std::fs::write(a.out.join("answers.jsonl"), lines)
        .with_context(|| format!("writing {}", a.out.display()))?;
    let mut labels = names.clone();
    labels.push("(none)".into());
    save_confusion_matrix_png(
        &run.metrics.confusion,
        &labels,
        a.out.join("confusion_matrix.png"),
    )?;
    Ok(())
}
