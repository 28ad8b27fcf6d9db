//! The SFT data pipeline (`internvl::training::sft_data`) against the official
//! `LazySupervisedDataset` → `preprocess_internvl2_5` → `concat_pad_data_collator` outputs of
//! the `train_sft` fixture, plus `preprocess_mpt` (Hermes-2) masking and error cases.
//! Every comparison prints what it compared (`cargo test -- --nocapture`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use internvl::processing::tokenizer::Tokenizer;
use internvl::training::sft_data::{
    build_sample, collate, read_jsonl, tokenize_conversation, SftDataConfig, SftRecord, SftSample,
    IGNORE_INDEX,
};
use internvl::Error;
use serde_json::Value;

fn case_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/train_sft")
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Integer tensors of a safetensors file as i64 (I64, BOOL and U8 entries), read with the
/// `safetensors` crate because candle cannot load BOOL tensors.
fn int_tensors(path: &Path) -> HashMap<String, (Vec<usize>, Vec<i64>)> {
    let bytes = std::fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out = HashMap::new();
    for (name, view) in file.tensors() {
        let data = view.data();
        let values: Vec<i64> = match view.dtype() {
            safetensors::Dtype::I64 => data
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            safetensors::Dtype::BOOL | safetensors::Dtype::U8 => {
                data.iter().map(|&b| i64::from(b)).collect()
            }
            _ => continue,
        };
        out.insert(name, (view.shape().to_vec(), values));
    }
    out
}

/// The f32 pixel values of the batch file.
fn batch_pixels() -> Tensor {
    let bytes = std::fs::read(case_dir().join("inputs/batch.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let view = file.tensor("pixel_values").unwrap();
    let data: Vec<f32> = view
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    Tensor::from_vec(data, view.shape(), &Device::Cpu).unwrap()
}

fn expected() -> HashMap<String, (Vec<usize>, Vec<i64>)> {
    int_tensors(&case_dir().join("expected.safetensors"))
}

fn tokenizer() -> Tokenizer {
    Tokenizer::from_folder(case_dir().join("model")).unwrap()
}

fn config() -> SftDataConfig {
    SftDataConfig::from_model_config(&read_json(&case_dir().join("model/config.json"))).unwrap()
}

fn records() -> Vec<SftRecord> {
    read_jsonl(&case_dir().join("inputs/sft.jsonl")).unwrap()
}

fn samples() -> Vec<SftSample> {
    let (tok, cfg) = (tokenizer(), config());
    let root = case_dir().join("inputs");
    records()
        .iter()
        .map(|r| build_sample(r, &root, &tok, &cfg).unwrap())
        .collect()
}

fn ids_i64(ids: &[u32]) -> Vec<i64> {
    ids.iter().map(|&id| i64::from(id)).collect()
}

fn targets(labels: &[i64]) -> usize {
    labels.iter().filter(|&&l| l != IGNORE_INDEX).count()
}

fn flat_i64(t: &Tensor) -> Vec<i64> {
    t.to_dtype(DType::I64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn config_matches_the_dataset_arguments() {
    let dataset = &read_json(&case_dir().join("inputs/batch.json"))["dataset"];
    let cfg = config();
    println!("config from model/config.json: {cfg:?}");
    assert_eq!(cfg.template, dataset["template_name"].as_str().unwrap());
    assert_eq!(
        cfg.num_image_token as u64,
        dataset["num_image_token"].as_u64().unwrap()
    );
    assert_eq!(
        u64::from(cfg.image_size),
        dataset["image_size"].as_u64().unwrap()
    );
    assert_eq!(
        cfg.dynamic_image_size,
        dataset["dynamic_image_size"].as_bool().unwrap()
    );
    assert_eq!(
        cfg.use_thumbnail,
        dataset["use_thumbnail"].as_bool().unwrap()
    );
    assert_eq!(
        u64::from(cfg.min_dynamic_patch),
        dataset["min_dynamic_patch"].as_u64().unwrap()
    );
    assert_eq!(
        u64::from(cfg.max_dynamic_patch),
        dataset["max_dynamic_patch"].as_u64().unwrap()
    );
    assert_eq!(cfg.max_seq_length, 8192);
}

#[test]
fn samples_match_the_official_dataset() {
    let expected = expected();
    let batch = int_tensors(&case_dir().join("inputs/batch.safetensors"));
    let (_, batch_positions) = &batch["position_ids"];
    let width = batch["position_ids"].0[1];
    for (k, sample) in samples().iter().enumerate() {
        let (_, want_ids) = &expected[&format!("sample{k}/input_ids")];
        let (_, want_labels) = &expected[&format!("sample{k}/labels")];
        let got_ids = ids_i64(&sample.input_ids);
        let n = got_ids.len();
        println!(
            "sample{k}: {n} ids (want {}), {} targets (want {}), {} tiles, flags {:?}",
            want_ids.len(),
            targets(&sample.labels),
            targets(want_labels),
            sample.num_tiles,
            sample.image_flags
        );
        assert_eq!(&got_ids, want_ids, "sample{k} input_ids");
        assert_eq!(&sample.labels, want_labels, "sample{k} labels");
        let want_positions = &batch_positions[k * width..k * width + n];
        assert_eq!(
            sample.position_ids, want_positions,
            "sample{k} position_ids"
        );
        println!("sample{k}: ids, labels and {n} position ids exact");
    }
}

#[test]
fn collated_batch_matches_the_official_collator() {
    let batch = collate(&samples(), &Device::Cpu).unwrap();
    let want = int_tensors(&case_dir().join("inputs/batch.safetensors"));
    let pairs = [
        ("input_ids", &batch.input_ids),
        ("labels", &batch.labels),
        ("attention_mask", &batch.attention_mask),
        ("position_ids", &batch.position_ids),
        ("image_flags", &batch.image_flags),
    ];
    for (name, got) in pairs {
        let (shape, values) = &want[name];
        assert_eq!(got.dims(), shape.as_slice(), "{name} shape");
        assert_eq!(&flat_i64(got), values, "{name} values");
        println!("{name}: {shape:?} exact ({:?})", got.dtype());
    }
    let masked_real = flat_i64(&batch.input_ids)
        .iter()
        .zip(flat_i64(&batch.position_ids))
        .filter(|(&id, pos)| id == 0 && *pos > 0)
        .count();
    let quirk = &read_json(&case_dir().join("expected.json"))["collator_pad_id_0_quirk"];
    let want_masked = quirk["real_tokens_with_id_0_masked_in_attention"]
        .as_u64()
        .unwrap();
    println!(
        "id-0 quirk: {masked_real} real id-0 tokens masked out of attention (want {want_masked})"
    );
    assert_eq!(masked_real as u64, want_masked);

    let want_pixels = batch_pixels();
    assert_eq!(batch.pixel_values.dims(), want_pixels.dims());
    let diff: f32 = (&batch.pixel_values - &want_pixels)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    println!(
        "pixel_values {:?}: max|diff| = {diff:e}",
        want_pixels.dims()
    );
    assert!(diff <= 1e-5, "pixel_values max|diff| {diff}");
}

#[test]
fn hermes2_masking_matches_preprocess_mpt() {
    let expected = expected();
    let (tok, cfg) = (tokenizer(), config());
    let samples = samples();
    for (k, record) in records().iter().enumerate() {
        // The release's preprocess_mpt has no "system" role (KeyError): the fixture's Hermes-2
        // ids carry the template's default system prompt, i.e. the generator dropped the
        // system turn of sample 1; sample 0 gets the automatic `<image>\n` of the dataset.
        let conversations: Vec<(String, String)> = record
            .conversations
            .iter()
            .filter(|(from, _)| from != "system")
            .cloned()
            .collect();
        let tokens: Vec<usize> = if record.image.is_empty() {
            Vec::new()
        } else {
            vec![samples[k].num_tiles * cfg.num_image_token]
        };
        let (ids, labels) =
            tokenize_conversation("Hermes-2", &conversations, &tokens, &tok, 8192).unwrap();
        let (_, want_ids) = &expected[&format!("masking/Hermes-2/sample{k}/input_ids")];
        let (_, want_labels) = &expected[&format!("masking/Hermes-2/sample{k}/labels")];
        println!(
            "Hermes-2 sample{k}: {} ids (want {}), {} targets (want {})",
            ids.len(),
            want_ids.len(),
            targets(&labels),
            targets(want_labels)
        );
        assert_eq!(&ids_i64(&ids), want_ids, "Hermes-2 sample{k} input_ids");
        assert_eq!(&labels, want_labels, "Hermes-2 sample{k} labels");
    }
    // And with its system turn, sample 1 is refused as the release refuses it.
    let err = tokenize_conversation("Hermes-2", &records()[1].conversations, &[], &tok, 8192)
        .unwrap_err();
    println!("Hermes-2 with a system turn: {err}");
    assert!(err.to_string().contains("system"));
}

#[test]
fn truncation_and_whole_sample_ignore() {
    let tok = tokenizer();
    let record = &records()[1];
    let (full, _) =
        tokenize_conversation("internvl2_5", &record.conversations, &[], &tok, 8192).unwrap();
    let (cut, labels) =
        tokenize_conversation("internvl2_5", &record.conversations, &[], &tok, 25).unwrap();
    println!(
        "internvl2_5 truncation: {} -> {} ids, {} targets",
        full.len(),
        cut.len(),
        targets(&labels)
    );
    assert_eq!(cut.as_slice(), &full[..25]);
    assert_eq!(labels.len(), 25);

    // Hermes-2: truncation leaves cur_len (counted on the untruncated text) at or above
    // max_seq_length, so no length check: the targets that survive the cut stay targets.
    let turns: Vec<(String, String)> = record.conversations[1..].to_vec();
    let (ids, labels) = tokenize_conversation("Hermes-2", &turns, &[], &tok, 50).unwrap();
    println!(
        "Hermes-2 truncated to {}: {} targets",
        ids.len(),
        targets(&labels)
    );
    assert_eq!(ids.len(), 50);
    assert_eq!(targets(&labels), 2);

    // A trailing human turn is not counted by preprocess_mpt's regrouping: the recomputed
    // length disagrees with the real one and the whole sample is ignored.
    let mut turns = turns;
    turns.push(("human".into(), "Thanks!".into()));
    let (ids, labels) = tokenize_conversation("Hermes-2", &turns, &[], &tok, 8192).unwrap();
    println!(
        "Hermes-2 ending with a human turn: {} ids, {} targets",
        ids.len(),
        targets(&labels)
    );
    assert!(labels.iter().all(|&l| l == IGNORE_INDEX));
}

#[test]
fn missing_image_file_is_an_error_naming_the_record() {
    let (tok, cfg) = (tokenizer(), config());
    let mut record = records()[0].clone();
    record.image = vec!["no_such_image.png".into()];
    let err = build_sample(&record, &case_dir().join("inputs"), &tok, &cfg).unwrap_err();
    println!("missing image: {err}");
    assert!(matches!(err, Error::Io { .. }));
    let text = err.to_string();
    assert!(text.contains("no_such_image.png") && text.contains("sft.jsonl:1"));
}

#[test]
fn unknown_template_is_an_error_listing_the_supported_ones() {
    let tok = tokenizer();
    let mut cfg = config();
    cfg.template = "vicuna_v1".into();
    let record = &records()[1];
    let err = build_sample(record, &case_dir().join("inputs"), &tok, &cfg).unwrap_err();
    println!("unknown template: {err}");
    let text = err.to_string();
    assert!(matches!(err, Error::InvalidArgument(_)));
    for name in [
        "vicuna_v1",
        "internvl2_5",
        "Hermes-2",
        "internlm2-chat",
        "phi3-chat",
    ] {
        assert!(text.contains(name), "{name} missing from {text}");
    }
}

#[test]
fn malformed_jsonl_lines_are_errors_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "{\"conversations\": []}\n{not json}\n",
            "bad.jsonl:2",
            "invalid JSON",
        ),
        ("{\"image\": \"a.png\"}\n", "bad.jsonl:1", "conversations"),
        (
            "{\"conversations\": [{\"from\": \"human\"}]}\n",
            "bad.jsonl:1",
            "\"value\"",
        ),
        (
            "{\"image\": 3, \"conversations\": []}\n",
            "bad.jsonl:1",
            "image",
        ),
    ];
    for (text, place, what) in cases {
        let path = dir.path().join("bad.jsonl");
        std::fs::write(&path, text).unwrap();
        let err = read_jsonl(&path).unwrap_err().to_string();
        println!("malformed jsonl: {err}");
        assert!(err.contains(place) && err.contains(what), "{err}");
    }
}

#[test]
fn placeholder_mismatch_and_bad_turns_are_errors() {
    let (tok, cfg) = (tokenizer(), config());
    let root = case_dir().join("inputs");
    let mut record = records()[0].clone();
    record.conversations[2].1 = "<image>\nAnd this?".into();
    let err = build_sample(&record, &root, &tok, &cfg)
        .unwrap_err()
        .to_string();
    println!("two placeholders, one image: {err}");
    assert!(err.contains("2 <image> placeholder(s) for 1 image(s)"));

    let mut record = records()[0].clone();
    record.conversations.swap(2, 3);
    let mut hermes = cfg.clone();
    hermes.template = "Hermes-2".into();
    let err = build_sample(&record, &root, &tok, &hermes)
        .unwrap_err()
        .to_string();
    println!("not alternating: {err}");
    assert!(err.contains("alternating") && err.contains("sft.jsonl:1"));

    let mut record = records()[0].clone();
    record.conversations[1].0 = "assistant".into();
    let err = build_sample(&record, &root, &tok, &cfg)
        .unwrap_err()
        .to_string();
    println!("unknown role: {err}");
    assert!(err.contains("\"assistant\""));
}

/// The InternLM2 tokenizer of the `internvl_chat_internlm2` fixture (BOS-adding
/// sentencepiece), for the templates of the InternLM-based releases.
fn internlm2_tokenizer() -> Tokenizer {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/internvl_chat_internlm2/model");
    Tokenizer::from_folder(dir).unwrap()
}

/// The decoded target spans (maximal runs of targets) of a labelled sequence.
fn target_spans(tok: &Tokenizer, labels: &[i64]) -> Vec<String> {
    let mut spans = Vec::new();
    let mut run: Vec<u32> = Vec::new();
    for &label in labels.iter().chain([IGNORE_INDEX].iter()) {
        if label == IGNORE_INDEX {
            if !run.is_empty() {
                spans.push(tok.decode(&run, false).unwrap());
                run.clear();
            }
        } else {
            run.push(label as u32);
        }
    }
    spans
}

/// No Python reference exists for these two (the fixture has none): self-consistency only.
/// preprocess_internlm's length arithmetic must agree with the tokenised length (else the
/// whole sample would be ignored) and the targets must be exactly the answers + `<|im_end|>`.
#[test]
fn internlm_tokenizer_masks_exactly_the_answers() {
    let tok = internlm2_tokenizer();
    let turns: Vec<(String, String)> = records()[0].conversations.clone();
    let tokens = [2 * 4];
    let bos = tok.bos_id().unwrap();
    for template in ["internlm2-chat", "internvl2_5"] {
        let (ids, labels) = tokenize_conversation(template, &turns, &tokens, &tok, 8192).unwrap();
        // (decode puts a space before a first piece without `▁`; the ids are what count)
        let spans: Vec<String> = target_spans(&tok, &labels)
            .iter()
            .map(|s| s.trim_start().to_string())
            .collect();
        println!(
            "{template} (InternLM2 tokenizer): {} ids, {} targets, spans {spans:?}",
            ids.len(),
            targets(&labels)
        );
        assert_eq!(ids[0], bos);
        assert_eq!(ids.iter().filter(|&&id| id == bos).count(), 1, "one BOS");
        let want: Vec<String> = [&turns[1].1, &turns[3].1]
            .iter()
            .map(|answer| format!("{answer}<|im_end|>"))
            .collect();
        assert_eq!(spans, want, "{template}");
    }
}
