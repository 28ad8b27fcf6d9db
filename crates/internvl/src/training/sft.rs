//! Stage 3: supervised fine-tuning of an InternVL-Chat model on the release's conversation
//! JSON Lines (the [`super::sft_data`] pipeline: dynamic tiling, the template's loss masking,
//! the collator's quirks) with the next-token loss on assistant tokens ([`super::objectives::sft`]).
//! What trains is chosen by name patterns: `mlp1.*` (the projector warm-up), the LLM, the ViT.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};

use super::objectives::{sft, Batch, ChatParts};
use super::params::{NamePatterns, Parameters};
use super::sft_data::{build_sample, collate, read_jsonl, SftDataConfig, SftRecord};
use super::trainer::{RunSpec, StepRecord};
use crate::models::internvl_chat::ChatVision;
use crate::models::llm::Llm;
use crate::models::ModelFolder;
use crate::processing::templates::IMG_CONTEXT_TOKEN;
use crate::processing::tokenizer::Tokenizer;
use crate::{Error, Result};

/// The name checkpoints record for this objective.
pub const OBJECTIVE: &str = "sft";

/// An SFT run.
#[derive(Debug, Clone)]
pub struct SftRun {
    /// Model (an InternVL-Chat folder; data: conversation JSON Lines), data, output folder, recipe, resume / stop / progress.
    pub spec: RunSpec,
    /// Most tiles per image (default: the model's `max_dynamic_patch`).
    pub max_dynamic_patch: Option<u32>,
}

/// Trains and returns the records of the steps run.
pub fn train_sft(run: &SftRun) -> Result<Vec<StepRecord>> {
    let start_from = run.spec.start_folder()?;
    let folder = ModelFolder::open(&start_from)?;
    let params = Parameters::attach(
        folder.checkpoint(),
        NamePatterns::parse(&run.spec.options.trainable)?,
    );
    let loaded = ChatVision::load(&folder, DType::F32, &Device::Cpu)
        .and_then(|v| Ok((v, Llm::load_chat(&folder, DType::F32, &Device::Cpu)?)));
    Parameters::detach(folder.checkpoint());
    let (vision, llm) = loaded?;
    let tokenizer = Tokenizer::from_folder(folder.dir())?;
    let image_context_id = tokenizer
        .token_to_id(IMG_CONTEXT_TOKEN)
        .ok_or_else(|| Error::InvalidArgument("the tokenizer has no <IMG_CONTEXT> token".into()))?;
    let mut config = SftDataConfig::from_model_config(folder.config())?;
    if let Some(m) = run.max_dynamic_patch {
        config.max_dynamic_patch = m;
    }
    let records: Vec<SftRecord> = read_jsonl(&run.spec.data)?;
    if records.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "{} holds no samples",
            run.spec.data.display()
        )));
    }
    let root = run.spec.data_root();
    let depth = (vision.vision().config().num_hidden_layers, 0);
    let mut trainer = run.spec.trainer(OBJECTIVE, params, depth, &start_from)?;
    let parts = ChatParts {
        vision: &vision,
        llm: &llm,
        image_context_id,
    };
    run.spec.drive(&mut trainer, &folder, |step, micro| {
        let indices = run.spec.batch(records.len(), step, micro);
        let samples = indices
            .iter()
            .map(|&i| build_sample(&records[i], &root, &tokenizer, &config))
            .collect::<Result<Vec<_>>>()?;
        let batch = collate(&samples, &Device::Cpu)?;
        let tensors: HashMap<String, Tensor> = [
            ("input_ids", batch.input_ids),
            ("labels", batch.labels),
            ("attention_mask", batch.attention_mask),
            ("position_ids", batch.position_ids),
            ("pixel_values", batch.pixel_values),
            ("image_flags", batch.image_flags),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let out = sft(&parts, &Batch::new(tensors, ""))?;
        Ok((out.loss, Vec::new()))
    })
}
