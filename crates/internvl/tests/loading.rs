//! Checkpoint loading: bad folders give errors that name the problem, and the hub cache layout
//! resolves offline.

mod common;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use common::fixture;
use internvl::models::hub::{resolve_model, HubOptions};
use internvl::models::ModelFolder;

/// A writable copy of a fixture's model folder.
fn model_copy(case: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    std::fs::create_dir(&dir).unwrap();
    for entry in std::fs::read_dir(fixture(case).join("model")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    (tmp, dir)
}

fn load_error(dir: &Path) -> String {
    let err = ModelFolder::open(dir)
        .and_then(|f| f.load_vision(DType::F32, &Device::Cpu))
        .expect_err("loading must fail");
    let text = err.to_string();
    println!("{text}");
    assert!(!text.contains('\n'), "one-line error: {text}");
    text
}

/// Rewrites model.safetensors through `edit` (tensor name → keep/rename/reshape).
fn rewrite_weights(
    dir: &Path,
    edit: impl Fn(&str, candle_core::Tensor) -> Option<(String, candle_core::Tensor)>,
) {
    let path = dir.join("model.safetensors");
    let tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    let edited: std::collections::HashMap<String, candle_core::Tensor> = tensors
        .into_iter()
        .filter_map(|(name, t)| edit(&name, t))
        .collect();
    candle_core::safetensors::save(&edited, &path).unwrap();
}

#[test]
fn missing_config_is_named() {
    let (_tmp, dir) = model_copy("intern_vit_300m_style");
    std::fs::remove_file(dir.join("config.json")).unwrap();
    let err = load_error(&dir);
    assert!(err.contains("config.json"), "{err}");
}

#[test]
fn missing_weights_are_named() {
    let (_tmp, dir) = model_copy("intern_vit_300m_style");
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let err = load_error(&dir);
    assert!(err.contains("no model.safetensors"), "{err}");
}

#[test]
fn corrupt_weights_are_named() {
    let (_tmp, dir) = model_copy("intern_vit_300m_style");
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_error(&dir);
    assert!(err.contains("model.safetensors"), "{err}");
    std::fs::write(&path, b"this is not a safetensors file").unwrap();
    let err = load_error(&dir);
    assert!(err.contains("not a safetensors file or truncated"), "{err}");
}

#[test]
fn invalid_config_json_is_named() {
    let (_tmp, dir) = model_copy("intern_vit_6b_style");
    std::fs::write(dir.join("config.json"), "{ not json").unwrap();
    let err = load_error(&dir);
    assert!(
        err.contains("config.json") && err.contains("not valid JSON"),
        "{err}"
    );
}

#[test]
fn wrong_hidden_size_names_tensor_and_shapes() {
    let (_tmp, dir) = model_copy("intern_vit_6b_style");
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("\"hidden_size\": 80", "\"hidden_size\": 90"),
    )
    .unwrap();
    let err = load_error(&dir);
    assert!(
        err.contains("tensor `embeddings.patch_embedding.weight` has shape [80, 3, 14, 14], expected [90, 3, 14, 14]"),
        "{err}"
    );
}

#[test]
fn indivisible_hidden_size_is_a_config_error() {
    let (_tmp, dir) = model_copy("intern_vit_6b_style");
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("\"hidden_size\": 80", "\"hidden_size\": 81"),
    )
    .unwrap();
    let err = load_error(&dir);
    assert!(
        err.contains("hidden_size 81 is not divisible by num_attention_heads 5"),
        "{err}"
    );
}

#[test]
fn missing_tensor_is_named() {
    let (_tmp, dir) = model_copy("intern_vit_6b_style");
    rewrite_weights(&dir, |name, t| {
        (name != "encoder.layers.1.mlp.fc2.bias").then(|| (name.to_string(), t))
    });
    let err = load_error(&dir);
    assert!(
        err.contains("missing tensor `encoder.layers.1.mlp.fc2.bias`"),
        "{err}"
    );
}

#[test]
fn unexpected_tensor_is_named() {
    let (_tmp, dir) = model_copy("intern_vit_300m_style");
    // Three blocks stored, two configured: block 2 is left over.
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("\"num_hidden_layers\": 3", "\"num_hidden_layers\": 2"),
    )
    .unwrap();
    let err = load_error(&dir);
    assert!(
        err.contains("unexpected tensors `encoder.layers.2."),
        "{err}"
    );
}

#[test]
fn hf_layout_loads_to_the_same_numbers() {
    // Rename the released tensors to the transformers "-hf" layout (q/k/v split) and check that
    // the encoder computes the same output.
    let (_tmp, dir) = model_copy("intern_vit_300m_style");
    let c = 48;
    let path = dir.join("model.safetensors");
    let tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    let mut hf = std::collections::HashMap::new();
    for (name, t) in tensors {
        let renamed = name
            .replace("embeddings.class_embedding", "embeddings.cls_token")
            .replace(
                "embeddings.position_embedding",
                "embeddings.position_embeddings",
            )
            .replace(
                "embeddings.patch_embedding.",
                "embeddings.patch_embeddings.projection.",
            )
            .replace("encoder.layers.", "encoder.layer.")
            .replace(".attn.proj.", ".attention.projection_layer.")
            .replace(".norm1.", ".layernorm_before.")
            .replace(".norm2.", ".layernorm_after.")
            .replace(".ls1", ".lambda_1")
            .replace(".ls2", ".lambda_2");
        if renamed.contains(".attn.qkv.") {
            for (i, part) in ["q_proj", "k_proj", "v_proj"].iter().enumerate() {
                let n = renamed.replace(".attn.qkv.", &format!(".attention.{part}."));
                hf.insert(
                    format!("model.vision_tower.{n}"),
                    t.narrow(0, i * c, c).unwrap(),
                );
            }
        } else {
            hf.insert(format!("model.vision_tower.{renamed}"), t);
        }
    }
    std::fs::remove_file(&path).unwrap();
    candle_core::safetensors::save(&hf, &path).unwrap();
    let vision = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let vision: serde_json::Value = serde_json::from_str(&vision).unwrap();
    let config = serde_json::json!({
        "model_type": "internvl",
        "vision_config": {
            "model_type": "internvl_vision",
            "hidden_size": vision["hidden_size"],
            "num_attention_heads": vision["num_attention_heads"],
            "intermediate_size": vision["intermediate_size"],
            "num_hidden_layers": vision["num_hidden_layers"],
            "image_size": [56, 56],
            "patch_size": [14, 14],
            "attention_bias": true,
            "use_qk_norm": false,
            "norm_type": "layer_norm",
            "layer_norm_eps": 1e-6,
            "hidden_act": "gelu",
        },
        "text_config": {"model_type": "qwen2"},
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let model = ModelFolder::open(&dir)
        .unwrap()
        .load_vision(DType::F32, &Device::Cpu)
        .unwrap();
    let golden = common::expected("intern_vit_300m_style");
    let out = model
        .forward(&golden["inputs/pixel_values"], false)
        .unwrap();
    common::assert_close(
        "-hf layout native/last_hidden_state",
        &out.last_hidden_state,
        &golden["native/last_hidden_state"],
        common::F32_TOLERANCE,
    );
}

/// Lays out `hub/models--ORG--NAME/{refs/main, snapshots/COMMIT/...}` as huggingface_hub does.
fn lay_out_hub_cache(hub: &Path, id: &str, case: &str) -> PathBuf {
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let repo = hub.join(format!("models--{}", id.replace('/', "--")));
    let snapshot = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs").join("main"), commit).unwrap();
    for entry in std::fs::read_dir(fixture(case).join("model")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), snapshot.join(entry.file_name())).unwrap();
    }
    snapshot
}

#[test]
fn hub_id_resolves_in_the_cache_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = tmp.path().join("hub");
    let snapshot = lay_out_hub_cache(
        &hub,
        "OpenGVLab/InternViT-300M-448px",
        "intern_vit_300m_style",
    );
    let options = HubOptions {
        offline: true,
        revision: None,
        cache_dir: Some(hub.clone()),
    };
    let folder = resolve_model("OpenGVLab/InternViT-300M-448px", &options).unwrap();
    assert_eq!(folder, snapshot);
    // A commit given as the revision finds the snapshot without a ref.
    let by_commit = resolve_model(
        "OpenGVLab/InternViT-300M-448px@0123456789abcdef0123456789abcdef01234567",
        &options,
    )
    .unwrap();
    assert_eq!(by_commit, snapshot);
    // Not cached, offline: a clear error, no network.
    let err = resolve_model("OpenGVLab/InternViT-6B-448px-V1-5", &options).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("offline") && text.contains("not in the hub cache"),
        "{text}"
    );
    let err = resolve_model("OpenGVLab/InternViT-300M-448px@v9", &options).unwrap_err();
    assert!(err.to_string().contains("revision `v9`"), "{err}");
    let err = resolve_model("no/such/thing", &options).unwrap_err();
    assert!(err.to_string().contains("not a hub id"), "{err}");
}

#[test]
fn sharded_checkpoint_loads_to_the_same_numbers() {
    let (_tmp, dir) = model_copy("intern_vit_6b_style");
    let path = dir.join("model.safetensors");
    let tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    std::fs::remove_file(&path).unwrap();
    let (mut first, mut second) = (
        std::collections::HashMap::new(),
        std::collections::HashMap::new(),
    );
    let mut weight_map = serde_json::Map::new();
    for (name, t) in tensors {
        let shard = if name.starts_with("encoder.layers.2") || name.starts_with("embeddings") {
            first.insert(name.clone(), t);
            "model-00001-of-00002.safetensors"
        } else {
            second.insert(name.clone(), t);
            "model-00002-of-00002.safetensors"
        };
        weight_map.insert(name, shard.into());
    }
    candle_core::safetensors::save(&first, dir.join("model-00001-of-00002.safetensors")).unwrap();
    candle_core::safetensors::save(&second, dir.join("model-00002-of-00002.safetensors")).unwrap();
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();

    let model = ModelFolder::open(&dir)
        .unwrap()
        .load_vision(DType::F32, &Device::Cpu)
        .unwrap();
    let golden = common::expected("intern_vit_6b_style");
    let out = model
        .forward(&golden["inputs/pixel_values"], false)
        .unwrap();
    common::assert_close(
        "sharded native/last_hidden_state",
        &out.last_hidden_state,
        &golden["native/last_hidden_state"],
        common::F32_TOLERANCE,
    );

    std::fs::remove_file(dir.join("model-00002-of-00002.safetensors")).unwrap();
    let err = load_error(&dir);
    assert!(
        err.contains("shard") && err.contains("model-00002-of-00002.safetensors is missing"),
        "{err}"
    );
}
