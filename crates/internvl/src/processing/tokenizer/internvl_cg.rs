//! The text side of InternVL-C/G (InternVL-14B-224px, QLLaMA): clip_benchmark's
//! `InternVLTokenizer` for retrieval/zero-shot texts and the model card's captioning prompt.

use std::path::Path;

use candle_core::{Device, Tensor};

use super::Tokenizer;
use crate::{Error, Result};

/// Prepended to every text, without a separator.
pub const SUMMARIZE_PREFIX: &str = "summarize:";
/// The captioning prompt (BOS, no EOS).
pub const CAPTION_PROMPT: &str = "English caption:";
/// The fixed text length of InternVL-C/G.
pub const TEXT_MAX_LENGTH: usize = 80;
/// Padding id: clip_benchmark sets `pad_token = ' '`, which is no piece and so `<unk>` = 0.
pub const PAD_ID: u32 = 0;

/// Texts encoded to a fixed length: `[N, L]` ids and attention mask, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextBatch {
    /// Token ids, each row right-padded with [`PAD_ID`].
    pub input_ids: Vec<Vec<u32>>,
    /// 1 where the id is positive, else 0 (an `<unk>` inside a text is masked too, as the
    /// release's `ids > 0` mask does).
    pub attention_mask: Vec<Vec<u32>>,
}

impl TextBatch {
    /// The ids as a `[N, L]` u32 tensor.
    pub fn input_ids_tensor(&self, device: &Device) -> Result<Tensor> {
        Ok(Tensor::new(self.input_ids.clone(), device)?)
    }

    /// The mask as a `[N, L]` u32 tensor.
    pub fn attention_mask_tensor(&self, device: &Device) -> Result<Tensor> {
        Ok(Tensor::new(self.attention_mask.clone(), device)?)
    }
}

/// clip_benchmark's `InternVLTokenizer`: `"summarize:" + text`, BOS and EOS added
/// (`add_eos_token=True`), truncated to `max_length` keeping BOS and EOS, right-padded with 0.
#[derive(Debug, Clone)]
pub struct InternVlCgTextTokenizer {
    tokenizer: Tokenizer,
    max_length: usize,
    bos_id: u32,
    eos_id: u32,
}

impl InternVlCgTextTokenizer {
    /// Wraps a loaded tokenizer (the release's Chinese-LLaMA `tokenizer.model`).
    ///
    /// Fails with [`Error::InvalidArgument`] when it has no BOS or EOS token.
    pub fn new(tokenizer: Tokenizer) -> Result<Self> {
        let missing = |what: &str| {
            Error::InvalidArgument(format!("the InternVL-C/G tokenizer needs a {what} token"))
        };
        Ok(Self {
            bos_id: tokenizer.bos_id().ok_or_else(|| missing("BOS"))?,
            eos_id: tokenizer.eos_id().ok_or_else(|| missing("EOS"))?,
            tokenizer,
            max_length: TEXT_MAX_LENGTH,
        })
    }

    /// Loads the tokenizer files of a model folder.
    pub fn from_folder(dir: impl AsRef<Path>) -> Result<Self> {
        Self::new(Tokenizer::from_folder(dir)?)
    }

    /// Uses another fixed length (at least 2: BOS and EOS).
    pub fn with_max_length(mut self, max_length: usize) -> Result<Self> {
        if max_length < 2 {
            return Err(Error::InvalidArgument(format!(
                "max_length {max_length} leaves no room for BOS and EOS"
            )));
        }
        self.max_length = max_length;
        Ok(self)
    }

    /// The fixed length of every row.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// The unpadded ids of one text: BOS, the prefixed text cut to `max_length - 2` tokens
    /// (transformers truncates before adding special tokens), EOS.
    pub fn encode_unpadded(&self, text: &str) -> Result<Vec<u32>> {
        let mut body = self
            .tokenizer
            .encode(&format!("{SUMMARIZE_PREFIX}{text}"), false, false)?;
        body.truncate(self.max_length - 2);
        let mut ids = Vec::with_capacity(body.len() + 2);
        ids.push(self.bos_id);
        ids.extend(body);
        ids.push(self.eos_id);
        Ok(ids)
    }

    /// Encodes, truncates and right-pads every text to `[N, max_length]`.
    pub fn encode_batch<S: AsRef<str>>(&self, texts: &[S]) -> Result<TextBatch> {
        let mut input_ids = Vec::with_capacity(texts.len());
        let mut attention_mask = Vec::with_capacity(texts.len());
        for text in texts {
            let mut ids = self.encode_unpadded(text.as_ref())?;
            ids.resize(self.max_length, PAD_ID);
            attention_mask.push(ids.iter().map(|&id| u32::from(id > 0)).collect());
            input_ids.push(ids);
        }
        Ok(TextBatch {
            input_ids,
            attention_mask,
        })
    }

    /// The captioning prompt `"English caption:"` with BOS and without EOS.
    pub fn caption_prompt_ids(&self) -> Result<Vec<u32>> {
        self.tokenizer.encode(CAPTION_PROMPT, true, false)
    }

    /// The wrapped tokenizer (to decode captions).
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }
}
