//! LLaMA-type decoders (transformers `LlamaForCausalLM`: Yi / Nous-Hermes-2-Yi-34B of
//! InternVL-Chat-V1-2 and InternVL2-40B, LLaMA-3, Vicuna; InternLM3 of InternVL3-9B), spec §8.4.
//!
//! Names under the LLM prefix: `model.embed_tokens`, `model.layers.{i}.self_attn.{q,k,v,o}_proj`,
//! `model.layers.{i}.mlp.{gate,up,down}_proj`, `input_layernorm`, `post_attention_layernorm`,
//! `model.norm`, `lm_head`. The same names serve Qwen2 (with q/k/v biases) and the llama GGUF
//! loader (after renaming).
//!
//! RoPE scaling: `linear` and `dynamic` (NTK, acts beyond `max_position_embeddings`) are
//! implemented like transformers 4.37; other kinds (`llama3`, `yarn`, …) are rejected.

use candle_nn::VarBuilder;

use super::config::{
    linear_or_dynamic, CommonFields, FamilyNumerics, Fields, LlmConfig, LlmFamily,
};
use super::loading::{decoder, linear, norm, require_silu, stack_outputs};
use super::transformer::{Attention, DecoderLayer, DecoderWeights, Mlp};
use crate::Result;

/// Parses a LLaMA (or InternLM3) `llm_config`.
pub(super) fn config(fields: &Fields) -> std::result::Result<LlmConfig, String> {
    require_silu(fields.opt_str("hidden_act")?)?;
    let common = CommonFields::read(fields)?;
    let attention_bias = fields.bool_or("attention_bias", false)?;
    // InternLM3 spells the biases `qkv_bias` (q/k/v) and `bias` (o_proj).
    let numerics = FamilyNumerics {
        rms_norm_eps: fields.f64_or("rms_norm_eps", 1e-6)?,
        rope_theta: fields.f64_or("rope_theta", 10000.0)?,
        rope_scaling: linear_or_dynamic(fields)?,
        sliding_window: None,
        qkv_bias: attention_bias || fields.bool_or("qkv_bias", false)?,
        o_bias: attention_bias || fields.bool_or("bias", false)?,
        mlp_bias: fields.bool_or("mlp_bias", false)?,
    };
    Ok(common.into_config(LlmFamily::Llama, numerics))
}

/// Loads the transformers LLaMA names from `vb` (the LLM prefix, e.g. `language_model`).
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
    let (q_width, kv_width) = (
        config.num_attention_heads * config.head_dim,
        config.num_key_value_heads * config.head_dim,
    );
    let attn = vb.pp("self_attn");
    let bias = config.qkv_bias;
    let qkv = stack_outputs(&[
        linear(&attn, "q_proj", (c, q_width), bias)?,
        linear(&attn, "k_proj", (c, kv_width), bias)?,
        linear(&attn, "v_proj", (c, kv_width), bias)?,
    ])?;
    let mlp = vb.pp("mlp");
    let (i, mlp_bias) = (config.intermediate_size, config.mlp_bias);
    let gate_up = stack_outputs(&[
        linear(&mlp, "gate_proj", (c, i), mlp_bias)?,
        linear(&mlp, "up_proj", (c, i), mlp_bias)?,
    ])?;
    Ok(DecoderLayer {
        attention_norm: norm(config, vb, "input_layernorm")?,
        attention: Attention {
            qkv,
            o_proj: linear(&attn, "o_proj", (q_width, c), config.o_bias)?,
        },
        mlp_norm: norm(config, vb, "post_attention_layernorm")?,
        mlp: Mlp {
            gate_up,
            down: linear(&mlp, "down_proj", (i, c), mlp_bias)?,
        },
    })
}
