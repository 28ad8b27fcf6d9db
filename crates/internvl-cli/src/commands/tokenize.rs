//! `internvl tokenize`: a model's text tokenizer, id for id as the release's
//! `tokenizer(TEXT).input_ids` (slow transformers tokenizers, as the official code loads them).

use std::io::Read;

use anyhow::{bail, Context, Result};
use internvl::models::hub::{resolve_model, HubOptions};
use internvl::processing::tokenizer::Tokenizer;
use serde_json::json;

/// Arguments of `internvl tokenize`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A model folder (only the tokenizer files are needed: tokenizer.model or tokenizer.json /
    /// vocab.json + merges.txt, tokenizer_config.json, special_tokens_map.json,
    /// added_tokens.json), or a hub id in the local cache.
    #[arg(long)]
    model: String,
    /// Hub revision (branch, tag or commit) for a hub id.
    #[arg(long)]
    revision: Option<String>,
    /// Never touch the network; hub ids must be in the local cache (also HF_HUB_OFFLINE=1).
    #[arg(long)]
    offline: bool,
    /// Print one JSON document: {"ids": [...], "tokens": [...]} (with --decode: {"text": ...}).
    #[arg(long)]
    json: bool,
    /// Decode instead: TEXT is a list of ids (separated by spaces or commas), printed as text.
    #[arg(long)]
    decode: bool,
    /// With --decode: drop special tokens (`skip_special_tokens=True`).
    #[arg(long, requires = "decode")]
    skip_special_tokens: bool,
    /// The text to tokenize, used exactly as given (BOS added where the tokenizer adds it).
    /// Read from standard input (exactly, trailing newline included) when omitted.
    text: Option<String>,
}

/// Prints the ids of TEXT on one line (or the JSON document), or with `--decode` the text of
/// the ids.
pub fn run(args: Args) -> Result<()> {
    let options = HubOptions {
        offline: args.offline,
        revision: args.revision.clone(),
        cache_dir: None,
    };
    let text = match &args.text {
        Some(text) => text.clone(),
        None => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading the text from standard input")?;
            text
        }
    };
    let dir = resolve_model(&args.model, &options)?;
    let tokenizer = Tokenizer::from_folder(&dir)
        .with_context(|| format!("loading the tokenizer of {}", dir.display()))?;
    if args.decode {
        let ids = parse_ids(&text)?;
        let text = tokenizer.decode(&ids, args.skip_special_tokens)?;
        if args.json {
            println!("{}", json!({ "text": text }));
        } else {
            println!("{text}");
        }
        return Ok(());
    }
    let ids = tokenizer.encode_with_defaults(&text)?;
    if args.json {
        let tokens: Vec<String> = ids
            .iter()
            .map(|&id| tokenizer.id_to_token(id).unwrap_or_default())
            .collect();
        println!("{}", json!({ "ids": ids, "tokens": tokens }));
    } else {
        let line: Vec<String> = ids.iter().map(u32::to_string).collect();
        println!("{}", line.join(" "));
    }
    Ok(())
}

/// `1 2 3`, `1,2,3` or `[1, 2, 3]`.
fn parse_ids(text: &str) -> Result<Vec<u32>> {
    let inner = text.trim().trim_start_matches('[').trim_end_matches(']');
    inner
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|part| !part.is_empty())
        .map(|part| {
            part.parse::<u32>()
                .map_err(|_| anyhow::anyhow!("--decode: `{part}` is not a token id"))
        })
        .collect::<Result<Vec<u32>>>()
        .and_then(|ids| {
            if ids.is_empty() && !inner.trim().is_empty() {
                bail!("--decode: no ids in `{text}`");
            }
            Ok(ids)
        })
}
