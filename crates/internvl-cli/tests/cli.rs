//! The `internvl` binary end to end: `features` reproduces the official pixel values and hidden
//! states of the fixtures, `info` describes models, hub ids resolve from a cache laid out here, and
//! bad inputs exit non-zero with a one-line error that names the problem.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::{DType, Device, Tensor};

const TOLERANCE: f32 = 1e-4;

fn fixture(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(case)
}

fn images(case: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixture(case).join("inputs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    files.sort();
    files
}

fn internvl(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_internvl"));
    cmd.args(args)
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_HOME");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run internvl")
}

fn load(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

fn rel_diff(a: &Tensor, r: &Tensor) -> f32 {
    assert_eq!(a.dims(), r.dims());
    let d = (a.to_dtype(DType::F32).unwrap() - r)
        .unwrap()
        .abs()
        .unwrap();
    let d = d.max_all().unwrap().to_scalar::<f32>().unwrap();
    d / r
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn check(label: &str, got: &Tensor, reference: &Tensor, tolerance: f32) {
    let rel = rel_diff(got, reference);
    println!("{label:<56} max|diff|/max|ref| = {rel:.3e} (tolerance {tolerance:.0e})");
    assert!(rel <= tolerance, "{label}: {rel:e}");
}

fn run_features(case: &str, extra: &[&str]) -> HashMap<String, Tensor> {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("features.safetensors");
    let model = fixture(case).join("model");
    let mut args = vec![
        "features",
        "--model",
        model.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let imgs = images(case);
    args.extend(imgs.iter().map(|p| p.to_str().unwrap()));
    let output = internvl(&args, &[]);
    assert!(
        output.status.success(),
        "features failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    load(&out)
}

fn features_match_fixture(case: &str) {
    let golden = load(&fixture(case).join("expected.safetensors"));
    let native = run_features(case, &["--all-hidden-states"]);
    check(
        &format!("{case} cli pixel_values"),
        &native["pixel_values"],
        &golden["inputs/pixel_values"],
        1e-6,
    );
    for (ours, theirs) in [
        ("last_hidden_state", "native/last_hidden_state"),
        ("pooler_output", "native/pooler_output"),
        ("hidden_states", "native/hidden_states"),
    ] {
        check(
            &format!("{case} cli {theirs}"),
            &native[ours],
            &golden[theirs],
            TOLERANCE,
        );
    }
    let sizes: Vec<String> = golden
        .keys()
        .filter_map(|k| k.strip_prefix("inputs/pixel_values_").map(String::from))
        .collect();
    assert!(!sizes.is_empty());
    for size in sizes {
        let got = run_features(case, &["--size", &size]);
        check(
            &format!("{case} cli pixel_values_{size}"),
            &got["pixel_values"],
            &golden[&format!("inputs/pixel_values_{size}")],
            1e-6,
        );
        for what in ["last_hidden_state", "pooler_output"] {
            check(
                &format!("{case} cli interp_{size}/{what}"),
                &got[what],
                &golden[&format!("interp_{size}/{what}")],
                TOLERANCE,
            );
        }
        assert!(!got.contains_key("hidden_states"));
    }
}

#[test]
fn features_reproduce_intern_vit_6b_style() {
    features_match_fixture("intern_vit_6b_style");
}

#[test]
fn features_reproduce_intern_vit_300m_style() {
    features_match_fixture("intern_vit_300m_style");
}

#[test]
fn info_json_describes_the_model() {
    let model = fixture("intern_vit_6b_style").join("model");
    let output = internvl(&["info", "--model", model.to_str().unwrap(), "--json"], &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(info["architecture"], "InternViT");
    assert_eq!(info["image_size"], 56);
    assert_eq!(info["patch_size"], 14);
    assert_eq!(info["stored_dtypes"]["bf16"], 43); // 4 embedding tensors + 3 blocks × 13
                                                   // 3 blocks × (qkv 80·240 + proj 80·80+80 + fc1 80·320+320 + fc2 320·80+80 + 4 norms/qk-norms
                                                   // and 2 layer scales of 80) + patch conv 80·588+80 + class 80 + positions 17·80.
    let per_block = 80 * 240 + 80 * 80 + 80 + 80 * 320 + 320 + 320 * 80 + 80 + 6 * 80;
    let expected = 3 * per_block + 80 * 588 + 80 + 80 + 17 * 80;
    assert_eq!(info["parameters"], expected);
    assert_eq!(info["vision"]["norm_type"], "rms_norm");
}

/// `hub/models--ORG--NAME/{refs/main, snapshots/COMMIT}` with the fixture model in it.
fn lay_out_hub(hub: &Path, id: &str, case: &str) {
    let commit = "fedcba9876543210fedcba9876543210fedcba98";
    let repo = hub.join(format!("models--{}", id.replace('/', "--")));
    let snapshot = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    for entry in std::fs::read_dir(fixture(case).join("model")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), snapshot.join(entry.file_name())).unwrap();
    }
}

#[test]
fn hub_id_resolves_through_hf_hub_cache_and_hf_home() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("hf-home");
    let hub = home.join("hub");
    lay_out_hub(
        &hub,
        "OpenGVLab/InternViT-300M-448px",
        "intern_vit_300m_style",
    );
    let args = [
        "info",
        "--model",
        "OpenGVLab/InternViT-300M-448px",
        "--offline",
        "--json",
    ];
    for env in [
        [("HF_HUB_CACHE", hub.as_path())],
        [("HF_HOME", home.as_path())],
    ] {
        let output = internvl(&args, &env);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let info: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(info["vision"]["norm_type"], "layer_norm");
        assert!(info["path"]
            .as_str()
            .unwrap()
            .contains("snapshots/fedcba98"));
    }
    let output = internvl(
        &["info", "--model", "OpenGVLab/Unknown-Model", "--offline"],
        &[("HF_HUB_CACHE", hub.as_path())],
    );
    let err = expect_error(&output);
    assert!(
        err.contains("OpenGVLab/Unknown-Model") && err.contains("offline"),
        "{err}"
    );
}

fn expect_error(output: &Output) -> String {
    assert_eq!(output.status.code(), Some(1), "must exit with status 1");
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    println!("{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one-line error: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

fn features_error(model: &Path, images: &[&Path]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("f.safetensors");
    let mut args = vec![
        "features".to_string(),
        "--model".into(),
        model.display().to_string(),
        "--out".into(),
        out.display().to_string(),
    ];
    args.extend(images.iter().map(|p| p.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    expect_error(&internvl(&args, &[]))
}

#[test]
fn bad_inputs_exit_with_a_named_error() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture("intern_vit_300m_style").join("model");
    let good = images("intern_vit_300m_style").remove(0);

    let missing = tmp.path().join("missing.png");
    let err = features_error(&model, &[&good, &missing]);
    assert!(err.contains("missing.png"), "{err}");

    let text = tmp.path().join("notes.png");
    std::fs::write(&text, "this is a text file, not an image").unwrap();
    let err = features_error(&model, &[&text]);
    assert!(
        err.contains("notes.png") && err.contains("not a supported image format"),
        "{err}"
    );

    let truncated = tmp.path().join("truncated.png");
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = features_error(&model, &[&truncated]);
    assert!(err.contains("truncated.png"), "{err}");

    let err = features_error(&tmp.path().join("no-model-here"), &[&good]);
    assert!(err.contains("no-model-here"), "{err}");

    let output = internvl(
        &[
            "features",
            "--model",
            model.to_str().unwrap(),
            "--size",
            "3x",
            "--out",
            "x",
            good.to_str().unwrap(),
        ],
        &[],
    );
    assert!(expect_error(&output).contains("size `3x`"));

    let output = internvl(
        &[
            "features",
            "--model",
            model.to_str().unwrap(),
            "--size",
            "10x10",
            "--out",
            "x",
            good.to_str().unwrap(),
        ],
        &[],
    );
    assert!(expect_error(&output).contains("smaller than one 14x14 patch"));

    let output = internvl(
        &["info", "--model", model.to_str().unwrap(), "--dtype", "f64"],
        &[],
    );
    let _ = output; // info does not use the dtype
    let output = internvl(
        &[
            "features",
            "--model",
            model.to_str().unwrap(),
            "--dtype",
            "f64",
            "--out",
            "x",
            good.to_str().unwrap(),
        ],
        &[],
    );
    assert!(expect_error(&output).contains("unknown dtype `f64`"));
}

#[test]
fn tiny_and_extreme_images_work() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture("intern_vit_300m_style").join("model");
    let one = tmp.path().join("one.png");
    image::RgbImage::from_pixel(1, 1, image::Rgb([200, 10, 30]))
        .save(&one)
        .unwrap();
    let wide = tmp.path().join("wide.png");
    image::RgbImage::from_fn(20000, 1, |x, _| image::Rgb([(x % 256) as u8, 0, 255]))
        .save(&wide)
        .unwrap();
    let out = tmp.path().join("f.safetensors");
    let output = internvl(
        &[
            "features",
            "--model",
            model.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            one.to_str().unwrap(),
            wide.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let got = load(&out);
    assert_eq!(got["last_hidden_state"].dims(), &[2, 17, 48]);
    let finite = got["last_hidden_state"]
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert!(finite.iter().all(|v| v.is_finite()));
}
