//! The stage-2 texts (`FlickrDataset.preprocess`) of the fixture's captions equal the official
//! batch tensors exactly, and a short stage-2 run on the fixture model lowers the loss while only
//! the stage-2 parameters move.

mod common;

use candle_core::{DType, Device};
use common::fixture;
use internvl::processing::tokenizer::Tokenizer;
use internvl::training::objectives::Batch;
use internvl::training::stage2::{process_caption, stack_texts, stage2_texts, MAX_SEQ_LENGTH};
use serde_json::Value;

#[test]
fn texts_equal_the_official_preprocessing() {
    let case = fixture("train_stage2");
    let info: Value =
        serde_json::from_str(&std::fs::read_to_string(case.join("inputs/batch.json")).unwrap())
            .unwrap();
    let tokenizer = Tokenizer::from_folder(case.join("model")).unwrap();
    let raw: Vec<&str> = info["raw_captions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let processed: Vec<String> = raw.iter().map(|c| process_caption(c, 50)).collect();
    let expected: Vec<&str> = info["captions_after_process_single_caption"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(processed, expected);
    let negatives: Vec<usize> = info["negative_caption_of_sample"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let texts: Vec<_> = processed
        .iter()
        .zip(&negatives)
        .map(|(c, &n)| stage2_texts(&tokenizer, c, &processed[n], MAX_SEQ_LENGTH).unwrap())
        .collect();
    let ours = stack_texts(&texts).unwrap();
    let batch = Batch::load(&case.join("inputs/batch.safetensors"), "", &Device::Cpu).unwrap();
    for (name, tensor) in &ours {
        let theirs = batch.rows(name).unwrap();
        assert_eq!(
            tensor
                .to_dtype(DType::I64)
                .unwrap()
                .to_vec2::<i64>()
                .unwrap(),
            theirs,
            "{name}"
        );
        println!(
            "{name:<26} {:?}: identical to the official batch",
            tensor.dims()
        );
    }
    assert_eq!(ours.len(), 9);

    // Cutting the shared right padding (what the training run does) changes no loss.
    let folder = internvl::models::ModelFolder::open(&case.join("model")).unwrap();
    let model =
        internvl::models::internvl_cg::InternVLCG::load(&folder, DType::F32, &Device::Cpu).unwrap();
    let full = batch.clone().into_tensors();
    let trimmed = internvl::training::stage2::trim_padding(full.clone()).unwrap();
    let width = trimmed["input_ids"].dim(1).unwrap();
    assert!(width < MAX_SEQ_LENGTH);
    let a = internvl::training::objectives::stage2(&model, &Batch::new(full, "")).unwrap();
    let b = internvl::training::objectives::stage2(&model, &Batch::new(trimmed, "")).unwrap();
    for ((name, x), (_, y)) in a.components.iter().zip(&b.components) {
        let (x, y) = (x.to_scalar::<f32>().unwrap(), y.to_scalar::<f32>().unwrap());
        println!("{name}: full 80 positions {x}, trimmed to {width} {y}");
        assert!((x - y).abs() <= 1e-5 * x.abs(), "{name}");
    }
}

#[test]
fn a_short_stage2_run_trains_only_the_stage2_parameters() {
    use internvl::models::ModelFolder;
    use internvl::training::stage2::{train_stage2, Stage2Run, DEFAULT_TRAINABLE};
    use internvl::training::trainer::{RunSpec, TrainOptions};
    let case = fixture("train_stage2");
    let dir = std::env::temp_dir().join(format!("internvl-stage2-run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let captions = [
        "A dog runs on the beach.",
        "Two people are playing TENNIS!",
        "A red car (parked) near a house; sunny day.",
    ];
    let images = ["img0_90x70.png", "img1_64x96.png", "img2_120x80.png"];
    let lines: String = images
        .iter()
        .zip(captions)
        .map(|(i, c)| {
            serde_json::json!({"image": case.join("inputs").join(i), "caption": c}).to_string()
                + "\n"
        })
        .collect();
    std::fs::write(dir.join("train.jsonl"), lines).unwrap();
    let run = Stage2Run {
        spec: RunSpec {
            model: case.join("model"),
            data: dir.join("train.jsonl"),
            image_root: None,
            out_dir: dir.join("out"),
            options: TrainOptions {
                steps: 6,
                batch_size: 3,
                lr: 5e-3,
                warmup_steps: 1,
                trainable: DEFAULT_TRAINABLE.into(),
                seed: 1,
                ..TrainOptions::default()
            },
            resume: false,
            progress: false,
            stop_after: None,
        },
        augment: false,
    };
    let records = train_stage2(&run).unwrap();
    let losses: Vec<f64> = records.iter().map(|r| r.loss).collect();
    println!("stage-2 losses: {losses:?}");
    assert!(records.iter().all(|r| r.components.contains_key("itg")));
    assert!(losses[5] < losses[0], "{losses:?}");
    let saved =
        candle_core::safetensors::load(dir.join("out/last/model.safetensors"), &Device::Cpu)
            .unwrap();
    let source = ModelFolder::open(&case.join("model")).unwrap();
    let patterns = internvl::training::params::NamePatterns::parse(DEFAULT_TRAINABLE).unwrap();
    let mut moved = 0;
    for (name, x) in &saved {
        let original = source
            .checkpoint()
            .tensor(name, &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        let changed = (x - &original)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            > 0.0;
        if !patterns.matches(name) {
            assert!(!changed, "frozen {name} changed");
        }
        moved += usize::from(changed);
    }
    println!("{moved} stage-2 tensors moved; ViT, QLLaMA body, clip_projector, text_projection unchanged");
    assert!(moved >= 8);
    // The release format: every released tensor under its name and shape, and the header
    // metadata transformers' from_pretrained requires (scripts/official_load_check.py loads such
    // a checkpoint with the official classes).
    let mut released = source.checkpoint().names();
    let mut written: Vec<String> = saved.keys().cloned().collect();
    released.sort();
    written.sort();
    assert_eq!(written, released);
    for (name, x) in &saved {
        let original = source.checkpoint().tensor(name, &Device::Cpu).unwrap();
        assert_eq!(x.dims(), original.dims(), "{name}");
    }
    let bytes = std::fs::read(dir.join("out/last/model.safetensors")).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let format = header.metadata().as_ref().and_then(|m| m.get("format"));
    assert_eq!(format.map(String::as_str), Some("pt"));
    std::fs::remove_dir_all(dir).ok();
}
