//! `internvl train loss` against the official losses and gradients of the training fixtures,
//! and its handling of bad input.

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device, Tensor};
use serde_json::Value;

fn fixture(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(path)
}

fn internvl(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_internvl"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn rel(a: &Tensor, b: &Tensor) -> f32 {
    let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
    let scale = b
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    diff.to_scalar::<f32>().unwrap() / scale.max(f32::MIN_POSITIVE)
}

/// Runs the objective through the CLI, checks the loss and components against
/// `expected.json` and every recorded gradient against `expected.safetensors`.
fn check(case: &str, objective: &str, losses: &[(&str, &str)], golden_prefix: &str) {
    let dir = fixture(case);
    let grads = std::env::temp_dir().join(format!("internvl-train-{case}-{objective}.safetensors"));
    let (ok, stdout, stderr) = internvl(&[
        "train",
        "loss",
        "--objective",
        objective,
        "--model",
        dir.join("model").to_str().unwrap(),
        "--batch",
        dir.join("inputs/batch.safetensors").to_str().unwrap(),
        "--grads-out",
        grads.to_str().unwrap(),
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    for (ours, theirs) in losses {
        let got = doc
            .pointer(ours)
            .and_then(Value::as_f64)
            .unwrap_or_else(|| panic!("{ours} missing in {doc}"));
        let want = expected["losses"][theirs].as_f64().unwrap();
        let r = ((got - want) / want).abs();
        println!("{case} {objective} {ours}: {got:.7} vs official {want:.7} (relative {r:.1e}, tolerance 1e-5)");
        assert!(r <= 1e-5);
    }
    let written = candle_core::safetensors::load(&grads, &Device::Cpu).unwrap();
    let golden =
        candle_core::safetensors::load(dir.join("expected.safetensors"), &Device::Cpu).unwrap();
    let mut worst = 0f32;
    let mut checked = 0;
    for (name, reference) in &golden {
        let Some(param) = name.strip_prefix(&format!("{golden_prefix}grad/")) else {
            continue;
        };
        let got = &written[&format!("grad/{param}")];
        assert_eq!(got.dims(), reference.dims(), "{param}");
        worst = worst.max(rel(got, reference));
        checked += 1;
    }
    println!(
        "{case} {objective}: {} gradients written (one per parameter), {checked} compared: worst max|diff|/max|ref| {worst:.2e} (tolerance 1e-4)",
        written.len()
    );
    assert!(checked >= 6 && worst <= 1e-4);
    // Every parameter has a gradient of its own shape (a 0-d one for logit_scale).
    if let Some(scale) = written.get("grad/logit_scale") {
        assert_eq!(scale.rank(), 0);
    }
    std::fs::remove_file(grads).ok();
}

#[test]
fn stage2_retrieval_clip_and_sft_match_official_through_the_cli() {
    check(
        "train_stage2",
        "stage2",
        &[
            ("/loss", "loss"),
            ("/components/itc", "loss_itc"),
            ("/components/itm", "loss_itm"),
            ("/components/itg", "loss_itg"),
        ],
        "",
    );
    check(
        "train_contrastive",
        "retrieval",
        &[
            ("/loss", "retrieval_loss"),
            ("/components/itc", "retrieval_loss_itc"),
            ("/components/itm", "retrieval_loss_itm"),
        ],
        "retrieval/",
    );
    check(
        "train_contrastive",
        "clip",
        &[("/loss", "clip_loss")],
        "clip/",
    );
    check("train_sft", "sft", &[("/loss", "loss")], "");
}

/// Writes `tensors` of the fixture batch with some changed.
fn variant(
    case: &str,
    name: &str,
    edit: impl Fn(&mut std::collections::HashMap<String, Tensor>),
) -> PathBuf {
    let mut tensors = candle_core::safetensors::load(
        fixture(case).join("inputs/batch.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    edit(&mut tensors);
    let path = std::env::temp_dir().join(format!("internvl-train-{name}.safetensors"));
    candle_core::safetensors::save(&tensors, &path).unwrap();
    path
}

fn loss_of(model: &Path, batch: &Path, objective: &str) -> f64 {
    let (ok, stdout, stderr) = internvl(&[
        "train",
        "loss",
        "--objective",
        objective,
        "--model",
        model.to_str().unwrap(),
        "--batch",
        batch.to_str().unwrap(),
        "--json",
    ]);
    assert!(ok, "{stderr}");
    serde_json::from_str::<Value>(&stdout).unwrap()["loss"]
        .as_f64()
        .unwrap()
}

#[test]
fn masks_may_be_int64_or_bool_and_an_absent_mask_is_derived() {
    // Stage 2 with u8 (bool-like) masks instead of int64: the same loss.
    let model = fixture("train_stage2/model");
    let original = fixture("train_stage2/inputs/batch.safetensors");
    let as_u8 = variant("train_stage2", "stage2-u8-masks", |t| {
        for (name, tensor) in t.iter_mut() {
            if name.ends_with("attention_mask") {
                *tensor = tensor.to_dtype(DType::U8).unwrap();
            }
        }
    });
    let (a, b) = (
        loss_of(&model, &original, "stage2"),
        loss_of(&model, &as_u8, "stage2"),
    );
    println!("stage2 with int64 masks {a}, with u8 masks {b}");
    assert_eq!(a, b);
    std::fs::remove_file(as_u8).ok();

    // SFT: the fixture's mask is bool; without one it is derived as the release's collator
    // does (input_ids != 0, which also hides the real id-0 tokens).
    let sft = fixture("train_sft");
    let mut tensors = internvl::training::objectives::Batch::load(
        &sft.join("inputs/batch.safetensors"),
        "",
        &Device::Cpu,
    )
    .unwrap()
    .into_tensors();
    assert_eq!(
        tensors["attention_mask"].dtype(),
        DType::U8,
        "bool mask read as u8"
    );
    tensors.remove("attention_mask");
    let no_mask = std::env::temp_dir().join("internvl-train-sft-no-mask.safetensors");
    candle_core::safetensors::save(&tensors, &no_mask).unwrap();
    let model = sft.join("model");
    let (with, without) = (
        loss_of(&model, &sft.join("inputs/batch.safetensors"), "sft"),
        loss_of(&model, &no_mask, "sft"),
    );
    println!("sft with the bool mask {with}, with the mask derived {without}");
    assert_eq!(with, without);
    std::fs::remove_file(no_mask).ok();
}

#[test]
fn bad_inputs_are_named() {
    let stage2 = fixture("train_stage2");
    let model = stage2.join("model");
    let batch = stage2.join("inputs/batch.safetensors");
    let run = |args: &[&str]| {
        let (ok, _, stderr) = internvl(args);
        assert!(!ok);
        stderr
    };
    let base = |objective: &'static str, model: &Path, batch: &Path| -> Vec<String> {
        vec![
            "train".into(),
            "loss".into(),
            "--objective".into(),
            objective.into(),
            "--model".into(),
            model.to_str().unwrap().into(),
            "--batch".into(),
            batch.to_str().unwrap().into(),
        ]
    };
    let call = |v: Vec<String>| run(&v.iter().map(String::as_str).collect::<Vec<_>>());
    let err = call(base("stage3", &model, &batch));
    assert!(err.contains("unknown objective `stage3`"), "{err}");
    let err = call(base("sft", &model, &batch));
    assert!(err.contains("needs an InternVL-Chat model"), "{err}");
    let err = call(base(
        "stage2",
        &model,
        Path::new("/nonexistent/batch.safetensors"),
    ));
    assert!(err.contains("/nonexistent/batch.safetensors"), "{err}");
    let not_safetensors = std::env::temp_dir().join("internvl-train-not-a-batch.safetensors");
    std::fs::write(&not_safetensors, b"not a safetensors file").unwrap();
    let err = call(base("stage2", &model, &not_safetensors));
    assert!(err.contains("cannot read batch"), "{err}");
    let missing = variant("train_stage2", "stage2-missing-labels", |t| {
        t.remove("labels");
    });
    let err = call(base("stage2", &model, &missing));
    assert!(err.contains("no tensor `labels`"), "{err}");
    let wrong_type = variant("train_stage2", "stage2-float-ids", |t| {
        let ids = t["input_ids"].to_dtype(DType::F32).unwrap();
        t.insert("input_ids".into(), ids);
    });
    let err = call(base("stage2", &model, &wrong_type));
    assert!(err.contains("`input_ids` is F32"), "{err}");
    for p in [not_safetensors, missing, wrong_type] {
        std::fs::remove_file(p).ok();
    }
}

#[test]
fn preview_equals_the_official_sft_preprocessing() {
    let sft = fixture("train_sft");
    let (ok, stdout, stderr) = internvl(&[
        "train",
        "preview",
        "--model",
        sft.join("model").to_str().unwrap(),
        "--data",
        sft.join("inputs/sft.jsonl").to_str().unwrap(),
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    let golden =
        candle_core::safetensors::load(sft.join("expected.safetensors"), &Device::Cpu).unwrap();
    let batch = internvl::training::objectives::Batch::load(
        &sft.join("inputs/batch.safetensors"),
        "",
        &Device::Cpu,
    )
    .unwrap();
    let positions = batch.rows("position_ids").unwrap();
    let samples = doc["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 2);
    let mut tiles = 0;
    for (i, sample) in samples.iter().enumerate() {
        let vec = |v: &Value| -> Vec<i64> { serde_json::from_value(v.clone()).unwrap() };
        let want_ids = golden[&format!("sample{i}/input_ids")]
            .to_vec1::<i64>()
            .unwrap();
        let want_labels = golden[&format!("sample{i}/labels")]
            .to_vec1::<i64>()
            .unwrap();
        assert_eq!(vec(&sample["input_ids"]), want_ids, "sample {i} ids");
        assert_eq!(vec(&sample["labels"]), want_labels, "sample {i} labels");
        let n = want_ids.len();
        assert_eq!(
            vec(&sample["position_ids"]),
            positions[i][..n].to_vec(),
            "sample {i} positions"
        );
        tiles += sample["num_tiles"].as_u64().unwrap();
        println!(
            "preview sample {i}: {n} ids, {} targets, positions, {} tiles: equal to the official preprocessing",
            want_labels.iter().filter(|&&l| l != -100).count(),
            sample["num_tiles"]
        );
    }
    assert_eq!(
        tiles as usize,
        batch.get("pixel_values").unwrap().dim(0).unwrap()
    );
    // --limit and a missing image root.
    let (ok, stdout, _) = internvl(&[
        "train",
        "preview",
        "--model",
        sft.join("model").to_str().unwrap(),
        "--data",
        sft.join("inputs/sft.jsonl").to_str().unwrap(),
        "--limit",
        "1",
        "--json",
    ]);
    assert!(ok);
    assert_eq!(
        serde_json::from_str::<Value>(&stdout).unwrap()["samples"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let (ok, _, stderr) = internvl(&[
        "train",
        "preview",
        "--model",
        sft.join("model").to_str().unwrap(),
        "--data",
        sft.join("inputs/sft.jsonl").to_str().unwrap(),
        "--image-root",
        "/nonexistent",
    ]);
    assert!(!ok);
    assert!(stderr.contains("sft_img0_200x100.png"), "{stderr}");
}
