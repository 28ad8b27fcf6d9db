//! Tokenizers against the official references: the InternVL-C/G and InternVL-Chat fixture
//! prompts (official code, transformers 4.37.2 slow tokenizers), llama.cpp's LLaMA vectors, and
//! the Python `sentencepiece` / transformers outputs in `tests/fixtures/tokenizers/refs.json`.

mod common;

use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};
use common::{expected, fixture};
use internvl::processing::tokenizer::{
    HfTokenizerSettings, InternVlCgTextTokenizer, SentencePieceModel, SentencePieceTokenizer,
    SlowTokenizerClass, Tokenizer, CAPTION_PROMPT, TEXT_MAX_LENGTH,
};
use internvl::Error;
use serde_json::Value;

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn ids_of(value: &Value) -> Vec<u32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}

fn rows_u32(tensor: &Tensor) -> Vec<Vec<u32>> {
    tensor
        .to_dtype(DType::U32)
        .unwrap()
        .to_vec2::<u32>()
        .unwrap()
}

fn tokenizers_dir() -> PathBuf {
    fixture("tokenizers")
}

fn refs() -> Value {
    read_json(&tokenizers_dir().join("refs.json"))
}

// ---------------------------------------------------------------- InternVL-C/G (QLLaMA)

fn cg_tokenizer() -> InternVlCgTextTokenizer {
    InternVlCgTextTokenizer::from_folder(fixture("internvl_c_g").join("model")).unwrap()
}

#[test]
fn internvl_cg_texts_match_the_official_ids() {
    let info = read_json(&fixture("internvl_c_g").join("expected.json"));
    let texts: Vec<&str> = info["inputs"]["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let want = rows_u32(&expected("internvl_c_g")["tokens/input_ids"]);
    let batch = cg_tokenizer().encode_batch(&texts).unwrap();
    assert_eq!(batch.input_ids.len(), texts.len());
    let mut exact = 0;
    for (i, (got, want)) in batch.input_ids.iter().zip(&want).enumerate() {
        assert_eq!(got, want, "text {i} {:?}", texts[i]);
        let mask: Vec<u32> = want.iter().map(|&id| u32::from(id > 0)).collect();
        assert_eq!(batch.attention_mask[i], mask);
        exact += 1;
    }
    println!(
        "{exact}/{} InternVL-C/G texts exact ([N, {TEXT_MAX_LENGTH}] ids and mask)",
        texts.len()
    );
    let tensor = batch.input_ids_tensor(&candle_core::Device::Cpu).unwrap();
    assert_eq!(tensor.dims(), &[texts.len(), TEXT_MAX_LENGTH]);
}

#[test]
fn internvl_cg_pieces_match_the_official_pieces() {
    let info = read_json(&fixture("internvl_c_g").join("expected.json"));
    let tokenizer =
        SentencePieceTokenizer::from_folder(fixture("internvl_c_g").join("model")).unwrap();
    let texts = info["inputs"]["texts"].as_array().unwrap();
    for (text, pieces) in texts
        .iter()
        .zip(info["tokens"]["pieces"].as_array().unwrap())
    {
        let want: Vec<&str> = pieces
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        // The official list is BOS, the text pieces (truncated to 78), EOS, then padding.
        let body: Vec<&str> = want[1..]
            .iter()
            .take_while(|p| **p != "</s>")
            .copied()
            .collect();
        let got = tokenizer.tokenize(&format!("summarize:{}", text.as_str().unwrap()));
        assert_eq!(&got[..body.len()], body.as_slice());
    }
}

#[test]
fn internvl_cg_caption_prompt_has_bos_and_no_eos() {
    let want = rows_u32(&expected("internvl_c_g")["caption/input_ids"]);
    let got = cg_tokenizer().caption_prompt_ids().unwrap();
    for row in &want {
        assert_eq!(&got, row, "{CAPTION_PROMPT:?}");
    }
    println!("caption prompt {CAPTION_PROMPT:?} -> {got:?} exact");
}

#[test]
fn internvl_cg_truncation_keeps_bos_and_eos() {
    let tokenizer = cg_tokenizer();
    let long = "word and another word ".repeat(40);
    let batch = tokenizer.encode_batch(&[long.as_str()]).unwrap();
    let row = &batch.input_ids[0];
    assert_eq!(row.len(), TEXT_MAX_LENGTH);
    assert_eq!(row[0], 1, "BOS first");
    assert_eq!(row[TEXT_MAX_LENGTH - 1], 2, "EOS stays the last token");
    assert!(row.iter().all(|&id| id > 0), "no padding in a full row");
    let full = tokenizer
        .tokenizer()
        .encode(&format!("summarize:{long}"), false, false)
        .unwrap();
    assert_eq!(&row[1..TEXT_MAX_LENGTH - 1], &full[..TEXT_MAX_LENGTH - 2]);
    println!(
        "{} text tokens truncated to {} + BOS + EOS",
        full.len(),
        TEXT_MAX_LENGTH - 2
    );
    let short = tokenizer
        .with_max_length(5)
        .unwrap()
        .encode_unpadded(&long)
        .unwrap();
    assert_eq!(short, [1, full[0], full[1], full[2], 2]);
}

#[test]
fn internvl_cg_empty_text_is_the_prefix_alone() {
    let tokenizer = cg_tokenizer();
    let row = tokenizer.encode_unpadded("").unwrap();
    // "summarize:" -> BOS ▁s um m ar ize : EOS with this pruned vocabulary.
    let want = rows_u32(&expected("internvl_c_g")["tokens/input_ids"]);
    assert_eq!(&row[..row.len() - 1], &want[0][..7]);
    assert_eq!(row.last(), Some(&2));
    let batch = tokenizer.encode_batch(&[""]).unwrap();
    assert_eq!(batch.attention_mask[0].iter().sum::<u32>(), 8);
    assert!(tokenizer.clone().with_max_length(1).is_err());
}

// ---------------------------------------------------------------- InternVL-Chat prompts

/// Every prompt of a chat fixture, as (query text, ids without padding).
fn chat_prompts(case: &str) -> Vec<(String, Vec<u32>)> {
    let info = read_json(&fixture(case).join("expected.json"));
    let tensors = expected(case);
    let mut prompts = Vec::new();
    for (name, conversation) in info["conversations"].as_object().unwrap() {
        let queries: Vec<String> = match &conversation["query_text_tokenized"] {
            Value::String(q) => vec![q.clone()],
            Value::Array(list) => list
                .iter()
                .map(|q| q.as_str().unwrap().to_string())
                .collect(),
            other => panic!("{other}"),
        };
        let ids = rows_u32(&tensors[&format!("{name}/input_ids")]);
        let mask = rows_u32(&tensors[&format!("{name}/attention_mask")]);
        for (query, (row, mask)) in queries.into_iter().zip(ids.iter().zip(&mask)) {
            let real = row
                .iter()
                .zip(mask)
                .filter(|(_, &m)| m == 1)
                .map(|(&id, _)| id)
                .collect();
            prompts.push((query, real));
        }
    }
    prompts
}

fn check_chat_prompts(case: &str) {
    let tokenizer = Tokenizer::from_folder(fixture(case).join("model")).unwrap();
    let prompts = chat_prompts(case);
    for (query, want) in &prompts {
        let got = tokenizer.encode_with_defaults(query).unwrap();
        assert_eq!(&got, want, "{case}: {query:?}");
    }
    println!(
        "{case}: {}/{} chat prompts exact",
        prompts.len(),
        prompts.len()
    );
}

#[test]
fn llama_chat_prompts_match_the_official_ids() {
    check_chat_prompts("internvl_chat_llama");
}

#[test]
fn internlm2_chat_prompts_match_the_official_ids() {
    check_chat_prompts("internvl_chat_internlm2");
}

/// `chat()`: `batch_decode(output, skip_special_tokens=True)`, cut at the separator, stripped.
fn check_chat_responses(case: &str) {
    let tokenizer = Tokenizer::from_folder(fixture(case).join("model")).unwrap();
    let info = read_json(&fixture(case).join("expected.json"));
    let tensors = expected(case);
    let mut checked = 0;
    for (name, conversation) in info["conversations"].as_object().unwrap() {
        let responses: Vec<&str> = match &conversation["response"] {
            Value::String(r) => vec![r.as_str()],
            Value::Array(list) => list.iter().map(|r| r.as_str().unwrap()).collect(),
            other => panic!("{other}"),
        };
        let outputs = rows_u32(&tensors[&format!("{name}/generate_output")]);
        for (ids, want) in outputs.iter().zip(responses) {
            let text = tokenizer.decode(ids, true).unwrap();
            let response = text.split("<|im_end|>").next().unwrap().trim();
            assert_eq!(response, want, "{case}/{name}");
            checked += 1;
        }
    }
    println!("{case}: {checked}/{checked} decoded responses exact");
}

#[test]
fn llama_chat_responses_decode_like_transformers() {
    check_chat_responses("internvl_chat_llama");
}

#[test]
fn internlm2_chat_responses_decode_like_transformers() {
    check_chat_responses("internvl_chat_internlm2");
}

#[test]
fn chat_special_ids_come_from_the_added_tokens() {
    let llama = Tokenizer::from_folder(fixture("internvl_chat_llama").join("model")).unwrap();
    assert_eq!(llama.token_to_id("<|im_end|>"), Some(1096));
    assert_eq!(llama.token_to_id("<IMG_CONTEXT>"), Some(1099));
    assert_eq!(llama.id_to_token(1097).as_deref(), Some("<img>"));
    assert_eq!(
        (llama.bos_id(), llama.eos_id(), llama.pad_id()),
        (Some(1), Some(2), Some(0))
    );
    assert_eq!(llama.vocab_size(), 1106);
    let internlm2 =
        Tokenizer::from_folder(fixture("internvl_chat_internlm2").join("model")).unwrap();
    assert_eq!(internlm2.token_to_id("<|im_start|>"), Some(705));
    assert_eq!(internlm2.pad_id(), Some(2), "InternLM2 pads with </s>");
}

// ---------------------------------------------------------------- llama.cpp LLaMA vectors

fn llama_spm() -> SentencePieceModel {
    SentencePieceModel::from_gguf(tokenizers_dir().join("llama-spm/ggml-vocab-llama-spm.gguf"))
        .unwrap()
}

/// The `.inp`/`.out` pairs, split the way llama.cpp's scripts write them: each string is
/// followed by `\n__ggml_vocab_test__\n` (so the last fragment is empty, as is its id line).
fn llama_cpp_vectors() -> Vec<(String, Vec<u32>)> {
    let dir = tokenizers_dir().join("llama-spm");
    let inputs = std::fs::read_to_string(dir.join("ggml-vocab-llama-spm.gguf.inp")).unwrap();
    let outputs = std::fs::read_to_string(dir.join("ggml-vocab-llama-spm.gguf.out")).unwrap();
    let texts: Vec<&str> = inputs.split("\n__ggml_vocab_test__\n").collect();
    let lines: Vec<&str> = outputs.split('\n').collect();
    assert_eq!(texts.len(), lines.len(), "one id line per string");
    texts
        .iter()
        .zip(lines)
        .map(|(text, line)| {
            (
                text.to_string(),
                line.split_whitespace()
                    .map(|id| id.parse().unwrap())
                    .collect(),
            )
        })
        .collect()
}

#[test]
fn llama_spm_matches_all_llama_cpp_vectors() {
    let model = llama_spm();
    assert_eq!(model.vocab_size(), 32000);
    assert_eq!(
        (model.bos_id(), model.eos_id(), model.unk_id()),
        (Some(1), Some(2), 0)
    );
    let vectors = llama_cpp_vectors();
    let mut exact = 0;
    let mut round_trips = 0;
    for (text, want) in &vectors {
        let got = model.encode(text);
        assert_eq!(&got, want, "{text:?}");
        exact += 1;
        assert_eq!(&model.decode(&got).unwrap(), text, "round trip of {text:?}");
        round_trips += 1;
    }
    let total = vectors.len();
    println!(
        "{exact}/{total} llama-spm vectors exact, {round_trips}/{total} decode(encode(x)) == x"
    );
    assert_eq!(
        total, 47,
        "46 strings + the empty fragment after the last separator"
    );
}

// ---------------------------------------------------------------- Python cross-checks

fn check_sentencepiece_refs(model: &SentencePieceModel, refs: &Value, label: &str) {
    assert_eq!(
        model.vocab_size() as u64,
        refs["vocab_size"].as_u64().unwrap()
    );
    let cases = refs["cases"].as_array().unwrap();
    for case in cases {
        let text = case["text"].as_str().unwrap();
        assert_eq!(
            model.encode(text),
            ids_of(&case["ids"]),
            "{label}: ids of {text:?}"
        );
        let pieces: Vec<&str> = case["pieces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        assert_eq!(
            model.encode_pieces(text),
            pieces,
            "{label}: pieces of {text:?}"
        );
        let ids = ids_of(&case["ids"]);
        assert_eq!(
            model.decode(&ids).unwrap(),
            case["decoded"].as_str().unwrap(),
            "{label}: decode of {text:?}"
        );
    }
    let decodes = refs["decode_cases"].as_array().unwrap();
    for case in decodes {
        let ids = ids_of(&case["ids"]);
        assert_eq!(
            model.decode(&ids).unwrap(),
            case["text"].as_str().unwrap(),
            "{label}: decode {ids:?}"
        );
    }
    println!(
        "{label}: {n}/{n} strings exact vs Python sentencepiece (ids, pieces, decode), {d}/{d} decode cases",
        n = cases.len(),
        d = decodes.len()
    );
}

#[test]
fn internlm2_matches_python_sentencepiece() {
    let model =
        SentencePieceModel::from_file(tokenizers_dir().join("internlm2/tokenizer.model")).unwrap();
    assert_eq!(model.vocab_size(), 92544);
    assert!(model.byte_fallback());
    assert!(!model.normalizer().add_dummy_prefix);
    check_sentencepiece_refs(&model, &refs()["sentencepiece"]["internlm2"], "internlm2");
}

#[test]
fn llama_spm_matches_python_sentencepiece() {
    check_sentencepiece_refs(
        &llama_spm(),
        &refs()["sentencepiece"]["llama_spm"],
        "llama-spm",
    );
}

#[test]
fn internlm2_round_trips_mixed_text() {
    let model =
        SentencePieceModel::from_file(tokenizers_dir().join("internlm2/tokenizer.model")).unwrap();
    let texts = [
        "InternVL 2.5 是一个多模态大模型。It reads images 🖼️ and text!",
        "  two leading spaces, a tab\there\nand a newline  ",
        "数学：1 + 1 = 2；😀😃😄",
        "",
        " ",
        "ＡＢＣ——……",
    ];
    for text in texts {
        assert_eq!(model.decode(&model.encode(text)).unwrap(), text);
    }
    println!(
        "internlm2: {}/{} mixed texts round-trip",
        texts.len(),
        texts.len()
    );
}

fn check_transformers_refs(refs: &Value, label: &str) {
    let folder = tokenizers_dir().join(refs["folder"].as_str().unwrap());
    let tokenizer = SentencePieceTokenizer::from_folder(&folder).unwrap();
    assert_eq!(tokenizer.class(), SlowTokenizerClass::Llama);
    assert_eq!(
        tokenizer.vocab_size() as u64,
        refs["len"].as_u64().unwrap(),
        "{label}: len(tokenizer)"
    );
    let special = &refs["special_ids"];
    let as_id = |v: &Value| v.as_u64().map(|id| id as u32);
    assert_eq!(tokenizer.bos_id(), as_id(&special["bos"]));
    assert_eq!(tokenizer.eos_id(), as_id(&special["eos"]));
    assert_eq!(tokenizer.unk_id(), as_id(&special["unk"]));
    assert_eq!(tokenizer.pad_id(), as_id(&special["pad"]));
    let encodes = refs["encode"].as_array().unwrap();
    for case in encodes {
        let text = case["text"].as_str().unwrap();
        assert_eq!(
            tokenizer.encode_with_defaults(text),
            ids_of(&case["ids"]),
            "{label}: {text:?}"
        );
    }
    let decodes = refs["decode"].as_array().unwrap();
    for case in decodes {
        let ids = ids_of(&case["ids"]);
        let skip = case["skip_special_tokens"].as_bool().unwrap();
        let want = case["text"].as_str().unwrap();
        assert_eq!(
            tokenizer.decode(&ids, skip).unwrap(),
            want,
            "{label}: decode {ids:?} skip={skip}"
        );
    }
    println!(
        "{label}: {}/{} encodes and {}/{} decodes exact vs transformers LlamaTokenizer",
        encodes.len(),
        encodes.len(),
        decodes.len(),
        decodes.len()
    );
}

#[test]
fn llama_chat_tokenizer_matches_transformers() {
    check_transformers_refs(
        &refs()["transformers"]["internvl_chat_llama"],
        "internvl_chat_llama",
    );
}

#[test]
fn internvl_cg_tokenizer_matches_transformers() {
    check_transformers_refs(&refs()["transformers"]["internvl_c_g"], "internvl_c_g");
}

// ---------------------------------------------------------------- bad inputs

fn tokenizer_error(result: internvl::Result<impl std::fmt::Debug>) -> String {
    let err = result.expect_err("must fail");
    let text = err.to_string();
    println!("{text}");
    assert!(!text.contains('\n'), "one-line error: {text}");
    text
}

#[test]
fn missing_tokenizer_model_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let text = tokenizer_error(Tokenizer::from_folder(dir.path()));
    assert!(text.contains("no tokenizer.model"), "{text}");
    std::fs::write(dir.path().join("tokenizer.json"), "{}").unwrap();
    let text = tokenizer_error(Tokenizer::from_folder(dir.path()));
    assert!(text.contains("tokenizer.json"), "{text}");
    let missing = dir.path().join("tokenizer.model");
    let err = SentencePieceModel::from_file(&missing).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(err.to_string().contains("tokenizer.model"));
}

#[test]
fn truncated_or_corrupt_models_are_reported_with_the_file() {
    let real = std::fs::read(tokenizers_dir().join("internlm2/tokenizer.model")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, Vec<u8>); 4] = [
        ("half.model", real[..real.len() / 2].to_vec()),
        ("cut.model", real[..real.len() - 3].to_vec()),
        ("text.model", b"this is not a protobuf at all\n".to_vec()),
        ("empty.model", Vec::new()),
    ];
    for (name, bytes) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let text = tokenizer_error(SentencePieceModel::from_file(&path));
        assert!(text.contains(name), "the error names the file: {text}");
    }
    let gguf = dir.path().join("text.model");
    let text = tokenizer_error(SentencePieceModel::from_gguf(&gguf));
    assert!(text.contains("GGUF"), "{text}");
}

/// Serialises a minimal `ModelProto` (pieces, trainer_spec, normalizer_spec).
fn proto_bytes(model_type: u8, charsmap: &[u8]) -> Vec<u8> {
    fn field(number: u8, payload: &[u8], out: &mut Vec<u8>) {
        out.push(number << 3 | 2);
        out.push(payload.len() as u8);
        out.extend_from_slice(payload);
    }
    let mut bytes = Vec::new();
    for (piece, kind) in [("<unk>", 2u8), ("<s>", 3), ("</s>", 3), ("▁a", 1)] {
        let mut entry = Vec::new();
        field(1, piece.as_bytes(), &mut entry);
        entry.extend_from_slice(&[3 << 3, kind]);
        field(1, &entry, &mut bytes);
    }
    field(2, &[3 << 3, model_type], &mut bytes);
    let mut normalizer = Vec::new();
    field(1, b"nmt_nfkc", &mut normalizer);
    if !charsmap.is_empty() {
        field(2, charsmap, &mut normalizer);
    }
    field(3, &normalizer, &mut bytes);
    bytes
}

#[test]
fn unsupported_models_are_refused_clearly() {
    let ok = SentencePieceModel::from_bytes(&proto_bytes(2, &[]), "<bpe>").unwrap();
    assert_eq!(ok.encode("a a"), [3, 3]);
    let text = tokenizer_error(SentencePieceModel::from_bytes(
        &proto_bytes(1, &[]),
        "<unigram>",
    ));
    assert!(
        text.contains("UNIGRAM") && text.contains("<unigram>"),
        "{text}"
    );
    let text = tokenizer_error(SentencePieceModel::from_bytes(
        &proto_bytes(2, &[1, 2, 3, 4, 5]),
        "<nfkc>",
    ));
    assert!(
        text.contains("nmt_nfkc") && text.contains("not supported"),
        "{text}"
    );
}

#[test]
fn unsupported_tokenizer_classes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("internvl_chat_llama").join("model/tokenizer.model"),
        dir.path().join("tokenizer.model"),
    )
    .unwrap();
    let config = dir.path().join("tokenizer_config.json");
    std::fs::write(
        &config,
        r#"{"tokenizer_class": "LlamaTokenizer", "legacy": false}"#,
    )
    .unwrap();
    let text = tokenizer_error(Tokenizer::from_folder(dir.path()));
    assert!(text.contains("legacy=false"), "{text}");
    std::fs::write(&config, r#"{"tokenizer_class": "T5Tokenizer"}"#).unwrap();
    let text = tokenizer_error(Tokenizer::from_folder(dir.path()));
    assert!(text.contains("T5Tokenizer"), "{text}");
    std::fs::write(&config, "{ not json").unwrap();
    tokenizer_error(Tokenizer::from_folder(dir.path()));
}

#[test]
fn decoding_an_unknown_id_fails() {
    let tokenizer = Tokenizer::from_folder(fixture("internvl_chat_llama").join("model")).unwrap();
    let text = tokenizer_error(tokenizer.decode(&[1, 5, 99_999], false));
    assert!(text.contains("99999"), "{text}");
    assert!(llama_spm().decode(&[32_000]).is_err());
}

#[test]
fn bare_model_gets_llama_defaults() {
    let model =
        SentencePieceModel::from_file(fixture("internvl_chat_llama").join("model/tokenizer.model"))
            .unwrap();
    let tokenizer = SentencePieceTokenizer::new(
        model,
        HfTokenizerSettings::defaults(SlowTokenizerClass::Llama),
    );
    assert_eq!(
        tokenizer.encode("<s>hi</s>", false, false)[0],
        1,
        "<s> is split out of the text"
    );
    assert_eq!(tokenizer.pad_id(), None);
}
