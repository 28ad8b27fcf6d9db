//! A model folder as released: `config.json` + safetensors weights, for any InternVL release that
//! contains an InternViT (standalone InternViT, InternVL-Chat, InternVL-14B C/G, transformers "-hf").

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device};
use serde_json::Value;

use crate::models::checkpoint::Checkpoint;
use crate::models::intern_vit::{InternVisionConfig, InternVisionModel};
use crate::{Error, Result};

/// Which release format a folder holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// A standalone InternViT (`model_type = "intern_vit_6b"`), tensors at the root.
    InternViT,
    /// InternVL-Chat (`internvl_chat`): `vision_model.` + `mlp1.` + `language_model.`.
    InternVLChat,
    /// InternVL-14B, the paper's InternVL-C/G (`internvl` with a `qllama_config`).
    InternVLCG,
    /// transformers-native "-hf" InternVL (`internvl` with a `text_config`).
    HfInternVL,
}

impl ModelKind {
    /// The architecture name shown to users.
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::InternViT => "InternViT",
            ModelKind::InternVLChat => "InternVL-Chat",
            ModelKind::InternVLCG => "InternVL-C/G (InternVL-14B)",
            ModelKind::HfInternVL => "InternVL (transformers -hf)",
        }
    }

    /// Prefix of the vision encoder's released tensor names.
    pub fn vision_prefix(self) -> &'static str {
        match self {
            ModelKind::InternViT => "",
            _ => "vision_model",
        }
    }
}

/// An opened model folder: its parsed configuration and memory-mapped weights.
#[derive(Debug)]
pub struct ModelFolder {
    dir: PathBuf,
    kind: ModelKind,
    config: Value,
    vision_config: InternVisionConfig,
    checkpoint: Arc<Checkpoint>,
}

impl ModelFolder {
    /// Reads `config.json`, checks the vision configuration and maps the weights.
    pub fn open(dir: &Path) -> Result<Self> {
        let config_path = dir.join("config.json");
        let config = read_json(&config_path)?;
        let kind = detect_kind(&config).map_err(|reason| Error::Config {
            path: config_path.clone(),
            reason,
        })?;
        let vision_value = match kind {
            ModelKind::InternViT => config.clone(),
            _ => config
                .get("vision_config")
                .cloned()
                .ok_or_else(|| Error::Config {
                    path: config_path.clone(),
                    reason: "no `vision_config`".into(),
                })?,
        };
        let vision_config: InternVisionConfig =
            serde_json::from_value(vision_value).map_err(|e| Error::Config {
                path: config_path.clone(),
                reason: format!("vision configuration: {e}"),
            })?;
        vision_config.validate().map_err(|reason| Error::Config {
            path: config_path.clone(),
            reason,
        })?;
        let mut checkpoint = Checkpoint::open(dir)?;
        if let Some(gguf) = config.get(QLLAMA_GGUF_KEY).and_then(Value::as_str) {
            let layers = config
                .pointer("/qllama_config/num_hidden_layers")
                .and_then(Value::as_u64)
                .map(|n| n as usize);
            add_qllama_base(&mut checkpoint, &dir.join(gguf), layers)?;
        }
        if let Some(gguf) = config.get(LLM_GGUF_KEY).and_then(Value::as_str) {
            let vocab = config
                .pointer("/llm_config/vocab_size")
                .and_then(Value::as_u64)
                .map(|n| n as usize);
            add_llm_base(&mut checkpoint, &dir.join(gguf), vocab)?;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            kind,
            config,
            vision_config,
            checkpoint,
        })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The release format.
    pub fn kind(&self) -> ModelKind {
        self.kind
    }

    /// The whole `config.json`.
    pub fn config(&self) -> &Value {
        &self.config
    }

    /// The vision encoder's configuration.
    pub fn vision_config(&self) -> &InternVisionConfig {
        &self.vision_config
    }

    /// The mapped weights.
    pub fn checkpoint(&self) -> &Arc<Checkpoint> {
        &self.checkpoint
    }

    /// `preprocessor_config.json` when the release has one.
    pub fn preprocessor_config(&self) -> Option<PathBuf> {
        Some(self.dir.join("preprocessor_config.json")).filter(|p| p.is_file())
    }

    /// Builds the vision encoder in `dtype` on `device`, checking that every tensor under the
    /// encoder's prefix was consumed and that each has the configured shape.
    pub fn load_vision(&self, dtype: DType, device: &Device) -> Result<InternVisionModel> {
        let root = self.checkpoint.var_builder(dtype, device);
        let prefix = self.kind.vision_prefix();
        let vb = if prefix.is_empty() {
            root
        } else {
            root.pp(prefix)
        };
        let model = InternVisionModel::load(&self.vision_config, vb)
            .map_err(|e| self.checkpoint_error(e))?;
        let scope = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}.")
        };
        self.checkpoint.ensure_all_used(&scope)?;
        Ok(model)
    }
}

impl ModelFolder {
    /// Turns a tensor-loading failure (missing tensor, wrong shape, ...) into a checkpoint error
    /// that names this folder; other errors pass through.
    pub fn checkpoint_error(&self, error: Error) -> Error {
        match error {
            Error::Candle(e) => Error::Checkpoint {
                path: self.dir.clone(),
                // The first line: candle may append a backtrace.
                reason: e.to_string().lines().next().unwrap_or_default().to_string(),
            },
            other => other,
        }
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| Error::Config {
        path: path.to_path_buf(),
        reason: format!("not valid JSON: {e}"),
    })
}

/// `config.json` key (an internvl-rs extension) naming a llama GGUF file, relative to the
/// folder, whose weights are QLLaMA's body wherever the safetensors files lack them: a model
/// trained from a released LLM ships only its new weights.
pub const QLLAMA_GGUF_KEY: &str = "qllama_gguf";

/// Adds the GGUF's tensors as `qllama.<transformers name>` base weights (`lm_head` tied to
/// the embeddings when the file has no output matrix); with `layers`, only the first `layers`
/// blocks (a QLLaMA made of the LLM's lower blocks).
fn add_qllama_base(
    checkpoint: &mut std::sync::Arc<Checkpoint>,
    gguf: &Path,
    layers: Option<usize>,
) -> Result<()> {
    let tensors = gguf_tensors(gguf)?;
    let kept = |name: &str| -> bool {
        let block = name
            .strip_prefix("model.layers.")
            .and_then(|rest| rest.split('.').next())
            .and_then(|i| i.parse::<usize>().ok());
        match (block, layers) {
            (Some(i), Some(n)) => i < n,
            _ => true,
        }
    };
    let mut renamed: std::collections::HashMap<String, candle_core::Tensor> = tensors
        .into_iter()
        .filter(|(name, _)| kept(name))
        .map(|(name, t)| (format!("qllama.{name}"), t))
        .collect();
    if !renamed.contains_key("qllama.lm_head.weight") {
        if let Some(embed) = renamed.get("qllama.model.embed_tokens.weight").cloned() {
            renamed.insert("qllama.lm_head.weight".into(), embed);
        }
    }
    checkpoint.add_base(renamed)?;
    Ok(())
}

/// `config.json` key (an internvl-rs extension) naming a GGUF LLM, relative to the folder, whose
/// weights are the InternVL-Chat `language_model` wherever the safetensors files lack them (a
/// chat model trained around a frozen released LLM ships only the vision side and `mlp1`). The
/// folder's tokenizer is the GGUF's with the release's image tokens added
/// ([`crate::processing::tokenizer::INTERNVL_CHAT_TOKENS`]).
pub const LLM_GGUF_KEY: &str = "llm_gguf";

/// Adds the GGUF's tensors as `language_model.<transformers name>` base weights. With `vocab`
/// larger than the GGUF's vocabulary, the embedding (and an untied output matrix) get the
/// missing rows as the mean of the existing ones: `internvl_chat_finetune.py` resizes the
/// embeddings for the added tokens and sets the new output rows to the mean (tied embeddings,
/// as SmolLM2's, make that the input rows too).
fn add_llm_base(
    checkpoint: &mut std::sync::Arc<Checkpoint>,
    gguf: &Path,
    vocab: Option<usize>,
) -> Result<()> {
    let tensors = gguf_tensors(gguf)?;
    let mut renamed = std::collections::HashMap::new();
    for (name, tensor) in tensors {
        let tensor = match (name.as_str(), vocab) {
            ("model.embed_tokens.weight" | "lm_head.weight", Some(rows)) => {
                with_mean_rows(tensor, rows).map_err(|reason| Error::Config {
                    path: gguf.to_path_buf(),
                    reason: format!("{name}: {reason}"),
                })?
            }
            _ => tensor,
        };
        renamed.insert(format!("language_model.{name}"), tensor);
    }
    checkpoint.add_base(renamed)?;
    Ok(())
}

/// A GGUF LLM's tensors under their transformers names, dequantised to f32.
fn gguf_tensors(gguf: &Path) -> Result<std::collections::HashMap<String, candle_core::Tensor>> {
    let (_, tensors) = crate::models::llm::gguf::read_tensors(
        gguf,
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )?;
    Ok(tensors)
}

/// `matrix` `[V, C]` grown to `[rows, C]` with copies of its mean row.
fn with_mean_rows(
    matrix: candle_core::Tensor,
    rows: usize,
) -> std::result::Result<candle_core::Tensor, String> {
    let have = matrix.dim(0).map_err(|e| e.to_string())?;
    if rows < have {
        return Err(format!(
            "llm_config.vocab_size {rows} is smaller than the GGUF's vocabulary ({have} rows)"
        ));
    }
    if rows == have {
        return Ok(matrix);
    }
    let grown = || -> candle_core::Result<candle_core::Tensor> {
        let mean = matrix.mean_keepdim(0)?;
        let extra = mean.broadcast_as((rows - have, matrix.dim(1)?))?;
        candle_core::Tensor::cat(&[&matrix, &extra.contiguous()?], 0)
    };
    grown().map_err(|e| e.to_string())
}

fn detect_kind(config: &Value) -> std::result::Result<ModelKind, String> {
    let model_type = config
        .get("model_type")
        .and_then(Value::as_str)
        .unwrap_or("");
    match model_type {
        "intern_vit_6b" | "internvl_vision" => Ok(ModelKind::InternViT),
        "internvl_chat" => Ok(ModelKind::InternVLChat),
        "internvl" if config.get("qllama_config").is_some() => Ok(ModelKind::InternVLCG),
        "internvl" if config.get("text_config").is_some() => Ok(ModelKind::HfInternVL),
        "" => Err("no `model_type`".into()),
        other => Err(format!(
            "model_type `{other}` is not an InternVL model (expected intern_vit_6b, internvl_chat or internvl)"
        )),
    }
}
