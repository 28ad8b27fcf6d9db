//! Contrastive (stage-1) training on the fixture model: the loss falls, frozen weights stay
//! bit-identical, checkpoints load as release folders, and a run stopped and resumed ends with
//! exactly the weights and metrics of an uninterrupted run.

mod common;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use common::fixture;
use internvl::models::internvl_cg::InternVLCG;
use internvl::models::ModelFolder;
use internvl::training::contrastive::{train_contrastive, ContrastiveRun};
use internvl::training::trainer::{read_metrics, RunSpec, TrainOptions};

fn workdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "internvl-contrastive-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A caption file over the fixture's three images (captions its pruned tokenizer covers).
fn data(dir: &Path) -> PathBuf {
    let inputs = fixture("train_contrastive/inputs");
    let lines = [
        ("img0_80x80.png", "a cat sleeping on a sofa"),
        ("img1_100x64.png", "a bowl of fresh fruit"),
        ("img2_72x90.png", "a city street at night"),
        ("img2_72x90.png", "the same street, rainy"),
    ];
    let text: String = lines
        .iter()
        .map(|(image, caption)| {
            serde_json::json!({"image": inputs.join(image), "caption": caption}).to_string() + "\n"
        })
        .collect();
    let path = dir.join("train.jsonl");
    std::fs::write(&path, text).unwrap();
    path
}

fn run(dir: &Path, options: TrainOptions, stop_after: Option<u64>, resume: bool) -> ContrastiveRun {
    ContrastiveRun {
        spec: RunSpec {
            model: fixture("train_contrastive/model"),
            data: data(dir),
            image_root: None,
            out_dir: dir.join("out"),
            options,
            resume,
            progress: false,
            stop_after,
        },
        augment: true,
        positives: Default::default(),
    }
}

fn options() -> TrainOptions {
    TrainOptions {
        steps: 6,
        batch_size: 3,
        accumulation: 2,
        lr: 2e-3,
        weight_decay: 0.05,
        warmup_steps: 2,
        max_grad_norm: Some(1.0),
        seed: 7,
        trainable: "*,!qllama.*".into(),
        ..TrainOptions::default()
    }
}

fn weights(dir: &Path) -> std::collections::HashMap<String, candle_core::Tensor> {
    candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap()
}

#[test]
fn resumed_run_equals_uninterrupted_run() {
    let straight = workdir("straight");
    let records = train_contrastive(&run(&straight, options(), None, false)).unwrap();
    assert_eq!(records.len(), 6);
    let first = records[0].loss;
    let last = records.last().unwrap().loss;
    println!(
        "losses: {:?}",
        records.iter().map(|r| r.loss).collect::<Vec<_>>()
    );
    assert!(
        last < first,
        "the loss should fall on 4 samples: {first} -> {last}"
    );

    let split = workdir("split");
    let part = train_contrastive(&run(&split, options(), Some(3), false)).unwrap();
    assert_eq!(part.len(), 3);
    let rest = train_contrastive(&run(&split, options(), None, true)).unwrap();
    assert_eq!(rest.len(), 3);
    assert_eq!(rest[0].step, 4);

    let (a, b) = (
        weights(&straight.join("out/last")),
        weights(&split.join("out/last")),
    );
    assert_eq!(a.len(), b.len());
    let mut worst = 0f32;
    for (name, x) in &a {
        let d = (x - &b[name])
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        worst = worst.max(d);
    }
    println!("resumed vs uninterrupted: max|diff| over all weights = {worst:e}");
    assert_eq!(worst, 0.0);
    let (ma, mb) = (
        read_metrics(&straight.join("out/metrics.jsonl")).unwrap(),
        read_metrics(&split.join("out/metrics.jsonl")).unwrap(),
    );
    assert_eq!(ma.len(), 6);
    assert_eq!(
        ma.iter().map(|r| r.loss).collect::<Vec<_>>(),
        mb.iter().map(|r| r.loss).collect::<Vec<_>>()
    );
    assert!(straight.join("out/loss.png").is_file());

    // Frozen weights (QLLaMA) are bit-identical to the source; trained ones moved.
    let source = ModelFolder::open(&fixture("train_contrastive/model")).unwrap();
    let mut moved = 0;
    for (name, x) in &a {
        let original = source
            .checkpoint()
            .tensor(name, &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        let same = (x - &original)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            == 0.0;
        if name.starts_with("qllama.") {
            assert!(same, "frozen {name} changed");
        } else if !same {
            moved += 1;
        }
    }
    println!("{moved} trained tensors moved, every qllama.* tensor unchanged");
    assert!(moved > 10);

    // The checkpoint is a release folder the library loads.
    let saved = ModelFolder::open(&straight.join("out/last")).unwrap();
    InternVLCG::load(&saved, DType::F32, &Device::Cpu).unwrap();
    for dir in [straight, split] {
        std::fs::remove_dir_all(dir).ok();
    }
}

#[test]
fn bad_runs_are_refused() {
    let dir = workdir("bad");
    let mut opts = options();
    opts.trainable = "nothing.matches".into();
    let err = train_contrastive(&run(&dir, opts, None, false))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no parameter matches"), "{err}");
    let err = train_contrastive(&run(&dir, options(), None, true))
        .unwrap_err()
        .to_string();
    assert!(err.contains("nothing to resume"), "{err}");
    // Resuming with another recipe.
    train_contrastive(&run(&dir, options(), Some(1), false)).unwrap();
    let mut other = options();
    other.lr = 1e-3;
    let err = train_contrastive(&run(&dir, other, None, true))
        .unwrap_err()
        .to_string();
    assert!(err.contains("different recipe"), "{err}");
    std::fs::remove_dir_all(dir).ok();
}
