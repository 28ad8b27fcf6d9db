//! Vocabularies stored in llama.cpp GGUF files (`tokenizer.ggml.*`): the metadata reader shared
//! by both families, SentencePiece models (`tokenizer.ggml.model` = `"llama"`) and
//! transformers-style SentencePiece tokenizers built on them. Byte-level BPE vocabularies
//! (`"gpt2"`) are in `gguf_bpe`.

use std::collections::HashMap;
use std::io::BufReader;
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};

use super::hf::SentencePieceTokenizer;
use super::hf_config::{HfTokenizerSettings, SlowTokenizerClass, TokenSpec};
use super::model::{ModelOptions, Piece, PieceKind, SentencePieceModel};
use super::normalizer::Normalizer;
use crate::{Error, Result};

/// The GGUF key naming the tokenizer family.
pub(super) const MODEL_KEY: &str = "tokenizer.ggml.model";

/// The message of a candle error without the backtrace it carries when `RUST_BACKTRACE` is set.
pub(super) fn message(error: impl std::fmt::Display) -> String {
    let text = error.to_string();
    text.lines().next().unwrap_or_default().to_string()
}

/// The metadata of a GGUF file (its tensors are not read) and the path as errors name it.
///
/// Fails with [`Error::Io`] when the file cannot be opened and [`Error::Tokenizer`] when it is
/// not a readable GGUF file.
pub(super) fn read_metadata(path: &Path) -> Result<(HashMap<String, Value>, String)> {
    let origin = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let content = Content::read(&mut BufReader::new(file)).map_err(|e| {
        Error::tokenizer(&origin, format!("not a readable GGUF file: {}", message(e)))
    })?;
    Ok((content.metadata, origin))
}

/// Reads one metadata entry, naming the key in errors.
pub(super) struct Metadata<'a> {
    pub(super) values: &'a HashMap<String, Value>,
    pub(super) origin: &'a str,
}

impl Metadata<'_> {
    pub(super) fn fail(&self, key: &str, reason: impl std::fmt::Display) -> Error {
        Error::tokenizer(self.origin, format!("GGUF key {key}: {}", message(reason)))
    }

    pub(super) fn get(&self, key: &str) -> Option<&Value> {
        self.values.get(key)
    }

    pub(super) fn array(&self, key: &str) -> Result<Option<&Vec<Value>>> {
        self.get(key)
            .map(|v| v.to_vec().map_err(|e| self.fail(key, e)))
            .transpose()
    }

    /// A string entry (`None` when absent).
    pub(super) fn string(&self, key: &str) -> Result<Option<&str>> {
        self.get(key)
            .map(|v| {
                v.to_string()
                    .map(String::as_str)
                    .map_err(|e| self.fail(key, e))
            })
            .transpose()
    }

    /// `tokenizer.ggml.model`, which every tokenizer needs.
    pub(super) fn model(&self) -> Result<&str> {
        self.string(MODEL_KEY)?
            .ok_or_else(|| self.fail(MODEL_KEY, "missing: the file has no tokenizer"))
    }

    /// A special-token id below `count` (`None` when absent).
    pub(super) fn token_id(&self, key: &str, count: usize) -> Result<Option<u32>> {
        match self.u32(key)? {
            Some(id) if id as usize >= count => {
                Err(self.fail(key, format!("id {id} is outside the vocabulary")))
            }
            id => Ok(id),
        }
    }

    pub(super) fn u32(&self, key: &str) -> Result<Option<u32>> {
        let value = self
            .get(key)
            .map(|v| v.to_u64().map_err(|e| self.fail(key, e)));
        let value = value.transpose()?;
        value
            .map(|v| u32::try_from(v).map_err(|_| self.fail(key, "does not fit in u32")))
            .transpose()
    }

    pub(super) fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        self.get(key)
            .map_or(Ok(default), |v| v.to_bool().map_err(|e| self.fail(key, e)))
    }
}

/// llama.cpp `token_type`: same numbering as sentencepiece; 0 (UNDEFINED) counts as NORMAL.
pub(super) fn kind_of(value: &Value) -> std::result::Result<PieceKind, String> {
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
        let (metadata, origin) = read_metadata(path.as_ref())?;
        Self::from_gguf_metadata(&metadata, &origin)
    }

    /// Builds the model from already-read GGUF metadata; `origin` names it in errors.
    pub fn from_gguf_metadata(values: &HashMap<String, Value>, origin: &str) -> Result<Self> {
        let meta = Metadata { values, origin };
        let kind = meta.model()?;
        if kind != "llama" {
            return Err(meta.fail(
                MODEL_KEY,
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
        let special = |key: &str| meta.token_id(key, count);
        let bos = special("tokenizer.ggml.bos_token_id")?;
        let eos = special("tokenizer.ggml.eos_token_id")?;
        let pad = special("tokenizer.ggml.padding_token_id")?;
        model.set_special_ids(bos, eos, pad);
        Ok(model)
    }
}

impl SentencePieceTokenizer {
    /// The tokenizer of a llama.cpp GGUF file with a SentencePiece vocabulary
    /// (`tokenizer.ggml.model` = `"llama"`): [`SentencePieceModel::from_gguf`] with
    /// transformers' `LlamaTokenizer` (legacy) rules on top, see
    /// [`SentencePieceTokenizer::from_gguf_metadata`].
    ///
    /// Fails with [`Error::Io`] when the file cannot be opened and [`Error::Tokenizer`] when it
    /// is not a GGUF file or has no SentencePiece vocabulary.
    pub fn from_gguf(path: impl AsRef<Path>) -> Result<Self> {
        let (metadata, origin) = read_metadata(path.as_ref())?;
        Self::from_gguf_metadata(&metadata, &origin)
    }

    /// Builds the tokenizer from already-read GGUF metadata; `origin` names it in errors.
    ///
    /// The BOS, EOS, unknown and padding pieces are the special tokens, with every other
    /// CONTROL piece as an additional special token (all of them matched in the text, as
    /// llama.cpp does with `parse_special`); BOS is added by default unless
    /// `tokenizer.ggml.add_bos_token` is false, EOS only when `tokenizer.ggml.add_eos_token`
    /// is true.
    pub fn from_gguf_metadata(values: &HashMap<String, Value>, origin: &str) -> Result<Self> {
        let model = SentencePieceModel::from_gguf_metadata(values, origin)?;
        let meta = Metadata { values, origin };
        let mut settings = HfTokenizerSettings::defaults(SlowTokenizerClass::Llama);
        let piece = |id: Option<u32>| {
            id.and_then(|id| model.id_to_piece(id))
                .map(TokenSpec::plain)
        };
        settings.bos_token = piece(model.bos_id());
        settings.eos_token = piece(model.eos_id());
        settings.unk_token = piece(Some(model.unk_id()));
        settings.pad_token = piece(model.pad_id());
        let named: Vec<String> = [
            &settings.bos_token,
            &settings.eos_token,
            &settings.unk_token,
            &settings.pad_token,
        ]
        .into_iter()
        .flatten()
        .map(|t| t.content.clone())
        .collect();
        settings.additional_special_tokens = model
            .pieces()
            .iter()
            .filter(|p| p.kind == PieceKind::Control && !named.contains(&p.text))
            .map(|p| TokenSpec::plain(&p.text))
            .collect();
        settings.add_bos_token = meta.bool_or("tokenizer.ggml.add_bos_token", true)?;
        settings.add_eos_token = meta.bool_or("tokenizer.ggml.add_eos_token", false)?;
        Ok(Self::new(model, settings))
    }
}
