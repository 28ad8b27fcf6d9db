//! `internvl chat`: one-shot (`--prompt`) or interactive multimodal chat.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{bail, Result};
use internvl::processing::templates::video_question;
use internvl::tasks::chat::{video_frames, ChatModel, GenerationOptions};
use serde_json::json;

use super::ModelArgs;

/// Arguments of `internvl chat`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// An image for the prompt (repeatable; several images get `Image-N: <image>` placeholders
    /// unless the prompt has its own `<image>` placeholders).
    #[arg(long = "image")]
    images: Vec<PathBuf>,
    /// A video as a folder of frames or a list file of frame images: frames are sampled as the
    /// release's video example does, one tile each, asked about as `Frame-N: <image>` lines.
    #[arg(long, conflicts_with = "images")]
    video: Option<PathBuf>,
    /// Frames sampled from --video.
    #[arg(long, default_value_t = 8)]
    frames: usize,
    /// Most tiles per image (overrides the config's max_dynamic_patch).
    #[arg(long)]
    max_tiles: Option<u32>,
    /// System message (replaces the template's default).
    #[arg(long)]
    system: Option<String>,
    /// Chat template (default: the model's; `chatml` for GGUF models).
    #[arg(long)]
    template: Option<String>,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 512)]
    max_new_tokens: usize,
    /// Sampling temperature; 0 (default) decodes greedily.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    /// Nucleus sampling threshold.
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    /// Top-k sampling (transformers' default 50; 0 = off).
    #[arg(long, default_value_t = 50)]
    top_k: usize,
    /// Repetition penalty (1 = off).
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f64,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Extra stop string (repeatable).
    #[arg(long = "stop")]
    stop: Vec<String>,
    /// Report the log-probabilities of each generated token with its K best alternatives.
    #[arg(long)]
    top_logprobs: Option<usize>,
    /// The question (used verbatim, `<image>` placeholders included); without it, an interactive
    /// session starts.
    #[arg(long)]
    prompt: Option<String>,
    /// Print one JSON document (with --prompt).
    #[arg(long)]
    json: bool,
}

impl Args {
    fn options(&self) -> GenerationOptions {
        GenerationOptions {
            max_new_tokens: self.max_new_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            repetition_penalty: self.repetition_penalty,
            seed: self.seed,
            top_logprobs: self.top_logprobs,
            stop_strings: self.stop.clone(),
        }
    }
}

/// Runs the chat.
pub fn run(args: Args) -> Result<()> {
    if args.max_new_tokens == 0 {
        bail!("--max-new-tokens must be at least 1");
    }
    if args.temperature < 0.0
        || !(0.0..=1.0).contains(&args.top_p)
        || args.repetition_penalty <= 0.0
    {
        bail!("--temperature must be ≥ 0, --top-p in [0, 1] and --repetition-penalty > 0");
    }
    let path = args.model.folder_or_file()?;
    let model = ChatModel::open(
        &path,
        args.template.as_deref(),
        args.system.as_deref(),
        args.model.dtype()?,
        &args.model.device(),
    )?;
    match &args.prompt {
        Some(prompt) => one_shot(&model, &args, prompt),
        None => interactive(&model, &args),
    }
}

/// The question with numbered placeholders for several images (`chat()`'s multi-image form)
/// unless it has its own.
fn question_for(prompt: &str, images: usize) -> String {
    if images > 1 && !prompt.contains("<image>") {
        let mut q: String = (1..=images)
            .map(|i| format!("Image-{i}: <image>\n"))
            .collect();
        q.push_str(prompt);
        q
    } else {
        prompt.to_string()
    }
}

fn one_shot(model: &ChatModel, args: &Args, prompt: &str) -> Result<()> {
    let (images, question) = match &args.video {
        Some(video) => {
            let frames = video_frames(video, args.frames)?;
            let question = if prompt.contains("<image>") {
                prompt.to_string()
            } else {
                video_question(frames.len(), prompt)
            };
            (model.prepare_images(&frames, Some(1))?, question)
        }
        None => (
            model.prepare_images(&args.images, args.max_tiles)?,
            question_for(prompt, args.images.len()),
        ),
    };
    let tiles = images
        .as_ref()
        .map(|i| i.num_patches_list.clone())
        .unwrap_or_default();
    let (_, prompt_ids) = model.prompt_ids(&question, None, &tiles)?;
    let stdout = std::io::stdout();
    let mut stream = |piece: &str| {
        if !args.json {
            let mut out = stdout.lock();
            let _ = out.write_all(piece.as_bytes());
            let _ = out.flush();
        }
    };
    let generation = model.generate(&prompt_ids, images.as_ref(), &args.options(), &mut stream)?;
    if args.json {
        let mut doc = json!({
            "text": generation.text,
            "prompt_token_ids": prompt_ids,
            "token_ids": generation.token_ids,
        });
        if let Some(logprobs) = &generation.logprobs {
            doc["logprobs"] = json!(logprobs);
        }
        println!("{}", serde_json::to_string(&doc)?);
    } else {
        println!();
    }
    Ok(())
}

fn interactive(model: &ChatModel, args: &Args) -> Result<()> {
    eprintln!("internvl chat — /image PATH attaches an image, /reset starts over, /quit leaves");
    let mut history: Vec<(String, String)> = Vec::new();
    let mut images: Vec<PathBuf> = args.images.clone();
    let mut fresh_images = images.len();
    let stdin = std::io::stdin();
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim();
        match line {
            "" => continue,
            "/quit" | "/exit" => break,
            "/reset" => {
                history.clear();
                images.clear();
                fresh_images = 0;
                eprintln!("(conversation and images cleared)");
                continue;
            }
            _ => {}
        }
        if let Some(path) = line.strip_prefix("/image ") {
            let path = PathBuf::from(path.trim());
            if !path.is_file() {
                eprintln!("error: no such file {}", path.display());
                continue;
            }
            images.push(path);
            fresh_images += 1;
            eprintln!("(image {} attached)", images.len());
            continue;
        }
        // New images after the first turn need their own placeholders (chat() only adds
        // `<image>\n` by itself when there is no history).
        let mut question = question_for(line, fresh_images);
        if !history.is_empty() && fresh_images > 0 && !question.contains("<image>") {
            question = format!("<image>\n{question}");
        }
        match answer(model, args, &images, &history, &question) {
            Ok((asked, text)) => {
                history.push((asked, text));
                fresh_images = 0;
            }
            Err(e) => eprintln!("error: {}", format!("{e:#}").replace('\n', " ")),
        }
    }
    Ok(())
}

fn answer(
    model: &ChatModel,
    args: &Args,
    images: &[PathBuf],
    history: &[(String, String)],
    question: &str,
) -> Result<(String, String)> {
    let prepared = model.prepare_images(images, args.max_tiles)?;
    let tiles = prepared
        .as_ref()
        .map(|i| i.num_patches_list.clone())
        .unwrap_or_default();
    let past = (!history.is_empty()).then_some(history);
    let (asked, prompt_ids) = model.prompt_ids(question, past, &tiles)?;
    let mut stream = |piece: &str| {
        print!("{piece}");
        let _ = std::io::stdout().flush();
    };
    let generation =
        model.generate(&prompt_ids, prepared.as_ref(), &args.options(), &mut stream)?;
    println!();
    Ok((asked, generation.text))
}
