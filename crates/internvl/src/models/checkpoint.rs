//! Safetensors checkpoints as OpenGVLab publishes them: one `model.safetensors` or shards listed in
//! `model.safetensors.index.json`, memory-mapped, with transformers "-hf" names mapped back to the
//! released names through one table, and every tensor accounted for (missing, unexpected, or of the
//! wrong shape is an error that names it).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use crate::{Error, Result};

/// Writes `tensors` to a safetensors file with the `{"format": "pt"}` header metadata that
/// transformers' `save_pretrained` writes: its `from_pretrained` (4.37, the release's version)
/// fails on a file without it, so every checkpoint we write for the official code carries it.
///
/// Fails with [`Error::Io`] naming the path when the file cannot be written.
pub fn save_safetensors(tensors: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(tensors.iter(), Some(metadata), path).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })
}

/// Where the tensor with a given released name is stored.
#[derive(Debug, Clone)]
enum Source {
    /// Under another (or the same) name.
    Stored(String),
    /// As row blocks of several stored tensors (the "-hf" split of a fused `qkv`).
    RowConcat(Vec<String>),
    /// Held in memory: base weights read from another file (see [`Checkpoint::add_base`]).
    Memory(Tensor),
}

/// Called with every tensor a model takes from the checkpoint (released name, loaded tensor); what
/// it returns is what the model gets. Training uses it to hand out trainable variables.
pub type TensorHook = Arc<dyn Fn(&str, Tensor) -> candle_core::Result<Tensor> + Send + Sync>;

/// An opened checkpoint folder.
pub struct Checkpoint {
    dir: PathBuf,
    tensors: MmapedSafetensors,
    /// Released name -> storage.
    sources: BTreeMap<String, Source>,
    /// Released names handed out to a model so far.
    used: Mutex<BTreeSet<String>>,
    /// See [`Checkpoint::set_tensor_hook`].
    hook: Mutex<Option<TensorHook>>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("dir", &self.dir)
            .field("tensors", &self.sources.len())
            .finish()
    }
}

/// The safetensors files of a model folder: the shards of the index if there is one, else
/// `model.safetensors`.
pub fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = std::fs::read_to_string(&index).map_err(|source| Error::Io {
            path: index.clone(),
            source,
        })?;
        let parsed: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::Checkpoint {
                path: index.clone(),
                reason: format!("not valid JSON: {e}"),
            })?;
        let weight_map = parsed
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| Error::Checkpoint {
                path: index.clone(),
                reason: "no `weight_map` object".into(),
            })?;
        let shards: BTreeSet<&str> = weight_map.values().filter_map(|v| v.as_str()).collect();
        let files: Vec<PathBuf> = shards.iter().map(|s| dir.join(s)).collect();
        if let Some(missing) = files.iter().find(|f| !f.is_file()) {
            return Err(Error::Checkpoint {
                path: index,
                reason: format!("shard {} is missing", missing.display()),
            });
        }
        return Ok(files);
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    Err(Error::Checkpoint {
        path: dir.to_path_buf(),
        reason: "no model.safetensors or model.safetensors.index.json".into(),
    })
}

impl Checkpoint {
    /// Memory-maps the safetensors files of `dir` and indexes their tensors under the released names.
    pub fn open(dir: &Path) -> Result<Arc<Self>> {
        let files = safetensors_files(dir)?;
        for file in &files {
            check_safetensors_header(file)?;
        }
        // SAFETY: the files are mapped read-only; like every mmap-based loader we assume nobody
        // truncates them while the model is alive.
        let tensors =
            unsafe { MmapedSafetensors::multi(&files) }.map_err(|e| Error::Checkpoint {
                path: dir.to_path_buf(),
                reason: format!("cannot map safetensors: {e}"),
            })?;
        let stored: Vec<String> = tensors.tensors().into_iter().map(|(n, _)| n).collect();
        Ok(Arc::new(Self {
            dir: dir.to_path_buf(),
            sources: released_names(&stored),
            tensors,
            used: Mutex::new(BTreeSet::new()),
            hook: Mutex::new(None),
        }))
    }

    /// The folder this checkpoint was read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether a tensor with this released name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.sources.contains_key(name)
    }

    /// Sets (or clears) the hook that every tensor handed to a model from now on passes through.
    pub fn set_tensor_hook(&self, hook: Option<TensorHook>) {
        if let Ok(mut slot) = self.hook.lock() {
            *slot = hook;
        }
    }

    /// A [`VarBuilder`] that serves tensors by released name, converted to `dtype` on `device`.
    pub fn var_builder(self: &Arc<Self>, dtype: DType, device: &Device) -> VarBuilder<'static> {
        let backend: Box<dyn SimpleBackend> = Box::new(Backend(self.clone()));
        VarBuilder::from_backend(backend, dtype, device.clone())
    }

    /// Number of stored tensors per stored dtype (e.g. `{"bf16": 42}`).
    pub fn stored_dtypes(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for (_, view) in self.tensors.tensors() {
            *counts
                .entry(format!("{:?}", view.dtype()).to_lowercase())
                .or_insert(0) += 1;
        }
        counts
    }

    /// Number of scalar parameters stored under released names starting with `prefix`.
    pub fn parameter_count(&self, prefix: &str) -> Result<usize> {
        let mut total = 0;
        for (name, source) in self.sources.range(prefix.to_string()..) {
            if !name.starts_with(prefix) {
                break;
            }
            total += match source {
                Source::Stored(s) => self.tensors.get(s)?.shape().iter().product::<usize>(),
                Source::RowConcat(parts) => parts
                    .iter()
                    .map(|s| Ok(self.tensors.get(s)?.shape().iter().product::<usize>()))
                    .sum::<Result<usize>>()?,
                Source::Memory(t) => t.elem_count(),
            };
        }
        Ok(total)
    }

    /// Fails with the list of tensors under `prefix` that no model component consumed: a checkpoint
    /// with tensors we do not understand would otherwise give silently wrong results.
    pub fn ensure_all_used(&self, prefix: &str) -> Result<()> {
        let used = self.used.lock().expect("checkpoint usage lock poisoned");
        let unexpected: Vec<&str> = self
            .sources
            .keys()
            .filter(|n| n.starts_with(prefix) && !used.contains(*n))
            .map(|n| n.as_str())
            .collect();
        if unexpected.is_empty() {
            return Ok(());
        }
        let shown = unexpected
            .iter()
            .take(5)
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>();
        let more = unexpected.len().saturating_sub(5);
        Err(Error::Checkpoint {
            path: self.dir.clone(),
            reason: format!(
                "unexpected tensor{} {}{} (does config.json match the weights?)",
                if unexpected.len() > 1 { "s" } else { "" },
                shown.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            ),
        })
    }

    /// Adds base weights under released names that the safetensors files do not hold (the
    /// files' own tensors win). Returns how many were added.
    pub fn add_base(self: &mut Arc<Self>, tensors: HashMap<String, Tensor>) -> Result<usize> {
        let this = Arc::get_mut(self).ok_or_else(|| {
            Error::InvalidArgument(
                "base weights must be added before the checkpoint is shared".into(),
            )
        })?;
        let mut added = 0;
        for (name, tensor) in tensors {
            if let std::collections::btree_map::Entry::Vacant(slot) = this.sources.entry(name) {
                slot.insert(Source::Memory(tensor));
                added += 1;
            }
        }
        Ok(added)
    }

    /// Whether `name` comes from base weights added with [`Checkpoint::add_base`].
    pub fn is_base(&self, name: &str) -> bool {
        matches!(self.sources.get(name), Some(Source::Memory(_)))
    }

    /// Every released tensor name.
    pub fn names(&self) -> Vec<String> {
        self.sources.keys().cloned().collect()
    }

    /// The stored tensor with this released name (stored dtype), without marking it used.
    pub fn tensor(&self, name: &str, device: &Device) -> Result<Tensor> {
        let source = self.sources.get(name).ok_or_else(|| Error::Checkpoint {
            path: self.dir.clone(),
            reason: format!("missing tensor `{name}`"),
        })?;
        let tensor = match source {
            Source::Stored(stored) => self.tensors.load(stored, device)?,
            Source::RowConcat(parts) => {
                let parts = parts
                    .iter()
                    .map(|p| self.tensors.load(p, device))
                    .collect::<candle_core::Result<Vec<_>>>()?;
                Tensor::cat(&parts, 0)?
            }
            Source::Memory(t) => t.to_device(device)?,
        };
        Ok(tensor)
    }

    fn load(&self, name: &str, device: &Device) -> candle_core::Result<Option<Tensor>> {
        if !self.sources.contains_key(name) {
            return Ok(None);
        }
        let tensor = self
            .tensor(name, device)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        self.used
            .lock()
            .expect("checkpoint usage lock poisoned")
            .insert(name.to_string());
        Ok(Some(tensor))
    }
}

/// Rejects files that are not safetensors before mapping them, with a message naming the file.
fn check_safetensors_header(file: &Path) -> Result<()> {
    use std::io::Read;
    let bad = |reason: String| Error::Checkpoint {
        path: file.to_path_buf(),
        reason,
    };
    let mut handle = std::fs::File::open(file).map_err(|source| Error::Io {
        path: file.to_path_buf(),
        source,
    })?;
    let file_len = handle.metadata().map(|m| m.len()).unwrap_or(0);
    let mut len = [0u8; 8];
    handle
        .read_exact(&mut len)
        .map_err(|_| bad("file is too short to be safetensors".into()))?;
    let header_len = u64::from_le_bytes(len);
    if header_len.saturating_add(8) > file_len {
        return Err(bad(format!(
            "not a safetensors file or truncated (header of {header_len} bytes, file of {file_len})"
        )));
    }
    Ok(())
}

struct Backend(Arc<Checkpoint>);

/// A candle error without the backtrace that `bail!` attaches under RUST_BACKTRACE: these
/// messages end up in one-line user-facing errors.
fn plain_error(message: String) -> candle_core::Error {
    candle_core::Error::Msg(message)
}

impl SimpleBackend for Backend {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _init: candle_nn::Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let tensor = self.get_unchecked(name, dtype, device)?;
        if tensor.shape() != &shape {
            return Err(plain_error(format!(
                "tensor `{name}` has shape {:?}, expected {:?}",
                tensor.dims(),
                shape.dims()
            )));
        }
        let hook = self.0.hook.lock().ok().and_then(|h| h.clone());
        match hook {
            Some(hook) => hook(name, tensor),
            None => Ok(tensor),
        }
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        match self.0.load(name, device)? {
            Some(t) => t.to_dtype(dtype),
            None => Err(plain_error(format!("missing tensor `{name}`"))),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.contains(name)
    }
}

/// Maps the stored names to released (remote-code) names. Names in the released layout map to
/// themselves; transformers-native ("-hf") names go through [`hf_vision_name`].
fn released_names(stored: &[String]) -> BTreeMap<String, Source> {
    let mut sources = BTreeMap::new();
    let mut fused: HashMap<String, [Option<String>; 3]> = HashMap::new();
    for name in stored {
        match hf_vision_name(name) {
            Some((released, Some(part))) => {
                fused.entry(released).or_default()[part] = Some(name.clone());
            }
            Some((released, None)) => {
                sources.insert(released, Source::Stored(name.clone()));
            }
            None => {
                sources.insert(name.clone(), Source::Stored(name.clone()));
            }
        }
    }
    for (released, parts) in fused {
        match parts {
            [Some(q), Some(k), Some(v)] => {
                sources.insert(released, Source::RowConcat(vec![q, k, v]));
            }
            // An incomplete q/k/v triple stays visible under its own names, so that it is reported.
            parts => {
                for p in parts.into_iter().flatten() {
                    sources.insert(p.clone(), Source::Stored(p));
                }
            }
        }
    }
    sources
}

/// The "-hf" (transformers `internvl`) → released renaming table for the vision tower.
const HF_VISION_RENAMES: &[(&str, &str)] = &[
    ("embeddings.cls_token", "embeddings.class_embedding"),
    (
        "embeddings.position_embeddings",
        "embeddings.position_embedding",
    ),
    (
        "embeddings.patch_embeddings.projection.",
        "embeddings.patch_embedding.",
    ),
    ("encoder.layer.", "encoder.layers."),
    (".attention.projection_layer.", ".attn.proj."),
    (".attention.q_norm.", ".attn.q_norm."),
    (".attention.k_norm.", ".attn.k_norm."),
    (".layernorm_before.", ".norm1."),
    (".layernorm_after.", ".norm2."),
    (".lambda_1", ".ls1"),
    (".lambda_2", ".ls2"),
];

/// The released name of a "-hf" vision-tower tensor, and for the split `q/k/v_proj` tensors the
/// part index (0, 1, 2) in the fused `attn.qkv` they come from. `None` for other names.
fn hf_vision_name(name: &str) -> Option<(String, Option<usize>)> {
    let rest = name
        .strip_prefix("model.vision_tower.")
        .or_else(|| name.strip_prefix("vision_tower."))?;
    let mut released = format!("vision_model.{rest}");
    for (from, to) in HF_VISION_RENAMES {
        released = released.replace(from, to);
    }
    for (part, proj) in ["q_proj", "k_proj", "v_proj"].iter().enumerate() {
        let needle = format!(".attention.{proj}.");
        if released.contains(&needle) {
            return Some((released.replace(&needle, ".attn.qkv."), Some(part)));
        }
    }
    Some((released, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_names_map_to_released_names() {
        let cases = [
            (
                "vision_tower.embeddings.cls_token",
                "vision_model.embeddings.class_embedding",
            ),
            (
                "model.vision_tower.embeddings.patch_embeddings.projection.weight",
                "vision_model.embeddings.patch_embedding.weight",
            ),
            (
                "model.vision_tower.encoder.layer.3.attention.projection_layer.bias",
                "vision_model.encoder.layers.3.attn.proj.bias",
            ),
            (
                "vision_tower.encoder.layer.0.lambda_2",
                "vision_model.encoder.layers.0.ls2",
            ),
            (
                "vision_tower.encoder.layer.1.layernorm_before.weight",
                "vision_model.encoder.layers.1.norm1.weight",
            ),
        ];
        for (hf, released) in cases {
            assert_eq!(
                hf_vision_name(hf),
                Some((released.to_string(), None)),
                "{hf}"
            );
        }
        assert_eq!(
            hf_vision_name("vision_tower.encoder.layer.2.attention.k_proj.bias"),
            Some((
                "vision_model.encoder.layers.2.attn.qkv.bias".to_string(),
                Some(1)
            ))
        );
        assert_eq!(hf_vision_name("language_model.lm_head.weight"), None);
    }

    #[test]
    fn split_qkv_is_fused_in_order() {
        let stored: Vec<String> = ["v_proj", "q_proj", "k_proj"]
            .iter()
            .map(|p| format!("vision_tower.encoder.layer.0.attention.{p}.weight"))
            .collect();
        let sources = released_names(&stored);
        match &sources["vision_model.encoder.layers.0.attn.qkv.weight"] {
            Source::RowConcat(parts) => {
                assert!(parts[0].contains("q_proj") && parts[1].contains("k_proj"));
                assert!(parts[2].contains("v_proj"));
            }
            other => panic!("expected a fused source, got {other:?}"),
        }
    }
}
