//! `internvl serve`: an OpenAI-compatible HTTP server (see the `internvl-serve` crate).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use internvl_serve::api::Limits;
use internvl_serve::worker::Backend;
use internvl_serve::{serve, ServeConfig};

use super::ModelArgs;

/// Arguments of `internvl serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port to listen on (0 picks a free one; the bound address is printed on stdout).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Requests admitted to the model's queue at once; more wait for a slot.
    #[arg(long, default_value_t = 8)]
    max_concurrency: usize,
    /// Requests that may wait for a slot; more are answered 503.
    #[arg(long, default_value_t = 256)]
    max_waiting: usize,
    /// Allow `image_url`s that are local paths (or file:// URLs) under this directory.
    #[arg(long)]
    allow_local_files: Option<PathBuf>,
    /// The model id that /v1/models lists (default: the --model argument's last component).
    #[arg(long)]
    served_model_name: Option<String>,
    /// Chat template (default: the model's).
    #[arg(long)]
    template: Option<String>,
    /// Most bytes of a request body.
    #[arg(long, default_value_t = 32 << 20)]
    max_body_bytes: usize,
    /// Most decoded bytes of one image.
    #[arg(long, default_value_t = 16 << 20)]
    max_image_bytes: usize,
    /// Most pixels of one image.
    #[arg(long, default_value_t = 40_000_000)]
    max_image_pixels: u64,
    /// Most images in one request.
    #[arg(long, default_value_t = 16)]
    max_images: usize,
    /// Most `max_tokens` a request may ask for.
    #[arg(long, default_value_t = 4096)]
    max_tokens: usize,
}

/// Loads the model and serves it until the process is stopped.
pub fn run(args: Args) -> Result<()> {
    if args.max_concurrency == 0 {
        bail!("--max-concurrency must be at least 1");
    }
    let allow_local_files = match &args.allow_local_files {
        Some(dir) => Some(
            std::fs::canonicalize(dir)
                .with_context(|| format!("--allow-local-files {}", dir.display()))?,
        ),
        None => None,
    };
    let path = args.model.folder_or_file()?;
    let model_id = args.served_model_name.clone().unwrap_or_else(|| {
        let trimmed = args.model.model.trim_end_matches('/');
        if PathBuf::from(trimmed).exists() {
            PathBuf::from(trimmed)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| trimmed.to_string())
        } else {
            trimmed.to_string()
        }
    });
    let backend = Backend::open(
        &path,
        args.template.as_deref(),
        args.model.dtype()?,
        &args.model.device(),
    )?;
    serve(
        backend,
        ServeConfig {
            addr: SocketAddr::new(args.host, args.port),
            model_id,
            max_concurrency: args.max_concurrency,
            max_waiting: args.max_waiting,
            allow_local_files,
            limits: Limits {
                max_body_bytes: args.max_body_bytes,
                max_image_bytes: args.max_image_bytes,
                max_image_pixels: args.max_image_pixels,
                max_images: args.max_images,
                max_tokens: args.max_tokens,
                ..Limits::default()
            },
        },
    )
}
