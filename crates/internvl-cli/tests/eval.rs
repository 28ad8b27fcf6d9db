//! `internvl eval` end to end: on a small image-folder / Karpathy set built from the fixture
//! images (always), and on the real-photo set of scripts/fetch_photos.sh (required under CI).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn model() -> String {
    root()
        .join("tests/fixtures/internvl_c_g/model")
        .display()
        .to_string()
}

fn run_eval(args: &[&str], out: &Path) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_internvl"))
        .arg("eval")
        .args(args)
        .args([
            "--model",
            &model(),
            "--json",
            "--out",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(printed, saved);
    assert!(out.join("results.md").is_file());
    printed
}

fn metric(result: &Value, name: &str) -> f64 {
    let metrics = result["metrics"].as_object().unwrap();
    metrics[name].as_f64().unwrap_or(f64::NAN)
}

/// Two classes of fixture images (copied into class folders) and a Karpathy JSON over them.
fn small_set(dir: &Path) -> PathBuf {
    let inputs = root().join("tests/fixtures");
    let sources = [
        ("panda", "internvl_c_g/inputs/img0_150x97_rgba.png"),
        ("panda", "intern_vit_6b_style/inputs/img0_97x61.png"),
        ("cat", "internvl_c_g/inputs/img1_83x131.png"),
        ("cat", "intern_vit_300m_style/inputs/img1_66x93.png"),
    ];
    let mut images = Vec::new();
    for (i, (class, src)) in sources.iter().enumerate() {
        std::fs::create_dir_all(dir.join(class)).unwrap();
        let name = format!("{class}/{i}.png");
        std::fs::copy(inputs.join(src), dir.join(&name)).unwrap();
        images.push(serde_json::json!({
            "filepath": class, "filename": format!("{i}.png"), "split": "test",
            "sentences": [{"raw": format!("a photo of a {class}")}, {"raw": format!("a {class} in a picture")}]
        }));
    }
    let karpathy = dir.join("karpathy.json");
    std::fs::write(&karpathy, serde_json::json!({"images": images}).to_string()).unwrap();
    karpathy
}

#[test]
fn zeroshot_retrieval_and_caption_on_a_small_set() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let karpathy = small_set(&data);

    let out = tmp.path().join("zs");
    let r = run_eval(&["zeroshot", "--images", data.to_str().unwrap()], &out);
    assert_eq!(r["task"], "zero_shot_classification");
    assert_eq!(r["num_samples"], 4);
    let acc1 = metric(&r, "acc1");
    assert!((0.0..=1.0).contains(&acc1));
    assert!(
        metric(&r, "acc5").is_nan(),
        "top-5 is undefined with 2 classes"
    );
    let png = image::open(out.join("confusion_matrix.png")).unwrap();
    assert!(png.width() > 100 && png.height() > 100);

    let r = run_eval(
        &["retrieval", "--data", karpathy.to_str().unwrap()],
        &tmp.path().join("rt"),
    );
    assert_eq!(r["num_samples"], 4);
    // With 4 images and 8 captions, recall@5 image→text and recall@10 both ways must be 1.
    assert_eq!(metric(&r, "text_retrieval_recall@5"), 1.0);
    assert_eq!(metric(&r, "image_retrieval_recall@10"), 1.0);

    let out = tmp.path().join("cap");
    let r = run_eval(
        &[
            "caption",
            "--data",
            karpathy.to_str().unwrap(),
            "--num-beams",
            "2",
            "--max-new-tokens",
            "9",
        ],
        &out,
    );
    for name in ["Bleu_1", "Bleu_4", "CIDEr"] {
        assert!(metric(&r, name) >= 0.0, "{name}");
    }
    let captions: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("captions.json")).unwrap()).unwrap();
    assert_eq!(captions.as_array().unwrap().len(), 4);
}

#[test]
fn zeroshot_on_a_folder_of_videos() {
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("images");
    small_set(&images);
    // Each class holds one "video": a folder of frames.
    let videos = tmp.path().join("videos");
    for class in ["cat", "panda"] {
        let clip = videos.join(class).join("clip0");
        std::fs::create_dir_all(&clip).unwrap();
        for entry in std::fs::read_dir(images.join(class)).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), clip.join(entry.file_name())).unwrap();
        }
    }
    let r = run_eval(
        &[
            "zeroshot",
            "--videos",
            videos.to_str().unwrap(),
            "--frames",
            "2",
        ],
        &tmp.path().join("out"),
    );
    assert_eq!(r["num_samples"], 2);
    assert!((0.0..=1.0).contains(&metric(&r, "acc1")));
}

#[test]
fn eval_errors_name_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("empty_class")).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_internvl"))
        .args([
            "eval",
            "zeroshot",
            "--model",
            &model(),
            "--images",
            tmp.path().to_str().unwrap(),
        ])
        .args(["--out", tmp.path().join("o").to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("empty_class") && stderr.contains("has no image"),
        "{stderr}"
    );
}

#[test]
fn real_photo_set_runs_end_to_end() {
    let photos = root().join("assets/photos");
    if !photos.join("karpathy_test.json").is_file() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must fetch the photos (scripts/fetch_photos.sh)"
        );
        eprintln!("real photos absent: run scripts/fetch_photos.sh to include this check");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let r = run_eval(
        &["zeroshot", "--images", photos.to_str().unwrap()],
        &tmp.path().join("zs"),
    );
    assert_eq!(r["num_samples"], 18);
    assert!(tmp.path().join("zs/confusion_matrix.png").is_file());
    let karpathy = photos.join("karpathy_test.json");
    let r = run_eval(
        &["retrieval", "--data", karpathy.to_str().unwrap()],
        &tmp.path().join("rt"),
    );
    assert_eq!(r["num_samples"], 18);
    println!("real photos: zero-shot and retrieval ran on 18 images");
}
