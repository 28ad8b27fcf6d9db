//! SFT training on the fixture conversations: the loss falls when only `mlp1` trains, every
//! other weight stays bit-identical, and a stopped-and-resumed run equals an uninterrupted one.

mod common;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use common::fixture;
use internvl::models::ModelFolder;
use internvl::training::sft::{train_sft, SftRun};
use internvl::training::trainer::{RunSpec, TrainOptions};

fn run(dir: &Path, stop_after: Option<u64>, resume: bool) -> SftRun {
    SftRun {
        spec: RunSpec {
            model: fixture("train_sft/model"),
            data: fixture("train_sft/inputs/sft.jsonl"),
            image_root: None,
            out_dir: dir.to_path_buf(),
            options: TrainOptions {
                steps: 6,
                batch_size: 2,
                accumulation: 1,
                lr: 1e-2,
                weight_decay: 0.0,
                warmup_steps: 1,
                max_grad_norm: Some(1.0),
                seed: 3,
                trainable: "mlp1.*".into(),
                ..TrainOptions::default()
            },
            resume,
            progress: false,
            stop_after,
        },
        max_dynamic_patch: None,
    }
}

fn out(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("internvl-sft-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn sft_trains_mlp1_only_and_resumes_exactly() {
    let straight = out("straight");
    let records = train_sft(&run(&straight, None, false)).unwrap();
    let losses: Vec<f64> = records.iter().map(|r| r.loss).collect();
    println!("sft losses (mlp1 only): {losses:?}");
    assert!(losses[5] < losses[0] - 0.5, "{losses:?}");

    let split = out("split");
    train_sft(&run(&split, Some(2), false)).unwrap();
    train_sft(&run(&split, None, true)).unwrap();
    let load = |d: &Path| {
        candle_core::safetensors::load(d.join("last/model.safetensors"), &Device::Cpu).unwrap()
    };
    let (a, b) = (load(&straight), load(&split));
    let source = ModelFolder::open(&fixture("train_sft/model")).unwrap();
    for (name, x) in &a {
        let d = (x - &b[name]).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(
            d.to_scalar::<f32>().unwrap(),
            0.0,
            "{name} differs after resume"
        );
        let original = source
            .checkpoint()
            .tensor(name, &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        let moved = (x - &original)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            > 0.0;
        assert_eq!(moved, name.starts_with("mlp1."), "{name}");
    }
    println!("resumed = uninterrupted (bit-identical); only mlp1.* moved");
    for d in [straight, split] {
        std::fs::remove_dir_all(d).ok();
    }
}
