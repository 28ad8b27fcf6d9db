//! llama-architecture GGUF files (llama.cpp) as a [`super::llama`] model: metadata → config,
//! llama.cpp tensor names → transformers names, every tensor dequantised.
//!
//! | GGUF | transformers |
//! |---|---|
//! | `token_embd` | `model.embed_tokens` |
//! | `blk.{i}.attn_q / attn_k / attn_v / attn_output` | `model.layers.{i}.self_attn.{q,k,v,o}_proj` |
//! | `blk.{i}.ffn_gate / ffn_up / ffn_down` | `model.layers.{i}.mlp.{gate,up,down}_proj` |
//! | `blk.{i}.attn_norm / ffn_norm` | `input_layernorm` / `post_attention_layernorm` |
//! | `output_norm` / `output` (absent: tied to `token_embd`) | `model.norm` / `lm_head` |
//!
//! llama.cpp's converter permutes the rows of `attn_q` / `attn_k` within each head so that its
//! RoPE, which rotates adjacent pairs `(2i, 2i+1)`, equals transformers' rotate-half RoPE, which
//! pairs `(i, i + d/2)`. The permutation is undone here (per head, rows `[d/2][2]` → `[2][d/2]`),
//! so the model runs the ordinary rotate-half RoPE.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::config::{LlmConfig, LlmFamily, RopeScaling};
use crate::{Error, Result};

/// Reads the config and all tensors (renamed, dequantised, un-permuted) of a llama GGUF file.
pub(super) fn read(
    path: &Path,
    dtype: DType,
    device: &Device,
) -> Result<(LlmConfig, VarBuilder<'static>)> {
    let (config, tensors) = read_tensors(path, dtype, device)?;
    Ok((config, VarBuilder::from_tensors(tensors, dtype, device)))
}

/// The config and the tensors of a llama GGUF file under transformers names (dequantised,
/// un-permuted).
pub(crate) fn read_tensors(
    path: &Path,
    dtype: DType,
    device: &Device,
) -> Result<(LlmConfig, HashMap<String, Tensor>)> {
    let fail = |reason: String| Error::Checkpoint {
        path: path.to_path_buf(),
        reason,
    };
    let (mut reader, content, config) = open(path)?;
    let mut tensors = HashMap::new();
    for name in content.tensor_infos.keys() {
        let (renamed, heads) = transformers_name(name, &config).map_err(fail)?;
        let tensor = content
            .tensor(&mut reader, name, &Device::Cpu)
            .and_then(|q| q.dequantize(&Device::Cpu))
            .map_err(|e| fail(format!("tensor `{name}`: {}", first_line(e))))?;
        let tensor = match heads {
            Some(heads) => undo_rope_permutation(&tensor, heads)?,
            None => tensor,
        };
        tensors.insert(renamed, tensor.to_dtype(dtype)?.to_device(device)?);
    }
    Ok((config, tensors))
}

/// The config of a llama GGUF file, from its header alone (no tensor is read).
pub(crate) fn read_config(path: &Path) -> Result<LlmConfig> {
    Ok(open(path)?.2)
}

/// The file positioned after its header, the header, and the config it describes.
fn open(path: &Path) -> Result<(BufReader<File>, Content, LlmConfig)> {
    let fail = |reason: String| Error::Checkpoint {
        path: path.to_path_buf(),
        reason,
    };
    let file = File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut reader = BufReader::new(file);
    let content = Content::read(&mut reader)
        .map_err(|e| fail(format!("not a GGUF file: {}", first_line(e))))?;
    let config = config(&Metadata(&content.metadata), &content).map_err(fail)?;
    Ok((reader, content, config))
}

fn first_line(error: impl std::fmt::Display) -> String {
    error
        .to_string()
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Typed metadata reads, errors naming the key.
struct Metadata<'a>(&'a HashMap<String, Value>);

impl Metadata<'_> {
    fn number(&self, key: &str) -> std::result::Result<Option<f64>, String> {
        let Some(value) = self.0.get(key) else {
            return Ok(None);
        };
        let number = match value {
            Value::U8(v) => f64::from(*v),
            Value::I8(v) => f64::from(*v),
            Value::U16(v) => f64::from(*v),
            Value::I16(v) => f64::from(*v),
            Value::U32(v) => f64::from(*v),
            Value::I32(v) => f64::from(*v),
            Value::U64(v) => *v as f64,
            Value::I64(v) => *v as f64,
            Value::F32(v) => f64::from(*v),
            Value::F64(v) => *v,
            _ => return Err(format!("GGUF key {key} is not a number")),
        };
        Ok(Some(number))
    }

    fn count(&self, key: &str) -> std::result::Result<usize, String> {
        self.opt_count(key)?
            .ok_or_else(|| format!("GGUF key {key} is missing"))
    }

    fn opt_count(&self, key: &str) -> std::result::Result<Option<usize>, String> {
        match self.number(key)? {
            Some(n) if n >= 0.0 && n.fract() == 0.0 => Ok(Some(n as usize)),
            Some(n) => Err(format!("GGUF key {key} = {n} is not a count")),
            None => Ok(None),
        }
    }

    fn id(&self, key: &str) -> std::result::Result<Option<u32>, String> {
        Ok(self.opt_count(key)?.map(|n| n as u32))
    }

    fn string(&self, key: &str) -> Option<&str> {
        match self.0.get(key) {
            Some(Value::String(s)) => Some(s),
            _ => None,
        }
    }
}

fn config(metadata: &Metadata, content: &Content) -> std::result::Result<LlmConfig, String> {
    match metadata.string("general.architecture") {
        Some("llama") => {}
        other => {
            return Err(format!(
                "general.architecture is {}, only `llama` GGUF files are supported",
                other.map_or("missing".into(), |a| format!("`{a}`"))
            ))
        }
    }
    let hidden_size = metadata.count("llama.embedding_length")?;
    let heads = metadata.count("llama.attention.head_count")?;
    if heads == 0 {
        return Err("llama.attention.head_count is 0".into());
    }
    let head_dim = metadata
        .opt_count("llama.attention.key_length")?
        .unwrap_or(hidden_size / heads);
    if let Some(rotated) = metadata.opt_count("llama.rope.dimension_count")? {
        if rotated != head_dim {
            return Err(format!(
                "llama.rope.dimension_count {rotated} differs from the head width {head_dim} \
                 (partial rotary embeddings are not supported)"
            ));
        }
    }
    let embedding = content
        .tensor_infos
        .get("token_embd.weight")
        .ok_or("tensor `token_embd.weight` is missing")?;
    let rms_norm_eps = metadata
        .number("llama.attention.layer_norm_rms_epsilon")?
        .ok_or("GGUF key llama.attention.layer_norm_rms_epsilon is missing")?;
    Ok(LlmConfig {
        family: LlmFamily::Llama,
        hidden_size,
        intermediate_size: metadata.count("llama.feed_forward_length")?,
        num_hidden_layers: metadata.count("llama.block_count")?,
        num_attention_heads: heads,
        num_key_value_heads: metadata
            .opt_count("llama.attention.head_count_kv")?
            .unwrap_or(heads),
        head_dim,
        vocab_size: embedding.shape.dims()[0],
        rms_norm_eps,
        rope_theta: metadata.number("llama.rope.freq_base")?.unwrap_or(10000.0),
        rope_scaling: rope_scaling(metadata)?,
        max_position_embeddings: metadata.count("llama.context_length")?,
        sliding_window: None,
        qkv_bias: content.tensor_infos.contains_key("blk.0.attn_q.bias"),
        o_bias: content.tensor_infos.contains_key("blk.0.attn_output.bias"),
        mlp_bias: content.tensor_infos.contains_key("blk.0.ffn_up.bias"),
        tie_word_embeddings: !content.tensor_infos.contains_key("output.weight"),
        bos_token_id: metadata.id("tokenizer.ggml.bos_token_id")?,
        eos_token_ids: metadata
            .id("tokenizer.ggml.eos_token_id")?
            .into_iter()
            .collect(),
        pad_token_id: metadata.id("tokenizer.ggml.padding_token_id")?,
    })
}

fn rope_scaling(metadata: &Metadata) -> std::result::Result<RopeScaling, String> {
    match metadata.string("llama.rope.scaling.type") {
        None | Some("none") => Ok(RopeScaling::None),
        Some("linear") => {
            let factor = metadata
                .number("llama.rope.scaling.factor")?
                .ok_or("GGUF key llama.rope.scaling.factor is missing")?;
            Ok(RopeScaling::Linear { factor })
        }
        Some(other) => Err(format!(
            "llama.rope.scaling.type `{other}` is not supported (none, linear)"
        )),
    }
}

/// The transformers name of a GGUF tensor, and for `attn_q` / `attn_k` the number of heads whose
/// rows llama.cpp permuted.
fn transformers_name(
    name: &str,
    config: &LlmConfig,
) -> std::result::Result<(String, Option<usize>), String> {
    let unexpected = || format!("unexpected tensor `{name}` for a llama model");
    let top = match name {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(top) = top {
        return Ok((top.to_string(), None));
    }
    let rest = name.strip_prefix("blk.").ok_or_else(unexpected)?;
    let (layer, rest) = rest.split_once('.').ok_or_else(unexpected)?;
    let layer: usize = layer.parse().map_err(|_| unexpected())?;
    let (tensor, suffix) = rest.split_once('.').ok_or_else(unexpected)?;
    let (module, heads) = match tensor {
        "attn_q" => ("self_attn.q_proj", Some(config.num_attention_heads)),
        "attn_k" => ("self_attn.k_proj", Some(config.num_key_value_heads)),
        "attn_v" => ("self_attn.v_proj", None),
        "attn_output" => ("self_attn.o_proj", None),
        "ffn_gate" => ("mlp.gate_proj", None),
        "ffn_up" => ("mlp.up_proj", None),
        "ffn_down" => ("mlp.down_proj", None),
        "attn_norm" => ("input_layernorm", None),
        "ffn_norm" => ("post_attention_layernorm", None),
        _ => return Err(unexpected()),
    };
    if layer >= config.num_hidden_layers || !matches!(suffix, "weight" | "bias") {
        return Err(unexpected());
    }
    Ok((format!("model.layers.{layer}.{module}.{suffix}"), heads))
}

/// Per head, rows `[d/2][2]` (llama.cpp's interleaved pairs) back to `[2][d/2]` (rotate-half).
fn undo_rope_permutation(tensor: &Tensor, heads: usize) -> Result<Tensor> {
    let rows = tensor.dim(0)?;
    let rest = &tensor.dims()[1..];
    let mut split = vec![heads, rows / heads / 2, 2];
    split.extend_from_slice(rest);
    Ok(tensor
        .reshape(split)?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(tensor.shape())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_is_undone_per_head() {
        // One head of width 4: transformers rows r0 r1 | r2 r3 (halves), llama.cpp stores the
        // pairs (r0, r2), (r1, r3) adjacent: r0 r2 r1 r3.
        let stored = Tensor::new(&[0f32, 2., 1., 3.], &Device::Cpu).unwrap();
        let restored = undo_rope_permutation(&stored, 1).unwrap();
        assert_eq!(restored.to_vec1::<f32>().unwrap(), [0., 1., 2., 3.]);
    }
}
