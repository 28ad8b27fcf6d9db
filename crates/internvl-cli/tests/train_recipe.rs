//! The training commands end to end: `train contrastive` and `train sft` on the fixtures
//! (outputs, resume, errors), and a shortened toy reproduction on real registry assets
//! (Fashion-MNIST + SmolLM2): prepare → init-cg → contrastive → `eval zeroshot` → probe →
//! stage2 → `eval caption` → init-chat → sft → `eval chat-classify`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn fixture(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(path)
}

fn asset(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../assets")
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

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("internvl-recipe-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn contrastive_and_sft_commands_write_checkpoints_metrics_and_curves() {
    let dir = temp("fixtures");
    let inputs = fixture("train_contrastive/inputs");
    let data = dir.join("captions.jsonl");
    let lines: String = [
        ("img0_80x80.png", "a cat sleeping on a sofa"),
        ("img1_100x64.png", "a bowl of fresh fruit"),
        ("img2_72x90.png", "a city street at night"),
    ]
    .iter()
    .map(|(i, c)| serde_json::json!({"image": inputs.join(i), "caption": c}).to_string() + "\n")
    .collect();
    std::fs::write(&data, lines).unwrap();
    let out = dir.join("stage1");
    let base = |extra: &[&str]| {
        let mut args = vec![
            "train",
            "contrastive",
            "--model",
            s(&fixture("train_contrastive/model")).to_owned().leak(),
            "--data",
            s(&data).to_owned().leak(),
            "--out",
            s(&out).to_owned().leak(),
            "--steps",
            "4",
            "--batch-size",
            "3",
            "--lr",
            "1e-3",
            "--warmup-steps",
            "1",
            "--trainable",
            "*,!qllama.*",
            "--json",
        ];
        args.extend_from_slice(extra);
        internvl(&args)
    };
    let (ok, stdout, stderr) = base(&["--stop-after", "2"]);
    assert!(ok, "{stderr}");
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["last"]["step"], 2);
    let (ok, stdout, stderr) = base(&["--resume"]);
    assert!(ok, "{stderr}");
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["steps_run"], 2);
    assert_eq!(doc["last"]["step"], 4);
    for file in [
        "metrics.jsonl",
        "loss.png",
        "last/model.safetensors",
        "last/config.json",
        "last/optimizer.safetensors",
        "last/trainer_state.json",
    ] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 4);
    // The trained folder is a model the other commands use.
    let (ok, _, stderr) = internvl(&[
        "embed",
        "--model",
        s(&out.join("last")),
        "--text",
        "a bowl of fresh fruit",
        "--json",
    ]);
    assert!(ok, "{stderr}");

    // SFT on the fixture conversations.
    let sft_out = dir.join("sft");
    let (ok, stdout, stderr) = internvl(&[
        "train",
        "sft",
        "--model",
        s(&fixture("train_sft/model")),
        "--data",
        s(&fixture("train_sft/inputs/sft.jsonl")),
        "--out",
        s(&sft_out),
        "--steps",
        "3",
        "--batch-size",
        "2",
        "--lr",
        "1e-2",
        "--trainable",
        "mlp1.*",
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(doc["last"]["step"], 3);
    assert!(sft_out.join("loss.png").is_file());
    let (ok, _, stderr) = internvl(&[
        "chat",
        "--model",
        s(&sft_out.join("last")),
        "--prompt",
        "Hi",
        "--max-new-tokens",
        "3",
    ]);
    assert!(ok, "{stderr}");

    // Errors name the problem.
    let (ok, _, stderr) = internvl(&[
        "train",
        "contrastive",
        "--model",
        s(&fixture("train_contrastive/model")),
        "--data",
        "/nonexistent/data.jsonl",
        "--out",
        s(&dir.join("x")),
        "--steps",
        "1",
    ]);
    assert!(
        !ok && stderr.contains("/nonexistent/data.jsonl"),
        "{stderr}"
    );
    let (ok, _, stderr) = internvl(&[
        "train",
        "sft",
        "--model",
        s(&fixture("train_sft/model")),
        "--data",
        s(&fixture("train_sft/inputs/sft.jsonl")),
        "--out",
        s(&dir.join("y")),
        "--steps",
        "1",
        "--trainable",
        "no.such.*",
    ]);
    assert!(!ok && stderr.contains("no parameter matches"), "{stderr}");
    let (ok, _, stderr) = internvl(&[
        "train",
        "contrastive",
        "--model",
        s(&fixture("train_contrastive/model")),
        "--data",
        s(&data),
        "--out",
        s(&dir.join("z")),
        "--steps",
        "0",
    ]);
    assert!(
        !ok && stderr.contains("steps must be at least 1"),
        "{stderr}"
    );
    std::fs::remove_dir_all(dir).ok();
}

/// The toy reproduction, shortened (the full recipe is in docs/training-toy.md): runs only when
/// the registry assets are present (required under CI).
#[test]
fn shortened_toy_recipe_runs_end_to_end() {
    let gguf = asset("models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    let mnist = asset("fashion-mnist");
    if !gguf.is_file() || !mnist.join("train-images-idx3-ubyte").is_file() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must fetch SmolLM2 and Fashion-MNIST (scripts/fetch_smollm2.sh, scripts/fetch_fashion_mnist.sh)"
        );
        eprintln!(
            "toy recipe skipped: run scripts/fetch_smollm2.sh and scripts/fetch_fashion_mnist.sh"
        );
        return;
    }
    let dir = temp("toy");
    let data = dir.join("data");
    let (ok, _, stderr) = internvl(&[
        "train",
        "prepare-fashion-mnist",
        "--source",
        s(&mnist),
        "--out",
        s(&data),
        "--limit",
        "640,200",
    ]);
    assert!(ok, "{stderr}");
    let init = dir.join("init");
    let (ok, _, stderr) = internvl(&[
        "train",
        "init-cg",
        "--qllama-gguf",
        s(&gguf),
        "--out",
        s(&init),
        "--patch-size",
        "7",
        "--cross-attention-frequency",
        "6",
        "--pad-token",
        "<|endoftext|>",
    ]);
    assert!(ok, "{stderr}");
    let stage1 = dir.join("stage1");
    let (ok, stdout, stderr) = internvl(&[
        "train",
        "contrastive",
        "--model",
        s(&init),
        "--data",
        s(&data.join("train.jsonl")),
        "--out",
        s(&stage1),
        "--steps",
        "10",
        "--batch-size",
        "64",
        "--lr",
        "5e-4",
        "--warmup-steps",
        "2",
        "--trainable",
        "*,!qllama.*",
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    println!("toy stage 1 (10 steps): {}", doc["last"]);
    // Only the new weights are saved; QLLaMA's body stays in the GGUF the config names.
    let size = std::fs::metadata(stage1.join("last/model.safetensors"))
        .unwrap()
        .len();
    assert!(size < 60 << 20, "{size} bytes");
    let (ok, stdout, stderr) = internvl(&[
        "eval",
        "zeroshot",
        "--model",
        s(&stage1.join("last")),
        "--images",
        s(&data.join("test")),
        "--classnames",
        s(&data.join("classnames.json")),
        "--templates",
        s(&data.join("templates.json")),
        "--dataset",
        "fashion_mnist",
        "--out",
        s(&dir.join("eval")),
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let result: Value = serde_json::from_str(&stdout).unwrap();
    println!("toy zero-shot after 10 steps: {}", result["metrics"]);
    assert!(dir.join("eval").read_dir().unwrap().count() > 0);
    // Linear probing of the stage-1 ViT on the same images.
    let (ok, stdout, stderr) = internvl(&[
        "train",
        "probe",
        "--model",
        s(&stage1.join("last")),
        "--train",
        s(&data.join("train")),
        "--test",
        s(&data.join("test")),
        "--out",
        s(&dir.join("probe")),
        "--epochs",
        "2",
        "--batch-size",
        "64",
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let probe: Value = serde_json::from_str(&stdout).unwrap();
    println!(
        "toy linear probe (2 epochs): test accuracy {}",
        probe["test_accuracy"]
    );
    assert!(dir.join("probe/probe.safetensors").is_file());

    // Stage 2: one step of the generative objective, then captions of two test images.
    let stage2 = dir.join("stage2");
    let (ok, stdout, stderr) = internvl(&[
        "train",
        "stage2",
        "--model",
        s(&stage1.join("last")),
        "--data",
        s(&data.join("train.jsonl")),
        "--out",
        s(&stage2),
        "--steps",
        "1",
        "--batch-size",
        "2",
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    for part in ["itc", "itm", "itg"] {
        assert!(doc["last"]["components"][part]
            .as_f64()
            .unwrap()
            .is_finite());
    }
    // The pad token chosen at init travels with every checkpoint (the ITG labels depend on it).
    let tokenizer_config =
        std::fs::read_to_string(stage2.join("last/tokenizer_config.json")).unwrap();
    assert!(
        tokenizer_config.contains("<|endoftext|>"),
        "{tokenizer_config}"
    );
    let (ok, stdout, stderr) = internvl(&[
        "eval",
        "caption",
        "--model",
        s(&stage2.join("last")),
        "--data",
        s(&data.join("test_captions.json")),
        "--limit",
        "2",
        "--num-beams",
        "1",
        "--max-new-tokens",
        "4",
        "--min-new-tokens",
        "1",
        "--out",
        s(&dir.join("caption-eval")),
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let result: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(result["num_samples"], 2);
    // Do the captions name the image's class? (InternVL-G models caption instead of chatting.)
    let (ok, _, stderr) = internvl(&[
        "eval",
        "chat-classify",
        "--model",
        s(&stage2.join("last")),
        "--images",
        s(&data.join("test")),
        "--per-class",
        "1",
        "--max-new-tokens",
        "4",
        "--out",
        s(&dir.join("caption-classify")),
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let captions = std::fs::read_to_string(dir.join("caption-classify/answers.jsonl")).unwrap();
    assert_eq!(captions.lines().count(), 10, "one image per class");

    // Stage 3: an InternVL-Chat around the stage-1 ViT and SmolLM2 (frozen), mlp1 trained.
    let chat = dir.join("chat-init");
    let (ok, _, stderr) = internvl(&[
        "train",
        "init-chat",
        "--vision-from",
        s(&stage1.join("last")),
        "--llm-gguf",
        s(&gguf),
        "--out",
        s(&chat),
        "--system-message",
        "Answer briefly.",
    ]);
    assert!(ok, "{stderr}");
    let sft = dir.join("sft");
    let (ok, stdout, stderr) = internvl(&[
        "train",
        "sft",
        "--model",
        s(&chat),
        "--data",
        s(&data.join("train_chat.jsonl")),
        "--out",
        s(&sft),
        "--steps",
        "3",
        "--batch-size",
        "4",
        "--lr",
        "1e-3",
        "--trainable",
        "mlp1.*",
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    println!("toy stage 3 (3 steps): {}", doc["last"]);
    // The LLM stays in the GGUF: the trained folder holds the ViT and mlp1 only.
    let size = std::fs::metadata(sft.join("last/model.safetensors"))
        .unwrap()
        .len();
    assert!(size < 16 << 20, "{size} bytes");
    let (ok, stdout, stderr) = internvl(&[
        "eval",
        "chat-classify",
        "--model",
        s(&sft.join("last")),
        "--images",
        s(&data.join("test")),
        "--per-class",
        "1",
        "--max-new-tokens",
        "6",
        "--out",
        s(&dir.join("chat-eval")),
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let result: Value = serde_json::from_str(&stdout).unwrap();
    println!(
        "toy chat classification after 3 steps: {}",
        result["metrics"]
    );
    assert_eq!(result["task"], "chat_classification");
    let answers = std::fs::read_to_string(dir.join("chat-eval/answers.jsonl")).unwrap();
    assert_eq!(answers.lines().count(), 10, "one image per class");
    assert!(dir.join("chat-eval/confusion_matrix.png").is_file());
    std::fs::remove_dir_all(dir).ok();
}
