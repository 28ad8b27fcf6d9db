//! Text tokenizers of the InternVL checkpoints, reproducing the Python ones id for id.
//!
//! * [`SentencePieceModel`]: a SentencePiece BPE `tokenizer.model` (or a llama.cpp GGUF
//!   vocabulary), equivalent to the `sentencepiece` library's encode/decode;
//! * [`SentencePieceTokenizer`]: transformers' slow `LlamaTokenizer` (legacy mode) and
//!   `InternLM2Tokenizer` on top of it: added/special tokens, BOS/EOS, decoding;
//! * [`ByteLevelBpeTokenizer`]: transformers' slow `Qwen2Tokenizer` (byte-level BPE from
//!   `vocab.json` + `merges.txt` or `tokenizer.json`, via the `tokenizers` crate), or the
//!   byte-level BPE of a llama.cpp GGUF file (`tokenizer.ggml.model` = `"gpt2"`, with the
//!   [`GgufPreTokenizer`] that `tokenizer.ggml.pre` names);
//! * [`Tokenizer`]: what model code uses, whatever the tokenizer family, from a model folder
//!   or a GGUF file ([`Tokenizer::from_path`]);
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

mod added;
mod bpe;
mod byte_level;
mod gguf;
mod gguf_bpe;
mod hf;
mod hf_config;
mod internvl_cg;
mod model;
mod normalizer;
mod proto;
mod vocab;

use std::path::Path;

pub use byte_level::{BpeSource, ByteLevelBpeTokenizer, QWEN2_PRETOKENIZE_REGEX};
pub use gguf_bpe::{GgufPreTokenizer, LLAMA3_PRETOKENIZE_REGEX};
pub use hf::SentencePieceTokenizer;
pub use hf_config::{AddedToken, HfTokenizerSettings, SlowTokenizerClass, TokenSpec};
pub use internvl_cg::{
    InternVlCgTextTokenizer, TextBatch, CAPTION_PROMPT, PAD_ID, SUMMARIZE_PREFIX, TEXT_MAX_LENGTH,
};
pub use model::{ModelOptions, Piece, PieceKind, SentencePieceModel};
pub use normalizer::{Normalizer, SPACE_SYMBOL};

use crate::{Error, Result};

/// A model's text tokenizer, whatever its family. Methods mirror transformers' slow
/// tokenizers (what the official InternVL code uses).
#[derive(Debug, Clone)]
pub enum Tokenizer {
    /// A SentencePiece `tokenizer.model` with transformers' added tokens (LLaMA, Vicuna,
    /// Chinese-LLaMA, InternLM2, Phi-3, Yi).
    SentencePiece(SentencePieceTokenizer),
    /// A byte-level BPE (`Qwen2Tokenizer`: Qwen2, Qwen2.5, Qwen3) with transformers' added
    /// tokens.
    ByteLevelBpe(ByteLevelBpeTokenizer),
}

/// The `.gguf` files of a folder (none when it cannot be read).
fn gguf_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.is_file()
                && path
                    .extension()
                    .is_some_and(|ext| ext.eq_ignore_ascii_case("gguf"))
        })
        .collect()
}

/// The GGUF that a model folder's `config.json` names as QLLaMA's base weights
/// (`qllama_gguf` / `llm_gguf`, see `models::folder`): its tokenizer is the model's.
fn referenced_gguf(dir: &Path, key: &str) -> Option<std::path::PathBuf> {
    let text = std::fs::read_to_string(dir.join("config.json")).ok()?;
    let config: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some(dir.join(config.get(key)?.as_str()?))
}

/// The `pad_token` of a folder's `tokenizer_config.json` (a string), when there is one: a folder
/// around a GGUF LLM may name another pad token than the GGUF's (see
/// `training::init::init_internvl_chat`).
fn configured_pad_token(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("tokenizer_config.json")).ok()?;
    let config: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some(config.get("pad_token")?.as_str()?.to_string())
}

/// The tokens `internvl_chat_finetune.py` adds to an LLM's tokenizer (`token_list`, in order):
/// an InternVL-Chat folder built around a GGUF LLM (`llm_gguf`) has them after the vocabulary.
pub const INTERNVL_CHAT_TOKENS: [&str; 9] = [
    "<img>",
    "</img>",
    "<IMG_CONTEXT>",
    "<quad>",
    "</quad>",
    "<ref>",
    "</ref>",
    "<box>",
    "</box>",
];

/// The `tokenizer_class` of a folder's `tokenizer_config.json`, when it can be read.
fn declared_class(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("tokenizer_config.json")).ok()?;
    let config: serde_json::Value = serde_json::from_str(&text).ok()?;
    config.get("tokenizer_class")?.as_str().map(str::to_string)
}

impl Tokenizer {
    /// Loads the tokenizer of a model folder, as released: a SentencePiece `tokenizer.model`,
    /// or a byte-level BPE (`vocab.json` + `merges.txt`, or `tokenizer.json`) when there is no
    /// `tokenizer.model` or `tokenizer_config.json` declares `Qwen2Tokenizer`; plus
    /// `tokenizer_config.json`, `special_tokens_map.json` and `added_tokens.json` where present.
    ///
    /// A folder with none of these files but exactly one `.gguf` file is read as that GGUF
    /// ([`Tokenizer::from_gguf`]).
    ///
    /// Fails with [`Error::Tokenizer`] when the folder has no supported tokenizer file.
    pub fn from_folder(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let qwen2 = declared_class(dir)
            .is_some_and(|class| class.trim_end_matches("Fast") == "Qwen2Tokenizer");
        if dir.join("tokenizer.model").is_file() && !qwen2 {
            return Ok(Self::SentencePiece(SentencePieceTokenizer::from_folder(
                dir,
            )?));
        }
        if BpeSource::for_folder(dir).is_some() {
            return Ok(Self::ByteLevelBpe(ByteLevelBpeTokenizer::from_folder(dir)?));
        }
        if let [gguf] = gguf_files(dir).as_slice() {
            return Self::from_gguf(gguf);
        }
        let referenced = [
            ("llm_gguf", &INTERNVL_CHAT_TOKENS[..]),
            ("qllama_gguf", &[][..]),
        ];
        for (key, added) in referenced {
            if let Some(gguf) = referenced_gguf(dir, key) {
                let mut tokenizer = Self::from_gguf_with(gguf, added)?;
                if let Some(pad) = configured_pad_token(dir) {
                    tokenizer.set_pad_token(&pad)?;
                }
                return Ok(tokenizer);
            }
        }
        Err(Error::tokenizer(
            dir.display(),
            "the folder has no tokenizer.model, tokenizer.json or vocab.json + merges.txt \
             (nor a single .gguf file)",
        ))
    }

    /// Makes `content` the pad token (a folder around a GGUF may name another one than the
    /// GGUF's, in its `tokenizer_config.json`).
    ///
    /// Fails with [`Error::Tokenizer`] when no token has that text, or for a SentencePiece
    /// vocabulary (not supported: its folders carry their own `tokenizer_config.json`).
    pub fn set_pad_token(&mut self, content: &str) -> Result<()> {
        match self {
            Self::ByteLevelBpe(t) => t.set_pad_token(content),
            Self::SentencePiece(_) => Err(Error::tokenizer(
                "pad_token",
                format!(
                    "cannot make {content:?} the pad token of a SentencePiece vocabulary read \
                     from a GGUF (only byte-level vocabularies support it)"
                ),
            )),
        }
    }

    /// The tokenizer of a llama.cpp GGUF file, by `tokenizer.ggml.model`: `"llama"` is a
    /// SentencePiece vocabulary ([`SentencePieceTokenizer::from_gguf`]), `"gpt2"` a byte-level
    /// BPE ([`ByteLevelBpeTokenizer::from_gguf`]). Only the metadata is read.
    ///
    /// Fails with [`Error::Io`] when the file cannot be opened, [`Error::Tokenizer`] when it is
    /// not a GGUF file, has no tokenizer, or has another tokenizer model (named in the error).
    pub fn from_gguf(path: impl AsRef<Path>) -> Result<Self> {
        let (metadata, origin) = gguf::read_metadata(path.as_ref())?;
        let meta = gguf::Metadata {
            values: &metadata,
            origin: &origin,
        };
        match meta.model()? {
            "llama" => Ok(Self::SentencePiece(
                SentencePieceTokenizer::from_gguf_metadata(&metadata, &origin)?,
            )),
            "gpt2" => Ok(Self::ByteLevelBpe(
                ByteLevelBpeTokenizer::from_gguf_metadata(&metadata, &origin)?,
            )),
            other => Err(meta.fail(
                gguf::MODEL_KEY,
                format!(
                    "tokenizer model {other:?} is not supported (only \"llama\": SentencePiece, \
                     and \"gpt2\": byte-level BPE)"
                ),
            )),
        }
    }

    /// [`Tokenizer::from_gguf`] with `added` appended as special tokens (new ids after the
    /// vocabulary, in order), as transformers' `add_tokens(added, special_tokens=True)`.
    ///
    /// Fails as [`Tokenizer::from_gguf`] does, and for a SentencePiece (`"llama"`) vocabulary
    /// when `added` is not empty (not supported).
    pub fn from_gguf_with(path: impl AsRef<Path>, added: &[&str]) -> Result<Self> {
        if added.is_empty() {
            return Self::from_gguf(path);
        }
        let (metadata, origin) = gguf::read_metadata(path.as_ref())?;
        let meta = gguf::Metadata {
            values: &metadata,
            origin: &origin,
        };
        match meta.model()? {
            "gpt2" => Ok(Self::ByteLevelBpe(
                ByteLevelBpeTokenizer::from_gguf_metadata_with(&metadata, &origin, added)?,
            )),
            other => Err(meta.fail(
                gguf::MODEL_KEY,
                format!(
                    "adding tokens ({}) is supported for byte-level BPE (\"gpt2\") vocabularies \
                     only, not {other:?}",
                    added.join(" ")
                ),
            )),
        }
    }

    /// [`Tokenizer::from_gguf`] for a file, [`Tokenizer::from_folder`] for a folder.
    ///
    /// Fails as those do.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if path.is_dir() {
            Self::from_folder(path)
        } else {
            Self::from_gguf(path)
        }
    }

    /// Whether [`Tokenizer::encode_with_defaults`] adds BOS.
    pub fn add_bos_token(&self) -> bool {
        match self {
            Self::SentencePiece(t) => t.add_bos_token(),
            Self::ByteLevelBpe(t) => t.add_bos_token(),
        }
    }

    /// The ids of `text` (added tokens recognised), with BOS first / EOS last when asked and
    /// the tokenizer has them.
    ///
    /// Fails with [`Error::Tokenizer`] when a byte-level BPE vocabulary lacks a byte's token.
    pub fn encode(&self, text: &str, add_bos: bool, add_eos: bool) -> Result<Vec<u32>> {
        match self {
            Self::SentencePiece(t) => Ok(t.encode(text, add_bos, add_eos)),
            Self::ByteLevelBpe(t) => t.encode(text, add_bos, add_eos),
        }
    }

    /// The ids of `text` with the folder's own `add_bos_token`/`add_eos_token` choice (what
    /// `tokenizer(text).input_ids` gives; never BOS/EOS for Qwen2 folders; for a GGUF, what
    /// `tokenizer.ggml.add_bos_token` / `add_eos_token` say).
    ///
    /// Fails with [`Error::Tokenizer`] when a byte-level BPE vocabulary lacks a byte's token.
    pub fn encode_with_defaults(&self, text: &str) -> Result<Vec<u32>> {
        match self {
            Self::SentencePiece(t) => Ok(t.encode_with_defaults(text)),
            Self::ByteLevelBpe(t) => t.encode_with_defaults(text),
        }
    }

    /// transformers' `tokenize(text)`: the token strings of
    /// [`Tokenizer::encode`]`(text, false, false)`.
    ///
    /// Fails with [`Error::Tokenizer`] when a byte-level BPE vocabulary lacks a byte's token.
    pub fn tokenize(&self, text: &str) -> Result<Vec<String>> {
        match self {
            Self::SentencePiece(t) => Ok(t.tokenize(text)),
            Self::ByteLevelBpe(t) => t.tokenize(text),
        }
    }

    /// The text of `ids`, like transformers' `decode(ids, skip_special_tokens)`.
    ///
    /// Fails with [`Error::InvalidArgument`] for an id outside the vocabulary.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        match self {
            Self::SentencePiece(t) => t.decode(ids, skip_special_tokens),
            Self::ByteLevelBpe(t) => t.decode(ids, skip_special_tokens),
        }
    }

    /// The id of a token (an added token or exactly one piece / BPE token).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        match self {
            Self::SentencePiece(t) => t.token_to_id(token),
            Self::ByteLevelBpe(t) => t.token_to_id(token),
        }
    }

    /// The token text of `id` (`convert_ids_to_tokens`).
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        match self {
            Self::SentencePiece(t) => t.id_to_token(id).map(str::to_string),
            Self::ByteLevelBpe(t) => t.id_to_token(id),
        }
    }

    /// The raw bytes of one token, as OpenAI's `logprobs.bytes` reports them: a byte piece
    /// (`<0xE2>`, or a byte-level BPE character) gives its byte, `▁` a space, added tokens
    /// their text.
    pub fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
        match self {
            Self::SentencePiece(t) => {
                let piece = t.id_to_token(id)?;
                let hex = piece
                    .strip_prefix("<0x")
                    .and_then(|p| p.strip_suffix('>'))
                    .filter(|h| h.len() == 2);
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(byte) => Some(vec![byte]),
                    None => Some(piece.replace(SPACE_SYMBOL, " ").into_bytes()),
                }
            }
            Self::ByteLevelBpe(t) => t.token_bytes(id),
        }
    }

    /// The beginning-of-sequence id, if any.
    pub fn bos_id(&self) -> Option<u32> {
        match self {
            Self::SentencePiece(t) => t.bos_id(),
            Self::ByteLevelBpe(t) => t.bos_id(),
        }
    }

    /// The end-of-sequence id, if any.
    pub fn eos_id(&self) -> Option<u32> {
        match self {
            Self::SentencePiece(t) => t.eos_id(),
            Self::ByteLevelBpe(t) => t.eos_id(),
        }
    }

    /// The padding id, if the folder sets a pad token.
    pub fn pad_id(&self) -> Option<u32> {
        match self {
            Self::SentencePiece(t) => t.pad_id(),
            Self::ByteLevelBpe(t) => t.pad_id(),
        }
    }

    /// The number of ids, added tokens included (`len(tokenizer)`).
    pub fn vocab_size(&self) -> usize {
        match self {
            Self::SentencePiece(t) => t.vocab_size(),
            Self::ByteLevelBpe(t) => t.vocab_size(),
        }
    }

    /// Whether `id` is one of `all_special_ids` (dropped by `skip_special_tokens`).
    pub fn is_special_id(&self, id: u32) -> bool {
        match self {
            Self::SentencePiece(t) => t.is_special_id(id),
            Self::ByteLevelBpe(t) => t.is_special_id(id),
        }
    }
}
