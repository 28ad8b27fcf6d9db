//! Stage 1 of the progressive alignment: contrastive training of InternVL-C (InternViT +
//! `clip_projector` against QLLaMA's `"summarize:"` EOS state times `text_projection`) on the
//! release's image-caption JSON Lines, with the symmetric InfoNCE of the stage-2 ITC
//! (`exp(logit_scale)` not clamped).
//!
//! Two choices of this implementation, both reducing to the release's formula when they do not
//! apply: identical captions within a batch are positives of each other (multi-positive soft
//! targets, as the release's retrieval ITC does for equal image ids; with distinct captions these
//! are the usual one-hot targets; [`Positives::Label`] widens this to samples of the same
//! labelled class); and when no QLLaMA body weight trains (a locked text tower), each distinct
//! caption's EOS state is computed once and cached.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use image::RgbImage;
use rand::{Rng, SeedableRng};

use super::datasets::{read_caption_jsonl, CaptionRecord};
use super::losses::{l2_normalize, soft_cross_entropy};
use super::params::{NamePatterns, Parameters};
use super::trainer::{RunSpec, StepRecord};
use crate::models::internvl_cg::InternVLCG;
use crate::models::ModelFolder;
use crate::processing::image::load_rgb;
use crate::processing::tokenizer::InternVlCgTextTokenizer;
use crate::tasks::contrastive::{ImagePreprocessor, ImageTransform};
use crate::{Error, Result};

/// The name checkpoints record for this objective.
pub const OBJECTIVE: &str = "contrastive";

/// A contrastive training run.
#[derive(Debug, Clone)]
pub struct ContrastiveRun {
    /// Model (an InternVL-C/G folder; data: image-caption JSON Lines), data, output folder, recipe, resume / stop / progress.
    pub spec: RunSpec,
    /// RandomResizedCrop(scale 0.5–1) + horizontal flip (else the evaluation transform).
    pub augment: bool,
    /// Which samples of a batch are positives of each other.
    pub positives: Positives,
}

/// Which samples of a batch count as matching pairs in the InfoNCE targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Positives {
    /// Samples with identical captions (one-hot targets when captions are distinct).
    #[default]
    Caption,
    /// Samples with the same `label` in the JSON Lines (templated captions that name the same
    /// class are paraphrases), like the release's retrieval ITC treats equal image ids.
    Label,
}

impl std::str::FromStr for Positives {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "caption" => Ok(Self::Caption),
            "label" => Ok(Self::Label),
            other => Err(Error::InvalidArgument(format!(
                "unknown positives `{other}` (caption, label)"
            ))),
        }
    }
}

/// One sample: image path, caption and the key deciding its positives.
struct Sample {
    image: PathBuf,
    caption: String,
    group: String,
}

/// Trains and returns the records of the steps run.
pub fn train_contrastive(run: &ContrastiveRun) -> Result<Vec<StepRecord>> {
    let start_from = run.spec.start_folder()?;
    let folder = ModelFolder::open(&start_from)?;
    let trainable = NamePatterns::parse(&run.spec.options.trainable)?;
    let params = Parameters::attach(folder.checkpoint(), trainable);
    let model = InternVLCG::load(&folder, DType::F32, &Device::Cpu);
    Parameters::detach(folder.checkpoint());
    let model = model?;
    let depth = (
        model.vision().config().num_hidden_layers,
        model.qllama().config().num_hidden_layers,
    );
    let text_locked = !params.vars().keys().any(|n| n.starts_with("qllama."));
    let mut trainer = run.spec.trainer(OBJECTIVE, params, depth, &start_from)?;
    let samples = read_samples(run)?;
    let tokenizer = InternVlCgTextTokenizer::from_folder(folder.dir())?;
    let preprocessor = ImagePreprocessor::new(ImageTransform::Retrieval, model.image_size(), None)?;
    let mut cache = HashMap::new();
    run.spec.drive(&mut trainer, &folder, |step, micro| {
        let indices = run.spec.batch(samples.len(), step, micro);
        let batch: Vec<&Sample> = indices.iter().map(|&i| &samples[i]).collect();
        let pixels = batch_pixels(&batch, &indices, step, run, &preprocessor)?;
        let captions: Vec<&str> = batch.iter().map(|s| s.caption.as_str()).collect();
        let text = if text_locked {
            cached_text_features(&model, &tokenizer, &captions, &mut cache)?
        } else {
            text_features(&model, &tokenizer, &captions)?
        };
        let groups: Vec<&str> = batch.iter().map(|s| s.group.as_str()).collect();
        let loss = contrastive_loss(&model, &pixels, &text, &groups)?;
        Ok((loss, Vec::new()))
    })
}

fn read_samples(run: &ContrastiveRun) -> Result<Vec<Sample>> {
    let records: Vec<CaptionRecord> = read_caption_jsonl(&run.spec.data)?;
    if records.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "{} holds no samples",
            run.spec.data.display()
        )));
    }
    let root = run.spec.data_root();
    records
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let group = match (run.positives, r.label) {
                (Positives::Caption, _) => r.caption.clone(),
                (Positives::Label, Some(label)) => format!("label {label}"),
                (Positives::Label, None) => {
                    return Err(Error::InvalidArgument(format!(
                        "{} line {}: label positives need a `label` on every line",
                        run.spec.data.display(),
                        i + 1
                    )))
                }
            };
            Ok(Sample {
                image: root.join(&r.image),
                caption: r.caption,
                group,
            })
        })
        .collect()
}

/// `[B, 3, S, S]` pixels of a batch; augmentation draws from an RNG seeded by the run's seed,
/// the step and the sample's position, so that a resumed run crops the same way.
fn batch_pixels(
    batch: &[&Sample],
    indices: &[usize],
    step: u64,
    run: &ContrastiveRun,
    preprocessor: &ImagePreprocessor,
) -> Result<Tensor> {
    let tiles = batch
        .iter()
        .zip(indices)
        .enumerate()
        .map(|(slot, (sample, &index))| {
            let image = load_rgb(&sample.image)?;
            let image = if run.augment {
                let seed = run.spec.options.seed
                    ^ step.wrapping_mul(0x2545_F491_4F6C_DD1D)
                    ^ ((index as u64) << 20)
                    ^ slot as u64;
                augment(&image, &mut rand::rngs::StdRng::seed_from_u64(seed))
            } else {
                image
            };
            preprocessor.pixels(&image)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::stack(&tiles, 0)?)
}

/// torchvision `RandomResizedCrop(scale=(0.5, 1), ratio=(3/4, 4/3))` (the crop; resizing is the
/// preprocessor's) then a horizontal flip with probability ½.
pub fn augment(image: &RgbImage, rng: &mut impl Rng) -> RgbImage {
    let (w, h) = image.dimensions();
    let area = (w * h) as f64;
    let mut crop = None;
    for _ in 0..10 {
        let target = area * rng.random_range(0.5..=1.0);
        let log_ratio = rng.random_range((3f64 / 4.0).ln()..=(4f64 / 3.0).ln());
        let ratio = log_ratio.exp();
        let cw = (target * ratio).sqrt().round() as u32;
        let ch = (target / ratio).sqrt().round() as u32;
        if cw > 0 && ch > 0 && cw <= w && ch <= h {
            let x = rng.random_range(0..=w - cw);
            let y = rng.random_range(0..=h - ch);
            crop = Some((x, y, cw, ch));
            break;
        }
    }
    let (x, y, cw, ch) = crop.unwrap_or((0, 0, w, h));
    let cropped = image::imageops::crop_imm(image, x, y, cw, ch).to_image();
    if rng.random_bool(0.5) {
        image::imageops::flip_horizontal(&cropped)
    } else {
        cropped
    }
}

/// Token ids of captions (release tokenisation), trimmed to the longest row: the padding after
/// it changes nothing (causal attention, pad keys masked, pooling at the last real token).
fn caption_ids(tokenizer: &InternVlCgTextTokenizer, captions: &[&str]) -> Result<Tensor> {
    let batch = tokenizer.encode_batch(captions)?;
    let longest = batch
        .attention_mask
        .iter()
        .map(|m| m.iter().filter(|&&v| v != 0).count())
        .max()
        .unwrap_or(1);
    let rows: Vec<Vec<u32>> = batch
        .input_ids
        .into_iter()
        .map(|r| r[..longest].to_vec())
        .collect();
    Ok(Tensor::new(rows, &Device::Cpu)?)
}

fn text_features(
    model: &InternVLCG,
    tokenizer: &InternVlCgTextTokenizer,
    captions: &[&str],
) -> Result<Tensor> {
    model.text_features(&caption_ids(tokenizer, captions)?)
}

/// EOS states of a locked text tower, computed once per distinct caption (alone).
fn cached_text_features(
    model: &InternVLCG,
    tokenizer: &InternVlCgTextTokenizer,
    captions: &[&str],
    cache: &mut HashMap<String, Tensor>,
) -> Result<Tensor> {
    let missing: Vec<&str> = {
        let mut seen = std::collections::BTreeSet::new();
        captions
            .iter()
            .copied()
            .filter(|c| !cache.contains_key(*c) && seen.insert(*c))
            .collect()
    };
    // One caption at a time: a caption's features must not depend on which captions share
    // its batch (kernels and padding change the rounding), or a resumed run, which fills the
    // cache in another order, would not equal an uninterrupted one.
    for caption in missing {
        let features = text_features(model, tokenizer, &[caption])?.detach();
        cache.insert(caption.to_string(), features.get(0)?);
    }
    let rows: Vec<Tensor> = captions.iter().map(|c| cache[*c].clone()).collect();
    Ok(Tensor::stack(&rows, 0)?)
}

/// Symmetric InfoNCE between the InternVL-C image embeddings of `pixels` and the projected
/// text features; samples with the same group key are positives of each other.
fn contrastive_loss(
    model: &InternVLCG,
    pixels: &Tensor,
    text_features: &Tensor,
    captions: &[&str],
) -> Result<Tensor> {
    let image = l2_normalize(&model.pool_vision(&model.vision_tokens(pixels)?)?)?;
    let text = l2_normalize(&text_features.matmul(model.text_projection())?)?;
    let scale = model.logit_scale_param().to_dtype(DType::F32)?.exp()?;
    let i2t = image.matmul(&text.t()?)?.broadcast_mul(&scale)?;
    let n = captions.len();
    let targets: Vec<f32> = captions
        .iter()
        .flat_map(|a| {
            let count = captions.iter().filter(|c| *c == a).count() as f32;
            captions
                .iter()
                .map(move |c| if c == a { 1.0 / count } else { 0.0 })
        })
        .collect();
    let targets = Tensor::from_vec(targets, (n, n), &Device::Cpu)?;
    let loss =
        ((soft_cross_entropy(&i2t, &targets)? + soft_cross_entropy(&i2t.t()?, &targets)?)? / 2.0)?;
    Ok(loss)
}
