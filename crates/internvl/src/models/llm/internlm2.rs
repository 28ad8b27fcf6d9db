//! InternLM2 / InternLM2.5 (remote-code `InternLM2ForCausalLM`: InternVL-Chat-V1-5, Mini-InternVL
//! 2B, InternVL2-2B/8B/26B, InternVL2.5 InternLM-based sizes), spec §8.2.
//!
//! Names under the LLM prefix: `model.tok_embeddings`, `model.layers.{i}.attention.wqkv`,
//! `attention.wo`, `feed_forward.{w1 (gate), w3 (up), w2 (down)}`, `attention_norm`, `ffn_norm`,
//! `model.norm`, `output` (the LM head).
//!
//! `wqkv` rows are grouped per KV head: for each KV head, its `g = heads / kv_heads` query heads,
//! then its key head, then its value head (each `head_dim` rows). They are regrouped at load into
//! the decoder's `[all q | all k | all v]` layout.
//!
//! RoPE scaling `dynamic` (NTK) is implemented as the spec describes: plain below
//! `max_position_embeddings`; a forward whose sequence is longer computes an enlarged base from
//! that length. The release keeps the enlarged frequencies for the rest of the model's life (a
//! later short prompt is rotated with them); here they last for the generation that needed them.

use candle_core::Tensor;
use candle_nn::VarBuilder;

use crate::ops::Linear;

use super::config::{
    linear_or_dynamic, CommonFields, FamilyNumerics, Fields, LlmConfig, LlmFamily,
};
use super::loading::{decoder, linear, norm, require_silu, stack_outputs};
use super::transformer::{Attention, DecoderLayer, DecoderWeights, Mlp};
use crate::Result;

/// Parses an InternLM2 `llm_config`.
pub(super) fn config(fields: &Fields) -> std::result::Result<LlmConfig, String> {
    require_silu(fields.opt_str("hidden_act")?)?;
    let common = CommonFields::read(fields)?;
    let bias = fields.bool_or("bias", false)?;
    let numerics = FamilyNumerics {
        rms_norm_eps: fields.f64_or("rms_norm_eps", 1e-6)?,
        rope_theta: fields.f64_or("rope_theta", 10000.0)?,
        rope_scaling: linear_or_dynamic(fields)?,
        sliding_window: None,
        qkv_bias: bias,
        o_bias: bias,
        mlp_bias: bias,
    };
    Ok(common.into_config(LlmFamily::InternLM2, numerics))
}

/// Loads the InternLM2 tensors from `vb` (the LLM prefix).
pub(super) fn load(config: &LlmConfig, vb: &VarBuilder) -> Result<DecoderWeights> {
    decoder(
        config,
        vb,
        ("model.tok_embeddings.weight", "output.weight"),
        load_layer,
    )
}

fn load_layer(config: &LlmConfig, vb: &VarBuilder) -> Result<DecoderLayer> {
    let c = config.hidden_size;
    let (heads, kv_heads, d) = (
        config.num_attention_heads,
        config.num_key_value_heads,
        config.head_dim,
    );
    let attn = vb.pp("attention");
    let fused = linear(
        &attn,
        "wqkv",
        (c, (heads + 2 * kv_heads) * d),
        config.qkv_bias,
    )?;
    let ffn = vb.pp("feed_forward");
    let (i, bias) = (config.intermediate_size, config.mlp_bias);
    let gate_up = stack_outputs(&[
        linear(&ffn, "w1", (c, i), bias)?,
        linear(&ffn, "w3", (c, i), bias)?,
    ])?;
    Ok(DecoderLayer {
        attention_norm: norm(config, vb, "attention_norm")?,
        attention: Attention {
            qkv: regroup_wqkv(&fused, heads, kv_heads, d)?,
            o_proj: linear(&attn, "wo", (heads * d, c), config.o_bias)?,
        },
        mlp_norm: norm(config, vb, "ffn_norm")?,
        mlp: Mlp {
            gate_up,
            down: linear(&ffn, "w2", (i, c), bias)?,
        },
    })
}

/// `[kv head][q_0 … q_{g−1}, k, v][d]` rows → `[all q | all k | all v]` rows.
fn regroup_wqkv(fused: &Linear, heads: usize, kv_heads: usize, d: usize) -> Result<Linear> {
    let groups = heads / kv_heads;
    // Works for the weight `[rows, C]` and the bias `[rows]` alike: rows become [kv, g + 2, d, …].
    let regroup = |t: &Tensor| -> Result<Tensor> {
        let mut dims = vec![kv_heads, groups + 2, d];
        dims.extend_from_slice(&t.dims()[1..]);
        let blocks = t.reshape(dims)?;
        let rows = |start: usize, count: usize, n: usize| -> Result<Tensor> {
            let part = blocks.narrow(1, start, count)?.contiguous()?;
            let mut shape = vec![n * d];
            shape.extend_from_slice(&t.dims()[1..]);
            Ok(part.reshape(shape)?)
        };
        let q = rows(0, groups, heads)?;
        let k = rows(groups, 1, kv_heads)?;
        let v = rows(groups + 1, 1, kv_heads)?;
        Ok(Tensor::cat(&[q, k, v], 0)?)
    };
    let weight = regroup(fused.weight())?;
    let bias = fused.bias().map(regroup).transpose()?;
    Ok(Linear::new(weight, bias))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn wqkv_rows_are_regrouped_per_kv_head() {
        // 4 query heads, 2 KV heads, head_dim 1: stored rows q0 q1 k0 v0 q2 q3 k1 v1.
        let stored = [0f32, 1., 10., 20., 2., 3., 11., 21.];
        let weight = Tensor::from_slice(&stored, (8, 1), &Device::Cpu).unwrap();
        let fused = Linear::new(weight, None);
        let regrouped = regroup_wqkv(&fused, 4, 2, 1).unwrap();
        let rows = regrouped
            .weight()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(rows, [0., 1., 2., 3., 10., 11., 20., 21.]);
    }
}
