//! `internvl tokenize` end to end: the ids of the official chat prompts of the three chat
//! fixtures (InternLM2 and LLaMA sentencepiece with BOS, Qwen2 byte-level BPE without),
//! `--json` tokens, `--decode` round trips, tokenizer-only folders, and one-line errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const CHAT_CASES: [&str; 3] = [
    "internvl_chat_qwen2",
    "internvl_chat_internlm2",
    "internvl_chat_llama",
];

fn fixture(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(case)
}

fn internvl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_internvl"))
        .args(args)
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_HOME")
        .output()
        .expect("run internvl")
}

fn stdout_of(output: &Output) -> String {
    assert!(
        output.status.success(),
        "internvl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// (query text, ids without padding) of the conversations of a chat fixture.
fn official_prompts(case: &str) -> Vec<(String, Vec<u32>)> {
    let text = std::fs::read_to_string(fixture(case).join("expected.json")).unwrap();
    let info: Value = serde_json::from_str(&text).unwrap();
    let mut prompts = Vec::new();
    for conversation in info["conversations"].as_object().unwrap().values() {
        let queries: Vec<String> = match &conversation["query_text_tokenized"] {
            Value::String(q) => vec![q.clone()],
            Value::Array(list) => list
                .iter()
                .map(|q| q.as_str().unwrap().to_string())
                .collect(),
            other => panic!("{other}"),
        };
        let rows = conversation["input_ids"].as_array().unwrap();
        let masks = conversation["attention_mask"].as_array().unwrap();
        for (query, (row, mask)) in queries.into_iter().zip(rows.iter().zip(masks)) {
            let ids = row
                .as_array()
                .unwrap()
                .iter()
                .zip(mask.as_array().unwrap())
                .filter(|(_, m)| m.as_u64() == Some(1))
                .map(|(id, _)| id.as_u64().unwrap() as u32)
                .collect();
            prompts.push((query, ids));
        }
    }
    prompts
}

/// `internvl tokenize --decode --json` of the ids printed by a plain `tokenize`.
fn decode(model: &str, plain_ids: &str, skip_special_tokens: bool) -> String {
    let ids_arg = plain_ids.trim().replace(' ', ",");
    let mut args = vec!["tokenize", "--model", model, "--decode", "--json"];
    if skip_special_tokens {
        args.push("--skip-special-tokens");
    }
    args.push(&ids_arg);
    let decoded: Value = serde_json::from_str(&stdout_of(&internvl(&args))).unwrap();
    decoded["text"].as_str().unwrap().to_string()
}

fn json_ids(value: &Value) -> Vec<u32> {
    value["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}

/// Checks every official prompt through the CLI (plain and JSON) and the decode round trip.
fn check_folder(label: &str, model: &Path, prompts: &[(String, Vec<u32>)]) {
    let model = model.to_str().unwrap();
    for (query, want) in prompts {
        let plain = stdout_of(&internvl(&["tokenize", "--model", model, query]));
        let got: Vec<u32> = plain
            .split_whitespace()
            .map(|t| t.parse().unwrap())
            .collect();
        assert_eq!(&got, want, "{label}: {query:?}");

        let json: Value = serde_json::from_str(&stdout_of(&internvl(&[
            "tokenize", "--model", model, "--json", query,
        ])))
        .unwrap();
        assert_eq!(&json_ids(&json), want);
        let tokens = json["tokens"].as_array().unwrap();
        assert_eq!(tokens.len(), want.len());
        assert!(tokens.iter().any(|t| t == "<|im_start|>"));

        // Byte-level BPE decodes every prompt back exactly (no spaces around special tokens).
        if label.starts_with("internvl_chat_qwen2") {
            assert_eq!(decode(model, &plain, false), *query, "{label}: round trip");
        }
    }
    // The sentencepiece families put spaces around special tokens when decoding (as
    // transformers does), so their round trip is checked on text: BOS dropped as special.
    let text = "Hello, who are you?";
    let ids = stdout_of(&internvl(&["tokenize", "--model", model, text]));
    assert_eq!(decode(model, &ids, true), text, "{label}: round trip");
    println!(
        "{label}: {}/{} official prompts exact through `internvl tokenize`, decode round-trips",
        prompts.len(),
        prompts.len()
    );
}

#[test]
fn chat_fixture_prompts_tokenize_like_the_release() {
    for case in CHAT_CASES {
        check_folder(case, &fixture(case).join("model"), &official_prompts(case));
    }
}

#[test]
fn bos_is_added_where_the_release_adds_it() {
    let first_id = |case: &str| {
        let model = fixture(case).join("model");
        let out = stdout_of(&internvl(&[
            "tokenize",
            "--model",
            model.to_str().unwrap(),
            "Hello",
        ]));
        out.split_whitespace()
            .next()
            .unwrap()
            .parse::<u32>()
            .unwrap()
    };
    assert_eq!(first_id("internvl_chat_internlm2"), 1, "InternLM2 adds <s>");
    assert_eq!(first_id("internvl_chat_llama"), 1, "LLaMA adds <s>");
    assert_ne!(first_id("internvl_chat_qwen2"), 620, "Qwen2 adds no BOS");
}

#[test]
fn tokenizer_only_folders_work_without_config_or_weights() {
    let sets: [(&str, &[&str]); 3] = [
        (
            "internvl_chat_qwen2",
            &[
                "tokenizer.json",
                "tokenizer_config.json",
                "special_tokens_map.json",
                "added_tokens.json",
            ],
        ),
        (
            "internvl_chat_internlm2",
            &[
                "tokenizer.model",
                "tokenizer_config.json",
                "special_tokens_map.json",
                "added_tokens.json",
            ],
        ),
        (
            "internvl_chat_llama",
            &[
                "tokenizer.model",
                "tokenizer_config.json",
                "special_tokens_map.json",
                "added_tokens.json",
            ],
        ),
    ];
    for (case, files) in sets {
        let dir = tempfile::tempdir().unwrap();
        for name in files {
            std::fs::copy(
                fixture(case).join("model").join(name),
                dir.path().join(name),
            )
            .unwrap();
        }
        assert!(!dir.path().join("config.json").exists());
        let prompts = official_prompts(case);
        check_folder(
            &format!("{case} (tokenizer files only)"),
            dir.path(),
            &prompts[..1],
        );
    }
}

#[test]
fn text_can_come_from_standard_input() {
    use std::io::Write;
    let model = fixture("internvl_chat_internlm2").join("model");
    let (query, want) = official_prompts("internvl_chat_internlm2").remove(0);
    let mut child = Command::new(env!("CARGO_BIN_EXE_internvl"))
        .args(["tokenize", "--model", model.to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(query.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let got: Vec<u32> = stdout_of(&output)
        .split_whitespace()
        .map(|t| t.parse().unwrap())
        .collect();
    assert_eq!(got, want);
}

#[test]
fn decode_can_skip_special_tokens() {
    let model = fixture("internvl_chat_qwen2").join("model");
    let model = model.to_str().unwrap();
    let ids = stdout_of(&internvl(&[
        "tokenize",
        "--model",
        model,
        "<|im_start|>user\nHi<|im_end|>",
    ]));
    let ids = format!("[{}]", ids.trim().replace(' ', ", "));
    let text = stdout_of(&internvl(&[
        "tokenize",
        "--model",
        model,
        "--decode",
        "--skip-special-tokens",
        &ids,
    ]));
    assert_eq!(text, "user\nHi\n");
}

#[test]
fn bad_inputs_exit_with_one_line_errors() {
    let empty = tempfile::tempdir().unwrap();
    let out = internvl(&["tokenize", "--model", empty.path().to_str().unwrap(), "x"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains("tokenizer"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");

    let model = fixture("internvl_chat_llama").join("model");
    let model = model.to_str().unwrap();
    let out = internvl(&["tokenize", "--model", model, "--decode", "1 two 3"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("`two` is not a token id"));
    let out = internvl(&["tokenize", "--model", model, "--decode", "99999999"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("99999999"));
}
