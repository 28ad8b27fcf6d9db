//! `internvl`: the command-line front end of the internvl library.
//!
//! Conventions shared by every command: `--model` takes a local folder or a hub id; `--json`
//! prints one JSON document on stdout; progress and logs go to stderr; a bad input exits with
//! status 1 and a one-line `error: ...` that names the problem.

mod commands;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// InternVL vision-language models, natively.
#[derive(Debug, Parser)]
#[command(name = "internvl", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Architecture, parameter count, stored dtypes, image and patch size of a model.
    Info(commands::info::Args),
    /// Vision features of images (pixel_values, last_hidden_state, pooler_output) as safetensors.
    Features(commands::features::Args),
    /// Time the InternViT-300M-448px-shaped encoder on one 448x448 image (random weights).
    Bench(commands::bench::Args),
    /// InternVL-C/G image and text embeddings (L2-normalised) and their logits.
    Embed(commands::embed::Args),
    /// Zero-shot classification of images or videos with InternVL-C/G.
    Classify(commands::classify::Args),
    /// Image→text and text→image retrieval with InternVL-C/G.
    Retrieve(commands::retrieve::Args),
    /// Zero-shot captions with InternVL-G (QLLaMA), greedy or beam search.
    Caption(commands::caption::Args),
    /// Multimodal chat with InternVL-Chat models (one-shot with --prompt, else interactive).
    Chat(commands::chat::Args),
    /// Evaluation harness: zero-shot classification, retrieval and captioning metrics.
    Eval(commands::eval::Args),
    /// Token ids of a text, exactly as the release's tokenizer gives them (or --decode ids).
    Tokenize(commands::tokenize::Args),
    /// An OpenAI-compatible HTTP server: chat completions (InternVL-Chat) or embeddings (C/G).
    Serve(commands::serve::Args),
    /// Training: objectives and gradients (`loss`), the SFT data pipeline (`preview`).
    Train(commands::train::Args),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info(args) => commands::info::run(args),
        Command::Features(args) => commands::features::run(args),
        Command::Bench(args) => commands::bench::run(args),
        Command::Embed(args) => commands::embed::run(args),
        Command::Classify(args) => commands::classify::run(args),
        Command::Retrieve(args) => commands::retrieve::run(args),
        Command::Caption(args) => commands::caption::run(args),
        Command::Eval(args) => commands::eval::run(args),
        Command::Chat(args) => commands::chat::run(args),
        Command::Tokenize(args) => commands::tokenize::run(args),
        Command::Serve(args) => commands::serve::run(args),
        Command::Train(args) => commands::train::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the causes joined, newlines flattened.
            let message = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
