//! Byte-level BPE vocabularies stored in llama.cpp GGUF files (`tokenizer.ggml.model` =
//! `"gpt2"`): GPT-2-style tokens and merges, with the pre-tokeniser that
//! `tokenizer.ggml.pre` names, behaving as the HF fast tokenizer the GGUF was converted from.
//!
//! What is read, and how:
//! * `tokenizer.ggml.tokens` (id order) and `tokenizer.ggml.merges` (`"left right"`, rank
//!   order) become a `tokenizers` BPE model; no unknown token, no byte fallback;
//! * `tokenizer.ggml.token_type`: CONTROL (3) tokens are special added tokens, USER_DEFINED (4)
//!   ones plain added tokens; both are cut out of the text before pre-tokenisation (leftmost
//!   match, longest there) and never merged into; decoding writes USER_DEFINED tokens verbatim
//!   and drops CONTROL ones when asked to skip special tokens;
//! * `tokenizer.ggml.bos/eos/unknown/padding_token_id` name the special tokens;
//!   `tokenizer.ggml.add_bos_token` / `add_eos_token` decide what
//!   [`ByteLevelBpeTokenizer::encode_with_defaults`] adds (default: BOS for the LLaMA-3
//!   pre-tokeniser only, never EOS);
//! * `tokenizer.ggml.pre` picks one of the [`GgufPreTokenizer`]s; other values are refused by
//!   name rather than tokenised differently from the model's own tokenizer.
//!
//! Decoding maps the byte-level characters back to bytes and replaces invalid UTF-8 with U+FFFD,
//! without clean-up of spaces (what llama.cpp does for these vocabularies and what the HF
//! `ByteLevel` decoder does).

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::Value;
use serde_json::{json, Value as Json};
use tokenizers::normalizers::NormalizerWrapper;

use super::byte_level::{BpeSource, ByteLevelBpeTokenizer, QWEN2_PRETOKENIZE_REGEX};
use super::gguf::{kind_of, read_metadata, Metadata, MODEL_KEY};
use super::hf_config::{AddedToken, HfTokenizerSettings, SlowTokenizerClass, TokenSpec};
use super::model::PieceKind;
use crate::Result;

/// The LLaMA-3 pre-tokenisation regex (its `tokenizer.json` `Split` pattern): like Qwen2's, but
/// numbers in groups of up to three digits.
pub const LLAMA3_PRETOKENIZE_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

const PRE_KEY: &str = "tokenizer.ggml.pre";
const TOKENS_KEY: &str = "tokenizer.ggml.tokens";
const MERGES_KEY: &str = "tokenizer.ggml.merges";
const TYPES_KEY: &str = "tokenizer.ggml.token_type";

/// How a GGUF byte-level vocabulary splits text before BPE: the HF pre-tokeniser (and
/// normaliser) of the `tokenizer.json` that llama.cpp's `tokenizer.ggml.pre` value stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgufPreTokenizer {
    /// GPT-2's regex (`'s|'t|…| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`) through the
    /// `ByteLevel` pre-tokeniser: `gpt-2`.
    Gpt2,
    /// Every digit alone (`Digits(individual_digits=True)`), then GPT-2's regex: `smollm`
    /// (SmolLM, SmolLM2), `starcoder`, `refact`.
    DigitsGpt2,
    /// NFC normalisation, then the Qwen2 regex ([`QWEN2_PRETOKENIZE_REGEX`]): `qwen2`.
    Qwen2,
    /// The LLaMA-3 regex ([`LLAMA3_PRETOKENIZE_REGEX`]), and a word that is a whole vocabulary
    /// token is taken without merging (`ignore_merges`): `llama-bpe`, `llama3`, `llama-v3`.
    Llama3,
}

/// `tokenizer.ggml.pre` values and what they mean.
const PRE_NAMES: &[(&str, GgufPreTokenizer)] = &[
    ("gpt-2", GgufPreTokenizer::Gpt2),
    ("smollm", GgufPreTokenizer::DigitsGpt2),
    ("starcoder", GgufPreTokenizer::DigitsGpt2),
    ("refact", GgufPreTokenizer::DigitsGpt2),
    ("qwen2", GgufPreTokenizer::Qwen2),
    ("llama-bpe", GgufPreTokenizer::Llama3),
    ("llama3", GgufPreTokenizer::Llama3),
    ("llama-v3", GgufPreTokenizer::Llama3),
];

impl GgufPreTokenizer {
    /// The pre-tokeniser a `tokenizer.ggml.pre` value names, if it is supported.
    pub fn from_gguf_name(name: &str) -> Option<Self> {
        PRE_NAMES
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, pre)| *pre)
    }

    /// Every supported `tokenizer.ggml.pre` value.
    pub fn names() -> Vec<&'static str> {
        PRE_NAMES.iter().map(|(name, _)| *name).collect()
    }

    /// Whether BOS is added when the GGUF has no `tokenizer.ggml.add_bos_token` (llama.cpp's
    /// defaults: only the LLaMA-3 family).
    pub fn adds_bos_by_default(self) -> bool {
        self == Self::Llama3
    }

    /// The `tokenizers` pre-tokeniser, as `tokenizer.json` writes it.
    fn pre_tokenizer_json(self) -> Json {
        let byte_level = |use_regex: bool| {
            json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false,
                   "use_regex": use_regex})
        };
        let split = |regex: &str| {
            json!({"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated",
                   "invert": false})
        };
        match self {
            Self::Gpt2 => byte_level(true),
            Self::DigitsGpt2 => json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true},
                byte_level(true),
            ]}),
            Self::Qwen2 => json!({"type": "Sequence", "pretokenizers": [
                split(QWEN2_PRETOKENIZE_REGEX),
                byte_level(false),
            ]}),
            Self::Llama3 => json!({"type": "Sequence", "pretokenizers": [
                split(LLAMA3_PRETOKENIZE_REGEX),
                byte_level(false),
            ]}),
        }
    }

    /// The normaliser applied to the whole text first, if any.
    fn normalizer(self) -> Option<Json> {
        (self == Self::Qwen2).then(|| json!({"type": "NFC"}))
    }
}

/// The token texts, in id order.
fn read_tokens<'a>(meta: &'a Metadata) -> Result<Vec<&'a str>> {
    let tokens = meta
        .array(TOKENS_KEY)?
        .ok_or_else(|| meta.fail(TOKENS_KEY, "missing"))?;
    if tokens.is_empty() {
        return Err(meta.fail(TOKENS_KEY, "the vocabulary is empty"));
    }
    tokens
        .iter()
        .map(|t| {
            t.to_string()
                .map(String::as_str)
                .map_err(|e| meta.fail(TOKENS_KEY, e))
        })
        .collect()
}

/// The merges as `[left, right]` pairs, cut at the first space after the first character
/// (a merge's left part never starts with a space in a byte-level vocabulary).
fn read_merges(meta: &Metadata) -> Result<Vec<Json>> {
    let merges = meta
        .array(MERGES_KEY)?
        .ok_or_else(|| meta.fail(MERGES_KEY, "missing (a byte-level BPE needs its merges)"))?;
    merges
        .iter()
        .enumerate()
        .map(|(rank, merge)| {
            let text = merge.to_string().map_err(|e| meta.fail(MERGES_KEY, e))?;
            let first = text.chars().next().map_or(0, char::len_utf8);
            match text[first..].find(' ') {
                Some(at) => {
                    let (left, right) = text.split_at(first + at);
                    Ok(json!([left, &right[1..]]))
                }
                None => Err(meta.fail(
                    MERGES_KEY,
                    format!("merge {rank} {text:?} is not two tokens separated by a space"),
                )),
            }
        })
        .collect()
}

/// The token types (all NORMAL when the key is absent).
fn read_kinds(meta: &Metadata, count: usize) -> Result<Vec<PieceKind>> {
    let Some(types) = meta.array(TYPES_KEY)? else {
        return Ok(vec![PieceKind::Normal; count]);
    };
    if types.len() != count {
        return Err(meta.fail(
            TYPES_KEY,
            format!("{} types for {count} tokens", types.len()),
        ));
    }
    types
        .iter()
        .map(|t| kind_of(t).map_err(|e| meta.fail(TYPES_KEY, e)))
        .collect()
}

impl ByteLevelBpeTokenizer {
    /// The tokenizer of a llama.cpp GGUF file with a byte-level BPE vocabulary
    /// (`tokenizer.ggml.model` = `"gpt2"`; SmolLM2, Qwen2, LLaMA-3, GPT-2, StarCoder, …): see
    /// [`ByteLevelBpeTokenizer::from_gguf_metadata`].
    ///
    /// Fails with [`Error::Io`](crate::Error::Io) when the file cannot be opened and [`Error::Tokenizer`](crate::Error::Tokenizer) when it
    /// is not a GGUF file, has no byte-level vocabulary or an unsupported `tokenizer.ggml.pre`.
    pub fn from_gguf(path: impl AsRef<Path>) -> Result<Self> {
        let (metadata, origin) = read_metadata(path.as_ref())?;
        Self::from_gguf_metadata(&metadata, &origin)
    }

    /// Builds the tokenizer from already-read GGUF metadata; `origin` names it in errors.
    ///
    /// Fails with [`Error::Tokenizer`](crate::Error::Tokenizer) naming the key at fault: a model other than `"gpt2"`, a
    /// `tokenizer.ggml.pre` that is missing or not one of [`GgufPreTokenizer::names`], missing
    /// tokens or merges, a merge of tokens outside the vocabulary, a special-token id outside
    /// it.
    pub fn from_gguf_metadata(values: &HashMap<String, Value>, origin: &str) -> Result<Self> {
        Self::from_gguf_metadata_with(values, origin, &[])
    }

    /// [`ByteLevelBpeTokenizer::from_gguf_metadata`] with `added` appended as special tokens
    /// (new ids after the vocabulary, in order, unless the vocabulary already has them), as
    /// transformers' `tokenizer.add_tokens(added, special_tokens=True)` does.
    pub fn from_gguf_metadata_with(
        values: &HashMap<String, Value>,
        origin: &str,
        added: &[&str],
    ) -> Result<Self> {
        let meta = Metadata { values, origin };
        let model = meta.model()?;
        if model != "gpt2" {
            return Err(meta.fail(
                MODEL_KEY,
                format!("{model:?} is not a byte-level BPE (\"gpt2\") vocabulary"),
            ));
        }
        let pre_name = meta.string(PRE_KEY)?.ok_or_else(|| {
            meta.fail(
                PRE_KEY,
                format!(
                    "missing: the pre-tokenizer of a byte-level BPE must be named (supported: {})",
                    GgufPreTokenizer::names().join(", ")
                ),
            )
        })?;
        let pre = GgufPreTokenizer::from_gguf_name(pre_name).ok_or_else(|| {
            meta.fail(
                PRE_KEY,
                format!(
                    "pre-tokenizer {pre_name:?} is not supported (supported: {})",
                    GgufPreTokenizer::names().join(", ")
                ),
            )
        })?;
        let tokens = read_tokens(&meta)?;
        let kinds = read_kinds(&meta, tokens.len())?;
        let merges = read_merges(&meta)?;
        let vocab: serde_json::Map<String, Json> = tokens
            .iter()
            .enumerate()
            .map(|(id, token)| (token.to_string(), json!(id)))
            .collect();
        let bpe = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": [],
            "normalizer": null,
            "pre_tokenizer": pre.pre_tokenizer_json(),
            "post_processor": null,
            "decoder": null,
            "model": {
                "type": "BPE",
                "dropout": null,
                "unk_token": null,
                "continuing_subword_prefix": null,
                "end_of_word_suffix": null,
                "fuse_unk": false,
                "byte_fallback": false,
                "ignore_merges": pre == GgufPreTokenizer::Llama3,
                "vocab": Json::Object(vocab),
                "merges": merges,
            },
        });
        let bpe: tokenizers::Tokenizer = serde_json::from_value(bpe)
            .map_err(|e| meta.fail(MERGES_KEY, format!("cannot build the BPE: {e}")))?;
        let normalizer = pre
            .normalizer()
            .map(serde_json::from_value::<NormalizerWrapper>)
            .transpose()
            .map_err(|e| meta.fail(PRE_KEY, e))?;
        let mut settings = gguf_settings(&meta, &tokens, &kinds, pre)?;
        settings
            .additional_special_tokens
            .extend(added.iter().map(|t| TokenSpec::plain(t)));
        let mut tokenizer = Self::new(
            Box::new(bpe),
            normalizer,
            BpeSource::TokenizerJson,
            settings,
        );
        tokenizer.set_gguf_pre_tokenizer(pre);
        Ok(tokenizer)
    }
}

/// The added and special tokens of a GGUF byte-level vocabulary, in transformers' terms.
fn gguf_settings(
    meta: &Metadata,
    tokens: &[&str],
    kinds: &[PieceKind],
    pre: GgufPreTokenizer,
) -> Result<HfTokenizerSettings> {
    let count = tokens.len();
    let named = |key: &str| -> Result<Option<TokenSpec>> {
        Ok(meta
            .token_id(key, count)?
            .map(|id| TokenSpec::plain(tokens[id as usize])))
    };
    let bos_token = named("tokenizer.ggml.bos_token_id")?;
    let eos_token = named("tokenizer.ggml.eos_token_id")?;
    let unk_token = named("tokenizer.ggml.unknown_token_id")?;
    let pad_token = named("tokenizer.ggml.padding_token_id")?;
    let named_contents: Vec<&str> = [&bos_token, &eos_token, &unk_token, &pad_token]
        .into_iter()
        .flatten()
        .map(|t| t.content.as_str())
        .collect();
    let mut added_tokens = Vec::new();
    let mut additional_special_tokens = Vec::new();
    for (id, (&text, &kind)) in tokens.iter().zip(kinds).enumerate() {
        let special = match kind {
            PieceKind::Control => true,
            PieceKind::UserDefined => false,
            _ => continue,
        };
        if text.is_empty() {
            continue;
        }
        if special && !named_contents.contains(&text) {
            additional_special_tokens.push(TokenSpec::plain(text));
        }
        added_tokens.push(AddedToken {
            spec: TokenSpec::plain(text),
            id: id as u32,
            special,
        });
    }
    Ok(HfTokenizerSettings {
        class: SlowTokenizerClass::Qwen2,
        bos_token,
        eos_token,
        unk_token,
        pad_token,
        additional_special_tokens,
        added_tokens,
        add_bos_token: meta.bool_or("tokenizer.ggml.add_bos_token", pre.adds_bos_by_default())?,
        add_eos_token: meta.bool_or("tokenizer.ggml.add_eos_token", false)?,
        clean_up_tokenization_spaces: false,
    })
}
