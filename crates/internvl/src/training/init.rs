//! A fresh InternVL-C/G to train from: a small InternViT from scratch and a QLLaMA whose body is
//! a released llama-architecture LLM (a GGUF file, kept by reference: the folder's
//! `config.json` names it under `qllama_gguf`, so the folder holds only the new weights), as the
//! paper initialises QLLaMA from LLaMA. New weights follow the release's kinds of
//! initialisation: N(0, 0.02) matrices and embeddings, zero biases, unit norms, layer scale
//! `initializer_factor`, `logit_scale = ln(1/0.07)`; the cross-attention output projections
//! start at zero so that the language model is untouched at step 0.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use super::trainer::write_json;
use crate::models::intern_vit::InternVisionConfig;
use crate::models::internvl_cg::{InternVLCG, InternVLCGConfig};
use crate::models::llm::gguf::read_tensors;
use crate::{Error, Result};

/// The shape of the model to create.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct InitSpec {
    /// Input image side.
    pub image_size: usize,
    /// ViT patch side.
    pub patch_size: usize,
    /// ViT width.
    pub vit_width: usize,
    /// ViT blocks.
    pub vit_layers: usize,
    /// ViT heads.
    pub vit_heads: usize,
    /// Joint embedding size (`clip_embed_dim`).
    pub embed_dim: usize,
    /// Heads of both attention-pooling heads (must divide the ViT and LLM widths).
    pub pool_heads: usize,
    /// Learnable queries (the release's QLLaMA cross-attends only with 96).
    pub num_query_token: usize,
    /// Every how many QLLaMA layers one cross-attends.
    pub cross_attention_frequency: usize,
    /// Keep only the LLM's first blocks as QLLaMA (None: all).
    pub qllama_layers: Option<usize>,
    /// Initialisation seed.
    pub seed: u64,
    /// The pad token (written to the folder's `tokenizer_config.json`); `None`: the GGUF's.
    /// The release's stage-2 ITG labels mask every pad id, so a pad token that is also the EOS
    /// (SmolLM2's `<|im_end|>`) would hide the end of every caption: the captioner would never
    /// learn to stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad_token: Option<String>,
}

impl Default for InitSpec {
    fn default() -> Self {
        Self {
            image_size: 28,
            patch_size: 4,
            vit_width: 192,
            vit_layers: 6,
            vit_heads: 3,
            embed_dim: 256,
            pool_heads: 4,
            num_query_token: 96,
            cross_attention_frequency: 2,
            qllama_layers: None,
            seed: 0,
            pad_token: None,
        }
    }
}

/// Writes `out/config.json` and `out/model.safetensors` (the new weights only); QLLaMA's body
/// and the tokenizer come from `gguf`, referenced by a path relative to `out`.
pub fn init_internvl_cg(gguf: &Path, spec: &InitSpec, out: &Path) -> Result<()> {
    let (llm, base) = read_tensors(gguf, DType::F32, &Device::Cpu)?;
    std::fs::create_dir_all(out).map_err(|source| Error::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let pad_id = qllama_pad_id(gguf, spec.pad_token.as_deref())?;
    let config = config_json(spec, &llm, &relative_path(gguf, out)?, pad_id)?;
    let parsed: InternVLCGConfig = serde_json::from_value(config.clone())
        .map_err(|e| Error::InvalidArgument(format!("generated config: {e}")))?;
    let vision: InternVisionConfig = serde_json::from_value(config["vision_config"].clone())
        .map_err(|e| Error::InvalidArgument(format!("generated vision config: {e}")))?;
    vision.validate().map_err(Error::InvalidArgument)?;
    // Build once over fresh variables to learn every name and shape the model asks for.
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    InternVLCG::from_var_builder(&parsed, &vision, vb)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(spec.seed);
    let mut tensors = HashMap::new();
    let data = varmap.data().lock().expect("fresh var map");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let base_name = name.strip_prefix("qllama.").unwrap_or("");
        if base.contains_key(base_name) || name == "qllama.lm_head.weight" {
            continue; // from the GGUF
        }
        let shape = data[name].as_tensor().dims().to_vec();
        tensors.insert(name.clone(), initial_value(name, &shape, &mut rng)?);
    }
    drop(data);
    crate::models::checkpoint::save_safetensors(&tensors, &out.join("model.safetensors"))?;
    write_json(&out.join("config.json"), &config)?;
    if let Some(pad) = &spec.pad_token {
        write_json(
            &out.join("tokenizer_config.json"),
            &json!({ "pad_token": pad }),
        )?;
    }
    Ok(())
}

/// The pad id QLLaMA's tokenizer will have (`pad_token`, or the GGUF's); warns when it is the
/// EOS, which the release's ITG labels would then mask.
fn qllama_pad_id(gguf: &Path, pad_token: Option<&str>) -> Result<u32> {
    let mut tokenizer = crate::processing::tokenizer::Tokenizer::from_gguf(gguf)?;
    if let Some(pad) = pad_token {
        tokenizer.set_pad_token(pad)?;
    }
    let pad = tokenizer.pad_id().unwrap_or(0);
    if tokenizer.eos_id() == Some(pad) {
        let name = tokenizer.id_to_token(pad).unwrap_or_default();
        tracing::warn!(
            "the pad token {name:?} is also the EOS: the release's stage-2 ITG masks pad ids out \
             of its labels, so the captioner would never learn where a caption ends (choose \
             another pad token, e.g. --pad-token \"<|endoftext|>\" for SmolLM2)"
        );
    }
    Ok(pad)
}

/// The initial value of a new tensor, by the kind its name says it is.
fn initial_value(name: &str, shape: &[usize], rng: &mut rand::rngs::StdRng) -> Result<Tensor> {
    let device = &Device::Cpu;
    let leaf = name.rsplit('.').next().unwrap_or(name);
    let filled = |v: f32| Tensor::full(v, shape, device);
    let tensor = if name == "logit_scale" {
        Tensor::new((1.0f32 / 0.07).ln(), device)?
    } else if leaf == "bias" || leaf.ends_with("_bias") {
        filled(0.0)?
    } else if leaf == "ls1" || leaf == "ls2" {
        filled(0.1)?
    } else if name.contains("norm") && leaf == "weight" {
        filled(1.0)?
    } else if name.contains("cross_attn.o_proj") {
        filled(0.0)?
    } else {
        let count: usize = shape.iter().product();
        let values: Vec<f32> = (0..count).map(|_| 0.02 * standard_normal(rng)).collect();
        Tensor::from_vec(values, shape, device)?
    };
    Ok(tensor)
}

/// A N(0, 1) draw (Box–Muller).
fn standard_normal(rng: &mut impl Rng) -> f32 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

/// The release-shaped `config.json` of the new model.
fn config_json(
    spec: &InitSpec,
    llm: &crate::models::llm::LlmConfig,
    gguf: &str,
    pad_id: u32,
) -> Result<Value> {
    let bad = |m: String| Err(Error::InvalidArgument(m));
    if !spec.image_size.is_multiple_of(spec.patch_size) {
        return bad(format!(
            "image size {} is not a multiple of the patch size {}",
            spec.image_size, spec.patch_size
        ));
    }
    if !spec.vit_width.is_multiple_of(spec.pool_heads)
        || !llm.hidden_size.is_multiple_of(spec.pool_heads)
    {
        return bad(format!(
            "pool heads {} must divide the ViT width {} and the LLM width {}",
            spec.pool_heads, spec.vit_width, llm.hidden_size
        ));
    }
    let queries = crate::models::qllama::CROSS_ATTENTION_QUERY_POSITIONS;
    if spec.num_query_token != queries {
        return bad(format!(
            "num_query_token must be {queries}: the release's QLLaMA cross-attends only over the \
             first {queries} positions of sequences at least that long, so with {} queries the \
             queries would never see the image",
            spec.num_query_token
        ));
    }
    let layers = spec.qllama_layers.unwrap_or(llm.num_hidden_layers);
    if layers == 0 || layers > llm.num_hidden_layers {
        return bad(format!(
            "qllama_layers must be 1..={} (the LLM's blocks), got {layers}",
            llm.num_hidden_layers
        ));
    }
    Ok(json!({
        "architectures": ["InternVLModel"],
        "model_type": "internvl",
        "clip_embed_dim": spec.embed_dim,
        "attn_pool_num_heads": spec.pool_heads,
        "num_query_token": spec.num_query_token,
        "hidden_size": llm.hidden_size,
        "label_smoothing": 0.0,
        "use_backbone_lora": 0,
        "use_qllama_lora": 0,
        "force_image_size": null,
        "qllama_gguf": gguf,
        "initializer_spec": spec,
        "vision_config": {
            "model_type": "intern_vit_6b",
            "architectures": ["InternVisionModel"],
            "hidden_size": spec.vit_width,
            "num_attention_heads": spec.vit_heads,
            "intermediate_size": spec.vit_width * 4,
            "num_hidden_layers": spec.vit_layers,
            "image_size": spec.image_size,
            "patch_size": spec.patch_size,
            "qkv_bias": true,
            "qk_normalization": false,
            "norm_type": "layer_norm",
            "layer_norm_eps": 1e-6,
            "hidden_act": "gelu",
            "num_channels": 3,
            "initializer_factor": 0.1,
            "drop_path_rate": 0.0,
        },
        "qllama_config": {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": llm.hidden_size,
            "intermediate_size": llm.intermediate_size,
            "num_hidden_layers": layers,
            "num_attention_heads": llm.num_attention_heads,
            "num_key_value_heads": llm.num_key_value_heads,
            "vocab_size": llm.vocab_size,
            "rms_norm_eps": llm.rms_norm_eps,
            "max_position_embeddings": llm.max_position_embeddings,
            "cross_attention_frequency": spec.cross_attention_frequency,
            "num_query_token": spec.num_query_token,
            "hidden_act": "silu",
            "bos_token_id": llm.bos_token_id,
            "eos_token_id": llm.eos_token_ids.first(),
            "pad_token_id": pad_id,
        },
    }))
}

/// `target` as a path relative to `from_dir` (both made absolute), for a config that moves
/// with its folder.
pub fn relative_path(target: &Path, from_dir: &Path) -> Result<String> {
    let absolute = |p: &Path| -> Result<PathBuf> {
        let p = if p.is_absolute() {
            p.to_path_buf()
        } else {
            std::env::current_dir()
                .map_err(|source| Error::Io {
                    path: p.to_path_buf(),
                    source,
                })?
                .join(p)
        };
        Ok(normalise(&p))
    };
    let (target, base) = (absolute(target)?, absolute(from_dir)?);
    let t: Vec<_> = target.components().collect();
    let b: Vec<_> = base.components().collect();
    let common = t.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut rel = PathBuf::new();
    for _ in common..b.len() {
        rel.push("..");
    }
    for c in &t[common..] {
        rel.push(c.as_os_str());
    }
    Ok(rel.to_string_lossy().into_owned())
}

/// What [`init_internvl_chat`] builds around a trained ViT and a GGUF LLM.
#[derive(Debug, Clone)]
pub struct ChatInitSpec {
    /// The conversation template (`config.json` `template`).
    pub template: String,
    /// The system message (`config.json` `system_message`, an internvl-rs extension that both
    /// `internvl chat` and the SFT loader honour); `None`: the template's own.
    pub system_message: Option<String>,
    /// The pad token (written to the folder's `tokenizer_config.json`); `None`: the GGUF's.
    /// The release's SFT masks every pad-token id out of attention and positions, so a pad
    /// token that is also the turn separator (SmolLM2's `<|im_end|>`) would hide every turn end
    /// during training but not when chatting.
    pub pad_token: Option<String>,
    /// Seed of `mlp1`'s initialisation.
    pub seed: u64,
}

impl Default for ChatInitSpec {
    fn default() -> Self {
        Self {
            template: "internvl2_5".into(),
            system_message: None,
            pad_token: None,
            seed: 0,
        }
    }
}

/// Writes a fresh InternVL-Chat folder to `out`: the InternViT of `vision_from` (any InternVL
/// folder, e.g. a stage-1 InternVL-C; its `vision_model.*` weights are copied), a new `mlp1`
/// (LayerNorm 1/0, linears with PyTorch's default U(±1/√fan_in)), and the LLM of `gguf` kept by
/// reference (`llm_gguf`) with the release's nine added tokens (`llm_config.vocab_size` = the
/// GGUF's vocabulary + 9; their embedding rows are the mean row, see `models::folder`). One tile
/// per image (`dynamic_image_size` false), pixel shuffle v2, the last ViT layer.
///
/// Fails when the vision folder cannot be read, its tile grid does not shuffle evenly, the GGUF
/// is not a llama-architecture LLM, the template is unknown, or `out` cannot be written.
pub fn init_internvl_chat(
    vision_from: &Path,
    gguf: &Path,
    spec: &ChatInitSpec,
    out: &Path,
) -> Result<()> {
    crate::processing::templates::ChatTemplate::by_name(&spec.template)?;
    let vision = crate::models::folder::ModelFolder::open(vision_from)?;
    let vision_config = vision
        .config()
        .get("vision_config")
        .cloned()
        .unwrap_or_else(|| vision.config().clone());
    let llm = crate::models::llm::gguf::read_config(gguf)?;
    let vc = vision.vision_config();
    let grid = vc.image_size / vc.patch_size;
    // Pixel shuffle at the releases' ratio 0.5: 2x2 ViT tokens become one LLM token.
    let scale = 2;
    if !grid.is_multiple_of(scale) {
        return Err(Error::InvalidArgument(format!(
            "pixel shuffle needs an even patch grid; the ViT of {} has {grid}x{grid}",
            vision_from.display()
        )));
    }
    std::fs::create_dir_all(out).map_err(|source| Error::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let mut tensors = HashMap::new();
    let prefix = format!("{}.", vision.kind().vision_prefix());
    for name in vision.checkpoint().names() {
        if let Some(rest) = name.strip_prefix(&prefix) {
            let tensor = vision.checkpoint().tensor(&name, &Device::Cpu)?;
            tensors.insert(format!("vision_model.{rest}"), tensor.to_dtype(DType::F32)?);
        }
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(spec.seed);
    let width = vc.hidden_size * scale * scale;
    let hidden = llm.hidden_size;
    tensors.insert(
        "mlp1.0.weight".into(),
        Tensor::ones(width, DType::F32, &Device::Cpu)?,
    );
    tensors.insert(
        "mlp1.0.bias".into(),
        Tensor::zeros(width, DType::F32, &Device::Cpu)?,
    );
    for (index, fan_in) in [(1, width), (3, hidden)] {
        let weight = torch_default_uniform(&[hidden, fan_in], fan_in, &mut rng)?;
        let bias = torch_default_uniform(&[hidden], fan_in, &mut rng)?;
        tensors.insert(format!("mlp1.{index}.weight"), weight);
        tensors.insert(format!("mlp1.{index}.bias"), bias);
    }
    crate::models::checkpoint::save_safetensors(&tensors, &out.join("model.safetensors"))?;
    let added = crate::processing::tokenizer::INTERNVL_CHAT_TOKENS.len();
    let mut config = json!({
        "architectures": ["InternVLChatModel"],
        "model_type": "internvl_chat",
        "template": spec.template,
        "select_layer": -1,
        "downsample_ratio": 0.5,
        "ps_version": "v2",
        "force_image_size": vc.image_size,
        "dynamic_image_size": false,
        "use_thumbnail": false,
        "min_dynamic_patch": 1,
        "max_dynamic_patch": 1,
        "llm_gguf": relative_path(gguf, out)?,
        "vision_config": vision_config,
        "llm_config": {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": llm.hidden_size,
            "intermediate_size": llm.intermediate_size,
            "num_hidden_layers": llm.num_hidden_layers,
            "num_attention_heads": llm.num_attention_heads,
            "num_key_value_heads": llm.num_key_value_heads,
            "vocab_size": llm.vocab_size + added,
            "rms_norm_eps": llm.rms_norm_eps,
            "rope_theta": llm.rope_theta,
            "max_position_embeddings": llm.max_position_embeddings,
            "tie_word_embeddings": llm.tie_word_embeddings,
            "hidden_act": "silu",
            "bos_token_id": llm.bos_token_id,
            "eos_token_id": llm.eos_token_ids.first(),
            "pad_token_id": llm.pad_token_id,
        },
    });
    if let Some(message) = &spec.system_message {
        config["system_message"] = json!(message);
    }
    write_json(&out.join("config.json"), &config)?;
    if let Some(pad) = &spec.pad_token {
        write_json(
            &out.join("tokenizer_config.json"),
            &json!({ "pad_token": pad }),
        )?;
    }
    warn_if_pad_separates_turns(out, &spec.template)
}

/// Checks the folder's tokenizer and warns when its pad token is the template's separator.
fn warn_if_pad_separates_turns(dir: &Path, template: &str) -> Result<()> {
    let tokenizer = crate::processing::tokenizer::Tokenizer::from_folder(dir)?;
    let chat = crate::processing::templates::ChatTemplate::by_name(template)?;
    let pad = tokenizer.pad_id().and_then(|id| tokenizer.id_to_token(id));
    if let Some(pad) = pad.filter(|p| !p.is_empty() && chat.sep.starts_with(p.as_str())) {
        tracing::warn!(
            "the pad token {pad:?} is also the separator of template {template}: the release's \
             SFT masks pad ids out of attention, so turn ends would be invisible in training \
             (choose another pad token)"
        );
    }
    Ok(())
}

/// PyTorch's default `nn.Linear` initialisation: U(−1/√fan_in, 1/√fan_in).
fn torch_default_uniform(
    shape: &[usize],
    fan_in: usize,
    rng: &mut rand::rngs::StdRng,
) -> Result<Tensor> {
    let bound = 1.0 / (fan_in as f32).sqrt();
    let count: usize = shape.iter().product();
    let values: Vec<f32> = (0..count)
        .map(|_| rng.random_range(-bound..bound))
        .collect();
    Ok(Tensor::from_vec(values, shape, &Device::Cpu)?)
}

/// Removes `.` and resolves `..` lexically.
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        assert_eq!(
            relative_path(Path::new("/a/b/m.gguf"), Path::new("/a/c/d")).unwrap(),
            "../../b/m.gguf"
        );
        assert_eq!(
            relative_path(Path::new("/a/m.gguf"), Path::new("/a")).unwrap(),
            "m.gguf"
        );
    }
}
