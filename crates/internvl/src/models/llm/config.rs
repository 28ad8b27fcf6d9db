//! The language-model configuration shared by all families: the `llm_config` object of an
//! InternVL-Chat `config.json` (or a plain transformers `config.json`), parsed per family into one
//! normalised description of the decoder.

use serde_json::Value;

/// The decoder families that InternVL-Chat releases use (spec internvl_chat.md §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LlmFamily {
    /// Qwen2 / Qwen2.5 (`Qwen2ForCausalLM`): q/k/v biases.
    Qwen2,
    /// InternLM2 / InternLM2.5 (`InternLM2ForCausalLM`): fused `wqkv` grouped per KV head.
    InternLM2,
    /// LLaMA-type (`LlamaForCausalLM`: Yi, LLaMA-3, Vicuna; `InternLM3ForCausalLM`; llama GGUF).
    Llama,
    /// Phi-3 (`Phi3ForCausalLM`): fused `qkv_proj` and `gate_up_proj`, su/LongRoPE scaling.
    Phi3,
}

impl LlmFamily {
    /// The transformers architecture name.
    pub fn name(self) -> &'static str {
        match self {
            LlmFamily::Qwen2 => "Qwen2ForCausalLM",
            LlmFamily::InternLM2 => "InternLM2ForCausalLM",
            LlmFamily::Llama => "LlamaForCausalLM",
            LlmFamily::Phi3 => "Phi3ForCausalLM",
        }
    }

    /// Recognises a config by its first `architectures` entry, else by `model_type`.
    fn detect(config: &Value) -> Result<Self, String> {
        let architecture = config
            .get("architectures")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(Value::as_str);
        let model_type = config.get("model_type").and_then(Value::as_str);
        let by_architecture = architecture.and_then(|a| match a {
            "Qwen2ForCausalLM" => Some(LlmFamily::Qwen2),
            "InternLM2ForCausalLM" => Some(LlmFamily::InternLM2),
            "LlamaForCausalLM" | "InternLM3ForCausalLM" => Some(LlmFamily::Llama),
            "Phi3ForCausalLM" => Some(LlmFamily::Phi3),
            _ => None,
        });
        let by_model_type = model_type.and_then(|t| match t {
            "qwen2" => Some(LlmFamily::Qwen2),
            "internlm2" => Some(LlmFamily::InternLM2),
            "llama" | "internlm3" => Some(LlmFamily::Llama),
            "phi3" => Some(LlmFamily::Phi3),
            _ => None,
        });
        by_architecture.or(by_model_type).ok_or_else(|| {
            format!(
                "unsupported language model (architectures {}, model_type {}); supported: \
                 Qwen2ForCausalLM, InternLM2ForCausalLM, LlamaForCausalLM, InternLM3ForCausalLM, \
                 Phi3ForCausalLM",
                architecture.map_or("none".into(), |a| format!("`{a}`")),
                model_type.map_or("none".into(), |t| format!("`{t}`")),
            )
        })
    }
}

/// Rotary-embedding scaling, as the release code of each family applies it.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE: positions beyond `max_position_embeddings` are rejected.
    None,
    /// Positions divided by `factor` (LLaMA / InternLM2 `linear`).
    Linear {
        /// The divisor of the positions.
        factor: f64,
    },
    /// Dynamic NTK (LLaMA / InternLM2 `dynamic`): plain RoPE up to `max_position_embeddings`;
    /// a forward whose sequence (cache + new tokens) is longer uses an enlarged base, computed
    /// from that length (spec §8.2). Keys already cached keep their rotation, like the release.
    DynamicNtk {
        /// The scaling factor.
        factor: f64,
    },
    /// Phi-3 `su` / `longrope`: per-frequency divisors, the long ones for a forward whose
    /// largest position reaches `original_max_position_embeddings`, and cos/sin multiplied by
    /// `sqrt(1 + ln(max/original) / ln(original))` (spec §8.3).
    LongRope {
        /// Divisors used while the positions stay below `original_max_position_embeddings`.
        short_factor: Vec<f64>,
        /// Divisors used beyond.
        long_factor: Vec<f64>,
        /// The pre-training context length.
        original_max_position_embeddings: usize,
    },
}

/// One normalised description of a decoder-only language model.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmConfig {
    /// Which family (tensor names, fused layouts, numerics) this is.
    pub family: LlmFamily,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// SwiGLU inner width.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention when fewer than the query heads).
    pub num_key_value_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Vocabulary size (rows of the embedding and of the LM head).
    pub vocab_size: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// RoPE scaling.
    pub rope_scaling: RopeScaling,
    /// Longest sequence the model supports (with dynamic NTK: beyond which the base grows).
    pub max_position_embeddings: usize,
    /// Sliding-window attention width when the release enables it; sequences longer than the
    /// window are rejected (not implemented).
    pub sliding_window: Option<usize>,
    /// Biases on the query/key/value projections.
    pub qkv_bias: bool,
    /// Bias on the attention output projection.
    pub o_bias: bool,
    /// Biases on the MLP projections.
    pub mlp_bias: bool,
    /// LM head shares the input-embedding matrix.
    pub tie_word_embeddings: bool,
    /// Beginning-of-sequence id, when configured.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence ids of the language model (InternVL chat stops on the template separator
    /// instead; see spec §7).
    pub eos_token_ids: Vec<u32>,
    /// Padding id, when configured.
    pub pad_token_id: Option<u32>,
}

impl LlmConfig {
    /// Parses an `llm_config` object (or a transformers language-model `config.json`).
    ///
    /// Fails with a message that names the key at fault, or the unsupported architecture.
    pub fn from_value(config: &Value) -> Result<Self, String> {
        let fields = Fields(config);
        let parsed = match LlmFamily::detect(config)? {
            LlmFamily::Qwen2 => super::qwen2::config(&fields),
            LlmFamily::InternLM2 => super::internlm2::config(&fields),
            LlmFamily::Llama => super::llama::config(&fields),
            LlmFamily::Phi3 => super::phi3::config(&fields),
        }?;
        parsed.validate()?;
        Ok(parsed)
    }

    /// Checks the relations the decoder relies on.
    pub fn validate(&self) -> Result<(), String> {
        let (heads, kv) = (self.num_attention_heads, self.num_key_value_heads);
        if heads == 0 || kv == 0 || !heads.is_multiple_of(kv) {
            return Err(format!(
                "num_attention_heads {heads} is not a positive multiple of num_key_value_heads {kv}"
            ));
        }
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(2) {
            return Err(format!("head_dim {} must be even for RoPE", self.head_dim));
        }
        if self.hidden_size == 0 || self.vocab_size == 0 || self.intermediate_size == 0 {
            return Err("hidden_size, intermediate_size and vocab_size must be positive".into());
        }
        if let RopeScaling::LongRope {
            short_factor,
            long_factor,
            ..
        } = &self.rope_scaling
        {
            let half = self.head_dim / 2;
            if short_factor.len() != half || long_factor.len() != half {
                return Err(format!(
                    "rope_scaling short_factor/long_factor have {}/{} entries, expected head_dim/2 = {half}",
                    short_factor.len(),
                    long_factor.len()
                ));
            }
        }
        Ok(())
    }
}

/// Typed reads from a JSON config object, with errors that name the key.
pub(super) struct Fields<'a>(pub(super) &'a Value);

impl Fields<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    /// A required non-negative integer.
    pub(super) fn usize(&self, key: &str) -> Result<usize, String> {
        self.opt_usize(key)?
            .ok_or_else(|| format!("`{key}` is missing"))
    }

    /// An optional non-negative integer.
    pub(super) fn opt_usize(&self, key: &str) -> Result<Option<usize>, String> {
        self.get(key)
            .map(|v| {
                v.as_u64()
                    .map(|n| n as usize)
                    .ok_or_else(|| format!("`{key}` is not a non-negative integer: {v}"))
            })
            .transpose()
    }

    /// A number with a default.
    pub(super) fn f64_or(&self, key: &str, default: f64) -> Result<f64, String> {
        self.get(key)
            .map(|v| {
                v.as_f64()
                    .ok_or_else(|| format!("`{key}` is not a number: {v}"))
            })
            .unwrap_or(Ok(default))
    }

    /// A boolean with a default.
    pub(super) fn bool_or(&self, key: &str, default: bool) -> Result<bool, String> {
        self.get(key)
            .map(|v| {
                v.as_bool()
                    .ok_or_else(|| format!("`{key}` is not a boolean: {v}"))
            })
            .unwrap_or(Ok(default))
    }

    /// A string, if present.
    pub(super) fn opt_str(&self, key: &str) -> Result<Option<&str>, String> {
        self.get(key)
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| format!("`{key}` is not a string: {v}"))
            })
            .transpose()
    }

    /// A token id, or a list of them (`eos_token_id` may be either).
    pub(super) fn ids(&self, key: &str) -> Result<Vec<u32>, String> {
        let Some(value) = self.get(key) else {
            return Ok(Vec::new());
        };
        let one = |v: &Value| {
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| format!("`{key}` is not a token id: {v}"))
        };
        match value {
            Value::Array(items) => items.iter().map(one).collect(),
            single => Ok(vec![one(single)?]),
        }
    }

    /// A single optional token id.
    pub(super) fn opt_id(&self, key: &str) -> Result<Option<u32>, String> {
        Ok(self.ids(key)?.first().copied())
    }

    /// The `rope_scaling` object, if any.
    pub(super) fn rope_scaling(&self) -> Option<Fields<'_>> {
        self.get("rope_scaling").map(Fields)
    }

    /// `rope_scaling.type` (older configs) or `rope_scaling.rope_type` (newer ones).
    pub(super) fn scaling_type(&self) -> Result<String, String> {
        self.opt_str("type")
            .transpose()
            .or_else(|| self.opt_str("rope_type").transpose())
            .transpose()?
            .map(str::to_string)
            .ok_or_else(|| "`rope_scaling` has no `type`".to_string())
    }

    /// A list of numbers.
    pub(super) fn f64_list(&self, key: &str) -> Result<Vec<f64>, String> {
        let items = self
            .get(key)
            .and_then(Value::as_array)
            .ok_or_else(|| format!("`{key}` is missing or not a list"))?;
        items
            .iter()
            .map(|v| {
                v.as_f64()
                    .ok_or_else(|| format!("`{key}` has a non-number entry: {v}"))
            })
            .collect()
    }
}

/// The fields every family reads the same way; the family fills in the rest.
pub(super) struct CommonFields {
    pub(super) hidden_size: usize,
    pub(super) intermediate_size: usize,
    pub(super) num_hidden_layers: usize,
    pub(super) num_attention_heads: usize,
    pub(super) num_key_value_heads: usize,
    pub(super) head_dim: usize,
    pub(super) vocab_size: usize,
    pub(super) max_position_embeddings: usize,
    pub(super) tie_word_embeddings: bool,
    pub(super) bos_token_id: Option<u32>,
    pub(super) eos_token_ids: Vec<u32>,
    pub(super) pad_token_id: Option<u32>,
}

impl CommonFields {
    /// Reads the sizes and special ids; `head_dim` defaults to `hidden_size / heads`.
    pub(super) fn read(fields: &Fields) -> Result<Self, String> {
        let hidden_size = fields.usize("hidden_size")?;
        let num_attention_heads = fields.usize("num_attention_heads")?;
        if num_attention_heads == 0 {
            return Err("`num_attention_heads` is 0".into());
        }
        let head_dim = match fields.opt_usize("head_dim")? {
            Some(d) => d,
            None if hidden_size.is_multiple_of(num_attention_heads) => {
                hidden_size / num_attention_heads
            }
            None => {
                return Err(format!(
                    "hidden_size {hidden_size} is not divisible by num_attention_heads {num_attention_heads}"
                ))
            }
        };
        Ok(Self {
            hidden_size,
            intermediate_size: fields.usize("intermediate_size")?,
            num_hidden_layers: fields.usize("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads: fields
                .opt_usize("num_key_value_heads")?
                .unwrap_or(num_attention_heads),
            head_dim,
            vocab_size: fields.usize("vocab_size")?,
            max_position_embeddings: fields.usize("max_position_embeddings")?,
            tie_word_embeddings: fields.bool_or("tie_word_embeddings", false)?,
            bos_token_id: fields.opt_id("bos_token_id")?,
            eos_token_ids: fields.ids("eos_token_id")?,
            pad_token_id: fields.opt_id("pad_token_id")?,
        })
    }

    /// The full configuration with the family-specific choices.
    pub(super) fn into_config(self, family: LlmFamily, numerics: FamilyNumerics) -> LlmConfig {
        LlmConfig {
            family,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            num_key_value_heads: self.num_key_value_heads,
            head_dim: self.head_dim,
            vocab_size: self.vocab_size,
            rms_norm_eps: numerics.rms_norm_eps,
            rope_theta: numerics.rope_theta,
            rope_scaling: numerics.rope_scaling,
            max_position_embeddings: self.max_position_embeddings,
            sliding_window: numerics.sliding_window,
            qkv_bias: numerics.qkv_bias,
            o_bias: numerics.o_bias,
            mlp_bias: numerics.mlp_bias,
            tie_word_embeddings: self.tie_word_embeddings,
            bos_token_id: self.bos_token_id,
            eos_token_ids: self.eos_token_ids,
            pad_token_id: self.pad_token_id,
        }
    }
}

/// What differs between the families' configs.
pub(super) struct FamilyNumerics {
    pub(super) rms_norm_eps: f64,
    pub(super) rope_theta: f64,
    pub(super) rope_scaling: RopeScaling,
    pub(super) sliding_window: Option<usize>,
    pub(super) qkv_bias: bool,
    pub(super) o_bias: bool,
    pub(super) mlp_bias: bool,
}

/// Parses `{type: linear | dynamic, factor}`, the kinds LLaMA-style code implements.
pub(super) fn linear_or_dynamic(fields: &Fields) -> Result<RopeScaling, String> {
    let Some(scaling) = fields.rope_scaling() else {
        return Ok(RopeScaling::None);
    };
    let kind = scaling.scaling_type()?;
    // transformers ≥ 4.45 spells "no scaling" this way.
    if kind == "default" {
        return Ok(RopeScaling::None);
    }
    let factor = scaling.f64_or("factor", f64::NAN)?;
    if !(factor.is_finite() && factor > 0.0) {
        return Err("`rope_scaling.factor` is missing or not positive".into());
    }
    match kind.as_str() {
        "linear" => Ok(RopeScaling::Linear { factor }),
        "dynamic" => Ok(RopeScaling::DynamicNtk { factor }),
        other => Err(format!(
            "rope_scaling type `{other}` is not supported (linear, dynamic)"
        )),
    }
}
