//! Text tokenizers of the InternVL checkpoints, reproducing the Python ones id for id.
//!
//! * [`SentencePieceModel`]: a SentencePiece BPE `tokenizer.model` (or a llama.cpp GGUF
//!   vocabulary), equivalent to the `sentencepiece` library's encode/decode;
//! * [`SentencePieceTokenizer`]: transformers' slow `LlamaTokenizer` (legacy mode) and
//!   `InternLM2Tokenizer` on top of it: added/special tokens, BOS/EOS, decoding;
//! * [`Tokenizer`]: what model code uses, whatever the tokenizer family;
//! * [`InternVlCgTextTokenizer`]: InternVL-C/G's `"summarize:"` texts and captioning prompt.
//!
//! Behaviour copied on purpose (each one changes ids):
//! * the dummy prefix `▁` is added to every text segment that follows a special token
//!   (`<|im_start|>system` → `<|im_start|>`, `▁s`, `ystem`), because transformers encodes each
//!   segment with its own sentencepiece call;
//! * only U+0020 becomes `▁`; tabs and newlines are ordinary characters (usually byte pieces);
//! * without byte fallback a run of unknown characters is a single `<unk>`;
//! * merging considers NORMAL, USER_DEFINED and UNUSED pieces; UNUSED results are split
//!   back, CONTROL/BYTE/UNKNOWN pieces are never formed by merging;
//! * equal merge scores go to the leftmost pair.

mod bpe;
mod gguf;
mod hf;
mod hf_config;
mod internvl_cg;
mod model;
mod normalizer;
mod proto;
mod vocab;

use std::path::Path;

pub use hf::SentencePieceTokenizer;
pub use hf_config::{AddedToken, HfTokenizerSettings, SlowTokenizerClass, TokenSpec};
pub use internvl_cg::{
    InternVlCgTextTokenizer, TextBatch, CAPTION_PROMPT, PAD_ID, SUMMARIZE_PREFIX, TEXT_MAX_LENGTH,
};
pub use model::{ModelOptions, Piece, PieceKind, SentencePieceModel};
pub use normalizer::{Normalizer, SPACE_SYMBOL};

use crate::{Error, Result};

/// A model's text tokenizer, whatever its family. Methods mirror transformers' slow
/// tokenizers; more families (the HF `tokenizer.json` byte-level BPE of Qwen2) are to come.
#[derive(Debug, Clone)]
pub enum Tokenizer {
    /// A SentencePiece `tokenizer.model` with transformers' added tokens (LLaMA, Vicuna,
    /// Chinese-LLaMA, InternLM2).
    SentencePiece(SentencePieceTokenizer),
}

impl Tokenizer {
    /// Loads the tokenizer of a model folder: `tokenizer.model` plus `tokenizer_config.json`,
    /// `special_tokens_map.json` and `added_tokens.json` where present.
    ///
    /// Fails with [`Error::Tokenizer`] when the folder has no supported tokenizer file.
    pub fn from_folder(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        if dir.join("tokenizer.model").is_file() {
            return Ok(Self::SentencePiece(SentencePieceTokenizer::from_folder(
                dir,
            )?));
        }
        let reason = if dir.join("tokenizer.json").is_file() {
            "has only tokenizer.json, which is not supported yet (tokenizer.model is)"
        } else {
            "has no tokenizer.model"
        };
        Err(Error::tokenizer(
            dir.display(),
            format!("the folder {reason}"),
        ))
    }

    /// The ids of `text` (added tokens recognised), with BOS first / EOS last when asked and
    /// the tokenizer has them.
    pub fn encode(&self, text: &str, add_bos: bool, add_eos: bool) -> Result<Vec<u32>> {
        match self {
            Self::SentencePiece(t) => Ok(t.encode(text, add_bos, add_eos)),
        }
    }

    /// The ids of `text` with the folder's own `add_bos_token`/`add_eos_token` choice (what
    /// `tokenizer(text).input_ids` gives).
    pub fn encode_with_defaults(&self, text: &str) -> Result<Vec<u32>> {
        match self {
            Self::SentencePiece(t) => Ok(t.encode_with_defaults(text)),
        }
    }

    /// The text of `ids`, like transformers' `decode(ids, skip_special_tokens)`.
    ///
    /// Fails with [`Error::InvalidArgument`] for an id outside the vocabulary.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        match self {
            Self::SentencePiece(t) => t.decode(ids, skip_special_tokens),
        }
    }

    /// The id of a token (an added token or exactly one piece).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        match self {
            Self::SentencePiece(t) => t.token_to_id(token),
        }
    }

    /// The token text of `id`.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        match self {
            Self::SentencePiece(t) => t.id_to_token(id).map(str::to_string),
        }
    }

    /// The beginning-of-sequence id, if any.
    pub fn bos_id(&self) -> Option<u32> {
        match self {
            Self::SentencePiece(t) => t.bos_id(),
        }
    }

    /// The end-of-sequence id, if any.
    pub fn eos_id(&self) -> Option<u32> {
        match self {
            Self::SentencePiece(t) => t.eos_id(),
        }
    }

    /// The padding id, if the folder sets a pad token.
    pub fn pad_id(&self) -> Option<u32> {
        match self {
            Self::SentencePiece(t) => t.pad_id(),
        }
    }

    /// The number of ids, added tokens included (`len(tokenizer)`).
    pub fn vocab_size(&self) -> usize {
        match self {
            Self::SentencePiece(t) => t.vocab_size(),
        }
    }
}
