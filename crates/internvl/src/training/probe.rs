//! Classification probing on frozen InternViT features: the release's `classification/` recipe
//! (`intern_vit_6b.py`, `cls_target = cls_patch_concat | attention_pooling`).
//!
//! * **Linear probing** (`cls_patch_concat`): concat(CLS token of the last block, mean of the
//!   patch tokens of the last block) `[2C]` → BatchNorm1d(2C, eps 1e-6, affine, momentum 0.1)
//!   → Linear(2C → classes).
//! * **Attention-pooling probing** (`attention_pooling`): AttentionPoolingBlock (the structure
//!   of InternVL-C's `clip_projector`: LayerNorms `norm1_q/k/v` (eps 1e-5), a cross-attention
//!   whose single query is the mean token, q/k/v projections with separate biases, output
//!   projection to C) over **all** tokens (CLS included) → BatchNorm1d(C) → Linear(C → classes).
//!
//! Head init as the release: `head.weight ~ N(0, 0.01²)`, `head.bias = 0`; BatchNorm weight 1,
//! bias 0, running mean 0, running var 1; the pooling block keeps PyTorch's default init (it is
//! built after the encoder is frozen): LayerNorm 1/0, `q/k/v.weight` and `proj.weight`
//! `U(±1/√fan_in)`, `q/k/v_bias` 0, `proj.bias` `U(±1/√fan_in)`.
//!
//! Training follows the recipe: SGD (momentum 0.9, Nesterov, weight decay 0, PyTorch's update
//! rule), `lr = 0.1 · batch / 512`, cosine schedule per step with a linear warm-up from 0 (timm's
//! `CosineLRScheduler` with `warmup_prefix`), label smoothing 0.1, gradient clipping 5.0, the
//! training loader dropping its last incomplete batch (timm's `drop_last`); BatchNorm uses batch
//! statistics while training and running statistics at evaluation.
//!
//! **Cached features.** The encoder is frozen (it is loaded as plain tensors, so no gradient can
//! reach it), so each image goes through InternViT exactly once and the head trains on the
//! cached features — the standard, efficient linear-probe practice. The consequence is that the
//! training images are not augmented: every image is seen through the release's *evaluation*
//! transform (resize the shorter side to S, center crop S×S, ImageNet normalisation), and the
//! release's RandomResizedCrop + flip, Mixup/CutMix, EMA of the weights and mixed precision are
//! not applied. The cache holds `[N, 2C]` floats for the linear head and `[N, 1+T, C]` for the
//! pooling head (all tokens), so it suits small and medium datasets, not ImageNet-1K at 6B width.
//!
//! Outputs in `out_dir`: [`PROBE_WEIGHTS`] (safetensors with the release's names: `norm.weight`,
//! `norm.bias`, `norm.running_mean`, `norm.running_var`, `norm.num_batches_tracked`,
//! `head.weight`, `head.bias`, and `attn_pooling.*` for the pooling head), [`PROBE_JSON`] (a
//! [`ProbeSummary`]: classes, options, accuracies), [`PROBE_METRICS`] (one [`StepRecord`] per
//! line) and [`PROBE_LOSS_CURVE`].

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var, D};
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::curves::save_loss_curve;
use super::datasets::{image_folder, image_folder_classes};
use super::losses::cross_entropy;
use super::optim::{clip_grad_norm, cosine_with_warmup};
use super::trainer::StepRecord;
use crate::models::intern_vit::InternVisionModel;
use crate::models::ModelFolder;
use crate::processing::image::load_rgb;
use crate::tasks::contrastive::{ImagePreprocessor, ImageTransform};
use crate::{Error, Result};

/// File name of the trained head's weights in `out_dir`.
pub const PROBE_WEIGHTS: &str = "probe.safetensors";
/// File name of the run's [`ProbeSummary`] in `out_dir`.
pub const PROBE_JSON: &str = "probe.json";
/// File name of the per-step records (JSON Lines of [`StepRecord`]) in `out_dir`.
pub const PROBE_METRICS: &str = "metrics.jsonl";
/// File name of the loss curve in `out_dir`.
pub const PROBE_LOSS_CURVE: &str = "loss.png";

/// BatchNorm epsilon of the release's probing heads.
pub const BATCH_NORM_EPS: f64 = 1e-6;
/// BatchNorm running-statistics momentum (PyTorch's default).
pub const BATCH_NORM_MOMENTUM: f64 = 0.1;
/// LayerNorm epsilon inside the attention-pooling block.
pub const POOLING_LAYER_NORM_EPS: f64 = 1e-5;
/// Standard deviation of the classifier's initial weights.
pub const HEAD_INIT_STD: f64 = 0.01;

/// Images per InternViT forward pass while the features are cached.
const EXTRACT_BATCH: usize = 16;
/// Rows per evaluation forward pass of the head.
const EVAL_BATCH: usize = 256;

/// Which probing head sits on the frozen encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeHead {
    /// `cls_patch_concat`: concat(CLS, mean of patch tokens) → BatchNorm → Linear.
    Linear,
    /// `attention_pooling`: AttentionPoolingBlock over all tokens → BatchNorm → Linear. The
    /// release uses the encoder's own head count (25 for InternViT-6B); `heads` must divide the
    /// encoder width.
    AttentionPooling {
        /// Attention heads of the pooling block.
        heads: usize,
    },
}

impl ProbeHead {
    /// The release's `cls_target` name.
    pub fn cls_target(self) -> &'static str {
        match self {
            ProbeHead::Linear => "cls_patch_concat",
            ProbeHead::AttentionPooling { .. } => "attention_pooling",
        }
    }

    /// Width of the BatchNorm / classifier input for an encoder of width `width`.
    pub fn feature_dim(self, width: usize) -> usize {
        match self {
            ProbeHead::Linear => 2 * width,
            ProbeHead::AttentionPooling { .. } => width,
        }
    }

    fn check_width(self, width: usize) -> Result<()> {
        if width == 0 {
            return Err(Error::InvalidArgument(
                "the encoder width must be positive".into(),
            ));
        }
        if let ProbeHead::AttentionPooling { heads } = self {
            if heads == 0 || !width.is_multiple_of(heads) {
                return Err(Error::InvalidArgument(format!(
                    "attention pooling with {heads} heads: the head count must be positive and divide the encoder width {width}"
                )));
            }
        }
        Ok(())
    }
}

/// The probing recipe. [`Default`] is the release's (10 epochs, SGD momentum 0.9 Nesterov,
/// weight decay 0, label smoothing 0.1, 1 warm-up epoch, gradient clipping 5.0) with a per-device
/// batch of 128.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeOptions {
    /// The head to train.
    pub head: ProbeHead,
    /// Passes over the training images (at least 1).
    pub epochs: usize,
    /// Images per optimizer step (at least 2: BatchNorm needs more than one value per channel).
    /// The last incomplete batch of an epoch is dropped.
    pub batch_size: usize,
    /// Peak learning rate; `None` = the release's linear scaling `0.1 · batch_size / 512`.
    pub lr: Option<f64>,
    /// SGD momentum (0 ≤ μ < 1).
    pub momentum: f64,
    /// Nesterov momentum (needs μ > 0).
    pub nesterov: bool,
    /// L2 weight decay added to the gradient (PyTorch's SGD semantics).
    pub weight_decay: f64,
    /// Label smoothing ε of the cross-entropy (0 ≤ ε ≤ 1).
    pub label_smoothing: f64,
    /// Linear warm-up from 0, in epochs (`int(warmup_epochs · steps_per_epoch)` steps).
    pub warmup_epochs: f64,
    /// Global gradient-norm clipping (`None` = off; the release clips at 5.0).
    pub clip_grad: Option<f64>,
    /// Seed of the head's initialisation and of the per-epoch shuffling.
    pub seed: u64,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        Self {
            head: ProbeHead::Linear,
            epochs: 10,
            batch_size: 128,
            lr: None,
            momentum: 0.9,
            nesterov: true,
            weight_decay: 0.0,
            label_smoothing: 0.1,
            warmup_epochs: 1.0,
            clip_grad: Some(5.0),
            seed: 0,
        }
    }
}

impl ProbeOptions {
    /// The peak learning rate: `lr`, or `0.1 · batch_size / 512`.
    pub fn learning_rate(&self) -> f64 {
        self.lr.unwrap_or(0.1 * self.batch_size as f64 / 512.0)
    }

    /// Checks every setting, naming the first one that is out of range.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::InvalidArgument(msg));
        if self.epochs == 0 {
            return bad("epochs must be at least 1".into());
        }
        if self.batch_size < 2 {
            return bad(format!(
                "batch_size {} is too small: BatchNorm needs at least 2 images per batch",
                self.batch_size
            ));
        }
        let lr = self.learning_rate();
        if !(lr.is_finite() && lr > 0.0) {
            return bad(format!(
                "the learning rate must be positive and finite, got {lr}"
            ));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return bad(format!("momentum must be in [0, 1), got {}", self.momentum));
        }
        if self.nesterov && self.momentum <= 0.0 {
            return bad("Nesterov momentum requires a momentum > 0".into());
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(format!(
                "weight_decay must be ≥ 0 and finite, got {}",
                self.weight_decay
            ));
        }
        if !(0.0..=1.0).contains(&self.label_smoothing) {
            return bad(format!(
                "label_smoothing must be in [0, 1], got {}",
                self.label_smoothing
            ));
        }
        if !(self.warmup_epochs.is_finite() && self.warmup_epochs >= 0.0) {
            return bad(format!(
                "warmup_epochs must be ≥ 0 and finite, got {}",
                self.warmup_epochs
            ));
        }
        if let Some(clip) = self.clip_grad {
            if !(clip.is_finite() && clip > 0.0) {
                return bad(format!("clip_grad must be positive and finite, got {clip}"));
            }
        }
        if let ProbeHead::AttentionPooling { heads: 0 } = self.head {
            return bad("attention pooling needs at least one head".into());
        }
        Ok(())
    }
}

/// The outcome of [`train_probe`].
#[derive(Debug, Clone)]
pub struct ProbeReport {
    /// Class names (sorted class folders; label = position).
    pub classes: Vec<String>,
    /// Top-1 accuracy on the training images (head in evaluation mode).
    pub train_accuracy: f64,
    /// Top-1 accuracy on the test images.
    pub test_accuracy: f64,
    /// Test recall of each class (NaN for a class without test images).
    pub per_class_recall: Vec<f64>,
    /// Test confusion matrix: `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<usize>>,
    /// One record per optimizer step.
    pub records: Vec<StepRecord>,
    /// Predicted label of each test image, in [`image_folder`] order.
    pub test_predictions: Vec<usize>,
}

/// What [`train_probe`] writes to [`PROBE_JSON`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeSummary {
    /// The release's `cls_target`.
    pub cls_target: String,
    /// The head (with its head count for attention pooling).
    pub head: ProbeHead,
    /// Encoder width C.
    pub width: usize,
    /// Class names (label = position).
    pub classes: Vec<String>,
    /// The recipe.
    pub options: ProbeOptions,
    /// The peak learning rate used.
    pub learning_rate: f64,
    /// Optimizer steps run.
    pub steps: u64,
    /// The encoder's folder.
    pub model_dir: PathBuf,
    /// Input size S of the evaluation transform.
    pub image_size: usize,
    /// Training images.
    pub train_images: usize,
    /// Test images.
    pub test_images: usize,
    /// Top-1 accuracy on the training images.
    pub train_accuracy: f64,
    /// Top-1 accuracy on the test images.
    pub test_accuracy: f64,
    /// Test recall of each class (`null` for a class without test images).
    pub per_class_recall: Vec<Option<f64>>,
}

// ---------------------------------------------------------------------------------------------
// SGD
// ---------------------------------------------------------------------------------------------

/// `torch.optim.SGD` (dampening 0): `d = g + wd·p`; with momentum `buf = μ·buf + d` (the first
/// step `buf = d`), then `d = d + μ·buf` (Nesterov) or `d = buf`; `p ← p − lr·d`.
#[derive(Debug, Clone)]
pub struct Sgd {
    momentum: f64,
    nesterov: bool,
    weight_decay: f64,
    buffers: HashMap<String, Tensor>,
}

impl Sgd {
    /// An optimizer with the given momentum μ (0 ≤ μ < 1), Nesterov switch (needs μ > 0) and
    /// weight decay (≥ 0).
    pub fn new(momentum: f64, nesterov: bool, weight_decay: f64) -> Result<Self> {
        if !(0.0..1.0).contains(&momentum) {
            return Err(Error::InvalidArgument(format!(
                "SGD momentum must be in [0, 1), got {momentum}"
            )));
        }
        if nesterov && momentum <= 0.0 {
            return Err(Error::InvalidArgument(
                "Nesterov momentum requires a momentum > 0".into(),
            ));
        }
        if !(weight_decay.is_finite() && weight_decay >= 0.0) {
            return Err(Error::InvalidArgument(format!(
                "SGD weight decay must be ≥ 0 and finite, got {weight_decay}"
            )));
        }
        Ok(Self {
            momentum,
            nesterov,
            weight_decay,
            buffers: HashMap::new(),
        })
    }

    /// One update of `params` with learning rate `lr`. A parameter without a gradient in `grads`
    /// is left alone (PyTorch skips parameters whose `.grad` is `None`).
    pub fn step(
        &mut self,
        params: &[(String, Var)],
        grads: &BTreeMap<String, Tensor>,
        lr: f64,
    ) -> Result<()> {
        for (name, var) in params {
            let Some(grad) = grads.get(name) else {
                continue;
            };
            let p = var.as_tensor();
            if grad.dims() != p.dims() {
                return Err(Error::InvalidArgument(format!(
                    "gradient of {name} has shape {:?}, the parameter {:?}",
                    grad.dims(),
                    p.dims()
                )));
            }
            let mut d = grad.to_dtype(p.dtype())?;
            if self.weight_decay != 0.0 {
                d = (d + (p * self.weight_decay)?)?;
            }
            if self.momentum != 0.0 {
                let buf = match self.buffers.get(name) {
                    None => d.clone(),
                    Some(buf) => ((buf * self.momentum)? + &d)?,
                };
                d = if self.nesterov {
                    (d + (&buf * self.momentum)?)?
                } else {
                    buf.clone()
                };
                self.buffers.insert(name.clone(), buf);
            }
            var.set(&(p - (d * lr)?)?.detach())?;
        }
        Ok(())
    }

    /// The momentum buffer of a parameter (none before its first update or without momentum).
    pub fn momentum_buffer(&self, name: &str) -> Option<&Tensor> {
        self.buffers.get(name)
    }
}

// ---------------------------------------------------------------------------------------------
// BatchNorm1d
// ---------------------------------------------------------------------------------------------

/// `nn.BatchNorm1d(features, eps, affine=True, momentum)` on `[B, F]`, built from candle ops so
/// that gradients flow to the input, the weight and the bias.
#[derive(Debug, Clone)]
pub struct BatchNorm1d {
    weight: Var,
    bias: Var,
    running_mean: Tensor,
    running_var: Tensor,
    num_batches_tracked: i64,
    eps: f64,
    momentum: f64,
}

impl BatchNorm1d {
    /// PyTorch's initial state: weight 1, bias 0, running mean 0, running var 1.
    pub fn new(features: usize, eps: f64, momentum: f64, device: &Device) -> Result<Self> {
        Self::from_tensors(
            &Tensor::ones(features, DType::F32, device)?,
            &Tensor::zeros(features, DType::F32, device)?,
            &Tensor::zeros(features, DType::F32, device)?,
            &Tensor::ones(features, DType::F32, device)?,
            0,
            eps,
            momentum,
        )
    }

    /// A layer with the given parameters and buffers (all `[F]`).
    pub fn from_tensors(
        weight: &Tensor,
        bias: &Tensor,
        running_mean: &Tensor,
        running_var: &Tensor,
        num_batches_tracked: i64,
        eps: f64,
        momentum: f64,
    ) -> Result<Self> {
        let f = weight.dims1()?;
        for (name, t) in [
            ("bias", bias),
            ("running_mean", running_mean),
            ("running_var", running_var),
        ] {
            if t.dims() != [f] {
                return Err(Error::InvalidArgument(format!(
                    "BatchNorm {name} has shape {:?}, expected [{f}]",
                    t.dims()
                )));
            }
        }
        Ok(Self {
            weight: Var::from_tensor(&weight.detach())?,
            bias: Var::from_tensor(&bias.detach())?,
            running_mean: running_mean.detach(),
            running_var: running_var.detach(),
            num_batches_tracked,
            eps,
            momentum,
        })
    }

    /// Training mode: normalises with the batch mean and biased variance, and updates the
    /// running statistics (`running = (1 − m)·running + m·batch`, unbiased variance).
    pub fn forward_train(&mut self, x: &Tensor) -> Result<Tensor> {
        let (b, f) = self.check(x)?;
        if b < 2 {
            return Err(Error::InvalidArgument(format!(
                "BatchNorm in training mode needs more than 1 value per channel, got input [{b}, {f}]"
            )));
        }
        let mean = x.mean_keepdim(0)?;
        let centered = x.broadcast_sub(&mean)?;
        let var = centered.sqr()?.mean_keepdim(0)?;
        let xhat = centered.broadcast_div(&(&var + self.eps)?.sqrt()?)?;
        let y = self.affine(&xhat)?;
        let m = self.momentum;
        let batch_mean = mean.detach().squeeze(0)?;
        let unbiased = (var.detach().squeeze(0)? * (b as f64 / (b - 1) as f64))?;
        self.running_mean = ((&self.running_mean * (1.0 - m))? + (batch_mean * m)?)?;
        self.running_var = ((&self.running_var * (1.0 - m))? + (unbiased * m)?)?;
        self.num_batches_tracked += 1;
        Ok(y)
    }

    /// Evaluation mode: normalises with the running statistics.
    pub fn forward_eval(&self, x: &Tensor) -> Result<Tensor> {
        self.check(x)?;
        let xhat = x
            .broadcast_sub(&self.running_mean)?
            .broadcast_div(&(&self.running_var + self.eps)?.sqrt()?)?;
        self.affine(&xhat)
    }

    fn affine(&self, xhat: &Tensor) -> Result<Tensor> {
        Ok(xhat
            .broadcast_mul(self.weight.as_tensor())?
            .broadcast_add(self.bias.as_tensor())?)
    }

    fn check(&self, x: &Tensor) -> Result<(usize, usize)> {
        let f = self.features();
        match x.dims() {
            &[b, c] if c == f => Ok((b, c)),
            dims => Err(Error::InvalidArgument(format!(
                "BatchNorm1d({f}) expects [batch, {f}], got {dims:?}"
            ))),
        }
    }

    /// Number of channels F.
    pub fn features(&self) -> usize {
        self.running_mean.dims()[0]
    }

    /// The affine weight (trainable).
    pub fn weight(&self) -> &Var {
        &self.weight
    }

    /// The affine bias (trainable).
    pub fn bias(&self) -> &Var {
        &self.bias
    }

    /// The running mean `[F]`.
    pub fn running_mean(&self) -> &Tensor {
        &self.running_mean
    }

    /// The running (unbiased) variance `[F]`.
    pub fn running_var(&self) -> &Tensor {
        &self.running_var
    }

    /// Training batches seen.
    pub fn num_batches_tracked(&self) -> i64 {
        self.num_batches_tracked
    }
}

// ---------------------------------------------------------------------------------------------
// Attention pooling
// ---------------------------------------------------------------------------------------------

/// Trainable AttentionPoolingBlock (`attn_pooling.*`, the names of `clip_projector`).
#[derive(Debug, Clone)]
struct AttentionPool {
    vars: Vec<(String, Var)>,
    heads: usize,
}

/// (name, shape) of the pooling block's parameters, in the release's construction order.
fn pooling_shapes(width: usize) -> Vec<(String, Vec<usize>)> {
    let mut shapes = Vec::new();
    for n in ["norm1_q", "norm1_k", "norm1_v"] {
        shapes.push((format!("{n}.weight"), vec![width]));
        shapes.push((format!("{n}.bias"), vec![width]));
    }
    for n in ["q", "k", "v"] {
        shapes.push((format!("cross_attn.{n}.weight"), vec![width, width]));
        shapes.push((format!("cross_attn.{n}_bias"), vec![width]));
    }
    shapes.push(("cross_attn.proj.weight".into(), vec![width, width]));
    shapes.push(("cross_attn.proj.bias".into(), vec![width]));
    shapes
}

impl AttentionPool {
    /// PyTorch's default initialisation (see the module docs).
    fn init(width: usize, heads: usize, rng: &mut StdRng, device: &Device) -> Result<Self> {
        let bound = 1.0 / (width as f64).sqrt();
        let vars = pooling_shapes(width)
            .into_iter()
            .map(|(name, shape)| {
                let n: usize = shape.iter().product();
                let values: Vec<f32> = if name.starts_with("norm1_") && name.ends_with(".weight") {
                    vec![1.0; n]
                } else if name.ends_with(".weight") || name == "cross_attn.proj.bias" {
                    (0..n)
                        .map(|_| rng.random_range(-bound..bound) as f32)
                        .collect()
                } else {
                    vec![0.0; n]
                };
                let t = Tensor::from_vec(values, shape, device)?;
                Ok((name, Var::from_tensor(&t)?))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { vars, heads })
    }

    fn from_tensors(
        width: usize,
        heads: usize,
        tensors: &mut HashMap<String, Tensor>,
    ) -> Result<Self> {
        let vars = pooling_shapes(width)
            .into_iter()
            .map(|(name, shape)| {
                let full = format!("attn_pooling.{name}");
                let t = take(tensors, &full, &shape)?;
                Ok((name, Var::from_tensor(&t)?))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { vars, heads })
    }

    fn get(&self, name: &str) -> &Tensor {
        self.vars
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_tensor())
            .expect("every pooling parameter is created with the block")
    }

    fn layer_norm(&self, x: &Tensor, prefix: &str) -> Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let centered = x.broadcast_sub(&mean)?;
        let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
        let xhat = centered.broadcast_div(&(var + POOLING_LAYER_NORM_EPS)?.sqrt()?)?;
        Ok(xhat
            .broadcast_mul(self.get(&format!("{prefix}.weight")))?
            .broadcast_add(self.get(&format!("{prefix}.bias")))?)
    }

    fn project(&self, x: &Tensor, weight: &str, bias: &str) -> Result<Tensor> {
        Ok(x.broadcast_matmul(&self.get(weight).t()?)?
            .broadcast_add(self.get(bias))?)
    }

    /// `[B, N, C]` → `[B, C]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, n, c) = x.dims3()?;
        let heads = self.heads;
        let d = c / heads;
        let query = x.mean_keepdim(1)?;
        let q = self.project(
            &self.layer_norm(&query, "norm1_q")?,
            "cross_attn.q.weight",
            "cross_attn.q_bias",
        )?;
        let k = self.project(
            &self.layer_norm(x, "norm1_k")?,
            "cross_attn.k.weight",
            "cross_attn.k_bias",
        )?;
        let v = self.project(
            &self.layer_norm(x, "norm1_v")?,
            "cross_attn.v.weight",
            "cross_attn.v_bias",
        )?;
        let split = |t: &Tensor, len: usize| -> Result<Tensor> {
            Ok(t.reshape((b, len, heads, d))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let q = (split(&q, 1)? * (d as f64).powf(-0.5))?;
        let k = split(&k, n)?;
        let v = split(&v, n)?;
        let scores = q.matmul(&k.t()?.contiguous()?)?;
        let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let pooled = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, c))?;
        self.project(&pooled, "cross_attn.proj.weight", "cross_attn.proj.bias")
    }
}

// ---------------------------------------------------------------------------------------------
// The classifier
// ---------------------------------------------------------------------------------------------

/// A probing head: optional attention pooling, BatchNorm1d and the linear classifier.
#[derive(Debug, Clone)]
pub struct ProbeClassifier {
    head: ProbeHead,
    width: usize,
    classes: usize,
    pool: Option<AttentionPool>,
    norm: BatchNorm1d,
    weight: Var,
    bias: Var,
}

/// The head's input from encoder tokens `[B, 1+T, C]` (last block): `[B, 2C]`
/// concat(CLS, mean of patch tokens) for [`ProbeHead::Linear`], the tokens unchanged for
/// [`ProbeHead::AttentionPooling`].
pub fn head_inputs(head: ProbeHead, tokens: &Tensor) -> Result<Tensor> {
    let (_, n, _) = tokens.dims3().map_err(|_| {
        Error::InvalidArgument(format!(
            "encoder tokens must be [batch, 1+patches, width], got {:?}",
            tokens.dims()
        ))
    })?;
    match head {
        ProbeHead::Linear => {
            if n < 2 {
                return Err(Error::InvalidArgument(
                    "cls_patch_concat needs the CLS token and at least one patch token".into(),
                ));
            }
            let cls = tokens.narrow(1, 0, 1)?.squeeze(1)?;
            let patches = tokens.narrow(1, 1, n - 1)?.mean(1)?;
            Ok(Tensor::cat(&[cls, patches], 1)?)
        }
        ProbeHead::AttentionPooling { .. } => Ok(tokens.clone()),
    }
}

impl ProbeClassifier {
    /// A freshly initialised head (see the module docs) for an encoder of width `width`.
    pub fn new(
        head: ProbeHead,
        width: usize,
        classes: usize,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        head.check_width(width)?;
        if classes == 0 {
            return Err(Error::InvalidArgument(
                "a probe needs at least one class".into(),
            ));
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let pool = match head {
            ProbeHead::Linear => None,
            ProbeHead::AttentionPooling { heads } => {
                Some(AttentionPool::init(width, heads, &mut rng, device)?)
            }
        };
        let f = head.feature_dim(width);
        let weight = Tensor::from_vec(
            normal(&mut rng, classes * f, HEAD_INIT_STD),
            (classes, f),
            device,
        )?;
        Ok(Self {
            head,
            width,
            classes,
            pool,
            norm: BatchNorm1d::new(f, BATCH_NORM_EPS, BATCH_NORM_MOMENTUM, device)?,
            weight: Var::from_tensor(&weight)?,
            bias: Var::zeros(classes, DType::F32, device)?,
        })
    }

    /// Reads a head saved by [`ProbeClassifier::save`] (or the release's state dict of the head
    /// in safetensors form: `norm.*`, `head.*`, `attn_pooling.*`); the width and the number of
    /// classes come from `head.weight`. Missing, misshapen or unexpected tensors are errors.
    pub fn load(path: &Path, head: ProbeHead, device: &Device) -> Result<Self> {
        let checkpoint_error = |reason: String| Error::Checkpoint {
            path: path.to_path_buf(),
            reason,
        };
        if !path.is_file() {
            return Err(Error::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            });
        }
        let mut tensors = candle_core::safetensors::load(path, device)
            .map_err(|e| checkpoint_error(first_line(&e)))?;
        let (classes, f) = tensors
            .get("head.weight")
            .ok_or_else(|| checkpoint_error("no `head.weight`".into()))?
            .dims2()
            .map_err(|_| checkpoint_error("`head.weight` is not a matrix".into()))?;
        let width = match head {
            ProbeHead::Linear if f.is_multiple_of(2) => f / 2,
            ProbeHead::Linear => {
                return Err(checkpoint_error(format!(
                    "`head.weight` has {f} inputs: a cls_patch_concat head has an even number"
                )))
            }
            ProbeHead::AttentionPooling { .. } => f,
        };
        head.check_width(width)?;
        let build = |tensors: &mut HashMap<String, Tensor>| -> Result<Self> {
            let pool = match head {
                ProbeHead::Linear => None,
                ProbeHead::AttentionPooling { heads } => {
                    Some(AttentionPool::from_tensors(width, heads, tensors)?)
                }
            };
            let weight = take(tensors, "head.weight", &[classes, f])?;
            let bias = take(tensors, "head.bias", &[classes])?;
            let tracked = match tensors.remove("norm.num_batches_tracked") {
                Some(t) => t
                    .to_dtype(DType::I64)?
                    .flatten_all()?
                    .to_vec1::<i64>()?
                    .first()
                    .copied()
                    .unwrap_or(0),
                None => 0,
            };
            let norm = BatchNorm1d::from_tensors(
                &take(tensors, "norm.weight", &[f])?,
                &take(tensors, "norm.bias", &[f])?,
                &take(tensors, "norm.running_mean", &[f])?,
                &take(tensors, "norm.running_var", &[f])?,
                tracked,
                BATCH_NORM_EPS,
                BATCH_NORM_MOMENTUM,
            )?;
            if let Some(extra) = tensors.keys().min() {
                return Err(Error::InvalidArgument(format!(
                    "unexpected tensor `{extra}` for a {} head",
                    head.cls_target()
                )));
            }
            Ok(Self {
                head,
                width,
                classes,
                pool,
                norm,
                weight: Var::from_tensor(&weight)?,
                bias: Var::from_tensor(&bias)?,
            })
        };
        build(&mut tensors).map_err(|e| match e {
            Error::InvalidArgument(reason) => checkpoint_error(reason),
            Error::Candle(e) => checkpoint_error(first_line(&e)),
            other => other,
        })
    }

    /// The head type.
    pub fn head(&self) -> ProbeHead {
        self.head
    }

    /// Encoder width C.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// The BatchNorm layer.
    pub fn norm(&self) -> &BatchNorm1d {
        &self.norm
    }

    /// Trainable parameters with the release's names.
    pub fn vars(&self) -> Vec<(String, Var)> {
        let mut vars = Vec::new();
        if let Some(pool) = &self.pool {
            vars.extend(
                pool.vars
                    .iter()
                    .map(|(n, v)| (format!("attn_pooling.{n}"), v.clone())),
            );
        }
        vars.push(("norm.weight".into(), self.norm.weight.clone()));
        vars.push(("norm.bias".into(), self.norm.bias.clone()));
        vars.push(("head.weight".into(), self.weight.clone()));
        vars.push(("head.bias".into(), self.bias.clone()));
        vars
    }

    /// Every tensor of the head's state dict (parameters and BatchNorm buffers, including
    /// `norm.num_batches_tracked` as a 0-d i64), with the release's names.
    pub fn state_dict(&self) -> Result<HashMap<String, Tensor>> {
        let mut map: HashMap<String, Tensor> = self
            .vars()
            .into_iter()
            .map(|(n, v)| (n, v.as_tensor().detach()))
            .collect();
        map.insert("norm.running_mean".into(), self.norm.running_mean.clone());
        map.insert("norm.running_var".into(), self.norm.running_var.clone());
        let device = self.norm.running_mean.device();
        map.insert(
            "norm.num_batches_tracked".into(),
            Tensor::new(self.norm.num_batches_tracked, device)?,
        );
        Ok(map)
    }

    /// Writes [`ProbeClassifier::state_dict`] as safetensors.
    pub fn save(&self, path: &Path) -> Result<()> {
        candle_core::safetensors::save(&self.state_dict()?, path).map_err(|e| {
            Error::InvalidArgument(format!(
                "cannot write {}: {}",
                path.display(),
                first_line(&e)
            ))
        })
    }

    fn check_inputs(&self, inputs: &Tensor) -> Result<()> {
        let c = self.width;
        let ok = match (self.head, inputs.dims()) {
            (ProbeHead::Linear, &[_, f]) => f == 2 * c,
            (ProbeHead::AttentionPooling { .. }, &[_, n, w]) => w == c && n > 0,
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            let expected = match self.head {
                ProbeHead::Linear => format!("[batch, {}] (see head_inputs)", 2 * c),
                ProbeHead::AttentionPooling { .. } => format!("[batch, tokens, {c}]"),
            };
            Err(Error::InvalidArgument(format!(
                "{} head expects inputs {expected}, got {:?}",
                self.head.cls_target(),
                inputs.dims()
            )))
        }
    }

    fn features(&self, inputs: &Tensor) -> Result<Tensor> {
        self.check_inputs(inputs)?;
        let inputs = inputs.to_dtype(DType::F32)?;
        match &self.pool {
            Some(pool) => pool.forward(&inputs),
            None => Ok(inputs),
        }
    }

    fn classify(&self, normed: &Tensor) -> Result<Tensor> {
        Ok(normed
            .matmul(&self.weight.as_tensor().t()?)?
            .broadcast_add(self.bias.as_tensor())?)
    }

    /// Logits `[B, classes]` in training mode (BatchNorm batch statistics; its running
    /// statistics are updated). `inputs` as [`head_inputs`] makes them.
    pub fn forward_train(&mut self, inputs: &Tensor) -> Result<Tensor> {
        let features = self.features(inputs)?;
        let normed = self.norm.forward_train(&features)?;
        self.classify(&normed)
    }

    /// Logits `[B, classes]` in evaluation mode (BatchNorm running statistics).
    pub fn forward(&self, inputs: &Tensor) -> Result<Tensor> {
        let features = self.features(inputs)?;
        let normed = self.norm.forward_eval(&features)?;
        self.classify(&normed)
    }

    /// Top-1 class of each row (evaluation mode, in chunks).
    pub fn predict(&self, inputs: &Tensor) -> Result<Vec<usize>> {
        self.check_inputs(inputs)?;
        let n = inputs.dim(0)?;
        let mut out = Vec::with_capacity(n);
        for start in (0..n).step_by(EVAL_BATCH) {
            let len = EVAL_BATCH.min(n - start);
            let logits = self.forward(&inputs.narrow(0, start, len)?)?;
            let best = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
            out.extend(best.into_iter().map(|i| i as usize));
        }
        Ok(out)
    }
}

/// Reads a probe saved by [`train_probe`] from its output folder: the head
/// ([`PROBE_WEIGHTS`]) and its summary ([`PROBE_JSON`]).
pub fn load_probe(dir: &Path, device: &Device) -> Result<(ProbeClassifier, ProbeSummary)> {
    let json = dir.join(PROBE_JSON);
    let text = std::fs::read_to_string(&json).map_err(|source| Error::Io {
        path: json.clone(),
        source,
    })?;
    let summary: ProbeSummary = serde_json::from_str(&text).map_err(|e| Error::Config {
        path: json.clone(),
        reason: e.to_string(),
    })?;
    let probe = ProbeClassifier::load(&dir.join(PROBE_WEIGHTS), summary.head, device)?;
    if probe.classes() != summary.classes.len() || probe.width() != summary.width {
        return Err(Error::Checkpoint {
            path: dir.join(PROBE_WEIGHTS),
            reason: format!(
                "head of width {} with {} classes, but {} lists width {} and {} classes",
                probe.width(),
                probe.classes(),
                PROBE_JSON,
                summary.width,
                summary.classes.len()
            ),
        });
    }
    Ok((probe, summary))
}

// ---------------------------------------------------------------------------------------------
// Feature extraction
// ---------------------------------------------------------------------------------------------

/// Runs the frozen encoder over images (in batches of `batch`, with a progress bar on stderr)
/// and returns the last block's tokens `[N, 1+T, C]` (f32) and the labels, in input order.
/// Each image is loaded and preprocessed by `preprocess` (for probing: the release's
/// evaluation transform, [`ImageTransform::Classification`]). A file that cannot be decoded
/// stops the extraction with an error naming it.
pub fn extract_features(
    vision: &InternVisionModel,
    images: &[(PathBuf, usize)],
    preprocess: &ImagePreprocessor,
    batch: usize,
) -> Result<(Tensor, Vec<usize>)> {
    extract_with(vision, images, preprocess, batch, &|t| Ok(t.clone()))
}

fn extract_with(
    vision: &InternVisionModel,
    images: &[(PathBuf, usize)],
    preprocess: &ImagePreprocessor,
    batch: usize,
    reduce: &dyn Fn(&Tensor) -> Result<Tensor>,
) -> Result<(Tensor, Vec<usize>)> {
    if images.is_empty() {
        return Err(Error::InvalidArgument(
            "no images to extract features from".into(),
        ));
    }
    if batch == 0 {
        return Err(Error::InvalidArgument(
            "the extraction batch size must be at least 1".into(),
        ));
    }
    let bar = ProgressBar::new(images.len() as u64).with_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} images {elapsed} (eta {eta})")
            .expect("valid progress template")
            .progress_chars("=> "),
    );
    bar.set_message("InternViT features");
    let mut chunks = Vec::new();
    for chunk in images.chunks(batch) {
        let pixels = chunk
            .par_iter()
            .map(|(path, _)| load_rgb(path).and_then(|image| preprocess.pixels(&image)))
            .collect::<Result<Vec<_>>>()?;
        let pixels = Tensor::stack(&pixels, 0)?;
        let out = vision.forward(&pixels, false)?;
        chunks.push(reduce(&out.last_hidden_state.to_dtype(DType::F32)?)?);
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let labels = images.iter().map(|(_, label)| *label).collect();
    Ok((Tensor::cat(&chunks, 0)?, labels))
}

// ---------------------------------------------------------------------------------------------
// Training
// ---------------------------------------------------------------------------------------------

/// Trains a probing head on the frozen encoder of `model_dir` with the image folders
/// `train_folder` and `test_folder` (torchvision `ImageFolder` layout: one sub-folder per class,
/// the same class folders in both), evaluates it, and writes to `out_dir` the head
/// ([`PROBE_WEIGHTS`], the release's tensor names), a [`ProbeSummary`] ([`PROBE_JSON`]), the
/// step records ([`PROBE_METRICS`]) and the loss curve ([`PROBE_LOSS_CURVE`]).
///
/// Features are extracted once per image through the evaluation transform and cached (see the
/// module docs). Errors: invalid options, a folder without class folders or without images,
/// class folders that differ between the splits, fewer training images than one batch, an
/// undecodable image, a model folder that cannot be loaded, a diverging loss.
pub fn train_probe(
    model_dir: &Path,
    train_folder: &Path,
    test_folder: &Path,
    out_dir: &Path,
    options: &ProbeOptions,
) -> Result<ProbeReport> {
    options.validate()?;
    let classes = image_folder_classes(train_folder)?;
    let test_classes = image_folder_classes(test_folder)?;
    if classes != test_classes {
        let only = |a: &[String], b: &[String]| -> Vec<String> {
            a.iter().filter(|c| !b.contains(c)).cloned().collect()
        };
        return Err(Error::InvalidArgument(format!(
            "the class folders of {} and {} differ (only in train: {:?}; only in test: {:?})",
            train_folder.display(),
            test_folder.display(),
            only(&classes, &test_classes),
            only(&test_classes, &classes),
        )));
    }
    let train_images = image_folder(train_folder)?;
    let test_images = image_folder(test_folder)?;
    for (images, folder) in [(&train_images, train_folder), (&test_images, test_folder)] {
        if images.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "{} has class folders but no images",
                folder.display()
            )));
        }
    }
    let steps_per_epoch = train_images.len() / options.batch_size;
    if steps_per_epoch == 0 {
        return Err(Error::InvalidArgument(format!(
            "{} has {} training images, fewer than one batch of {} (the last incomplete batch is dropped): lower batch_size",
            train_folder.display(),
            train_images.len(),
            options.batch_size
        )));
    }

    let device = Device::Cpu;
    let folder = ModelFolder::open(model_dir)?;
    let vision = folder.load_vision(DType::F32, &device)?;
    let width = vision.config().hidden_size;
    options.head.check_width(width)?;
    let image_size = vision.config().image_size;
    let preprocess = ImagePreprocessor::new(ImageTransform::Classification, image_size, None)?;

    let head = options.head;
    let reduce = move |tokens: &Tensor| head_inputs(head, tokens);
    let (train_x, train_y) =
        extract_with(&vision, &train_images, &preprocess, EXTRACT_BATCH, &reduce)?;
    let (test_x, test_y) =
        extract_with(&vision, &test_images, &preprocess, EXTRACT_BATCH, &reduce)?;
    drop(vision);

    let mut probe = ProbeClassifier::new(head, width, classes.len(), options.seed, &device)?;
    let records = fit(&mut probe, &train_x, &train_y, options, steps_per_epoch)?;

    let train_pred = probe.predict(&train_x)?;
    let test_pred = probe.predict(&test_x)?;
    let train_accuracy = accuracy(&train_pred, &train_y);
    let test_accuracy = accuracy(&test_pred, &test_y);
    let mut confusion = vec![vec![0usize; classes.len()]; classes.len()];
    for (&t, &p) in test_y.iter().zip(&test_pred) {
        confusion[t][p] += 1;
    }
    let per_class_recall: Vec<f64> = confusion
        .iter()
        .enumerate()
        .map(|(c, row)| {
            let total: usize = row.iter().sum();
            if total == 0 {
                f64::NAN
            } else {
                row[c] as f64 / total as f64
            }
        })
        .collect();

    std::fs::create_dir_all(out_dir).map_err(|source| Error::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;
    probe.save(&out_dir.join(PROBE_WEIGHTS))?;
    let summary = ProbeSummary {
        cls_target: head.cls_target().into(),
        head,
        width,
        classes: classes.clone(),
        options: options.clone(),
        learning_rate: options.learning_rate(),
        steps: records.len() as u64,
        model_dir: model_dir.to_path_buf(),
        image_size,
        train_images: train_images.len(),
        test_images: test_images.len(),
        train_accuracy,
        test_accuracy,
        per_class_recall: per_class_recall
            .iter()
            .map(|r| r.is_finite().then_some(*r))
            .collect(),
    };
    let json = serde_json::to_string_pretty(&summary)
        .map_err(|e| Error::InvalidArgument(format!("cannot serialise the probe summary: {e}")))?;
    write_file(&out_dir.join(PROBE_JSON), json.as_bytes())?;
    let mut metrics = Vec::new();
    for record in &records {
        serde_json::to_writer(&mut metrics, record)
            .map_err(|e| Error::InvalidArgument(format!("cannot serialise a step record: {e}")))?;
        metrics
            .write_all(b"\n")
            .expect("writing to a Vec cannot fail");
    }
    write_file(&out_dir.join(PROBE_METRICS), &metrics)?;
    save_loss_curve(
        &records,
        &out_dir.join(PROBE_LOSS_CURVE),
        &format!("probe ({})", head.cls_target()),
    )?;

    Ok(ProbeReport {
        classes,
        train_accuracy,
        test_accuracy,
        per_class_recall,
        confusion,
        records,
        test_predictions: test_pred,
    })
}

/// The training loop over cached head inputs.
fn fit(
    probe: &mut ProbeClassifier,
    inputs: &Tensor,
    labels: &[usize],
    options: &ProbeOptions,
    steps_per_epoch: usize,
) -> Result<Vec<StepRecord>> {
    let device = inputs.device().clone();
    let total = (options.epochs * steps_per_epoch) as u64;
    let warmup = (options.warmup_epochs * steps_per_epoch as f64).floor() as u64;
    let peak_lr = options.learning_rate();
    let mut sgd = Sgd::new(options.momentum, options.nesterov, options.weight_decay)?;
    let params = probe.vars();
    // Shuffling draws from its own stream so that it does not depend on the head's init.
    let mut rng = StdRng::seed_from_u64(options.seed ^ 0x9E37_79B9_7F4A_7C15);
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} steps {elapsed} (eta {eta})")
            .expect("valid progress template")
            .progress_chars("=> "),
    );
    bar.set_message(format!("probe {}", probe.head().cls_target()));
    let start = Instant::now();
    let mut records = Vec::with_capacity(total as usize);
    let mut order: Vec<usize> = (0..labels.len()).collect();
    for _epoch in 0..options.epochs {
        order.shuffle(&mut rng);
        for chunk in order.chunks_exact(options.batch_size) {
            let step = records.len() as u64;
            let lr = peak_lr * cosine_with_warmup(step, warmup, total);
            let index: Vec<u32> = chunk.iter().map(|&i| i as u32).collect();
            let index = Tensor::from_vec(index, chunk.len(), &device)?;
            let batch = inputs.index_select(&index, 0)?;
            let targets: Vec<i64> = chunk.iter().map(|&i| labels[i] as i64).collect();
            let logits = probe.forward_train(&batch)?;
            let loss = cross_entropy(&logits, &targets, options.label_smoothing)?;
            let loss_value = loss.to_scalar::<f32>()? as f64;
            if !loss_value.is_finite() {
                return Err(Error::InvalidArgument(format!(
                    "the loss diverged ({loss_value}) at step {}: lower the learning rate ({lr})",
                    step + 1
                )));
            }
            let store = loss.backward()?;
            let mut grads = BTreeMap::new();
            for (name, var) in &params {
                if let Some(g) = store.get(var.as_tensor()) {
                    grads.insert(name.clone(), g.clone());
                }
            }
            let grad_norm = clip_grad_norm(&mut grads, options.clip_grad.unwrap_or(f64::INFINITY))?;
            sgd.step(&params, &grads, lr)?;
            records.push(StepRecord {
                step: step + 1,
                lr,
                loss: loss_value,
                components: BTreeMap::new(),
                grad_norm,
                elapsed_s: start.elapsed().as_secs_f64(),
            });
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    Ok(records)
}

fn accuracy(predicted: &[usize], labels: &[usize]) -> f64 {
    if labels.is_empty() {
        return f64::NAN;
    }
    let right = predicted.iter().zip(labels).filter(|(p, l)| p == l).count();
    right as f64 / labels.len() as f64
}

/// `n` draws of N(0, std²) (Box–Muller).
fn normal(rng: &mut StdRng, n: usize, std: f64) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let u1: f64 = 1.0 - rng.random::<f64>();
            let u2: f64 = rng.random::<f64>();
            (std * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
        })
        .collect()
}

/// Removes `name` from `tensors`, checking its shape; returns it as f32.
fn take(tensors: &mut HashMap<String, Tensor>, name: &str, shape: &[usize]) -> Result<Tensor> {
    let t = tensors
        .remove(name)
        .ok_or_else(|| Error::InvalidArgument(format!("no `{name}`")))?;
    if t.dims() != shape {
        return Err(Error::InvalidArgument(format!(
            "`{name}` has shape {:?}, expected {shape:?}",
            t.dims()
        )));
    }
    Ok(t.to_dtype(DType::F32)?)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn first_line(e: &candle_core::Error) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar_var(v: f32) -> Var {
        Var::from_tensor(&Tensor::new(&[v], &Device::Cpu).unwrap()).unwrap()
    }

    fn value(var: &Var) -> f32 {
        var.as_tensor().to_vec1::<f32>().unwrap()[0]
    }

    fn grads(g: f32) -> BTreeMap<String, Tensor> {
        BTreeMap::from([("p".to_string(), Tensor::new(&[g], &Device::Cpu).unwrap())])
    }

    fn close(a: f32, b: f64) -> bool {
        (a as f64 - b).abs() < 1e-6
    }

    /// p = 1, grads 0.5 then −1, lr 0.1, μ 0.9, by hand with torch's formulas.
    #[test]
    fn sgd_nesterov_matches_hand_computation() {
        let p = scalar_var(1.0);
        let params = vec![("p".to_string(), p.clone())];
        let mut sgd = Sgd::new(0.9, true, 0.0).unwrap();
        // buf = 0.5; d = 0.5 + 0.9·0.5 = 0.95; p = 1 − 0.095.
        sgd.step(&params, &grads(0.5), 0.1).unwrap();
        assert!(close(value(&p), 0.905), "{}", value(&p));
        // buf = 0.9·0.5 − 1 = −0.55; d = −1 + 0.9·(−0.55) = −1.495; p = 0.905 + 0.1495.
        sgd.step(&params, &grads(-1.0), 0.1).unwrap();
        assert!(close(value(&p), 1.0545), "{}", value(&p));
        let buf = sgd.momentum_buffer("p").unwrap().to_vec1::<f32>().unwrap()[0];
        assert!(close(buf, -0.55));
    }

    #[test]
    fn sgd_classic_momentum_and_weight_decay() {
        // Classic momentum: p = 1 − 0.1·0.5 = 0.95; then buf = −0.55, p = 0.95 + 0.055.
        let p = scalar_var(1.0);
        let params = vec![("p".to_string(), p.clone())];
        let mut sgd = Sgd::new(0.9, false, 0.0).unwrap();
        sgd.step(&params, &grads(0.5), 0.1).unwrap();
        assert!(close(value(&p), 0.95));
        sgd.step(&params, &grads(-1.0), 0.1).unwrap();
        assert!(close(value(&p), 1.005));
        // Weight decay 0.1 joins the gradient: d = 0.5 + 0.1·1 = 0.6; Nesterov d = 0.6 + 0.54.
        let p = scalar_var(1.0);
        let params = vec![("p".to_string(), p.clone())];
        let mut sgd = Sgd::new(0.9, true, 0.1).unwrap();
        sgd.step(&params, &grads(0.5), 0.1).unwrap();
        assert!(close(value(&p), 0.886), "{}", value(&p));
        // No momentum: plain SGD.
        let p = scalar_var(1.0);
        let params = vec![("p".to_string(), p.clone())];
        let mut sgd = Sgd::new(0.0, false, 0.0).unwrap();
        sgd.step(&params, &grads(0.5), 0.1).unwrap();
        assert!(close(value(&p), 0.95));
        assert!(sgd.momentum_buffer("p").is_none());
        // A parameter without gradient is skipped.
        sgd.step(&params, &BTreeMap::new(), 0.1).unwrap();
        assert!(close(value(&p), 0.95));
    }

    #[test]
    fn sgd_rejects_bad_settings() {
        assert!(Sgd::new(0.0, true, 0.0).is_err());
        assert!(Sgd::new(1.0, false, 0.0).is_err());
        assert!(Sgd::new(0.9, true, -1.0).is_err());
    }

    /// x = [[1, 2], [3, 6]]: batch mean [2, 4], biased var [1, 4], unbiased [2, 8].
    #[test]
    fn batch_norm_matches_hand_computation() {
        let dev = Device::Cpu;
        let x = Tensor::new(&[[1f32, 2.], [3., 6.]], &dev).unwrap();
        let mut bn = BatchNorm1d::from_tensors(
            &Tensor::new(&[2f32, 0.5], &dev).unwrap(),
            &Tensor::new(&[0.1f32, -0.2], &dev).unwrap(),
            &Tensor::zeros(2, DType::F32, &dev).unwrap(),
            &Tensor::ones(2, DType::F32, &dev).unwrap(),
            0,
            1e-6,
            0.1,
        )
        .unwrap();
        let y = bn.forward_train(&x).unwrap().to_vec2::<f32>().unwrap();
        let s0 = 1.0 / (1.0f64 + 1e-6).sqrt();
        let s1 = 2.0 / (4.0f64 + 1e-6).sqrt();
        let expected = [
            [-2.0 * s0 + 0.1, -0.5 * s1 - 0.2],
            [2.0 * s0 + 0.1, 0.5 * s1 - 0.2],
        ];
        for (row, want) in y.iter().zip(expected) {
            for (&a, b) in row.iter().zip(want) {
                assert!(close(a, b), "{a} vs {b}");
            }
        }
        // running = 0.9·old + 0.1·batch (unbiased variance).
        let rm = bn.running_mean().to_vec1::<f32>().unwrap();
        let rv = bn.running_var().to_vec1::<f32>().unwrap();
        assert!(close(rm[0], 0.2) && close(rm[1], 0.4), "{rm:?}");
        assert!(close(rv[0], 1.1) && close(rv[1], 1.7), "{rv:?}");
        assert_eq!(bn.num_batches_tracked(), 1);
        // Evaluation uses the running statistics.
        let e = bn
            .forward_eval(&Tensor::new(&[[1f32, 2.]], &dev).unwrap())
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let want0 = (1.0 - 0.2) / (1.1f64 + 1e-6).sqrt() * 2.0 + 0.1;
        let want1 = (2.0 - 0.4) / (1.7f64 + 1e-6).sqrt() * 0.5 - 0.2;
        assert!(close(e[0][0], want0) && close(e[0][1], want1), "{e:?}");
        // One row cannot be normalised in training mode; wrong widths are errors.
        assert!(bn
            .forward_train(&Tensor::new(&[[1f32, 2.]], &dev).unwrap())
            .is_err());
        assert!(bn
            .forward_eval(&Tensor::new(&[[1f32, 2., 3.]], &dev).unwrap())
            .is_err());
    }

    /// Gradients of the training-mode BatchNorm: analytic for weight and bias, and the input
    /// gradient against central finite differences (f64).
    #[test]
    fn batch_norm_gradients() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(
            &Tensor::new(
                &[
                    [0.3f64, -1.2, 2.0],
                    [1.5, 0.4, -0.7],
                    [-0.8, 2.2, 0.1],
                    [0.9, -0.3, 1.1],
                ],
                &dev,
            )
            .unwrap(),
        )
        .unwrap();
        let r = Tensor::new(
            &[
                [0.2f64, -1.0, 0.5],
                [1.3, 0.7, -0.4],
                [-0.6, 0.9, 1.1],
                [0.4, -0.2, 0.3],
            ],
            &dev,
        )
        .unwrap();
        let make = || {
            BatchNorm1d::from_tensors(
                &Tensor::new(&[1.5f64, 0.7, -0.4], &dev).unwrap(),
                &Tensor::new(&[0.1f64, 0.2, 0.3], &dev).unwrap(),
                &Tensor::zeros(3, DType::F64, &dev).unwrap(),
                &Tensor::ones(3, DType::F64, &dev).unwrap(),
                0,
                1e-6,
                0.1,
            )
            .unwrap()
        };
        let loss_of = |input: &Tensor, bn: &mut BatchNorm1d| -> Tensor {
            (bn.forward_train(input).unwrap() * &r)
                .unwrap()
                .sum_all()
                .unwrap()
        };
        let mut bn = make();
        let loss = loss_of(x.as_tensor(), &mut bn);
        let store = loss.backward().unwrap();
        // dL/dbias = Σ_rows r; dL/dweight = Σ_rows r·x̂.
        let gb = store
            .get(bn.bias().as_tensor())
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let want_gb = r.sum(0).unwrap().to_vec1::<f64>().unwrap();
        for (a, b) in gb.iter().zip(&want_gb) {
            assert!((a - b).abs() < 1e-9);
        }
        let xs = x.as_tensor();
        let mean = xs.mean_keepdim(0).unwrap();
        let c = xs.broadcast_sub(&mean).unwrap();
        let var = c.sqr().unwrap().mean_keepdim(0).unwrap();
        let xhat = c
            .broadcast_div(&(var + 1e-6).unwrap().sqrt().unwrap())
            .unwrap();
        let want_gw = (xhat * &r)
            .unwrap()
            .sum(0)
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let gw = store
            .get(bn.weight().as_tensor())
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        for (a, b) in gw.iter().zip(&want_gw) {
            assert!((a - b).abs() < 1e-9);
        }
        let gx = store.get(xs).unwrap().to_vec2::<f64>().unwrap();
        let base = xs.to_vec2::<f64>().unwrap();
        let h = 1e-6;
        for i in 0..4 {
            for j in 0..3 {
                let shifted = |delta: f64| {
                    let mut v = base.clone();
                    v[i][j] += delta;
                    let t = Tensor::new(v, &dev).unwrap();
                    loss_of(&t, &mut make()).to_scalar::<f64>().unwrap()
                };
                let numeric = (shifted(h) - shifted(-h)) / (2.0 * h);
                assert!(
                    (gx[i][j] - numeric).abs() < 1e-5,
                    "({i},{j}) {} vs {numeric}",
                    gx[i][j]
                );
            }
        }
    }

    #[test]
    fn linear_inputs_concat_cls_and_patch_mean() {
        let dev = Device::Cpu;
        // B = 1, 1 + 2 tokens, C = 2.
        let tokens = Tensor::new(&[[[1f32, 2.], [3., 4.], [5., 8.]]], &dev).unwrap();
        let x = head_inputs(ProbeHead::Linear, &tokens).unwrap();
        assert_eq!(x.to_vec2::<f32>().unwrap(), vec![vec![1., 2., 4., 6.]]);
        let same = head_inputs(ProbeHead::AttentionPooling { heads: 1 }, &tokens).unwrap();
        assert_eq!(same.dims(), &[1, 3, 2]);
        assert!(head_inputs(ProbeHead::Linear, &tokens.narrow(1, 0, 1).unwrap()).is_err());
    }

    /// The pooling head gives `[B, classes]` logits from `[B, N, C]` tokens, gradients reach
    /// every parameter, and widths that do not fit are errors.
    #[test]
    fn attention_pooling_shapes_and_gradients() {
        let dev = Device::Cpu;
        let mut probe =
            ProbeClassifier::new(ProbeHead::AttentionPooling { heads: 2 }, 4, 3, 7, &dev).unwrap();
        let tokens = Tensor::new(
            &[
                [
                    [0.1f32, 0.5, -0.3, 1.0],
                    [0.7, -0.2, 0.4, 0.0],
                    [1.2, 0.3, -0.8, 0.6],
                ],
                [
                    [-0.5f32, 0.9, 0.2, -0.1],
                    [0.3, 0.3, 1.1, -0.6],
                    [0.0, -0.7, 0.5, 0.2],
                ],
            ],
            &dev,
        )
        .unwrap();
        let logits = probe.forward_train(&tokens).unwrap();
        assert_eq!(logits.dims(), &[2, 3]);
        let loss = cross_entropy(&logits, &[0, 2], 0.1).unwrap();
        let store = loss.backward().unwrap();
        for (name, var) in probe.vars() {
            let g = store.get(var.as_tensor());
            assert!(g.is_some(), "no gradient for {name}");
        }
        assert!(probe.forward(&tokens.narrow(2, 0, 3).unwrap()).is_err());
        assert!(
            ProbeClassifier::new(ProbeHead::AttentionPooling { heads: 3 }, 4, 3, 7, &dev).is_err()
        );
    }

    #[test]
    fn head_init_follows_the_release() {
        let dev = Device::Cpu;
        let probe = ProbeClassifier::new(ProbeHead::Linear, 64, 50, 1, &dev).unwrap();
        let w = probe
            .weight
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let mean = w.iter().map(|&v| v as f64).sum::<f64>() / w.len() as f64;
        let std =
            (w.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / w.len() as f64).sqrt();
        assert!(
            mean.abs() < 1e-3 && (std - 0.01).abs() < 1e-3,
            "mean {mean} std {std}"
        );
        let b = probe.bias.as_tensor().to_vec1::<f32>().unwrap();
        assert!(b.iter().all(|&v| v == 0.0));
        let state = probe.state_dict().unwrap();
        let mut names: Vec<_> = state.keys().cloned().collect();
        names.sort();
        assert_eq!(
            names,
            [
                "head.bias",
                "head.weight",
                "norm.bias",
                "norm.num_batches_tracked",
                "norm.running_mean",
                "norm.running_var",
                "norm.weight"
            ]
        );
    }

    #[test]
    fn options_are_validated() {
        let ok = ProbeOptions::default();
        assert!(ok.validate().is_ok());
        assert!((ok.learning_rate() - 0.025).abs() < 1e-12);
        for bad in [
            ProbeOptions {
                epochs: 0,
                ..ok.clone()
            },
            ProbeOptions {
                batch_size: 1,
                ..ok.clone()
            },
            ProbeOptions {
                lr: Some(0.0),
                ..ok.clone()
            },
            ProbeOptions {
                momentum: 0.0,
                ..ok.clone()
            },
            ProbeOptions {
                label_smoothing: 1.5,
                ..ok.clone()
            },
            ProbeOptions {
                warmup_epochs: -1.0,
                ..ok.clone()
            },
            ProbeOptions {
                clip_grad: Some(0.0),
                ..ok.clone()
            },
            ProbeOptions {
                head: ProbeHead::AttentionPooling { heads: 0 },
                ..ok.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
