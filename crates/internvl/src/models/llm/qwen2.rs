//! Qwen2 / Qwen2.5 (transformers `Qwen2ForCausalLM`: InternVL2-1B, InternVL2.5 / InternVL3
//! Qwen-based sizes), spec §8.1.
//!
//! The tensor names are LLaMA's (see [`super::llama`]), with biases on q/k/v (not on o_proj).
//! RMSNorm eps defaults to 1e-6.
//!
//! RoPE scaling: transformers 4.37 (the release's version) ignores `rope_scaling` for Qwen2, so
//! it is read but not applied; its `dynamic` entries would only act beyond
//! `max_position_embeddings`, which this implementation rejects. `use_sliding_window` (false in
//! every InternVL release) limits sequences to `sliding_window`.

use candle_nn::VarBuilder;

use super::config::{CommonFields, FamilyNumerics, Fields, LlmConfig, LlmFamily, RopeScaling};
use super::loading::require_silu;
use super::transformer::DecoderWeights;
use crate::Result;

/// Parses a Qwen2 `llm_config`.
pub(super) fn config(fields: &Fields) -> std::result::Result<LlmConfig, String> {
    require_silu(fields.opt_str("hidden_act")?)?;
    let common = CommonFields::read(fields)?;
    let sliding_window = if fields.bool_or("use_sliding_window", false)? {
        fields.opt_usize("sliding_window")?
    } else {
        None
    };
    let numerics = FamilyNumerics {
        rms_norm_eps: fields.f64_or("rms_norm_eps", 1e-6)?,
        rope_theta: fields.f64_or("rope_theta", 10000.0)?,
        rope_scaling: RopeScaling::None,
        sliding_window,
        qkv_bias: true,
        o_bias: false,
        mlp_bias: false,
    };
    Ok(common.into_config(LlmFamily::Qwen2, numerics))
}

/// Loads the Qwen2 tensors from `vb` (the LLM prefix).
pub(super) fn load(config: &LlmConfig, vb: &VarBuilder) -> Result<DecoderWeights> {
    super::llama::load(config, vb)
}
