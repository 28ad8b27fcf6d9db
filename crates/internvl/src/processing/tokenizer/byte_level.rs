//! transformers' slow `Qwen2Tokenizer` (as of 4.37, the version the official InternVL code ran):
//! byte-level BPE over `vocab.json` + `merges.txt`, or over an HF `tokenizer.json`, with the
//! `tokenizers` crate doing the pre-tokenisation and the merges.
//!
//! What the slow tokenizer does, and this type copies:
//! * the whole text is NFC-normalised first (`prepare_for_tokenization`), then cut at added
//!   tokens (the same rules as for the SentencePiece tokenizers), and every other segment is
//!   split by the Qwen2 regex and merged by BPE on its UTF-8 bytes;
//! * no BOS and no EOS are ever added;
//! * decoding concatenates tokens without spaces around special tokens
//!   (`spaces_between_special_tokens=False`), maps the byte-level characters back to bytes and
//!   replaces invalid UTF-8 with U+FFFD (`errors="replace"`), run by run between stand-alone
//!   added tokens; no clean-up of spaces.
//!
//! Quirk of transformers 4.37 copied on purpose: reading `merges.txt`, the slow tokenizer skips
//! every line that *starts with `#`*, not only the `#version` header. The real Qwen2 file has 96
//! such merges (`# #`, `# include`, `## ##`, …), so `#include` is `#`, `include` for the official
//! code but one token for a `tokenizer.json` (fast tokenizers, llama.cpp). Folders loaded from
//! `vocab.json` + `merges.txt` follow the slow tokenizer; folders loaded from `tokenizer.json`
//! keep all merges.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde_json::{json, Value};
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::{NormalizedString, Normalizer};

use super::added;
use super::gguf_bpe::GgufPreTokenizer;
use super::hf_config::{AddedToken, HfTokenizerSettings, SlowTokenizerClass, TokenSpec};
use super::vocab::longest_first_by_first_char;
use crate::{Error, Result};

/// `Qwen2Tokenizer`'s pre-tokenisation regex (`PRETOKENIZE_REGEX`).
pub const QWEN2_PRETOKENIZE_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Which files of a folder the BPE vocabulary and merges come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BpeSource {
    /// `vocab.json` + `merges.txt`, read as the slow `Qwen2Tokenizer` reads them (NFC
    /// normaliser and the Qwen2 regex, whatever else the folder holds).
    VocabMerges,
    /// An HF `tokenizer.json` (its own normaliser, pre-tokeniser and BPE model; its added
    /// tokens only where `tokenizer_config.json` has no `added_tokens_decoder`).
    TokenizerJson,
}

impl BpeSource {
    /// What [`ByteLevelBpeTokenizer::from_folder`] uses: `vocab.json` + `merges.txt` when both
    /// exist (the files the official code's slow tokenizer reads), else `tokenizer.json`.
    pub fn for_folder(dir: &Path) -> Option<Self> {
        if dir.join("vocab.json").is_file() && dir.join("merges.txt").is_file() {
            Some(Self::VocabMerges)
        } else if dir.join("tokenizer.json").is_file() {
            Some(Self::TokenizerJson)
        } else {
            None
        }
    }
}

/// A byte-level BPE tokenizer with transformers' added tokens: `Qwen2Tokenizer` (Qwen2,
/// Qwen2.5 and Qwen3 vocabularies; InternVL2-1B, InternVL2.5-1B/4B/38B/78B, InternVL3).
#[derive(Debug, Clone)]
pub struct ByteLevelBpeTokenizer {
    /// Pre-tokeniser + BPE model only: no normaliser, added tokens or post-processor (boxed:
    /// it is large).
    bpe: Box<tokenizers::Tokenizer>,
    /// Applied to the whole text before added tokens are matched (`prepare_for_tokenization`).
    normalizer: Option<NormalizerWrapper>,
    source: BpeSource,
    /// `len(self.encoder)`: the BPE vocabulary without added tokens (transformers' `vocab_size`).
    bpe_vocab_size: usize,
    added_by_id: HashMap<u32, AddedToken>,
    added_by_content: HashMap<String, u32>,
    added_by_first_char: HashMap<char, Vec<String>>,
    /// `all_special_ids`.
    special_ids: HashSet<u32>,
    /// `_decode`'s `legacy_added_tokens`: kept out of the byte-level decoding.
    standalone_in_decode: HashSet<String>,
    /// `len(tokenizer)`.
    len: usize,
    bos_id: Option<u32>,
    eos_id: Option<u32>,
    unk_id: Option<u32>,
    pad_id: Option<u32>,
    /// What [`ByteLevelBpeTokenizer::encode_with_defaults`] adds (never for `Qwen2Tokenizer`;
    /// `tokenizer.ggml.add_bos_token` / `add_eos_token` for GGUF vocabularies).
    add_bos_token: bool,
    add_eos_token: bool,
    /// The pre-tokeniser of a GGUF vocabulary (`None` for folders).
    gguf_pre: Option<GgufPreTokenizer>,
}

impl ByteLevelBpeTokenizer {
    /// Loads a folder's tokenizer: `vocab.json` + `merges.txt` when both exist, else
    /// `tokenizer.json` (see [`BpeSource::for_folder`]), plus `tokenizer_config.json`,
    /// `special_tokens_map.json` and `added_tokens.json` where present.
    ///
    /// Fails with [`Error::Tokenizer`] when the folder has none of these files or declares a
    /// `tokenizer_class` other than `Qwen2Tokenizer`, [`Error::Io`] / [`Error::Config`] for
    /// unreadable or malformed files.
    pub fn from_folder(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let source = BpeSource::for_folder(dir).ok_or_else(|| {
            Error::tokenizer(
                dir.display(),
                "the folder has neither vocab.json + merges.txt nor tokenizer.json",
            )
        })?;
        Self::from_folder_with(dir, source)
    }

    /// [`ByteLevelBpeTokenizer::from_folder`] with the vocabulary taken from `source`.
    pub fn from_folder_with(dir: impl AsRef<Path>, source: BpeSource) -> Result<Self> {
        let dir = dir.as_ref();
        let settings = HfTokenizerSettings::from_folder_or(dir, SlowTokenizerClass::Qwen2)?;
        if settings.class != SlowTokenizerClass::Qwen2 {
            return Err(Error::tokenizer(
                dir.join("tokenizer_config.json").display(),
                format!(
                    "tokenizer_class {:?} is not a byte-level BPE tokenizer (Qwen2Tokenizer)",
                    settings.class
                ),
            ));
        }
        let (bpe, normalizer) = match source {
            BpeSource::VocabMerges => {
                bpe_from_vocab_merges(&dir.join("vocab.json"), &dir.join("merges.txt"))?
            }
            BpeSource::TokenizerJson => bpe_from_tokenizer_json(&dir.join("tokenizer.json"))?,
        };
        Ok(Self::new(Box::new(bpe), normalizer, source, settings))
    }

    /// Wraps a bare pre-tokeniser + BPE tokenizer with transformers' added-token handling.
    /// Special tokens that are not yet added tokens take their BPE id, or new ids after the
    /// vocabulary, as transformers' `_add_tokens` does.
    pub(super) fn new(
        bpe: Box<tokenizers::Tokenizer>,
        normalizer: Option<NormalizerWrapper>,
        source: BpeSource,
        settings: HfTokenizerSettings,
    ) -> Self {
        let bpe_vocab_size = bpe.get_vocab_size(false);
        let mut added_by_id: HashMap<u32, AddedToken> = settings
            .added_tokens
            .iter()
            .map(|token| (token.id, token.clone()))
            .collect();
        let mut added_by_content: HashMap<String, u32> = added_by_id
            .iter()
            .map(|(&id, token)| (token.spec.content.clone(), id))
            .collect();
        // `_add_tokens(all_special_tokens_extended, special_tokens=True)`: a special token that
        // is not an added token yet takes its vocabulary id, or a new id at `len(get_vocab())`.
        let mut next_id = vocab_len(&bpe, &added_by_content) as u32;
        for spec in settings.special_tokens_in_order() {
            if spec.content.is_empty() || added_by_content.contains_key(&spec.content) {
                continue;
            }
            let id = bpe.token_to_id(&spec.content).unwrap_or_else(|| {
                next_id += 1;
                next_id - 1
            });
            added_by_content.insert(spec.content.clone(), id);
            let token = AddedToken {
                spec: spec.clone(),
                id,
                special: true,
            };
            added_by_id.insert(id, token);
        }
        let id_of = |content: &str| {
            added_by_content
                .get(content)
                .copied()
                .or_else(|| bpe.token_to_id(content))
        };
        let special_tokens: Vec<&str> = settings
            .special_tokens_in_order()
            .into_iter()
            .map(|spec| spec.content.as_str())
            .collect();
        let special_ids = special_tokens.iter().filter_map(|c| id_of(c)).collect();
        let mut standalone_in_decode: HashSet<String> = added_by_content
            .keys()
            .filter(|content| !special_tokens.contains(&content.as_str()))
            .cloned()
            .collect();
        for spec in &settings.additional_special_tokens {
            if id_of(&spec.content).is_some_and(|id| id as usize >= bpe_vocab_size) {
                standalone_in_decode.insert(spec.content.clone());
            }
        }
        let named_id = |token: &Option<TokenSpec>| {
            token
                .as_ref()
                .and_then(|t| added_by_content.get(&t.content).copied())
        };
        Self {
            bos_id: named_id(&settings.bos_token),
            eos_id: named_id(&settings.eos_token),
            unk_id: named_id(&settings.unk_token),
            pad_id: named_id(&settings.pad_token),
            add_bos_token: settings.add_bos_token,
            add_eos_token: settings.add_eos_token,
            gguf_pre: None,
            len: vocab_len(&bpe, &added_by_content),
            added_by_first_char: longest_first_by_first_char(added_by_content.keys()),
            bpe,
            normalizer,
            source,
            bpe_vocab_size,
            added_by_id,
            added_by_content,
            special_ids,
            standalone_in_decode,
        }
    }

    /// `prepare_for_tokenization`: the normaliser (NFC for Qwen2) over the whole text.
    fn normalize(&self, text: &str) -> Result<String> {
        let Some(normalizer) = &self.normalizer else {
            return Ok(text.to_string());
        };
        let mut normalized = NormalizedString::from(text);
        normalizer
            .normalize(&mut normalized)
            .map_err(|e| Error::tokenizer("<normalizer>", e))?;
        Ok(normalized.get().to_string())
    }

    /// The BPE tokens and ids of a text segment without added tokens. Fails when a character
    /// has no token (possible only with a vocabulary lacking some of the 256 byte tokens, where
    /// the slow tokenizer yields `None` ids).
    fn encode_plain(&self, segment: &str) -> Result<tokenizers::Encoding> {
        let encoding = self
            .bpe
            .encode(segment, false)
            .map_err(|e| Error::tokenizer("<bpe>", e))?;
        let bytes: usize = encoding
            .get_tokens()
            .iter()
            .map(|t| t.chars().count())
            .sum();
        if bytes != segment.len() {
            return Err(Error::tokenizer(
                "<bpe>",
                format!("some bytes of {segment:?} have no token in the vocabulary"),
            ));
        }
        Ok(encoding)
    }

    /// The non-empty segments of the normalised text (added tokens and the text between them).
    fn segments(&self, text: &str) -> Result<Vec<String>> {
        let text = self.normalize(text)?;
        Ok(added::segments(
            &text,
            &self.added_by_first_char,
            &self.added_by_content,
            &self.added_by_id,
        ))
    }

    /// transformers' `tokenize(text)`: added tokens as they are, other text as byte-level BPE
    /// tokens (`Ġ` for a space, `Ċ` for a newline, …).
    ///
    /// Fails with [`Error::Tokenizer`] when a byte has no token in the vocabulary.
    pub fn tokenize(&self, text: &str) -> Result<Vec<String>> {
        let mut tokens = Vec::new();
        for part in self.segments(text)? {
            if self.added_by_content.contains_key(&part) {
                tokens.push(part);
            } else {
                tokens.extend(self.encode_plain(&part)?.get_tokens().iter().cloned());
            }
        }
        Ok(tokens)
    }

    /// The ids of `text`, with BOS first / EOS last when asked and the tokenizer has them
    /// (`tokenizer(text).input_ids` with both flags off: `Qwen2Tokenizer` adds neither).
    ///
    /// Fails with [`Error::Tokenizer`] when a byte has no token in the vocabulary.
    pub fn encode(&self, text: &str, add_bos: bool, add_eos: bool) -> Result<Vec<u32>> {
        let mut ids: Vec<u32> = self.bos_id.filter(|_| add_bos).into_iter().collect();
        for part in self.segments(text)? {
            match self.added_by_content.get(&part) {
                Some(&id) => ids.push(id),
                None => ids.extend_from_slice(self.encode_plain(&part)?.get_ids()),
            }
        }
        ids.extend(self.eos_id.filter(|_| add_eos));
        Ok(ids)
    }

    /// `tokenizer(text).input_ids`: no BOS, no EOS for `Qwen2Tokenizer` folders; BOS / EOS as
    /// `tokenizer.ggml.add_bos_token` / `add_eos_token` say for GGUF vocabularies.
    ///
    /// Fails with [`Error::Tokenizer`] when a byte has no token in the vocabulary.
    pub fn encode_with_defaults(&self, text: &str) -> Result<Vec<u32>> {
        self.encode(text, self.add_bos_token, self.add_eos_token)
    }

    /// Whether [`ByteLevelBpeTokenizer::encode_with_defaults`] adds BOS.
    pub fn add_bos_token(&self) -> bool {
        self.add_bos_token
    }

    /// Whether [`ByteLevelBpeTokenizer::encode_with_defaults`] adds EOS.
    pub fn add_eos_token(&self) -> bool {
        self.add_eos_token
    }

    /// The pre-tokeniser of a vocabulary loaded from GGUF (`None` for folders).
    pub fn gguf_pre_tokenizer(&self) -> Option<GgufPreTokenizer> {
        self.gguf_pre
    }

    /// Records the GGUF pre-tokeniser the BPE was built with.
    pub(super) fn set_gguf_pre_tokenizer(&mut self, pre: GgufPreTokenizer) {
        self.gguf_pre = Some(pre);
    }

    /// `Qwen2Tokenizer.decode(ids, skip_special_tokens)`.
    ///
    /// Fails with [`Error::InvalidArgument`] for an id that is neither a BPE token nor an
    /// added token.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        let byte_decoder = byte_decoder();
        let mut text = String::new();
        let mut run: Vec<u8> = Vec::new();
        for &id in ids {
            if skip_special_tokens && self.special_ids.contains(&id) {
                continue;
            }
            let token = self.id_to_token(id).ok_or_else(|| {
                Error::InvalidArgument(format!("token id {id} is not in the vocabulary"))
            })?;
            if self.standalone_in_decode.contains(&token) {
                text.push_str(&String::from_utf8_lossy(&run));
                run.clear();
                text.push_str(&token);
                continue;
            }
            for c in token.chars() {
                match byte_decoder.get(&c) {
                    Some(&byte) => run.push(byte),
                    // Python raises KeyError here (an added token with a space or non-Latin-1
                    // character decoded among BPE tokens); its UTF-8 bytes are what it means.
                    None => run.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                }
            }
        }
        text.push_str(&String::from_utf8_lossy(&run));
        Ok(text)
    }

    /// The raw bytes one token stands for (an added token's text as UTF-8; a BPE token's
    /// byte-level characters mapped back to bytes, possibly part of a character).
    pub fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
        let token = self.id_to_token(id)?;
        if self.added_by_id.contains_key(&id) {
            return Some(token.into_bytes());
        }
        let byte_decoder = byte_decoder();
        let mut bytes = Vec::new();
        for c in token.chars() {
            match byte_decoder.get(&c) {
                Some(&b) => bytes.push(b),
                None => bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
            }
        }
        Some(bytes)
    }

    /// The id of an added token or of a BPE token.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.added_by_content
            .get(token)
            .copied()
            .or_else(|| self.bpe.token_to_id(token))
    }

    /// The added token or BPE token (byte-level characters) with this id.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        match self.added_by_id.get(&id) {
            Some(token) => Some(token.spec.content.clone()),
            None => self.bpe.id_to_token(id),
        }
    }

    /// The id of `bos_token` (none for Qwen2).
    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    /// The id of `eos_token` (`<|im_end|>` in InternVL's Qwen2 folders, `<|endoftext|>` by
    /// default).
    pub fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }

    /// The id of `unk_token`, if the folder keeps one.
    pub fn unk_id(&self) -> Option<u32> {
        self.unk_id
    }

    /// The id of `pad_token`.
    pub fn pad_id(&self) -> Option<u32> {
        self.pad_id
    }

    /// Makes `content` (a token of the vocabulary or an added token) the pad token.
    ///
    /// Fails with [`Error::Tokenizer`] when no token has that text.
    pub fn set_pad_token(&mut self, content: &str) -> Result<()> {
        let id = self.token_to_id(content).ok_or_else(|| {
            Error::tokenizer(
                "pad_token",
                format!("{content:?} is not a token of the vocabulary"),
            )
        })?;
        self.pad_id = Some(id);
        self.special_ids.insert(id);
        Ok(())
    }

    /// `len(tokenizer)`: BPE tokens and added tokens, each text counted once.
    pub fn vocab_size(&self) -> usize {
        self.len
    }

    /// transformers' `vocab_size`: the BPE vocabulary alone.
    pub fn bpe_vocab_size(&self) -> usize {
        self.bpe_vocab_size
    }

    /// The added tokens, by id.
    pub fn added_tokens(&self) -> impl Iterator<Item = &AddedToken> {
        self.added_by_id.values()
    }

    /// Whether `id` is one of `all_special_ids` (dropped by `skip_special_tokens`).
    pub fn is_special_id(&self, id: u32) -> bool {
        self.special_ids.contains(&id)
    }

    /// Which files the vocabulary came from. A GGUF vocabulary reports
    /// [`BpeSource::TokenizerJson`]: llama.cpp converts it from a `tokenizer.json`, and like one
    /// it keeps every merge and brings its own pre-tokeniser (see
    /// [`ByteLevelBpeTokenizer::gguf_pre_tokenizer`]).
    pub fn source(&self) -> BpeSource {
        self.source
    }
}

/// `len(get_vocab())`: the BPE vocabulary plus the added token texts it lacks.
fn vocab_len(bpe: &tokenizers::Tokenizer, added_by_content: &HashMap<String, u32>) -> usize {
    let extra = added_by_content
        .keys()
        .filter(|content| bpe.token_to_id(content).is_none())
        .count();
    bpe.get_vocab_size(false) + extra
}

/// GPT-2's `bytes_to_unicode` inverted: printable Latin-1 characters stand for their own byte,
/// the other 68 bytes are U+0100.. in byte order.
fn byte_decoder() -> &'static HashMap<char, u8> {
    static TABLE: std::sync::OnceLock<HashMap<char, u8>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let mut next = 0x100u32;
        (0..=255u8)
            .map(|b| {
                let c = if printable(b) {
                    char::from(b)
                } else {
                    next += 1;
                    char::from_u32(next - 1).expect("below U+0200")
                };
                (c, b)
            })
            .collect()
    })
}

fn tokenizer_error(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::tokenizer(path.display(), reason)
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| tokenizer_error(path, e))
}

/// Whether a pre-tokeniser (or a sequence of them) contains a ByteLevel step.
fn has_byte_level(pre_tokenizer: &Value) -> bool {
    match pre_tokenizer.get("type").and_then(Value::as_str) {
        Some("ByteLevel") => true,
        Some("Sequence") => pre_tokenizer
            .get("pretokenizers")
            .and_then(Value::as_array)
            .is_some_and(|steps| steps.iter().any(has_byte_level)),
        _ => false,
    }
}

/// A `tokenizer.json` as a bare pre-tokeniser + BPE tokenizer and its normaliser.
fn bpe_from_tokenizer_json(
    path: &Path,
) -> Result<(tokenizers::Tokenizer, Option<NormalizerWrapper>)> {
    let mut json = read_json(path)?;
    let Some(object) = json.as_object_mut() else {
        return Err(tokenizer_error(path, "not a JSON object"));
    };
    let model_type = object
        .get("model")
        .and_then(|m| m.get("type"))
        .and_then(Value::as_str);
    if model_type != Some("BPE") {
        return Err(tokenizer_error(
            path,
            format!("model type {model_type:?} is not supported (byte-level BPE only)"),
        ));
    }
    if !object.get("pre_tokenizer").is_some_and(has_byte_level) {
        return Err(tokenizer_error(
            path,
            "the pre-tokenizer has no ByteLevel step (byte-level BPE only)",
        ));
    }
    let normalizer = match object.remove("normalizer") {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            serde_json::from_value::<NormalizerWrapper>(value)
                .map_err(|e| tokenizer_error(path, format!("normalizer: {e}")))?,
        ),
    };
    // Added tokens, post-processing and decoding are done here the slow tokenizer's way.
    object.insert("normalizer".into(), Value::Null);
    object.insert("added_tokens".into(), json!([]));
    object.insert("post_processor".into(), Value::Null);
    object.insert("decoder".into(), Value::Null);
    object.insert("truncation".into(), Value::Null);
    object.insert("padding".into(), Value::Null);
    let bpe = serde_json::from_value(json).map_err(|e| tokenizer_error(path, e))?;
    Ok((bpe, normalizer))
}

/// `vocab.json` + `merges.txt` read as transformers 4.37's `Qwen2Tokenizer.__init__` reads
/// them, with its NFC normaliser and regex.
fn bpe_from_vocab_merges(
    vocab_path: &Path,
    merges_path: &Path,
) -> Result<(tokenizers::Tokenizer, Option<NormalizerWrapper>)> {
    let vocab = match read_json(vocab_path)? {
        Value::Object(map) => map,
        _ => return Err(tokenizer_error(vocab_path, "not a JSON object")),
    };
    let text = std::fs::read_to_string(merges_path).map_err(|source| Error::Io {
        path: merges_path.to_path_buf(),
        source,
    })?;
    let merges: Vec<Value> = text
        .lines()
        .map(|line| line.trim_matches(added::is_py_space))
        // Skips the `#version` header and, like 4.37, every other line starting with `#`.
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| {
            let parts: Vec<&str> = line
                .split(added::is_py_space)
                .filter(|p| !p.is_empty())
                .collect();
            // Python keeps other lengths as tuples that never match a pair.
            (parts.len() == 2).then(|| json!([parts[0], parts[1]]))
        })
        .collect();
    let model = json!({
        "type": "BPE",
        "dropout": null,
        "unk_token": null,
        "continuing_subword_prefix": null,
        "end_of_word_suffix": null,
        "fuse_unk": false,
        "byte_fallback": false,
        "ignore_merges": false,
        "vocab": Value::Object(vocab),
        "merges": merges,
    });
    let tokenizer = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [],
        "normalizer": null,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {
                    "type": "Split",
                    "pattern": {"Regex": QWEN2_PRETOKENIZE_REGEX},
                    "behavior": "Isolated",
                    "invert": false
                },
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}
            ]
        },
        "post_processor": null,
        "decoder": null,
        "model": model,
    });
    let bpe = serde_json::from_value(tokenizer).map_err(|e| tokenizer_error(merges_path, e))?;
    let normalizer = serde_json::from_value::<NormalizerWrapper>(json!({"type": "NFC"}))
        .map_err(|e| tokenizer_error(vocab_path, e))?;
    Ok((bpe, Some(normalizer)))
}
