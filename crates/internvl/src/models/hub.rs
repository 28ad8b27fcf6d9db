//! Model location: a local folder, or a Hugging Face hub id resolved in the standard local hub cache
//! (`HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`; layout
//! `models--ORG--NAME/{refs/REVISION, snapshots/COMMIT/...}`) and downloaded with hf-hub when the
//! files are not cached and we are allowed online.

use std::path::{Path, PathBuf};

use hf_hub::{Cache, Repo, RepoType};

use crate::models::checkpoint::safetensors_files;
use crate::{Error, Result};

/// Files a model folder may have besides its weights; fetched when the hub has them.
const OPTIONAL_FILES: &[&str] = &[
    "preprocessor_config.json",
    "generation_config.json",
    "tokenizer.model",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
];

/// How a hub id may be resolved.
#[derive(Debug, Clone, Default)]
pub struct HubOptions {
    /// Never touch the network (also implied by `HF_HUB_OFFLINE=1`).
    pub offline: bool,
    /// Branch, tag or commit (default `main`); `ORG/NAME@REV` in the id overrides it.
    pub revision: Option<String>,
    /// Cache folder (default: from the environment, see [`default_cache_dir`]).
    pub cache_dir: Option<PathBuf>,
}

/// The hub cache folder from the environment, as `huggingface_hub` computes it.
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HF_HUB_CACHE").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(home) = std::env::var_os("HF_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home).join("hub");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".cache").join("huggingface").join("hub")
}

/// Whether `HF_HUB_OFFLINE` asks for offline mode (`1`, `true`, `yes`, `on`).
pub fn offline_from_env() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
        .unwrap_or(false)
}

/// Resolves `model` (a local folder, or a hub id `ORG/NAME[@REVISION]`) to a folder holding
/// `config.json` and the weights.
pub fn resolve_model(model: &str, options: &HubOptions) -> Result<PathBuf> {
    let local = Path::new(model);
    if local.is_dir() {
        return Ok(local.to_path_buf());
    }
    let (id, revision) = split_revision(model, options.revision.as_deref());
    if !looks_like_hub_id(id) {
        return Err(Error::ModelNotFound {
            model: model.to_string(),
            reason: "no such folder, and not a hub id of the form ORG/NAME".into(),
        });
    }
    let cache_dir = options.cache_dir.clone().unwrap_or_else(default_cache_dir);
    if let Some(folder) = cached_snapshot(&cache_dir, id, revision) {
        return Ok(folder);
    }
    if options.offline || offline_from_env() {
        return Err(Error::ModelNotFound {
            model: model.to_string(),
            reason: format!(
                "offline, and revision `{revision}` with config.json and weights is not in the hub cache {}",
                cache_dir.display()
            ),
        });
    }
    download(&cache_dir, id, revision).map_err(|reason| Error::ModelNotFound {
        model: model.to_string(),
        reason,
    })
}

fn split_revision<'a>(model: &'a str, default: Option<&'a str>) -> (&'a str, &'a str) {
    match model.split_once('@') {
        Some((id, rev)) => (id, rev),
        None => (model, default.unwrap_or("main")),
    }
}

fn looks_like_hub_id(id: &str) -> bool {
    let mut parts = id.split('/');
    let ok = |p: Option<&str>| {
        p.is_some_and(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
    };
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

/// The snapshot folder of `id` at `revision` when its config and every weight file are cached.
fn cached_snapshot(cache_dir: &Path, id: &str, revision: &str) -> Option<PathBuf> {
    let repo = Cache::new(cache_dir.to_path_buf()).repo(Repo::with_revision(
        id.to_string(),
        RepoType::Model,
        revision.to_string(),
    ));
    // A revision given as a commit hash has no ref file: look at the snapshot directly.
    let config = repo.get("config.json").or_else(|| {
        let direct = cache_dir
            .join(format!("models--{}", id.replace('/', "--")))
            .join("snapshots")
            .join(revision)
            .join("config.json");
        direct.is_file().then_some(direct)
    })?;
    let folder = config.parent()?.to_path_buf();
    safetensors_files(&folder).ok().map(|_| folder)
}

fn download(cache_dir: &Path, id: &str, revision: &str) -> std::result::Result<PathBuf, String> {
    let api = hf_hub::api::sync::ApiBuilder::new()
        .with_cache_dir(cache_dir.to_path_buf())
        .with_progress(true)
        .build()
        .map_err(|e| format!("cannot start the hub client: {e}"))?;
    let repo = api.repo(Repo::with_revision(
        id.to_string(),
        RepoType::Model,
        revision.to_string(),
    ));
    let config = repo
        .get("config.json")
        .map_err(|e| format!("downloading config.json: {e}"))?;
    let folder = config
        .parent()
        .ok_or("hub cache path has no parent")?
        .to_path_buf();
    match repo.get("model.safetensors.index.json") {
        Ok(index) => {
            let text = std::fs::read_to_string(&index).map_err(|e| e.to_string())?;
            let parsed: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| e.to_string())?;
            let mut shards: Vec<&str> = parsed["weight_map"]
                .as_object()
                .ok_or("index has no weight_map")?
                .values()
                .filter_map(|v| v.as_str())
                .collect();
            shards.sort_unstable();
            shards.dedup();
            for shard in shards {
                repo.get(shard)
                    .map_err(|e| format!("downloading {shard}: {e}"))?;
            }
        }
        Err(_) => {
            repo.get("model.safetensors")
                .map_err(|e| format!("downloading model.safetensors: {e}"))?;
        }
    }
    for file in OPTIONAL_FILES {
        // Absent optional files are normal (404); other files of the model are unaffected.
        let _ = repo.get(file);
    }
    Ok(folder)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_are_recognised() {
        assert!(looks_like_hub_id("OpenGVLab/InternViT-300M-448px"));
        assert!(looks_like_hub_id("OpenGVLab/InternVL2_5-1B"));
        assert!(!looks_like_hub_id("just-a-name"));
        assert!(!looks_like_hub_id("a/b/c"));
        assert!(!looks_like_hub_id("./models/x"));
    }

    #[test]
    fn revision_suffix_overrides_default() {
        assert_eq!(split_revision("a/b@v1", Some("main")), ("a/b", "v1"));
        assert_eq!(split_revision("a/b", None), ("a/b", "main"));
        assert_eq!(split_revision("a/b", Some("dev")), ("a/b", "dev"));
    }
}
