//! One module per subcommand, plus the options they share.

pub mod bench;
pub mod features;
pub mod info;

use std::path::PathBuf;

use anyhow::{bail, Result};
use candle_core::{DType, Device};
use internvl::models::hub::{resolve_model, HubOptions};

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
