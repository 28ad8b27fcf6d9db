//! The training loop shared by every objective: gradient accumulation, clipping, AdamW with the
//! release's weight-decay exclusions and optional layer-wise decay, the cosine schedule with
//! warm-up, JSONL metrics, a loss-curve PNG, a progress bar, and checkpoints in the release
//! format (`config.json` + `model.safetensors` with the released names, loadable by `internvl`
//! and the official code) with the optimizer state beside them, from which a run resumes
//! exactly.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use super::optim::{
    clip_grad_norm, cosine_with_warmup, layer_decay_scale, no_weight_decay, AdamW, AdamWConfig,
    ParamGroup,
};
use super::params::Parameters;
use crate::models::ModelFolder;
use crate::{Error, Result};

/// The recipe of a run (saved with every checkpoint; a resumed run must use the same).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    /// Optimizer steps in the whole run.
    pub steps: u64,
    /// Samples per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step (their gradients are averaged).
    pub accumulation: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Decoupled weight decay (not applied to [`no_weight_decay`] parameters).
    pub weight_decay: f64,
    /// Linear warm-up steps of the cosine schedule.
    pub warmup_steps: u64,
    /// Clip the global gradient norm to this (None: no clipping).
    pub max_grad_norm: Option<f64>,
    /// Seed of the data order and augmentation.
    pub seed: u64,
    /// AdamW β₁, β₂, ε.
    pub adam: AdamWConfig,
    /// Layer-wise learning-rate decay rates (ViT, QLLaMA), spec training.md §4.1.
    pub layer_decay: Option<(f64, f64)>,
    /// Comma-separated `*` patterns of the trainable parameters (`!` excludes).
    pub trainable: String,
    /// Save a checkpoint every this many steps (and always at the end).
    pub save_every: Option<u64>,
    /// Learning-rate factors by `*` name pattern (the first matching pattern applies; on top of
    /// the layer-wise decay), as PyTorch parameter groups with their own `lr`.
    #[serde(default)]
    pub lr_scales: Vec<(String, f64)>,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            steps: 100,
            batch_size: 8,
            accumulation: 1,
            lr: 1e-4,
            weight_decay: 0.05,
            warmup_steps: 10,
            max_grad_norm: Some(1.0),
            seed: 0,
            adam: AdamWConfig::default(),
            layer_decay: None,
            trainable: "*".into(),
            save_every: None,
            lr_scales: Vec::new(),
        }
    }
}

impl TrainOptions {
    /// Checks values that would make the run meaningless.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::InvalidArgument(m.to_string()));
        if self.steps == 0 {
            return bad("steps must be at least 1");
        }
        if self.batch_size == 0 || self.accumulation == 0 {
            return bad("batch size and accumulation must be at least 1");
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad("the learning rate must be positive");
        }
        if self.max_grad_norm.is_some_and(|n| n <= 0.0) {
            return bad("max_grad_norm must be positive");
        }
        Ok(())
    }
}

/// What a checkpoint records besides the weights.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps done.
    pub step: u64,
    /// The recipe.
    pub options: TrainOptions,
    /// The objective's name.
    pub objective: String,
}

/// One optimizer step's numbers (a line of `metrics.jsonl`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRecord {
    /// 1-based step number.
    pub step: u64,
    /// Learning rate used (before per-parameter scales).
    pub lr: f64,
    /// Mean loss over the micro-batches.
    pub loss: f64,
    /// Mean of each named loss component.
    pub components: BTreeMap<String, f64>,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Seconds since the run (or the resumed part) started.
    pub elapsed_s: f64,
}

/// A loss for one micro-batch and its named components.
pub type MicroLoss = (Tensor, Vec<(String, Tensor)>);

/// Runs optimizer steps over a loaded model's trainable parameters.
pub struct Trainer {
    options: TrainOptions,
    objective: String,
    params: Parameters,
    optimizer: AdamW,
    step: u64,
    out_dir: PathBuf,
    started: Instant,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("objective", &self.objective)
            .field("step", &self.step)
            .field("parameters", &self.params.len())
            .finish()
    }
}

/// Parameters of `params` with their optimizer groups under `options`.
fn param_groups(
    params: &Parameters,
    options: &TrainOptions,
    depth: (usize, usize),
) -> Vec<(String, candle_core::Var, ParamGroup)> {
    params
        .vars()
        .into_iter()
        .map(|(name, var)| {
            let weight_decay = if no_weight_decay(&name, var.as_tensor().rank()) {
                0.0
            } else {
                options.weight_decay
            };
            let decay = options.layer_decay.map_or(1.0, |(vit, q)| {
                layer_decay_scale(&name, (depth.0, vit), (depth.1, q))
            });
            let factor = options
                .lr_scales
                .iter()
                .find(|(pattern, _)| super::params::glob_match(pattern, &name))
                .map_or(1.0, |(_, factor)| *factor);
            let lr_scale = decay * factor;
            let group = ParamGroup {
                lr_scale,
                weight_decay,
            };
            (name, var, group)
        })
        .collect()
}

impl Trainer {
    /// A trainer over `params` writing to `out_dir`; `depth` = (ViT layers, QLLaMA layers) for
    /// the layer-wise decay. With `resume_from` (a checkpoint this trainer saved, whose weights
    /// the model was loaded from), the optimizer state and step are restored and the metrics
    /// after that step are dropped.
    pub fn new(
        objective: &str,
        params: Parameters,
        options: TrainOptions,
        depth: (usize, usize),
        out_dir: &Path,
        resume_from: Option<&Path>,
    ) -> Result<Self> {
        options.validate()?;
        if params.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "no parameter matches the trainable patterns `{}`",
                options.trainable
            )));
        }
        std::fs::create_dir_all(out_dir).map_err(|source| Error::Io {
            path: out_dir.to_path_buf(),
            source,
        })?;
        let groups = param_groups(&params, &options, depth);
        let mut optimizer = AdamW::new(groups, options.adam)?;
        let mut step = 0;
        if let Some(dir) = resume_from {
            let state = read_state(dir)?;
            if state.options != options || state.objective != objective {
                return Err(Error::InvalidArgument(format!(
                    "{} was saved by a different recipe (objective `{}`, {:?}); resume with the same options",
                    dir.display(),
                    state.objective,
                    state.options
                )));
            }
            let path = dir.join("optimizer.safetensors");
            let tensors = candle_core::safetensors::load(&path, &Device::Cpu).map_err(|e| {
                Error::InvalidArgument(format!("cannot read {}: {e}", path.display()))
            })?;
            optimizer.load_state(&tensors, state.step)?;
            step = state.step;
            truncate_metrics(&out_dir.join("metrics.jsonl"), step)?;
        }
        Ok(Self {
            options,
            objective: objective.to_string(),
            params,
            optimizer,
            step,
            out_dir: out_dir.to_path_buf(),
            started: Instant::now(),
        })
    }

    /// Steps done so far.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Whether the run is complete.
    pub fn done(&self) -> bool {
        self.step >= self.options.steps
    }

    /// The recipe.
    pub fn options(&self) -> &TrainOptions {
        &self.options
    }

    /// One optimizer step: `micro(i)` gives the loss of micro-batch `i` of this step
    /// (`0..accumulation`); gradients are averaged over them, clipped, and applied with the
    /// scheduled learning rate. Appends the record to `metrics.jsonl`.
    pub fn train_step(
        &mut self,
        mut micro: impl FnMut(u64, usize) -> Result<MicroLoss>,
    ) -> Result<StepRecord> {
        let accumulation = self.options.accumulation;
        let mut grads: BTreeMap<String, Tensor> = BTreeMap::new();
        let mut loss_sum = 0f64;
        let mut components: BTreeMap<String, f64> = BTreeMap::new();
        for i in 0..accumulation {
            let (loss, parts) = micro(self.step, i)?;
            let value = loss.to_dtype(DType::F32)?.to_scalar::<f32>()? as f64;
            if !value.is_finite() {
                return Err(Error::InvalidArgument(format!(
                    "the loss is {value} at step {} (micro-batch {i}): lower the learning rate",
                    self.step + 1
                )));
            }
            loss_sum += value;
            for (name, t) in parts {
                *components.entry(name).or_default() +=
                    t.to_dtype(DType::F32)?.to_scalar::<f32>()? as f64 / accumulation as f64;
            }
            let store = (loss / accumulation as f64)?.backward()?;
            for (name, g) in self.params.gradients(&store)? {
                let summed = match grads.remove(&name) {
                    Some(prev) => (prev + g)?,
                    None => g,
                };
                grads.insert(name, summed);
            }
        }
        let grad_norm = match self.options.max_grad_norm {
            Some(max) => clip_grad_norm(&mut grads, max)?,
            None => clip_grad_norm(&mut grads, f64::INFINITY)?,
        };
        let lr = self.options.lr
            * cosine_with_warmup(self.step, self.options.warmup_steps, self.options.steps);
        self.optimizer.step(&grads, lr)?;
        self.step += 1;
        let record = StepRecord {
            step: self.step,
            lr,
            loss: loss_sum / accumulation as f64,
            components,
            grad_norm,
            elapsed_s: self.started.elapsed().as_secs_f64(),
        };
        self.append_metrics(&record)?;
        Ok(record)
    }

    /// Whether this step should be followed by a checkpoint (every `save_every` and the last).
    pub fn should_save(&self) -> bool {
        self.done()
            || self
                .options
                .save_every
                .is_some_and(|n| self.step.is_multiple_of(n))
    }

    fn append_metrics(&self, record: &StepRecord) -> Result<()> {
        let path = self.out_dir.join("metrics.jsonl");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
        let line = serde_json::to_string(record).expect("records serialise");
        writeln!(file, "{line}").map_err(|source| Error::Io { path, source })
    }

    /// Writes a checkpoint into `dir`: the model in the release format (every tensor of
    /// `source`, the trained ones replaced, as f32), the other files of `source` (config,
    /// tokenizer), `optimizer.safetensors` and `trainer_state.json`; then redraws the
    /// loss curve of the run (`loss.png` in the output folder).
    pub fn save(&self, source: &ModelFolder, dir: &Path) -> Result<()> {
        save_release_model(source, &self.params, dir)?;
        let optimizer = dir.join("optimizer.safetensors");
        candle_core::safetensors::save(&self.optimizer.state_tensors(), &optimizer)?;
        let state = TrainerState {
            step: self.step,
            options: self.options.clone(),
            objective: self.objective.clone(),
        };
        write_json(&dir.join("trainer_state.json"), &state)?;
        let metrics = read_metrics(&self.out_dir.join("metrics.jsonl"))?;
        super::curves::save_loss_curve(&metrics, &self.out_dir.join("loss.png"), &self.objective)
    }
}

impl Trainer {
    /// Saves `<out>/last/` atomically (a new folder renamed over the old one, whose mapped
    /// files stay valid for the running process), plus `<out>/checkpoint-N/` at the
    /// `save_every` steps.
    pub fn save_run(&self, source: &ModelFolder) -> Result<()> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { path, source }
        };
        let staging = self.out_dir.join("last.saving");
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
        }
        self.save(source, &staging)?;
        let last = self.out_dir.join("last");
        if last.exists() {
            std::fs::remove_dir_all(&last).map_err(io(&last))?;
        }
        std::fs::rename(&staging, &last).map_err(io(&last))?;
        if let Some(every) = self.options.save_every {
            if self.step.is_multiple_of(every) {
                self.save(
                    source,
                    &self.out_dir.join(format!("checkpoint-{}", self.step)),
                )?;
            }
        }
        Ok(())
    }

    /// Runs steps until the recipe's last one (or `stop_after`), with a progress bar when
    /// `progress`, saving `last/` at the `save_every` steps and at the end (see
    /// [`Trainer::save_run`]). `micro` is as in [`Trainer::train_step`].
    pub fn run(
        &mut self,
        source: &ModelFolder,
        stop_after: Option<u64>,
        progress: bool,
        mut micro: impl FnMut(u64, usize) -> Result<MicroLoss>,
    ) -> Result<Vec<StepRecord>> {
        let bar = progress.then(|| self.progress_bar());
        let stop = self.options.steps.min(stop_after.unwrap_or(u64::MAX));
        let mut records = Vec::new();
        while self.step < stop {
            let record = self.train_step(&mut micro)?;
            if let Some(bar) = &bar {
                bar.set_position(record.step);
                bar.set_message(format!("loss {:.4} lr {:.2e}", record.loss, record.lr));
            }
            if self.should_save() || self.step == stop {
                self.save_run(source)?;
            }
            records.push(record);
        }
        if let Some(bar) = bar {
            bar.finish();
        }
        Ok(records)
    }

    /// A progress bar over the run's steps, at the current step.
    pub fn progress_bar(&self) -> indicatif::ProgressBar {
        let bar = indicatif::ProgressBar::new(self.options.steps);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} steps ({eta}) {msg}",
            )
            .expect("valid template"),
        );
        bar.set_prefix(self.objective.clone());
        bar.set_position(self.step);
        bar
    }
}

/// What every training run takes (the objective-specific settings live beside it).
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// The model folder to start from.
    pub model: PathBuf,
    /// The training data (JSON Lines).
    pub data: PathBuf,
    /// Folder the data's image paths are relative to (default: the data file's folder).
    pub image_root: Option<PathBuf>,
    /// Output folder: `metrics.jsonl`, `loss.png`, `last/` (and `checkpoint-N/`).
    pub out_dir: PathBuf,
    /// The recipe.
    pub options: TrainOptions,
    /// Continue from `out_dir/last`.
    pub resume: bool,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// Stop (after saving) once this many steps are done, to be resumed later.
    pub stop_after: Option<u64>,
}

impl RunSpec {
    /// The model folder to load: `model`, or `out_dir/last` when resuming (an error when
    /// there is no checkpoint there).
    pub fn start_folder(&self) -> Result<PathBuf> {
        if !self.resume {
            return Ok(self.model.clone());
        }
        let last = self.out_dir.join("last");
        if !last.join("trainer_state.json").is_file() {
            return Err(Error::InvalidArgument(format!(
                "nothing to resume: {} has no trainer_state.json",
                last.display()
            )));
        }
        Ok(last)
    }

    /// The folder the data's image paths are relative to.
    pub fn data_root(&self) -> PathBuf {
        self.image_root
            .clone()
            .or_else(|| self.data.parent().map(Path::to_path_buf))
            .unwrap_or_default()
    }

    /// A trainer for this run over `params` (resuming from `start` when the run resumes).
    pub fn trainer(
        &self,
        objective: &str,
        params: Parameters,
        depth: (usize, usize),
        start: &Path,
    ) -> Result<Trainer> {
        Trainer::new(
            objective,
            params,
            self.options.clone(),
            depth,
            &self.out_dir,
            self.resume.then_some(start),
        )
    }

    /// The sample indices of micro-batch `micro` of step `step` over `len` samples, in this
    /// run's seeded order ([`batch_indices`]).
    pub fn batch(&self, len: usize, step: u64, micro: usize) -> Vec<usize> {
        batch_indices(len, self.options.seed, step, micro, &self.options)
    }

    /// [`Trainer::run`] with this run's stop and progress settings.
    pub fn drive(
        &self,
        trainer: &mut Trainer,
        source: &ModelFolder,
        micro: impl FnMut(u64, usize) -> Result<MicroLoss>,
    ) -> Result<Vec<StepRecord>> {
        trainer.run(source, self.stop_after, self.progress, micro)
    }
}

/// Writes `source`'s tensors (with the trained values of `params`) and its other files to
/// `dir` in the release layout.
pub fn save_release_model(source: &ModelFolder, params: &Parameters, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let trained = params.vars();
    let checkpoint = source.checkpoint();
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for name in checkpoint.names() {
        let tensor = match trained.get(&name) {
            Some(var) => var.as_tensor().detach(),
            // Untrained base weights stay in the file the config names (`qllama_gguf`,
            // `llm_gguf`).
            None if checkpoint.is_base(&name) => continue,
            None => checkpoint.tensor(&name, &Device::Cpu)?,
        };
        tensors.insert(name, tensor.to_dtype(DType::F32)?.to_device(&Device::Cpu)?);
    }
    crate::models::checkpoint::save_safetensors(&tensors, &dir.join("model.safetensors"))?;
    copy_model_files(source.dir(), dir)
}

/// Writes `source` to `dir` with its own weights (not base weights taken from a GGUF) stored as
/// `dtype`, and its other files (GGUF references re-pointed from `dir`): a trained folder made
/// small for shipping (`internvl train export`). Training state files are not copied.
///
/// Fails when `dir` cannot be written or a tensor cannot be read.
pub fn export_model(source: &ModelFolder, dtype: DType, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let checkpoint = source.checkpoint();
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for name in checkpoint.names() {
        if checkpoint.is_base(&name) {
            continue;
        }
        let tensor = checkpoint.tensor(&name, &Device::Cpu)?;
        tensors.insert(name, tensor.to_dtype(dtype)?);
    }
    crate::models::checkpoint::save_safetensors(&tensors, &dir.join("model.safetensors"))?;
    copy_model_files(source.dir(), dir)
}

/// Copies the non-weight files of a model folder (config, tokenizer, preprocessor, code).
fn copy_model_files(from: &Path, to: &Path) -> Result<()> {
    if from == to {
        return Ok(());
    }
    let entries = std::fs::read_dir(from).map_err(|source| Error::Io {
        path: from.to_path_buf(),
        source,
    })?;
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let weights = name.ends_with(".safetensors")
            || name == "model.safetensors.index.json"
            || name == "optimizer.safetensors"
            || name == "trainer_state.json";
        if name == "config.json" {
            copy_config(&path, to)?;
        } else if path.is_file() && !weights {
            std::fs::copy(&path, to.join(&name)).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
        }
    }
    Ok(())
}

/// Copies `config.json`, re-pointing a relative `qllama_gguf` / `llm_gguf` from the new folder.
fn copy_config(path: &Path, to: &Path) -> Result<()> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut config: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Config {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    for key in [
        crate::models::folder::QLLAMA_GGUF_KEY,
        crate::models::folder::LLM_GGUF_KEY,
    ] {
        if let Some(gguf) = config.get(key).and_then(|v| v.as_str()) {
            let from = path.parent().unwrap_or(Path::new(".")).join(gguf);
            config[key] = serde_json::Value::String(super::init::relative_path(&from, to)?);
        }
    }
    write_json(&to.join("config.json"), &config)
}

/// The trainer state of a checkpoint folder.
pub fn read_state(dir: &Path) -> Result<TrainerState> {
    let path = dir.join("trainer_state.json");
    let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
        path: path.clone(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| Error::Config {
        path,
        reason: e.to_string(),
    })
}

/// Writes `value` as pretty JSON to `path`.
pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("serialisable");
    std::fs::write(path, text).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The records of a `metrics.jsonl` (none when it does not exist).
pub fn read_metrics(path: &Path) -> Result<Vec<StepRecord>> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(Vec::new());
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|e| Error::Config {
                path: path.to_path_buf(),
                reason: format!("line {}: {e}", i + 1),
            })
        })
        .collect()
}

/// Drops the records after `step` (a resumed run rewrites them).
fn truncate_metrics(path: &Path, step: u64) -> Result<()> {
    let kept: Vec<StepRecord> = read_metrics(path)?
        .into_iter()
        .filter(|r| r.step <= step)
        .collect();
    let text: String = kept
        .iter()
        .map(|r| serde_json::to_string(r).expect("records serialise") + "\n")
        .collect();
    std::fs::write(path, text).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The sample indices of micro-batch `micro` of optimizer step `step` (0-based) over a dataset
/// of `len` samples: consecutive slices of a fresh seeded permutation per epoch, so that a
/// resumed run sees the same order as an uninterrupted one.
pub fn batch_indices(
    len: usize,
    seed: u64,
    step: u64,
    micro: usize,
    options: &TrainOptions,
) -> Vec<usize> {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let per_step = (options.batch_size * options.accumulation) as u64;
    let first = step * per_step + (micro * options.batch_size) as u64;
    let mut cached: Option<(u64, Vec<usize>)> = None;
    (first..first + options.batch_size as u64)
        .map(|k| {
            let (epoch, position) = (k / len as u64, (k % len as u64) as usize);
            if cached.as_ref().is_none_or(|(e, _)| *e != epoch) {
                let mut order: Vec<usize> = (0..len).collect();
                let mut rng = rand::rngs::StdRng::seed_from_u64(
                    seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                );
                order.shuffle(&mut rng);
                cached = Some((epoch, order));
            }
            cached.as_ref().expect("set above").1[position]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    /// Two micro-batches average their gradients: L = mean over micro-batches of (w·x_i)².
    #[test]
    fn accumulation_averages_micro_batch_gradients() {
        let w = Var::new(&[1.0f32, -1.0], &Device::Cpu).unwrap();
        let params = Parameters::from_vars(BTreeMap::from([("w".to_string(), w.clone())]));
        let options = TrainOptions {
            steps: 1,
            batch_size: 1,
            accumulation: 2,
            lr: 0.1,
            weight_decay: 0.0,
            warmup_steps: 0,
            max_grad_norm: None,
            ..TrainOptions::default()
        };
        let dir = std::env::temp_dir().join(format!("internvl-trainer-{}", std::process::id()));
        let mut trainer = Trainer::new("test", params, options, (0, 0), &dir, None).unwrap();
        let xs = [[2.0f32, 0.0], [0.0, 3.0]];
        let record = trainer
            .train_step(|_, i| {
                let x = Tensor::new(&xs[i], &Device::Cpu).unwrap();
                let loss = (w.as_tensor() * x)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .sqr()
                    .unwrap();
                Ok((loss, Vec::new()))
            })
            .unwrap();
        // dL0/dw = 2(w·x0)x0 = (8, 0); dL1/dw = 2(w·x1)x1 = 2·(−3)·(0, 3) = (0, −18) → mean (4, −9).
        assert!((record.grad_norm - (16f64 + 81.0).sqrt()).abs() < 1e-5);
        assert!((record.loss - (4.0 + 9.0) / 2.0).abs() < 1e-6);
        // First AdamW step moves each weight by lr against the gradient's sign.
        let got = w.as_tensor().to_vec1::<f32>().unwrap();
        assert!(
            (got[0] - 0.9).abs() < 1e-5 && (got[1] + 0.9).abs() < 1e-5,
            "{got:?}"
        );
        let metrics = read_metrics(&dir.join("metrics.jsonl")).unwrap();
        assert_eq!(metrics.len(), 1);
        std::fs::remove_dir_all(dir).ok();
    }

    /// `lr_scales`: the first matching pattern's factor, times the layer-wise decay.
    #[test]
    fn learning_rate_factors_follow_the_first_matching_pattern() {
        let var = || Var::new(&[1.0f32], &Device::Cpu).unwrap();
        let names = [
            "query_tokens",
            "qllama.model.layers.0.cross_attn.q_proj.weight",
            "itm_head.weight",
        ];
        let params = Parameters::from_vars(names.iter().map(|n| (n.to_string(), var())).collect());
        let options = TrainOptions {
            lr_scales: vec![
                ("query_tokens".into(), 10.0),
                ("*cross_attn*".into(), 3.0),
                ("*".into(), 0.5),
            ],
            layer_decay: Some((1.0, 0.5)),
            ..TrainOptions::default()
        };
        let scales: BTreeMap<String, f64> = param_groups(&params, &options, (1, 2))
            .into_iter()
            .map(|(name, _, group)| (name, group.lr_scale))
            .collect();
        let decay = |name: &str| layer_decay_scale(name, (1, 1.0), (2, 0.5));
        assert_eq!(scales["query_tokens"], 10.0 * decay("query_tokens"));
        assert_eq!(scales[names[1]], 3.0 * decay(names[1]));
        assert_eq!(scales["itm_head.weight"], 0.5);
    }
}
