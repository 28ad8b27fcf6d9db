//! Classification probing on the frozen fixture InternViT: both heads (linear
//! `cls_patch_concat` and `attention_pooling`) learn a synthetic three-class image folder, the
//! saved head reloads with the release's tensor names and predicts the same, and bad inputs
//! give errors.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device};
use image::{Rgb, RgbImage};
use internvl::models::ModelFolder;
use internvl::tasks::contrastive::{ImagePreprocessor, ImageTransform};
use internvl::training::datasets::image_folder;
use internvl::training::probe::{
    extract_features, head_inputs, load_probe, train_probe, ProbeHead, ProbeOptions, ProbeReport,
    PROBE_JSON, PROBE_LOSS_CURVE, PROBE_METRICS, PROBE_WEIGHTS,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const CLASSES: [&str; 3] = ["blue_checker", "green_stripes", "red_noise"];
const TRAIN_PER_CLASS: usize = 12;
const TEST_PER_CLASS: usize = 8;

fn model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/intern_vit_300m_style/model")
}

/// One synthetic image of `class`: a red noisy field, green horizontal stripes or a blue/white
/// checkerboard, with random size, phase, period, brightness and pixel noise.
fn draw(class: usize, rng: &mut StdRng) -> RgbImage {
    let (w, h) = (rng.random_range(56..90), rng.random_range(56..90));
    let period = rng.random_range(6..12);
    let phase = rng.random_range(0..period);
    let gain: f32 = rng.random_range(0.7..1.0);
    RgbImage::from_fn(w, h, |x, y| {
        let base: [f32; 3] = match class {
            0 => {
                if ((x + phase) / period + (y + phase) / period) % 2 == 0 {
                    [30.0, 60.0, 230.0]
                } else {
                    [235.0, 235.0, 235.0]
                }
            }
            1 => {
                if ((y + phase) / period) % 2 == 0 {
                    [40.0, 210.0, 50.0]
                } else {
                    [10.0, 20.0, 10.0]
                }
            }
            _ => [220.0, 40.0, 30.0],
        };
        let noise = if class == 2 { 50.0 } else { 20.0 };
        let px = base.map(|v| (v * gain + rng.random_range(-noise..noise)).clamp(0.0, 255.0) as u8);
        Rgb(px)
    })
}

/// `root/{train,test}/<class>/<i>.png`; returns (train, test).
fn synthetic_dataset(root: &Path, seed: u64) -> (PathBuf, PathBuf) {
    let mut rng = StdRng::seed_from_u64(seed);
    for (split, count) in [("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)] {
        for (label, class) in CLASSES.iter().enumerate() {
            let dir = root.join(split).join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..count {
                draw(label, &mut rng)
                    .save(dir.join(format!("{i:03}.png")))
                    .unwrap();
            }
        }
    }
    (root.join("train"), root.join("test"))
}

fn options(head: ProbeHead) -> ProbeOptions {
    ProbeOptions {
        head,
        epochs: 12,
        batch_size: 12,
        // The release's 0.1·batch/512 is tuned for 10 ImageNet epochs; the toy has 36 images.
        lr: Some(0.1),
        seed: 3,
        ..ProbeOptions::default()
    }
}

fn print_report(name: &str, report: &ProbeReport, seconds: f64) {
    let first = report.records.first().unwrap().loss;
    let last = report.records.last().unwrap().loss;
    println!(
        "{name}: train accuracy {:.3}, test accuracy {:.3}, recall {:?}, confusion {:?}, loss {first:.4} → {last:.4} over {} steps ({seconds:.1} s)",
        report.train_accuracy,
        report.test_accuracy,
        report.per_class_recall,
        report.confusion,
        report.records.len()
    );
}

/// Trains `head`, checks accuracy and outputs, reloads the head and compares its predictions.
fn train_and_reload(head: ProbeHead, expected_names: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let (train, test) = synthetic_dataset(tmp.path(), 11);
    let out = tmp.path().join("out");
    let start = Instant::now();
    let report = train_probe(&model_dir(), &train, &test, &out, &options(head)).unwrap();
    print_report(head_name(head), &report, start.elapsed().as_secs_f64());

    assert_eq!(report.classes, CLASSES);
    assert!(
        report.test_accuracy >= 0.9,
        "test accuracy {}",
        report.test_accuracy
    );
    assert!(
        report.train_accuracy >= 0.9,
        "train accuracy {}",
        report.train_accuracy
    );
    // 36 training images, batches of 12: 3 steps per epoch.
    assert_eq!(report.records.len(), 12 * 3);
    assert_eq!(report.records[0].lr, 0.0, "warm-up starts from 0");
    let early: f64 = report.records[..3].iter().map(|r| r.loss).sum::<f64>() / 3.0;
    let late: f64 = report.records[33..].iter().map(|r| r.loss).sum::<f64>() / 3.0;
    assert!(late < early, "loss did not fall: {early} → {late}");
    let counted: usize = report.confusion.iter().flatten().sum();
    assert_eq!(counted, CLASSES.len() * TEST_PER_CLASS);
    assert_eq!(report.per_class_recall.len(), CLASSES.len());
    assert_eq!(report.test_predictions.len(), counted);

    for file in [PROBE_WEIGHTS, PROBE_JSON, PROBE_METRICS, PROBE_LOSS_CURVE] {
        assert!(out.join(file).is_file(), "missing {file}");
    }
    let saved = candle_core::safetensors::load(out.join(PROBE_WEIGHTS), &Device::Cpu).unwrap();
    let mut names: Vec<&str> = saved.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(names, expected_names);
    assert_eq!(saved["head.weight"].dims(), &[3, head.feature_dim(48)]);

    // Reload and predict the test split again from freshly extracted features.
    let (probe, summary) = load_probe(&out, &Device::Cpu).unwrap();
    assert_eq!(summary.classes, CLASSES);
    assert_eq!(summary.head, head);
    assert_eq!(summary.test_accuracy, report.test_accuracy);
    let folder = ModelFolder::open(&model_dir()).unwrap();
    let vision = folder.load_vision(DType::F32, &Device::Cpu).unwrap();
    let preprocess =
        ImagePreprocessor::new(ImageTransform::Classification, summary.image_size, None).unwrap();
    let images = image_folder(&test).unwrap();
    let (tokens, labels) = extract_features(&vision, &images, &preprocess, 5).unwrap();
    assert_eq!(tokens.dims(), &[images.len(), 17, 48]);
    assert_eq!(labels, images.iter().map(|(_, l)| *l).collect::<Vec<_>>());
    let predictions = probe.predict(&head_inputs(head, &tokens).unwrap()).unwrap();
    assert_eq!(predictions, report.test_predictions);
}

fn head_name(head: ProbeHead) -> &'static str {
    head.cls_target()
}

#[test]
fn linear_probe_learns_and_reloads() {
    train_and_reload(
        ProbeHead::Linear,
        &[
            "head.bias",
            "head.weight",
            "norm.bias",
            "norm.num_batches_tracked",
            "norm.running_mean",
            "norm.running_var",
            "norm.weight",
        ],
    );
}

#[test]
fn attention_pooling_probe_learns_and_reloads() {
    train_and_reload(
        ProbeHead::AttentionPooling { heads: 3 },
        &[
            "attn_pooling.cross_attn.k.weight",
            "attn_pooling.cross_attn.k_bias",
            "attn_pooling.cross_attn.proj.bias",
            "attn_pooling.cross_attn.proj.weight",
            "attn_pooling.cross_attn.q.weight",
            "attn_pooling.cross_attn.q_bias",
            "attn_pooling.cross_attn.v.weight",
            "attn_pooling.cross_attn.v_bias",
            "attn_pooling.norm1_k.bias",
            "attn_pooling.norm1_k.weight",
            "attn_pooling.norm1_q.bias",
            "attn_pooling.norm1_q.weight",
            "attn_pooling.norm1_v.bias",
            "attn_pooling.norm1_v.weight",
            "head.bias",
            "head.weight",
            "norm.bias",
            "norm.num_batches_tracked",
            "norm.running_mean",
            "norm.running_var",
            "norm.weight",
        ],
    );
}

fn expect_error(result: internvl::Result<ProbeReport>, needle: &str) {
    match result {
        Ok(_) => panic!("expected an error mentioning `{needle}`"),
        Err(e) => {
            let message = e.to_string();
            println!("error as expected: {message}");
            assert!(
                message.contains(needle),
                "`{message}` does not mention `{needle}`"
            );
        }
    }
}

#[test]
fn bad_inputs_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let out = root.join("out");
    let model = model_dir();
    let opts = options(ProbeHead::Linear);

    // A folder without class folders.
    let empty = root.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    expect_error(
        train_probe(&model, &empty, &empty, &out, &opts),
        "no class folders",
    );

    // Class folders without images.
    let hollow = root.join("hollow");
    for class in CLASSES {
        std::fs::create_dir_all(hollow.join(class)).unwrap();
    }
    expect_error(
        train_probe(&model, &hollow, &hollow, &out, &opts),
        "no images",
    );

    // Different class folders in train and test.
    let (train, test) = synthetic_dataset(&root.join("data"), 5);
    std::fs::create_dir_all(test.join("zebra")).unwrap();
    expect_error(train_probe(&model, &train, &test, &out, &opts), "zebra");
    std::fs::remove_dir(test.join("zebra")).unwrap();

    // Zero epochs, BatchNorm-incompatible batch, a batch larger than the training split.
    expect_error(
        train_probe(
            &model,
            &train,
            &test,
            &out,
            &ProbeOptions {
                epochs: 0,
                ..opts.clone()
            },
        ),
        "epochs",
    );
    expect_error(
        train_probe(
            &model,
            &train,
            &test,
            &out,
            &ProbeOptions {
                batch_size: 1,
                ..opts.clone()
            },
        ),
        "batch_size",
    );
    expect_error(
        train_probe(
            &model,
            &train,
            &test,
            &out,
            &ProbeOptions {
                batch_size: 64,
                ..opts.clone()
            },
        ),
        "fewer than one batch",
    );
    // A head count that does not divide the encoder width (48).
    expect_error(
        train_probe(
            &model,
            &train,
            &test,
            &out,
            &ProbeOptions {
                head: ProbeHead::AttentionPooling { heads: 5 },
                ..opts.clone()
            },
        ),
        "divide",
    );
    // A missing model folder.
    expect_error(
        train_probe(&root.join("nowhere"), &train, &test, &out, &opts),
        "nowhere",
    );
    // Nothing was written by the failed runs.
    assert!(!out.exists());
    // A missing probe folder.
    assert!(load_probe(&root.join("nowhere"), &Device::Cpu).is_err());
}
