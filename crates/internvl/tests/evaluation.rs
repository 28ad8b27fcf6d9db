//! `internvl::evaluation` against pycocoevalcap, clip_benchmark's definitions and
//! scikit-learn.
//!
//! References come from `scripts/gen_eval_refs.py` (pycocoevalcap 1.2 with its CoreNLP
//! 3.4.1 jar, scikit-learn 1.9.1) and are stored under `tests/fixtures/evaluation/`.
//! Tokenised captions must be identical; scores must agree to 1e-9 relative. Every
//! comparison prints its numbers (`cargo test -p internvl --test evaluation -- --nocapture`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use internvl::evaluation::*;
use serde_json::Value;

/// Relative tolerance for scores.
const TOLERANCE: f64 = 1e-9;

fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/evaluation")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

fn floats(value: &Value) -> Vec<f64> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap_or(f64::NAN))
        .collect()
}

fn assert_close(name: &str, got: f64, want: f64) {
    let error = (got - want).abs() / want.abs().max(1e-12);
    println!("{name:<28} ours {got:.15}  reference {want:.15}  rel.err {error:.1e}");
    assert!(
        error <= TOLERANCE || (got == 0.0 && want == 0.0),
        "{name}: {got} vs {want}"
    );
}

// ---------------------------------------------------------------------------------------
// Captioning

struct CaptionSet {
    references: BTreeMap<u64, Vec<String>>,
    candidates: BTreeMap<u64, String>,
    references_tokenized: BTreeMap<u64, Vec<String>>,
    candidates_tokenized: BTreeMap<u64, String>,
}

fn caption_set(data: &Value) -> CaptionSet {
    let mut set = CaptionSet {
        references: BTreeMap::new(),
        candidates: BTreeMap::new(),
        references_tokenized: BTreeMap::new(),
        candidates_tokenized: BTreeMap::new(),
    };
    for image in data["images"].as_array().unwrap() {
        let id = image["image_id"].as_u64().unwrap();
        set.references.insert(id, strings(&image["references"]));
        set.candidates
            .insert(id, image["candidate"].as_str().unwrap().to_string());
        set.references_tokenized
            .insert(id, strings(&image["references_tokenized"]));
        set.candidates_tokenized.insert(
            id,
            image["candidate_tokenized"].as_str().unwrap().to_string(),
        );
    }
    set
}

#[test]
fn ptb_tokenisation_matches_pycocoevalcap_on_the_caption_set() {
    let data = fixture("captions.json");
    let set = caption_set(&data);
    let tokenizer = PtbTokenizer::new();
    let flat: Vec<&String> = set.references.values().flatten().collect();
    let want_refs: Vec<&String> = set.references_tokenized.values().flatten().collect();
    let got_refs = tokenizer.tokenize(&flat);
    for ((raw, got), want) in flat.iter().zip(&got_refs).zip(&want_refs) {
        println!("{raw:?}\n    -> {got:?}");
        assert_eq!(got, *want, "reference {raw:?}");
    }
    let cands: Vec<&String> = set.candidates.values().collect();
    let got_cands = tokenizer.tokenize(&cands);
    for ((raw, got), want) in cands
        .iter()
        .zip(&got_cands)
        .zip(set.candidates_tokenized.values())
    {
        println!("{raw:?}\n    -> {got:?}");
        assert_eq!(got, want, "candidate {raw:?}");
    }
}

#[test]
fn bleu_and_cider_match_pycocoevalcap() {
    let data = fixture("captions.json");
    let set = caption_set(&data);
    let want_bleu = floats(&data["bleu"]);
    let want_cider = data["cider"].as_f64().unwrap();

    println!("-- from raw captions (PTB tokenisation in Rust)");
    let scores = evaluate_captions(&set.references, &set.candidates).unwrap();
    for (n, (got, want)) in scores.bleu.iter().zip(&want_bleu).enumerate() {
        assert_close(&format!("Bleu_{}", n + 1), *got, *want);
    }
    assert_close("CIDEr", scores.cider, want_cider);

    println!("-- from pycocoevalcap's tokenised captions");
    let bleu_scores = bleu(&set.references_tokenized, &set.candidates_tokenized).unwrap();
    for (n, (got, want)) in bleu_scores.iter().zip(&want_bleu).enumerate() {
        assert_close(&format!("Bleu_{} (tokenised)", n + 1), *got, *want);
    }
    let cider = cider_d(&set.references_tokenized, &set.candidates_tokenized).unwrap();
    assert_close("CIDEr (tokenised)", cider, want_cider);

    let metrics = scores.metrics();
    let names: Vec<&str> = metrics.iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "CIDEr"]);
}

#[test]
fn ptb_tokeniser_matches_corenlp_on_edge_cases() {
    let data = fixture("ptb_cases.json");
    let cases = data["cases"].as_array().unwrap();
    let texts: Vec<&str> = cases.iter().map(|c| c["text"].as_str().unwrap()).collect();
    let tokenizer = PtbTokenizer::new();
    let raw = tokenizer.ptb_tokens(&texts);
    let wrapped = tokenizer.tokenize(&texts);
    let mut failures = 0;
    for (i, case) in cases.iter().enumerate() {
        let got_raw = raw[i].join(" ");
        let want_raw = case["ptb"].as_str().unwrap();
        let want_wrapped = case["tokenized"].as_str().unwrap();
        if got_raw != want_raw || wrapped[i] != want_wrapped {
            failures += 1;
            println!(
                "MISMATCH {:?}\n  corenlp {want_raw:?}\n  ours    {got_raw:?}",
                texts[i]
            );
        }
    }
    println!("{} tokeniser cases, {failures} mismatches", cases.len());
    for i in 0..8 {
        println!("{:?} -> {:?}", texts[i], raw[i].join(" "));
    }
    assert_eq!(failures, 0);
}

#[test]
fn caption_inputs_are_checked() {
    let refs = BTreeMap::from([(1u32, vec!["a dog".to_string()])]);
    let empty: BTreeMap<u32, String> = BTreeMap::new();
    let err = bleu(&refs, &empty).unwrap_err().to_string();
    println!("{err}");
    assert!(err.contains("no candidate captions"));

    let cands = BTreeMap::from([(1u32, "a dog".to_string()), (2, "a cat".to_string())]);
    let err = evaluate_captions(&refs, &cands).unwrap_err().to_string();
    println!("{err}");
    assert!(err.contains("image 2 has a candidate but no references"));

    let refs2 = BTreeMap::from([(1u32, vec!["a dog".to_string()]), (2, vec![])]);
    let err = cider_d(&refs2, &cands).unwrap_err().to_string();
    println!("{err}");
    assert!(err.contains("image 2 has an empty reference list"));

    let one = BTreeMap::from([(1u32, "a dog".to_string())]);
    let err = cider_d(&refs2, &one).unwrap_err().to_string();
    println!("{err}");
    assert!(err.contains("image 2 has references but no candidate"));
}

// ---------------------------------------------------------------------------------------
// Retrieval

#[test]
fn retrieval_recall_on_a_hand_made_matrix() {
    // 3 images × 6 texts; texts 0,1 → image 0; 2,3 → image 1; 4,5 → image 2.
    #[rustfmt::skip]
    let sim = [
        0.9, 0.1, 0.8, 0.2, 0.3, 0.0, // image 0: best text 0 (own) → hit@1
        0.5, 0.4, 0.3, 0.6, 0.5, 0.1, // image 1: text 3 (own) first → hit@1
        0.7, 0.7, 0.2, 0.1, 0.7, 0.0, // image 2: tie 0.7 on texts 0,1,4: own text 4 ranks 3rd
    ];
    let matrix = ScoreMatrix::new(&sim, 3, 6).unwrap();
    let recall = retrieval_recall(&matrix, &[0, 0, 1, 1, 2, 2], &[1, 2, 3]).unwrap();
    println!("{recall:?}");
    // image→text: hits at k=1: images 0, 1; image 2 needs k=3.
    assert_eq!(recall.image_to_text, [2.0 / 3.0, 2.0 / 3.0, 1.0]);
    // text→image (columns): t0 [.9,.5,.7] → 0 first ✓; t1 [.1,.4,.7] → image 0 last (rank 2);
    // t2 [.8,.3,.2] → image 1 rank 1; t3 [.2,.6,.1] → ✓; t4 [.3,.5,.7] → ✓;
    // t5 [0,.1,0] → image 2 ties image 0 at 0.0 and loses on index: rank 2.
    assert_eq!(recall.text_to_image, [3.0 / 6.0, 4.0 / 6.0, 1.0]);
    let metrics = recall.metrics();
    assert_eq!(metrics.get("image_retrieval_recall@1"), Some(0.5));
    assert_eq!(metrics.get("text_retrieval_recall@1"), Some(2.0 / 3.0));
    let mean = (2.0 / 3.0 + 2.0 / 3.0 + 1.0 + 0.5 + 4.0 / 6.0 + 1.0) / 6.0;
    assert!((recall.mean_recall() - mean).abs() < 1e-15);
}

#[test]
fn retrieval_recall_matches_clip_benchmark_definition() {
    let data = fixture("retrieval.json");
    for case in data["cases"].as_array().unwrap() {
        let sim: Vec<Vec<f64>> = case["similarity"]
            .as_array()
            .unwrap()
            .iter()
            .map(floats)
            .collect();
        let (rows, cols) = (sim.len(), sim[0].len());
        let flat: Vec<f32> = sim.iter().flatten().map(|&v| v as f32).collect();
        let text_to_image: Vec<usize> = case["text_to_image"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let ks: Vec<usize> = floats(&case["ks"]).iter().map(|&k| k as usize).collect();
        let matrix = ScoreMatrix::new(&flat, rows, cols).unwrap();
        let recall = retrieval_recall(&matrix, &text_to_image, &ks).unwrap();
        let name = case["name"].as_str().unwrap();
        println!("{name}: k {ks:?}");
        println!(
            "  image→text ours {:?}\n             ref  {:?}",
            recall.image_to_text,
            floats(&case["image_to_text"])
        );
        println!(
            "  text→image ours {:?}\n             ref  {:?}",
            recall.text_to_image,
            floats(&case["text_to_image_recall"])
        );
        assert_eq!(
            recall.image_to_text,
            floats(&case["image_to_text"]),
            "{name}"
        );
        assert_eq!(
            recall.text_to_image,
            floats(&case["text_to_image_recall"]),
            "{name}"
        );
    }
}

#[test]
fn retrieval_inputs_are_checked() {
    let err = ScoreMatrix::new(&[0.0; 5], 2, 3).unwrap_err().to_string();
    println!("{err}");
    assert!(err.contains("5 values cannot form 2 × 3"));
    let sim = [0.0f32; 6];
    let matrix = ScoreMatrix::new(&sim, 2, 3).unwrap();
    let cases: [(&[usize], &[usize], &str); 4] = [
        (&[0, 1], &[1], "2 ground-truth entries for 3 texts"),
        (
            &[0, 1, 2],
            &[1],
            "text 2 belongs to image 2, but there are 2 images",
        ),
        (&[0, 0, 0], &[1], "image 1 has no text"),
        (&[0, 1, 1], &[0], "recall needs k >= 1"),
    ];
    for (truth, ks, message) in cases {
        let err = retrieval_recall(&matrix, truth, ks)
            .unwrap_err()
            .to_string();
        println!("{err}");
        assert!(err.contains(message), "{err}");
    }
}

// ---------------------------------------------------------------------------------------
// Classification

fn classes(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("class {i}")).collect()
}

#[test]
fn classification_metrics_on_a_hand_made_matrix() {
    #[rustfmt::skip]
    let logits = [
        0.9, 0.1, 0.0, 0.0, 0.0, 0.0, // label 0: top-1 ✓
        0.5, 0.5, 0.0, 0.0, 0.0, 0.0, // label 1: tie with class 0, lower index wins → rank 1
        0.1, 0.2, 0.3, 0.4, 0.5, 0.6, // label 0: rank 5 → misses top-5
        0.0, 0.0, 0.0, 0.0, 0.0, 0.0, // label 2: all tied → rank 2, predicted 0
    ];
    let matrix = ScoreMatrix::new(&logits, 4, 6).unwrap();
    let labels = [0, 1, 0, 2];
    let m = classification_metrics(&matrix, &labels).unwrap();
    println!("{:?}", m.metrics());
    assert_eq!(m.top1, 0.25);
    assert_eq!(m.top5, 0.75);
    // Per-class recall: class 0 1/2, class 1 0/1, class 2 0/1 → mean 1/6.
    assert!((m.mean_per_class_recall - 1.0 / 6.0).abs() < 1e-15);
    assert_eq!(m.confusion.count(0, 0), 1);
    assert_eq!(m.confusion.count(0, 5), 1);
    assert_eq!(m.confusion.count(1, 0), 1);
    assert_eq!(m.confusion.count(2, 0), 1);
    assert_eq!(m.confusion.per_class_recall()[3], None);
    assert_eq!(top_k_accuracy(&matrix, &labels, 2).unwrap(), 0.5);

    let four = ScoreMatrix::new(&logits[..24], 6, 4).unwrap();
    let m4 = classification_metrics(&four, &[0, 1, 2, 3, 0, 1]).unwrap();
    assert!(m4.top5.is_nan(), "acc5 needs at least 5 classes");
}

#[test]
fn classification_matches_scikit_learn() {
    let data = fixture("classification.json");
    for case in data["cases"].as_array().unwrap() {
        let rows: Vec<Vec<f64>> = case["logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(floats)
            .collect();
        let flat: Vec<f32> = rows.iter().flatten().map(|&v| v as f32).collect();
        let labels: Vec<usize> = floats(&case["labels"])
            .iter()
            .map(|&l| l as usize)
            .collect();
        let matrix = ScoreMatrix::new(&flat, rows.len(), rows[0].len()).unwrap();
        let m = classification_metrics(&matrix, &labels).unwrap();
        let name = case["name"].as_str().unwrap();
        println!("{name}");
        assert_close("  acc1", m.top1, case["acc1"].as_f64().unwrap());
        match case["acc5"].as_f64() {
            Some(want) => assert_close("  acc5", m.top5, want),
            None => assert!(m.top5.is_nan()),
        }
        assert_close(
            "  mean_per_class_recall",
            m.mean_per_class_recall,
            case["mean_per_class_recall"].as_f64().unwrap(),
        );
        for (truth, row) in case["confusion"].as_array().unwrap().iter().enumerate() {
            for (predicted, count) in row.as_array().unwrap().iter().enumerate() {
                assert_eq!(m.confusion.count(truth, predicted), count.as_u64().unwrap());
            }
        }
    }
}

#[test]
fn classification_inputs_are_checked() {
    let logits = [0.0f32; 6];
    let matrix = ScoreMatrix::new(&logits, 2, 3).unwrap();
    let err = classification_metrics(&matrix, &[0])
        .unwrap_err()
        .to_string();
    println!("{err}");
    assert!(err.contains("1 labels for 2 rows"));
    let err = classification_metrics(&matrix, &[0, 3])
        .unwrap_err()
        .to_string();
    println!("{err}");
    assert!(err.contains("sample 1 has label 3, but there are 3 classes"));
    let err = ScoreMatrix::new(&[f32::NAN], 1, 1).unwrap_err().to_string();
    assert!(err.contains("NaN at row 0, column 0"));
}

#[test]
fn confusion_matrix_png_is_written_and_readable() {
    let dir = tempfile::tempdir().unwrap();
    let names = vec![
        "tench".to_string(),
        "goldfish".to_string(),
        "great white shark".to_string(),
        "tiger shark".to_string(),
    ];
    let mut confusion = ConfusionMatrix::new(4);
    for (truth, predicted, times) in [
        (0, 0, 12),
        (0, 1, 3),
        (1, 1, 9),
        (2, 2, 7),
        (2, 3, 5),
        (3, 3, 1234),
    ] {
        for _ in 0..times {
            confusion.add(truth, predicted);
        }
    }
    let path = dir.path().join("confusion.png");
    save_confusion_matrix_png(&confusion, &names, &path).unwrap();
    let expected = render_confusion_matrix(&confusion, &names).unwrap();
    let image = image::open(&path).unwrap().to_rgb8();
    println!("confusion matrix PNG {}×{}", image.width(), image.height());
    assert_eq!(image.dimensions(), expected.dimensions());
    assert!(image.width() >= 4 * 28 && image.height() >= 4 * 28);
    assert_eq!(image.as_raw(), expected.as_raw());
    let dark = image
        .pixels()
        .filter(|p| p.0.iter().all(|&c| c < 100))
        .count();
    let white = image.pixels().filter(|p| p.0 == [255, 255, 255]).count();
    println!("dark pixels {dark}, white pixels {white}");
    assert!(dark > 200, "text and full cells are dark");
    assert!(white > 0 && white < (image.width() * image.height()) as usize);

    // Large matrices shrink their cells; labels and counts are dropped when they no longer fit.
    let big = ConfusionMatrix::new(500);
    let picture = render_confusion_matrix(&big, &classes(500)).unwrap();
    println!("500-class picture {}×{}", picture.width(), picture.height());
    assert!(picture.width() < 2200 && picture.height() < 2200);

    let err = render_confusion_matrix(&confusion, &names[..3])
        .unwrap_err()
        .to_string();
    println!("{err}");
    assert!(err.contains("3 class names for 4 classes"));
}

// ---------------------------------------------------------------------------------------
// Data readers

fn write(path: &Path, text: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, text).unwrap();
}

#[test]
fn karpathy_and_caption_list_readers() {
    let dir = tempfile::tempdir().unwrap();
    let karpathy = dir.path().join("dataset_coco.json");
    write(
        &karpathy,
        r#"{"dataset": "coco", "images": [
            {"filepath": "val2014", "filename": "a.jpg", "split": "test",
             "sentences": [{"raw": "A dog."}, {"raw": "A brown dog."}]},
            {"filepath": "val2014", "filename": "b.jpg", "split": "train",
             "sentences": [{"raw": "Ignored."}]},
            {"filepath": "val2014", "filename": "c.jpg", "split": "test",
             "sentences": [{"raw": "A cat."}]}]}"#,
    );
    let data = RetrievalDataset::load(&karpathy, "test", "/images").unwrap();
    println!("{data:?}");
    assert_eq!(
        data.images,
        [
            PathBuf::from("/images/val2014/a.jpg"),
            PathBuf::from("/images/val2014/c.jpg")
        ]
    );
    assert_eq!(data.captions, ["A dog.", "A brown dog.", "A cat."]);
    assert_eq!(data.text_to_image, [0, 0, 1]);
    assert_eq!(
        data.captions_of(0).collect::<Vec<_>>(),
        ["A dog.", "A brown dog."]
    );
    let err = RetrievalDataset::from_karpathy_json(&karpathy, "val", "/images").unwrap_err();
    println!("{err}");
    assert!(err.to_string().contains("no image with captions"));

    let list = dir.path().join("coco_karpathy_test.json");
    write(
        &list,
        r#"[{"image": "val2014/x.jpg", "caption": ["one", "two"]},
            {"image": "val2014/y.jpg", "caption": "three"},
            {"image": "val2014/x.jpg", "caption": "four"}]"#,
    );
    let data = RetrievalDataset::load(&list, "test", "root").unwrap();
    assert_eq!(data.images.len(), 2);
    assert_eq!(data.text_to_image, [0, 0, 1, 0]);

    let coco = dir.path().join("captions.json");
    write(
        &coco,
        r#"{"images": [{"id": 9, "file_name": "z.jpg"}, {"id": 3, "file_name": "w.jpg"}],
            "annotations": [{"image_id": 9, "caption": "nine"}, {"image_id": 3, "caption": "three"},
                            {"image_id": 9, "caption": "nine again"}]}"#,
    );
    let data = RetrievalDataset::load(&coco, "test", "").unwrap();
    assert_eq!(
        data.images,
        [PathBuf::from("w.jpg"), PathBuf::from("z.jpg")]
    );
    assert_eq!(data.captions, ["three", "nine", "nine again"]);

    let flickr = dir.path().join("flickr30k_test.txt");
    write(
        &flickr,
        "image,caption\n1.jpg,A man, smiling.\n1.jpg,A man.\n2.jpg,A dog.\n",
    );
    let data = RetrievalDataset::load(&flickr, "test", "f").unwrap();
    assert_eq!(data.captions, ["A man, smiling.", "A man.", "A dog."]);
    assert_eq!(data.text_to_image, [0, 0, 1]);

    assert_eq!(
        pre_caption("A Man (smiling)!  at #1.", 50),
        "a man smiling at 1"
    );
}

#[test]
fn zero_shot_readers() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("folder");
    for file in [
        "cat/b.jpg",
        "cat/a.PNG",
        "cat/sub/c.jpeg",
        "cat/notes.txt",
        "dog/x.webp",
    ] {
        write(&root.join(file), "");
    }
    let data = ZeroShotDataset::from_image_folder(&root).unwrap();
    println!("{data:?}");
    assert_eq!(data.class_names, ["cat", "dog"]);
    let files: Vec<String> = data
        .samples
        .iter()
        .map(|(p, _)| p.strip_prefix(&root).unwrap().display().to_string())
        .collect();
    assert_eq!(
        files,
        ["cat/a.PNG", "cat/b.jpg", "cat/sub/c.jpeg", "dog/x.webp"]
    );
    assert_eq!(data.labels(), [0, 0, 0, 1]);

    std::fs::create_dir_all(root.join("empty")).unwrap();
    let err = ZeroShotDataset::from_image_folder(&root)
        .unwrap_err()
        .to_string();
    println!("{err}");
    assert!(err.contains("class folder \"empty\" has no image"));

    let csv = dir.path().join("list.csv");
    write(
        &csv,
        "path,label\nimgs/1.jpg,zebra\nimgs/a,b.jpg,ant\n\"imgs/3.jpg\",zebra\n",
    );
    let data = ZeroShotDataset::from_list(&csv, None).unwrap();
    assert_eq!(data.class_names, ["ant", "zebra"]);
    assert_eq!(data.labels(), [1, 0, 1]);
    assert_eq!(data.samples[1].0, dir.path().join("imgs/a,b.jpg"));

    let jsonl = dir.path().join("list.jsonl");
    write(
        &jsonl,
        "{\"path\": \"a.jpg\", \"label\": 2}\n{\"image\": \"b.jpg\", \"label\": 0}\n",
    );
    let names = classes(3);
    let data = ZeroShotDataset::from_list(&jsonl, Some(&names)).unwrap();
    assert_eq!(data.labels(), [2, 0]);
    assert_eq!(data.class_names, names);
    let err = ZeroShotDataset::from_list(&jsonl, Some(&names[..2])).unwrap_err();
    println!("{err}");
    assert!(err
        .to_string()
        .contains("label \"2\" is not one of the 2 classes"));

    let missing = ZeroShotDataset::from_image_folder(dir.path().join("nope")).unwrap_err();
    println!("{missing}");
    assert!(matches!(missing, internvl::Error::Io { .. }));
}

// ---------------------------------------------------------------------------------------
// Reports

#[test]
fn results_serialise_and_render_as_markdown() {
    let mut metrics = Metrics::new();
    metrics.push("acc1", 0.83178);
    metrics.push("acc5", f64::NAN);
    let result = EvalResult {
        model: "InternVL-C".into(),
        dataset: "imagenet1k".into(),
        task: EvalTask::ZeroShotClassification,
        num_samples: 50_000,
        metrics,
    };
    let json = result.to_json();
    println!("{json}");
    assert!(json.contains("\"task\": \"zero_shot_classification\""));
    assert!(json.contains("\"acc5\": null"));
    let back = EvalResult::from_json(&json).unwrap();
    assert_eq!(back.metrics.get("acc1"), Some(0.83178));
    assert!(back.metrics.get("acc5").unwrap().is_nan());

    let mut recall = Metrics::new();
    recall.push("image_retrieval_recall@1", 0.8166);
    let other = EvalResult {
        model: "InternVL-C".into(),
        dataset: "flickr30k".into(),
        task: EvalTask::ZeroShotRetrieval,
        num_samples: 1000,
        metrics: recall,
    };
    let table = markdown_table(&[result, other]);
    println!("{table}");
    assert_eq!(
        table,
        "| model | dataset | acc1 | acc5 | image_retrieval_recall@1 |\n\
         | --- | --- | ---: | ---: | ---: |\n\
         | InternVL-C | imagenet1k | 83.18 | - | - |\n\
         | InternVL-C | flickr30k | - | - | 81.66 |\n"
    );
}
