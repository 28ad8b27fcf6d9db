//! `internvl info`.

use anyhow::Result;
use internvl::models::intern_vit::NormType;
use internvl::models::ModelFolder;
use serde_json::json;

use super::ModelArgs;

/// Arguments of `internvl info`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Print one JSON document.
    #[arg(long)]
    json: bool,
}

/// Prints what the model folder holds.
pub fn run(args: Args) -> Result<()> {
    let dir = args.model.folder()?;
    let folder = ModelFolder::open(&dir)?;
    let vision = folder.vision_config();
    let checkpoint = folder.checkpoint();
    let prefix = folder.kind().vision_prefix();
    let info = json!({
        "path": dir,
        "architecture": folder.kind().name(),
        "model_type": folder.config().get("model_type"),
        "parameters": checkpoint.parameter_count("")?,
        "vision_parameters": checkpoint.parameter_count(prefix)?,
        "stored_dtypes": checkpoint.stored_dtypes(),
        "image_size": vision.image_size,
        "patch_size": vision.patch_size,
        "vision": {
            "hidden_size": vision.hidden_size,
            "num_hidden_layers": vision.num_hidden_layers,
            "num_attention_heads": vision.num_attention_heads,
            "intermediate_size": vision.intermediate_size,
            "norm_type": match vision.norm_type {
                NormType::RmsNorm => "rms_norm",
                NormType::LayerNorm => "layer_norm",
            },
            "qk_normalization": vision.qk_normalization,
            "qkv_bias": vision.qkv_bias,
        },
        "preprocessor_config": folder.preprocessor_config().is_some(),
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(());
    }
    println!("path:            {}", dir.display());
    println!(
        "architecture:    {}",
        info["architecture"].as_str().unwrap_or("")
    );
    println!("parameters:      {}", info["parameters"]);
    println!("vision params:   {}", info["vision_parameters"]);
    println!("stored dtypes:   {}", info["stored_dtypes"]);
    println!("image size:      {}", vision.image_size);
    println!("patch size:      {}", vision.patch_size);
    println!(
        "vision encoder:  {} layers, width {}, {} heads, MLP {}, {}, qk-norm {}, qkv bias {}",
        vision.num_hidden_layers,
        vision.hidden_size,
        vision.num_attention_heads,
        vision.intermediate_size,
        info["vision"]["norm_type"].as_str().unwrap_or(""),
        vision.qk_normalization,
        vision.qkv_bias
    );
    Ok(())
}
