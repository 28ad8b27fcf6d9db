//! Stage 2 of the progressive alignment (InternVL-G generative training): the release's
//! `FlickrDataset.preprocess` texts and the training run of [`super::objectives::stage2`]
//! (ITM + ITC + ITG) with the ViT and the QLLaMA body frozen by default.
//!
//! Texts of one sample, as the release builds them (`internvl_g/internvl/train/dataset.py`, a
//! `LlamaTokenizer` with `add_eos_token=True`, right padding to `max_seq_length` with the pad
//! id, truncation keeping BOS and EOS):
//! * caption: lower-cased, `. ! " ( ) * # : ; ~` → spaces, runs of spaces collapsed, stripped,
//!   at most 50 words;
//! * `positive` / `negative`: BOS + caption (or another image's caption) + EOS;
//! * `summarize`: BOS + `"summarize:" + caption` + EOS;
//! * `input_ids`: BOS + `"English caption:"` (its EOS removed) ⊕ caption + EOS (its BOS
//!   removed, padded to `max_seq_length − len(prefix) + 1` first); `labels` = ids with pads and
//!   the first `len(prefix) − 1` positions set to −100 (so the prefix's last token is a target).

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};

use super::datasets::read_caption_jsonl;
use super::losses::IGNORE_INDEX;
use super::objectives::{stage2, Batch};
use super::params::{NamePatterns, Parameters};
use super::trainer::{RunSpec, StepRecord};
use crate::models::internvl_cg::InternVLCG;
use crate::models::ModelFolder;
use crate::processing::image::load_rgb;
use crate::processing::tokenizer::Tokenizer;
use crate::tasks::contrastive::{ImagePreprocessor, ImageTransform};
use crate::{Error, Result};

/// The name checkpoints record for this objective.
pub const OBJECTIVE: &str = "stage2";
/// The release's `max_seq_length`.
pub const MAX_SEQ_LENGTH: usize = 80;
/// The ITG prompt.
pub const CAPTION_PREFIX: &str = "English caption:";
/// What trains in stage 2 by default (spec training.md §3.6 and the paper: queries,
/// cross-attention, `clip_projector2`, `itm_head`, `logit_scale`).
pub const DEFAULT_TRAINABLE: &str =
    "query_tokens,logit_scale,clip_projector2.*,itm_head.*,qllama.model.layers.*.cross_attn.*";

/// `process_single_caption`: the same BLIP clean-up the evaluation readers apply.
pub use crate::evaluation::retrieval_data::pre_caption as process_caption;

/// The token rows of one sample (each `MAX_SEQ_LENGTH` long).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage2Texts {
    /// Rows by the official forward's argument names.
    pub rows: Vec<(&'static str, Vec<i64>)>,
}

/// `tokenizer(text, max_length, padding="max_length", truncation=True)` of a slow
/// `LlamaTokenizer` with BOS and EOS: ids and mask.
fn padded(
    tokenizer: &Tokenizer,
    text: &str,
    max_length: usize,
    pad: i64,
) -> Result<(Vec<i64>, Vec<i64>)> {
    let body = tokenizer.encode(text, false, false)?;
    let bos = tokenizer
        .bos_id()
        .ok_or_else(|| Error::InvalidArgument("the tokenizer has no BOS".into()))?;
    let eos = tokenizer
        .eos_id()
        .ok_or_else(|| Error::InvalidArgument("the tokenizer has no EOS".into()))?;
    let keep = body.len().min(max_length.saturating_sub(2));
    let mut ids: Vec<i64> = std::iter::once(bos)
        .chain(body[..keep].iter().copied())
        .chain(std::iter::once(eos))
        .map(i64::from)
        .collect();
    let real = ids.len();
    ids.resize(max_length.max(real), pad);
    let mask = (0..ids.len()).map(|i| i64::from(i < real)).collect();
    Ok((ids, mask))
}

/// The texts of one stage-2 sample from its (processed) caption and a negative caption.
pub fn stage2_texts(
    tokenizer: &Tokenizer,
    caption: &str,
    negative: &str,
    max_length: usize,
) -> Result<Stage2Texts> {
    let pad = i64::from(tokenizer.pad_id().ok_or_else(|| {
        Error::InvalidArgument("the tokenizer has no pad token (the release pads with it)".into())
    })?);
    let (pos, pos_mask) = padded(tokenizer, caption, max_length, pad)?;
    let (neg, neg_mask) = padded(tokenizer, negative, max_length, pad)?;
    let (sum, sum_mask) = padded(tokenizer, &format!("summarize:{caption}"), max_length, pad)?;
    // The prefix is tokenised without padding (BOS + prefix + EOS), then its EOS dropped.
    let prefix_length = tokenizer.encode(CAPTION_PREFIX, false, false)?.len() + 2;
    let (mut prefix, mut prefix_mask) = padded(tokenizer, CAPTION_PREFIX, prefix_length, pad)?;
    prefix.pop();
    prefix_mask.pop();
    let content_length = max_length + 1 - prefix.len();
    let (content, content_mask) = padded(tokenizer, caption, content_length, pad)?;
    let input_ids: Vec<i64> = prefix.iter().chain(&content[1..]).copied().collect();
    let attention_mask: Vec<i64> = prefix_mask
        .iter()
        .chain(&content_mask[1..])
        .copied()
        .collect();
    let labels: Vec<i64> = input_ids
        .iter()
        .enumerate()
        .map(|(i, &id)| {
            if id == pad || i + 1 < prefix.len() {
                IGNORE_INDEX
            } else {
                id
            }
        })
        .collect();
    Ok(Stage2Texts {
        rows: vec![
            ("positive_input_ids", pos),
            ("positive_attention_mask", pos_mask),
            ("negative_input_ids", neg),
            ("negative_attention_mask", neg_mask),
            ("summarize_input_ids", sum),
            ("summarize_attention_mask", sum_mask),
            ("input_ids", input_ids),
            ("attention_mask", attention_mask),
            ("labels", labels),
        ],
    })
}

/// Stacks the texts of several samples into `[B, L]` i64 tensors by name.
pub fn stack_texts(samples: &[Stage2Texts]) -> Result<HashMap<String, Tensor>> {
    let mut out = HashMap::new();
    let Some(first) = samples.first() else {
        return Ok(out);
    };
    for (k, (name, _)) in first.rows.iter().enumerate() {
        let rows: Vec<Vec<i64>> = samples.iter().map(|s| s.rows[k].1.clone()).collect();
        out.insert(name.to_string(), Tensor::new(rows, &Device::Cpu)?);
    }
    Ok(out)
}

/// Cuts the right padding shared by every text row of a batch. The result is the same:
/// padding is right-aligned, masked as keys, and never a target, and the release's length
/// tests (`mask.sum − 1`) do not depend on it; QLLaMA then runs on `Q + longest` positions
/// instead of `Q + 80`.
pub fn trim_padding(mut tensors: HashMap<String, Tensor>) -> Result<HashMap<String, Tensor>> {
    let mut longest = 1;
    for (name, t) in &tensors {
        if name.ends_with("attention_mask") {
            for row in t.to_dtype(DType::I64)?.to_vec2::<i64>()? {
                longest = longest.max(row.iter().rposition(|&m| m != 0).map_or(0, |p| p + 1));
            }
        }
    }
    for t in tensors.values_mut() {
        if t.rank() == 2 && t.dim(1)? > longest {
            *t = t.narrow(1, 0, longest)?;
        }
    }
    Ok(tensors)
}

/// A stage-2 training run.
#[derive(Debug, Clone)]
pub struct Stage2Run {
    /// Model (an InternVL-C/G folder, usually stage 1's `last/`; data: image-caption JSON Lines), data, output folder, recipe, resume / stop / progress.
    pub spec: RunSpec,
    /// The release's BLIP-2 crop (RandomResizedCrop 0.5–1 + flip); else the plain resize.
    pub augment: bool,
}

/// Trains and returns the records of the steps run.
pub fn train_stage2(run: &Stage2Run) -> Result<Vec<StepRecord>> {
    let start_from = run.spec.start_folder()?;
    let folder = ModelFolder::open(&start_from)?;
    let params = Parameters::attach(
        folder.checkpoint(),
        NamePatterns::parse(&run.spec.options.trainable)?,
    );
    let model = InternVLCG::load(&folder, DType::F32, &Device::Cpu);
    Parameters::detach(folder.checkpoint());
    let model = model?;
    let depth = (
        model.vision().config().num_hidden_layers,
        model.qllama().config().num_hidden_layers,
    );
    let mut trainer = run.spec.trainer(OBJECTIVE, params, depth, &start_from)?;
    let records = read_caption_jsonl(&run.spec.data)?;
    if records.len() < 2 {
        return Err(Error::InvalidArgument(format!(
            "{} needs at least two samples (negatives come from other images)",
            run.spec.data.display()
        )));
    }
    let root = run.spec.data_root();
    let captions: Vec<String> = records
        .iter()
        .map(|r| process_caption(&r.caption, 50))
        .collect();
    let images: Vec<PathBuf> = records.iter().map(|r| root.join(&r.image)).collect();
    if images.iter().all(|i| *i == images[0]) {
        return Err(Error::InvalidArgument(
            "every sample has the same image: no negatives".into(),
        ));
    }
    let tokenizer = Tokenizer::from_folder(folder.dir())?;
    let preprocessor = ImagePreprocessor::new(ImageTransform::Retrieval, model.image_size(), None)?;
    run.spec.drive(&mut trainer, &folder, |step, micro| {
        let indices = run.spec.batch(records.len(), step, micro);
        let mut texts = Vec::new();
        let mut pixels = Vec::new();
        for (slot, &i) in indices.iter().enumerate() {
            // The release draws the negative uniformly among samples of another image.
            let seed = run.spec.options.seed
                ^ step.wrapping_mul(0x2545_F491_4F6C_DD1D)
                ^ ((i as u64) << 20)
                ^ slot as u64;
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let j = loop {
                let j = rng.random_range(0..records.len());
                if images[j] != images[i] {
                    break j;
                }
            };
            texts.push(stage2_texts(
                &tokenizer,
                &captions[i],
                &captions[j],
                MAX_SEQ_LENGTH,
            )?);
            let image = load_rgb(&images[i])?;
            let image = if run.augment {
                super::contrastive::augment(&image, &mut rng)
            } else {
                image
            };
            pixels.push(preprocessor.pixels(&image)?);
        }
        let mut tensors = trim_padding(stack_texts(&texts)?)?;
        tensors.insert("pixel_values".into(), Tensor::stack(&pixels, 0)?);
        let out = stage2(&model, &Batch::new(tensors, ""))?;
        Ok((out.loss, out.components))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captions_are_processed_as_the_release() {
        assert_eq!(
            process_caption("A dog runs on the beach.", 50),
            "a dog runs on the beach"
        );
        assert_eq!(
            process_caption("Two people are playing TENNIS!", 50),
            "two people are playing tennis"
        );
        assert_eq!(
            process_caption("A red car (parked) near a house; sunny day.", 50),
            "a red car parked near a house sunny day"
        );
        assert_eq!(process_caption("", 50), "");
        assert_eq!(process_caption("one two three", 2), "one two");
    }
}
