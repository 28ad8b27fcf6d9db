//! Phi-3 (remote-code `Phi3ForCausalLM`: InternVL2-4B, Mini-InternVL-Chat-4B-V1-5), spec §8.3.
//!
//! Names under the LLM prefix: `model.embed_tokens`, `model.layers.{i}.self_attn.qkv_proj`
//! (rows `[q | k | v]`, already the decoder's layout), `self_attn.o_proj`,
//! `mlp.gate_up_proj` (rows `[gate | up]`), `mlp.down_proj`, `input_layernorm`,
//! `post_attention_layernorm`, `model.norm`, `lm_head`. No biases.
//!
//! RoPE: plain, or `su` / `longrope` (Phi-3-mini-128k): per-frequency divisors chosen by the
//! largest position id of each forward call and cos/sin scaled by
//! `sqrt(1 + ln(max / original) / ln(original))` even for short prompts. Cached keys keep the
//! factors they were computed with, like the release. `yarn` is rejected. Sequences longer than
//! `sliding_window` are rejected (262144 in Phi-3-mini-128k, beyond its 131072 positions).
//!
//! Verified only against an independent straightforward computation on tiny random weights
//! (crates/internvl/tests/llm.rs): no official Phi-3 fixture exists.

use candle_nn::VarBuilder;

use super::config::{CommonFields, FamilyNumerics, Fields, LlmConfig, LlmFamily, RopeScaling};
use super::loading::{decoder, linear, norm, require_silu};
use super::transformer::{Attention, DecoderLayer, DecoderWeights, Mlp};
use crate::Result;

/// Parses a Phi-3 `llm_config`.
pub(super) fn config(fields: &Fields) -> std::result::Result<LlmConfig, String> {
    require_silu(fields.opt_str("hidden_act")?)?;
    let common = CommonFields::read(fields)?;
    let numerics = FamilyNumerics {
        rms_norm_eps: fields.f64_or("rms_norm_eps", 1e-5)?,
        rope_theta: fields.f64_or("rope_theta", 10000.0)?,
        rope_scaling: rope_scaling(fields)?,
        sliding_window: fields.opt_usize("sliding_window")?,
        qkv_bias: false,
        o_bias: false,
        mlp_bias: false,
    };
    Ok(common.into_config(LlmFamily::Phi3, numerics))
}

fn rope_scaling(fields: &Fields) -> std::result::Result<RopeScaling, String> {
    let Some(scaling) = fields.rope_scaling() else {
        return Ok(RopeScaling::None);
    };
    match scaling.scaling_type()?.as_str() {
        "su" | "longrope" => Ok(RopeScaling::LongRope {
            short_factor: scaling.f64_list("short_factor")?,
            long_factor: scaling.f64_list("long_factor")?,
            original_max_position_embeddings: fields.usize("original_max_position_embeddings")?,
        }),
        other => Err(format!(
            "rope_scaling type `{other}` is not supported for Phi-3 (su, longrope)"
        )),
    }
}

/// Loads the Phi-3 tensors from `vb` (the LLM prefix).
pub(super) fn load(config: &LlmConfig, vb: &VarBuilder) -> Result<DecoderWeights> {
    decoder(
        config,
        vb,
        ("model.embed_tokens.weight", "lm_head.weight"),
        load_layer,
    )
}

fn load_layer(config: &LlmConfig, vb: &VarBuilder) -> Result<DecoderLayer> {
    let c = config.hidden_size;
    let d = config.head_dim;
    let q_width = config.num_attention_heads * d;
    let qkv_width = q_width + 2 * config.num_key_value_heads * d;
    let (attn, mlp) = (vb.pp("self_attn"), vb.pp("mlp"));
    let i = config.intermediate_size;
    Ok(DecoderLayer {
        attention_norm: norm(config, vb, "input_layernorm")?,
        attention: Attention {
            qkv: linear(&attn, "qkv_proj", (c, qkv_width), false)?,
            o_proj: linear(&attn, "o_proj", (q_width, c), false)?,
        },
        mlp_norm: norm(config, vb, "post_attention_layernorm")?,
        mlp: Mlp {
            gate_up: linear(&mlp, "gate_up_proj", (c, 2 * i), false)?,
            down: linear(&mlp, "down_proj", (i, c), false)?,
        },
    })
}
