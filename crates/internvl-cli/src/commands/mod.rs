//! One module per subcommand, plus the options they share.

pub mod bench;
pub mod caption;
pub mod chat;
pub mod classify;
pub mod embed;
pub mod eval;
pub mod features;
pub mod info;
pub mod retrieve;
pub mod serve;
pub mod tokenize;
pub mod train;

use std::path::PathBuf;

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use internvl::models::hub::{resolve_model, HubOptions};
use internvl::models::internvl_cg::Head;
use internvl::models::ModelFolder;
use internvl::tasks::contrastive::{ContrastiveSession, ImageTransform};

/// Options every model-loading command takes.
#[derive(Debug, clap::Args)]
pub struct ModelArgs {
    /// A local model folder, or a hub id such as OpenGVLab/InternViT-300M-448px[@REVISION].
    #[arg(long)]
    pub model: String,
    /// Hub revision (branch, tag or commit) for a hub id.
    #[arg(long)]
    pub revision: Option<String>,
    /// Never touch the network; hub ids must be in the local cache (also HF_HUB_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
    /// Compute dtype: f32 (default), bf16 or f16. Stored weights are converted to it.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
}

impl ModelArgs {
    /// The model folder, resolving hub ids through the cache (and the network when allowed).
    pub fn folder(&self) -> Result<PathBuf> {
        let options = HubOptions {
            offline: self.offline,
            revision: self.revision.clone(),
            cache_dir: None,
        };
        Ok(resolve_model(&self.model, &options)?)
    }

    /// Like [`ModelArgs::folder`], but a local `.gguf` file is returned as it is.
    pub fn folder_or_file(&self) -> Result<PathBuf> {
        let path = PathBuf::from(&self.model);
        if path.is_file() {
            return Ok(path);
        }
        self.folder()
    }

    /// The compute dtype.
    pub fn dtype(&self) -> Result<DType> {
        parse_dtype(&self.dtype)
    }

    /// The compute device.
    pub fn device(&self) -> Device {
        Device::Cpu
    }
}

/// Parses a `--dtype` value.
pub fn parse_dtype(text: &str) -> Result<DType> {
    Ok(match text {
        "f32" | "float32" => DType::F32,
        "bf16" | "bfloat16" => DType::BF16,
        "f16" | "float16" => DType::F16,
        other => bail!("unknown dtype `{other}` (expected f32, bf16 or f16)"),
    })
}

/// Options of the InternVL-C/G commands.
#[derive(Debug, clap::Args)]
pub struct ClipArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Image embedding head: c (attention pooling over ViT tokens) or g (+ QLLaMA queries).
    #[arg(long, default_value = "c")]
    pub head: String,
    /// Image transform: retrieval (squash to S×S), classification (shorter side + center crop) or
    /// processor (the folder's preprocessor_config.json). Default: the command's own.
    #[arg(long)]
    pub preprocess: Option<String>,
}

impl ClipArgs {
    /// The chosen head.
    pub fn head(&self) -> Result<Head> {
        Ok(self.head.parse()?)
    }

    /// Loads the model with `--preprocess` or the command's default transform.
    pub fn open(&self, default: ImageTransform) -> Result<ContrastiveSession> {
        let transform = match &self.preprocess {
            Some(p) => p.parse()?,
            None => default,
        };
        self.head()?;
        let folder = ModelFolder::open(&self.model.folder()?)?;
        Ok(ContrastiveSession::open(
            &folder,
            transform,
            self.model.dtype()?,
            &self.model.device(),
        )?)
    }
}

/// The rows of a 2-D tensor as f32 vectors.
pub fn tensor_rows(t: &Tensor) -> Result<Vec<Vec<f32>>> {
    Ok(t.to_dtype(DType::F32)?.to_vec2::<f32>()?)
}

/// Warns on stderr about texts the 80-token limit truncates (as the release does, EOS kept).
pub fn warn_truncated(session: &ContrastiveSession, texts: &[String]) -> Result<Vec<usize>> {
    let truncated = session.truncated_texts(texts)?;
    for &i in &truncated {
        let preview: String = texts[i].chars().take(40).collect();
        eprintln!("warning: text {i} (\"{preview}…\") is longer than the 80-token limit and was truncated (EOS kept), as the release does");
    }
    Ok(truncated)
}
