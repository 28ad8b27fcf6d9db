//! SentencePiece vocabularies stored in llama.cpp GGUF files (`tokenizer.ggml.*`).

use std::collections::HashMap;
use std::io::BufReader;
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};

use super::model::{ModelOptions, Piece, PieceKind, SentencePieceModel};
use super::normalizer::Normalizer;
use crate::{Error, Result};

/// The message of a candle error without the backtrace it carries when `RUST_BACKTRACE` is set.
fn message(error: impl std::fmt::Display) -> String {
    let text = error.to_string();
    text.lines().next().unwrap_or_default().to_string()
}

/// Reads one metadata entry, naming the key in errors.
struct Metadata<'a> {
    values: &'a HashMap<String, Value>,
    origin: &'a str,
}

impl Metadata<'_> {
    fn fail(&self, key: &str, reason: impl std::fmt::Display) -> Error {
        Error::tokenizer(self.origin, format!("GGUF key {key}: {}", message(reason)))
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.values.get(key)
    }

    fn array(&self, key: &str) -> Result<Option<&Vec<Value>>> {
        self.get(key)
            .map(|v| v.to_vec().map_err(|e| self.fail(key, e)))
            .transpose()
    }

    fn u32(&self, key: &str) -> Result<Option<u32>> {
        let value = self
            .get(key)
            .map(|v| v.to_u64().map_err(|e| self.fail(key, e)));
        let value = value.transpose()?;
        value
            .map(|v| u32::try_from(v).map_err(|_| self.fail(key, "does not fit in u32")))
            .transpose()
    }

    fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        self.get(key)
            .map_or(Ok(default), |v| v.to_bool().map_err(|e| self.fail(key, e)))
    }
}

/// llama.cpp `token_type`: same numbering as sentencepiece; 0 (UNDEFINED) counts as NORMAL.
fn kind_of(value: &Value) -> std::result::Result<PieceKind, String> {
    let raw = value.to_i32().map_err(message)?;
    if raw == 0 {
        return Ok(PieceKind::Normal);
    }
    PieceKind::from_proto(raw).ok_or_else(|| format!("unknown token type {raw}"))
}

fn read_pieces(meta: &Metadata) -> Result<Vec<Piece>> {
    const TOKENS: &str = "tokenizer.ggml.tokens";
    const SCORES: &str = "tokenizer.ggml.scores";
    const TYPES: &str = "tokenizer.ggml.token_type";
    let tokens = meta
        .array(TOKENS)?
        .ok_or_else(|| meta.fail(TOKENS, "missing"))?;
    let scores = meta.array(SCORES)?;
    let types = meta.array(TYPES)?;
    for (key, values) in [(SCORES, scores), (TYPES, types)] {
        if values.is_some_and(|v| v.len() != tokens.len()) {
            return Err(meta.fail(
                key,
                format!("length differs from the {} tokens", tokens.len()),
            ));
        }
    }
    tokens
        .iter()
        .enumerate()
        .map(|(i, token)| {
            let text = token.to_string().map_err(|e| meta.fail(TOKENS, e))?.clone();
            // llama.cpp uses score 0 when a vocabulary has no scores.
            let score =
                scores.map_or(Ok(0.0), |s| s[i].to_f32().map_err(|e| meta.fail(SCORES, e)))?;
            let kind = types.map_or(Ok(PieceKind::Normal), |t| {
                kind_of(&t[i]).map_err(|e| meta.fail(TYPES, e))
            })?;
            Ok(Piece { text, score, kind })
        })
        .collect()
}

impl SentencePieceModel {
    /// Loads the vocabulary of a llama.cpp GGUF file (`tokenizer.ggml.model` = `"llama"`,
    /// i.e. SentencePiece): tokens, scores and token types, BOS/EOS/padding ids, and
    /// `add_space_prefix` (default true) / `remove_extra_whitespaces` (default false).
    /// Byte fallback is on when the vocabulary has byte pieces, as in llama.cpp.
    pub fn from_gguf(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let content = Content::read(&mut BufReader::new(file)).map_err(|e| {
            Error::tokenizer(&origin, format!("not a readable GGUF file: {}", message(e)))
        })?;
        Self::from_gguf_metadata(&content.metadata, &origin)
    }

    /// Builds the model from already-read GGUF metadata; `origin` names it in errors.
    pub fn from_gguf_metadata(values: &HashMap<String, Value>, origin: &str) -> Result<Self> {
        let meta = Metadata { values, origin };
        const MODEL: &str = "tokenizer.ggml.model";
        let kind = meta.get(MODEL).ok_or_else(|| meta.fail(MODEL, "missing"))?;
        let kind = kind.to_string().map_err(|e| meta.fail(MODEL, e))?;
        if kind != "llama" {
            return Err(meta.fail(
                MODEL,
                format!("{kind:?} is not a SentencePiece (\"llama\") vocabulary"),
            ));
        }
        let pieces = read_pieces(&meta)?;
        let options = ModelOptions {
            byte_fallback: pieces.iter().any(|p| p.kind == PieceKind::Byte),
            normalizer: Normalizer {
                add_dummy_prefix: meta.bool_or("tokenizer.ggml.add_space_prefix", true)?,
                remove_extra_whitespaces: meta
                    .bool_or("tokenizer.ggml.remove_extra_whitespaces", false)?,
                escape_whitespaces: true,
            },
            ..ModelOptions::default()
        };
        let count = pieces.len();
        let mut model = Self::from_pieces(pieces, options, origin)?;
        let special = |key: &str| -> Result<Option<u32>> {
            let id = meta.u32(key)?;
            match id {
                Some(id) if id as usize >= count => {
                    Err(meta.fail(key, format!("id {id} is outside the vocabulary")))
                }
                _ => Ok(id),
            }
        };
        let bos = special("tokenizer.ggml.bos_token_id")?;
        let eos = special("tokenizer.ggml.eos_token_id")?;
        let pad = special("tokenizer.ggml.padding_token_id")?;
        model.set_special_ids(bos, eos, pad);
        Ok(model)
    }
}
