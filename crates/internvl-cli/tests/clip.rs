//! `internvl embed / classify / retrieve / caption` on the InternVL-C/G fixture: the JSON contracts,
//! the official numbers through the CLI, and bad inputs.

use std::path::PathBuf;
use std::process::{Command, Output};

use candle_core::{Device, Tensor};
use serde_json::Value;

fn fixture(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(path)
}

fn model() -> String {
    fixture("internvl_c_g/model").display().to_string()
}

fn images() -> Vec<String> {
    ["img0_150x97_rgba.png", "img1_83x131.png"]
        .iter()
        .map(|f| fixture("internvl_c_g/inputs").join(f).display().to_string())
        .collect()
}

fn texts() -> Vec<String> {
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("internvl_c_g/expected.json")).unwrap(),
    )
    .unwrap();
    expected["inputs"]["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

fn golden() -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture("internvl_c_g/expected.safetensors"), &Device::Cpu)
        .unwrap()
}

fn internvl(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_internvl"))
        .args(args)
        .output()
        .unwrap()
}

fn json_ok(args: &[String]) -> Value {
    let out = internvl(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn matrix(v: &Value) -> Tensor {
    let rows: Vec<Vec<f32>> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect();
    let (n, m) = (rows.len(), rows[0].len());
    Tensor::from_vec(rows.concat(), (n, m), &Device::Cpu).unwrap()
}

fn normalized(t: &Tensor) -> Tensor {
    t.broadcast_div(&t.sqr().unwrap().sum_keepdim(1).unwrap().sqrt().unwrap())
        .unwrap()
}

fn check(label: &str, got: &Tensor, reference: &Tensor) {
    let diff = (got - reference)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let scale = reference
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let rel = diff / scale;
    println!("{label:<40} max|diff|/max|ref| = {rel:.3e} (tolerance 1e-4)");
    assert!(rel <= 1e-4, "{label}: {rel}");
}

#[test]
fn embed_reproduces_official_embeddings_and_logits() {
    let golden = golden();
    for head in ["c", "g"] {
        let mut args = strings(&["embed", "--model", &model(), "--head", head, "--json"]);
        for i in images() {
            args.extend(["--image".to_string(), i]);
        }
        for t in texts() {
            args.extend(["--text".to_string(), t]);
        }
        let out = json_ok(&args);
        assert_eq!(out["head"], head);
        check(
            &format!("embed {head} image_embeds"),
            &matrix(&out["image_embeds"]),
            &normalized(&golden[&format!("{head}/image_embeds")]),
        );
        check(
            &format!("embed {head} text_embeds"),
            &matrix(&out["text_embeds"]),
            &normalized(&golden[&format!("{head}/text_embeds")]),
        );
        check(
            &format!("embed {head} logits_per_image"),
            &matrix(&out["logits_per_image"]),
            &golden[&format!("{head}/logits_per_image")],
        );
        // The 5th text is longer than 80 tokens: truncated as the release does, and reported.
        assert_eq!(out["truncated_texts"], serde_json::json!([4]));
    }
}

#[test]
fn caption_reproduces_official_greedy_ids_and_text() {
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("internvl_c_g/expected.json")).unwrap(),
    )
    .unwrap();
    let mut args = strings(&[
        "caption",
        "--model",
        &model(),
        "--max-new-tokens",
        "16",
        "--json",
    ]);
    args.extend(images());
    let out = json_ok(&args);
    let items = out.as_array().unwrap();
    assert_eq!(items.len(), 2);
    for (i, item) in items.iter().enumerate() {
        assert_eq!(
            item["token_ids"], expected["caption"]["new_token_ids"][i],
            "image {i} ids"
        );
        assert_eq!(
            item["text"].as_str().unwrap(),
            expected["caption"]["decoded"][i].as_str().unwrap().trim()
        );
        assert_eq!(item["image"].as_str().unwrap(), images()[i]);
    }
}

#[test]
fn classify_probabilities_are_the_softmax_of_the_official_logits() {
    let golden = golden();
    let labels: Vec<String> = texts().into_iter().take(4).collect();
    let mut args = strings(&[
        "classify",
        "--model",
        &model(),
        "--preprocess",
        "retrieval",
        "--labels",
        &labels.join(","),
        "--json",
    ]);
    args.extend(images());
    let out = json_ok(&args);
    assert_eq!(out["labels"].as_array().unwrap().len(), 4);
    let logits = golden["c/logits_per_image"].narrow(1, 0, 4).unwrap();
    let reference = candle_nn_softmax(&logits);
    let results = out["results"].as_array().unwrap();
    let probs: Vec<Vec<f32>> = results
        .iter()
        .map(|r| {
            labels
                .iter()
                .map(|l| r["probabilities"][l].as_f64().unwrap() as f32)
                .collect()
        })
        .collect();
    let got = Tensor::from_vec(probs.concat(), (2, 4), &Device::Cpu).unwrap();
    check("classify probabilities", &got, &reference);
    for (r, row) in results.iter().zip(probs) {
        let best = row
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0;
        assert_eq!(r["label"].as_str().unwrap(), labels[best]);
    }
}

fn candle_nn_softmax(x: &Tensor) -> Tensor {
    let max = x.max_keepdim(1).unwrap();
    let e = x.broadcast_sub(&max).unwrap().exp().unwrap();
    e.broadcast_div(&e.sum_keepdim(1).unwrap()).unwrap()
}

#[test]
fn classify_with_templates_and_a_frame_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let templates = tmp.path().join("templates.json");
    std::fs::write(
        &templates,
        r#"{"imagenet1k": ["a photo of a {c}.", "a drawing of a {c}."]}"#,
    )
    .unwrap();
    let frames = tmp.path().join("video");
    std::fs::create_dir(&frames).unwrap();
    for (i, img) in images().iter().enumerate() {
        std::fs::copy(img, frames.join(format!("frame{i}.png"))).unwrap();
    }
    let mut args = strings(&[
        "classify",
        "--model",
        &model(),
        "--labels",
        "cat,dog,一只熊猫",
        "--templates",
        templates.to_str().unwrap(),
        "--video",
        frames.to_str().unwrap(),
        "--frames",
        "2",
        "--json",
    ]);
    args.push(images()[0].clone());
    let out = json_ok(&args);
    let results = out["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(out["templates"], 2);
    assert!(results[1]["video"].is_string());
    for r in results {
        let sum: f64 = r["probabilities"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_f64().unwrap())
            .sum();
        assert!((sum - 1.0).abs() < 1e-4, "{sum}");
    }
}

#[test]
fn retrieve_ranks_by_the_official_similarities() {
    let golden = golden();
    let tmp = tempfile::tempdir().unwrap();
    let list = tmp.path().join("images.txt");
    std::fs::write(&list, images().join("\n")).unwrap();
    let captions = tmp.path().join("texts.txt");
    let short: Vec<String> = texts().into_iter().take(4).collect();
    std::fs::write(&captions, short.join("\n")).unwrap();
    let out = json_ok(&strings(&[
        "retrieve",
        "--model",
        &model(),
        "--images",
        list.to_str().unwrap(),
        "--texts",
        captions.to_str().unwrap(),
        "--top-k",
        "3",
        "--json",
    ]));
    let logits = golden["c/logits_per_image"].to_vec2::<f32>().unwrap();
    for (i, entry) in out["image_to_text"].as_array().unwrap().iter().enumerate() {
        let hits = entry["texts"].as_array().unwrap();
        assert_eq!(hits.len(), 3);
        let mut order: Vec<usize> = (0..4).collect();
        order.sort_by(|&a, &b| logits[i][b].total_cmp(&logits[i][a]));
        let got: Vec<usize> = hits
            .iter()
            .map(|h| h["index"].as_u64().unwrap() as usize)
            .collect();
        assert_eq!(got, order[..3]);
    }
    assert_eq!(out["text_to_image"].as_array().unwrap().len(), 4);
}

fn expect_error(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default().to_string();
    assert!(last.starts_with("error: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    last
}

#[test]
fn bad_inputs_give_clear_errors() {
    let mut args = strings(&["classify", "--model", &model(), "--labels", " , "]);
    args.extend(images());
    assert!(expect_error(&internvl(&args)).contains("empty label list"));

    let vit = fixture("intern_vit_300m_style/model").display().to_string();
    let args = strings(&["embed", "--model", &vit, "--head", "g", "--text", "x"]);
    assert!(expect_error(&internvl(&args)).contains("not InternVL-C/G"));

    let args = strings(&["embed", "--model", &model(), "--head", "z", "--text", "x"]);
    assert!(expect_error(&internvl(&args)).contains("unknown head `z`"));

    // A corrupt image among good ones: the good ones are still embedded, the bad one named.
    let tmp = tempfile::tempdir().unwrap();
    let broken = tmp.path().join("broken.png");
    std::fs::write(&broken, b"\x89PNG\r\n\x1a\n garbage").unwrap();
    let mut args = strings(&["embed", "--model", &model(), "--json", "--text", "a cat"]);
    for i in [
        images()[0].clone(),
        broken.display().to_string(),
        images()[1].clone(),
    ] {
        args.extend(["--image".to_string(), i]);
    }
    let out = internvl(&args);
    let err = expect_error(&out);
    assert!(
        err.contains("1 of 3 images failed") && err.contains("broken.png"),
        "{err}"
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let embeds = doc["image_embeds"].as_array().unwrap();
    assert!(embeds[0].is_array() && embeds[1].is_null() && embeds[2].is_array());
    assert!(doc["errors"][0]["image"]
        .as_str()
        .unwrap()
        .ends_with("broken.png"));

    let mut args = strings(&[
        "caption",
        "--model",
        &model(),
        "--json",
        &broken.display().to_string(),
    ]);
    args.push(images()[0].clone());
    let out = internvl(&args);
    assert!(expect_error(&out).contains("1 of 2 images failed"));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(doc[0]["error"].as_str().unwrap().contains("broken.png"));
    assert!(doc[1]["token_ids"].is_array());

    let args = strings(&[
        "classify",
        "--model",
        &model(),
        "--labels",
        "a,b",
        "--video",
        "/nonexistent/clip.mp4",
        "--json",
    ]);
    let out = internvl(&args);
    expect_error(&out);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(doc["results"][0]["error"].is_string());
}
