//! Helpers the family loaders share: plain and fused projections, embedding/head tying.

use candle_core::Tensor;
use candle_nn::VarBuilder;

use crate::ops::Linear;

use super::config::LlmConfig;
use super::transformer::{DecoderLayer, DecoderWeights, RmsNorm};
use crate::{Error, Result};

/// `name.weight` `[out, in]` and, when `bias`, `name.bias` `[out]`.
pub(super) fn linear(
    vb: &VarBuilder,
    name: &str,
    dims: (usize, usize),
    bias: bool,
) -> Result<Linear> {
    let (input, output) = dims;
    let vb = vb.pp(name);
    let weight = vb.get((output, input), "weight")?;
    let bias = bias.then(|| vb.get(output, "bias")).transpose()?;
    Ok(Linear::new(weight, bias))
}

/// One projection computing several in a row: weights (and biases) stacked along the outputs.
pub(super) fn stack_outputs(parts: &[Linear]) -> Result<Linear> {
    let weights: Vec<&Tensor> = parts.iter().map(Linear::weight).collect();
    let biases: Vec<&Tensor> = parts.iter().filter_map(Linear::bias).collect();
    let bias = match biases.len() {
        0 => None,
        n if n == parts.len() => Some(Tensor::cat(&biases, 0)?),
        _ => {
            return Err(Error::InvalidArgument(
                "cannot fuse projections of which only some have a bias".into(),
            ))
        }
    };
    Ok(Linear::new(Tensor::cat(&weights, 0)?, bias))
}

/// The decoder every family shares: embeddings and head under the given names (relative to the
/// LLM prefix), `model.layers.{i}` built by the family's `layer` loader, and `model.norm`.
pub(super) fn decoder(
    config: &LlmConfig,
    vb: &VarBuilder,
    (embed_name, head_name): (&str, &str),
    layer: fn(&LlmConfig, &VarBuilder) -> Result<DecoderLayer>,
) -> Result<DecoderWeights> {
    let model = vb.pp("model");
    let (embed_tokens, lm_head) = embedding_and_head(config, vb, embed_name, head_name)?;
    let layers = (0..config.num_hidden_layers)
        .map(|i| layer(config, &model.pp(format!("layers.{i}"))))
        .collect::<Result<_>>()?;
    Ok(DecoderWeights {
        embed_tokens,
        layers,
        norm: norm(config, &model, "norm")?,
        lm_head,
    })
}

/// The RMSNorm `name` of width `hidden_size`.
pub(super) fn norm(config: &LlmConfig, vb: &VarBuilder, name: &str) -> Result<RmsNorm> {
    RmsNorm::load(config.hidden_size, config.rms_norm_eps, vb.pp(name))
}

/// The input embedding and LM head matrices `[V, C]`.
///
/// Tied: the release makes both one parameter; when the checkpoint stores the head anyway it is
/// loaded last and wins, so both use the stored head.
pub(super) fn embedding_and_head(
    config: &LlmConfig,
    vb: &VarBuilder,
    embedding: &str,
    head: &str,
) -> Result<(Tensor, Tensor)> {
    let shape = (config.vocab_size, config.hidden_size);
    let embed = vb.get(shape, embedding)?;
    if !config.tie_word_embeddings {
        return Ok((embed, vb.get(shape, head)?));
    }
    if vb.contains_tensor(head) {
        let stored = vb.get(shape, head)?;
        return Ok((stored.clone(), stored));
    }
    Ok((embed.clone(), embed))
}

/// Rejects an activation other than SiLU (all supported families use SwiGLU with SiLU).
pub(super) fn require_silu(act: Option<&str>) -> std::result::Result<(), String> {
    match act {
        None | Some("silu") => Ok(()),
        Some(other) => Err(format!("hidden_act `{other}` is not supported (silu)")),
    }
}
