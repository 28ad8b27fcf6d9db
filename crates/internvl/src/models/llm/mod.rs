//! The language models of InternVL-Chat (spec internvl_chat.md §7, §8, §10): Qwen2, InternLM2,
//! LLaMA-type and Phi-3 decoders, loaded from the released tensor names under `language_model.`
//! (or from a plain transformers folder, or a llama GGUF file), with left-padded batches and a
//! KV cache for incremental decoding.
//!
//! One file per family maps its configuration and tensor names (fused layouts included) onto one
//! shared decoder (`transformer.rs`): RMSNorm with the statistic in f32, rotate-half RoPE with
//! f32 tables, grouped-query attention with an additive causal + padding mask and an f32
//! softmax, SwiGLU.
//!
//! ```no_run
//! # fn main() -> internvl::Result<()> {
//! use candle_core::{DType, Device, Tensor};
//! use internvl::models::llm::{generate, Llm};
//! use internvl::models::ModelFolder;
//!
//! let folder = ModelFolder::open(std::path::Path::new("InternVL2-1B"))?;
//! let llm = Llm::load_chat(&folder, DType::F32, &Device::Cpu)?;
//! let ids = Tensor::new(&[[151644u32, 872, 198]], &Device::Cpu)?;
//! let mask = Tensor::ones(ids.dims(), DType::U32, &Device::Cpu)?;
//! let options = generate::GreedyOptions::new(16, vec![151645]);
//! let out = generate::greedy(&llm, &llm.embed(&ids)?, &mask, &options)?;
//! println!("{:?}", out.tokens);
//! # Ok(())
//! # }
//! ```

mod config;
pub mod generate;
pub(crate) mod gguf;
mod internlm2;
mod llama;
mod loading;
mod phi3;
mod qwen2;
mod rope;
mod transformer;

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

pub use config::{LlmConfig, LlmFamily, RopeScaling};
pub use transformer::KvCache;

use crate::models::checkpoint::Checkpoint;
use crate::models::folder::ModelFolder;
use crate::{Error, Result};

/// Prefix of the language model's tensors in an InternVL-Chat checkpoint.
pub const CHAT_PREFIX: &str = "language_model";

/// A decoder-only language model of any supported family.
#[derive(Debug, Clone)]
pub struct Llm {
    config: LlmConfig,
    decoder: transformer::Decoder,
}

impl Llm {
    /// Builds the model from `vb` positioned at the LLM's prefix (`language_model` in a chat
    /// checkpoint, the root in a plain transformers checkpoint). Tensors are read in `vb`'s dtype.
    pub fn load(config: &LlmConfig, vb: VarBuilder) -> Result<Self> {
        config.validate().map_err(Error::InvalidArgument)?;
        let weights = match config.family {
            LlmFamily::Qwen2 => qwen2::load(config, &vb),
            LlmFamily::InternLM2 => internlm2::load(config, &vb),
            LlmFamily::Llama => llama::load(config, &vb),
            LlmFamily::Phi3 => phi3::load(config, &vb),
        }?;
        Ok(Self {
            config: config.clone(),
            decoder: transformer::Decoder::new(config, weights),
        })
    }

    /// Loads the language model of an InternVL-Chat folder (`llm_config` of its `config.json`,
    /// tensors under `language_model.`), checking that every such tensor was used.
    pub fn load_chat(folder: &ModelFolder, dtype: DType, device: &Device) -> Result<Self> {
        let config_path = folder.dir().join("config.json");
        let value = folder
            .config()
            .get("llm_config")
            .ok_or_else(|| Error::Config {
                path: config_path.clone(),
                reason: "no `llm_config`".into(),
            })?;
        let config = LlmConfig::from_value(value).map_err(|reason| Error::Config {
            path: config_path,
            reason: format!("llm_config: {reason}"),
        })?;
        let vb = folder
            .checkpoint()
            .var_builder(dtype, device)
            .pp(CHAT_PREFIX);
        Self::load_checked(&config, vb, folder.checkpoint(), &format!("{CHAT_PREFIX}."))
    }

    /// Loads a plain transformers language-model folder (`config.json` + safetensors with
    /// `model.*` / `lm_head` names at the root).
    pub fn load_folder(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let config_path = dir.join("config.json");
        let text = std::fs::read_to_string(&config_path).map_err(|source| Error::Io {
            path: config_path.clone(),
            source,
        })?;
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Config {
            path: config_path.clone(),
            reason: format!("not valid JSON: {e}"),
        })?;
        let config = LlmConfig::from_value(&value).map_err(|reason| Error::Config {
            path: config_path,
            reason,
        })?;
        let checkpoint = Checkpoint::open(dir)?;
        let vb = checkpoint.var_builder(dtype, device);
        Self::load_checked(&config, vb, &checkpoint, "")
    }

    /// Loads a llama-architecture GGUF file (llama.cpp names and metadata), dequantising every
    /// tensor and converting it to `dtype`. See `gguf.rs` for the mapping.
    pub fn load_gguf(path: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let (config, vb) = gguf::read(path, dtype, device)?;
        Self::load(&config, vb).map_err(|e| checkpoint_error(path, e))
    }

    fn load_checked(
        config: &LlmConfig,
        vb: VarBuilder,
        checkpoint: &Checkpoint,
        scope: &str,
    ) -> Result<Self> {
        let model = Self::load(config, vb).map_err(|e| checkpoint_error(checkpoint.dir(), e))?;
        checkpoint.ensure_all_used(scope)?;
        Ok(model)
    }

    /// The configuration.
    pub fn config(&self) -> &LlmConfig {
        &self.config
    }

    /// The family.
    pub fn family(&self) -> LlmFamily {
        self.config.family
    }

    /// Rows of the embedding / LM head.
    pub fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    /// Width of the token embeddings.
    pub fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }

    /// The dtype of the weights (and of the embeddings [`Llm::embed`] returns).
    pub fn dtype(&self) -> DType {
        self.decoder.embed_dtype()
    }

    /// Token embeddings `[B, T, C]` of ids `[B, T]` (u32 or i64).
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        self.decoder.embed(ids)
    }

    /// Runs the decoder on `embeds` `[B, T, C]` and returns f32 logits `[B, T, V]`.
    ///
    /// * `position_ids` `[B, T]`: supplied by the caller; the release uses
    ///   `cumsum(mask) − 1` with pads set to 1 ([`generate::position_ids`]).
    /// * `attention_mask` `[B, S]`, `S = cache.len() + T`, 1 = real token, 0 = padding (left
    ///   padding); `None` means no padding. Attention is causal in every case.
    /// * `cache`: the new keys/values are appended; pass an empty cache for a fresh prompt.
    pub fn forward(
        &self,
        embeds: &Tensor,
        position_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let hidden = self.hidden_states(embeds, position_ids, attention_mask, cache)?;
        self.logits(&hidden)
    }

    /// Like [`Llm::forward`], but only the logits of the last position, `[B, V]` (what greedy
    /// decoding needs; the LM head runs on one position per row).
    pub fn forward_last(
        &self,
        embeds: &Tensor,
        position_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let hidden = self.hidden_states(embeds, position_ids, attention_mask, cache)?;
        let last = hidden.dim(1)? - 1;
        self.logits(&hidden.narrow(1, last, 1)?.squeeze(1)?)
    }

    /// One decoding step for several independent sequences (continuous batching): row `r` of
    /// `embeds` `[N, 1, C]` is the next token of the sequence whose keys/values are in
    /// `caches[r]` (each a single unpadded sequence), at position `positions[r]`. Returns f32
    /// logits `[N, V]`, equal (to float rounding) to running each row alone with
    /// [`Llm::forward_last`].
    pub fn forward_many(
        &self,
        embeds: &Tensor,
        positions: &[i64],
        caches: &mut [&mut KvCache],
    ) -> Result<Tensor> {
        self.check_embeds(embeds)?;
        let hidden = self.decoder.hidden_states_many(embeds, positions, caches)?;
        self.logits(&hidden.squeeze(1)?)
    }

    fn check_embeds(&self, embeds: &Tensor) -> Result<()> {
        let (_, _, width) = embeds.dims3()?;
        if width != self.config.hidden_size || embeds.dtype() != self.dtype() {
            return Err(Error::InvalidArgument(format!(
                "embeddings are {:?} of width {width}, the model expects {:?} of width {}",
                embeds.dtype(),
                self.dtype(),
                self.config.hidden_size
            )));
        }
        Ok(())
    }

    /// The final-norm hidden states `[B, T, C]` (arguments as in [`Llm::forward`]).
    pub fn hidden_states(
        &self,
        embeds: &Tensor,
        position_ids: &Tensor,
        attention_mask: Option<&Tensor>,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        self.check_embeds(embeds)?;
        self.decoder
            .hidden_states(embeds, position_ids, attention_mask, cache)
    }

    /// f32 LM-head logits `[..., V]` of hidden states `[..., C]`.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        self.decoder.logits(hidden)
    }
}

/// A loading failure as an [`Error::Checkpoint`] naming the file, with candle's first line.
fn checkpoint_error(path: &Path, error: Error) -> Error {
    match error {
        Error::Candle(e) => Error::Checkpoint {
            path: path.to_path_buf(),
            // The first line: candle may append a backtrace.
            reason: e.to_string().lines().next().unwrap_or_default().to_string(),
        },
        other => other,
    }
}
