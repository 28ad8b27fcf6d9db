//! Chat templates and prompt building against the official `chat()` / `batch_chat()` query
//! strings and input ids of the three chat fixtures (official InternVL code, transformers
//! 4.37.2 slow tokenizers), plus the exact template strings of `conversation.py`.

mod common;

use candle_core::{DType, Tensor};
use common::{expected, fixture};
use internvl::processing::templates::{
    expand_image_placeholders, image_tokens, multi_image_question, video_question, ChatTemplate,
    PromptBuilder, INTERNVL2_5_SYSTEM_MESSAGE, INTERNVL_SYSTEM_MESSAGE,
};
use internvl::processing::tokenizer::Tokenizer;
use internvl::Error;
use serde_json::Value;

const CHAT_CASES: [&str; 3] = [
    "internvl_chat_qwen2",
    "internvl_chat_internlm2",
    "internvl_chat_llama",
];

fn read_json(path: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn rows_u32(tensor: &Tensor) -> Vec<Vec<u32>> {
    tensor
        .to_dtype(DType::U32)
        .unwrap()
        .to_vec2::<u32>()
        .unwrap()
}

fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => vec![s.clone()],
        Value::Array(list) => list
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect(),
        other => panic!("{other}"),
    }
}

fn usizes(value: &Value) -> Vec<usize> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect()
}

/// Builds every conversation's query from its recorded inputs and checks the string and the ids.
fn check_case(case: &str) {
    let dir = fixture(case);
    let info = read_json(&dir.join("expected.json"));
    let config = read_json(&dir.join("model/config.json"));
    let builder = PromptBuilder::from_config(&config).unwrap();
    assert_eq!(builder.template().name, info["template"].as_str().unwrap());
    assert_eq!(
        builder.system_message(),
        info["system_message"].as_str().unwrap()
    );
    assert_eq!(
        builder.num_image_token() as u64,
        info["num_image_token_per_tile"].as_u64().unwrap()
    );
    let tokenizer = Tokenizer::from_folder(dir.join("model")).unwrap();
    let tensors = expected(case);
    let mut checked = 0;
    for (name, conv) in info["conversations"].as_object().unwrap() {
        let patches = match &conv["num_patches_list"] {
            Value::Null => Vec::new(),
            list => usizes(list),
        };
        let prompts = match name.as_str() {
            "batch_chat" => {
                let questions = strings(&conv["question"]);
                builder.batch_chat(&questions, Some(&patches)).unwrap()
            }
            "multi_turn" => {
                let history: Vec<(String, String)> = conv["history"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|turn| {
                        let turn = strings(turn);
                        (turn[0].clone(), turn[1].clone())
                    })
                    .collect();
                let question = conv["question"].as_str().unwrap();
                vec![builder.chat(question, Some(&history), &patches).unwrap()]
            }
            "chat_multi_image" | "text_only" => {
                let question = conv["question"].as_str().unwrap();
                let no_history: Option<&[(String, String)]> = None;
                vec![builder.chat(question, no_history, &patches).unwrap()]
            }
            other => panic!("unexpected conversation {other}"),
        };
        let want_queries = strings(&conv["query_text_tokenized"]);
        assert_eq!(prompts.len(), want_queries.len(), "{case}/{name}");
        let ids = rows_u32(&tensors[&format!("{name}/input_ids")]);
        let mask = rows_u32(&tensors[&format!("{name}/attention_mask")]);
        for (i, (prompt, want)) in prompts.iter().zip(&want_queries).enumerate() {
            assert_eq!(&prompt.query, want, "{case}/{name}[{i}] query string");
            let want_ids: Vec<u32> = ids[i]
                .iter()
                .zip(&mask[i])
                .filter(|(_, &m)| m == 1)
                .map(|(&id, _)| id)
                .collect();
            let got = prompt.input_ids(&tokenizer).unwrap();
            assert_eq!(got, want_ids, "{case}/{name}[{i}] input ids");
            checked += 1;
        }
        // Generation stops on the id of the template's separator.
        let eos = conv["generation_config"]["eos_token_id"].as_u64().unwrap() as u32;
        assert_eq!(builder.eos_token_id(&tokenizer).unwrap(), eos);
    }
    println!(
        "{case} ({}): {checked}/{checked} queries exact, string and ids",
        builder.template().name
    );
}

#[test]
fn qwen2_case_queries_and_ids_are_exact() {
    check_case("internvl_chat_qwen2");
}

#[test]
fn internlm2_case_queries_and_ids_are_exact() {
    check_case("internvl_chat_internlm2");
}

#[test]
fn llama_case_queries_and_ids_are_exact() {
    check_case("internvl_chat_llama");
}

#[test]
fn readme_multi_image_and_video_questions() {
    for case in CHAT_CASES {
        let info = read_json(&fixture(case).join("expected.json"));
        let want = info["conversations"]["chat_multi_image"]["question"]
            .as_str()
            .unwrap();
        assert_eq!(
            multi_image_question(2, "Describe the two images in detail."),
            want
        );
    }
    assert_eq!(
        video_question(3, "What is the red panda doing?"),
        "Frame-1: <image>\nFrame-2: <image>\nFrame-3: <image>\nWhat is the red panda doing?"
    );
    assert_eq!(multi_image_question(0, "Q"), "Q");
}

#[test]
fn template_strings_are_exactly_those_of_conversation_py() {
    let sys = INTERNVL_SYSTEM_MESSAGE;
    let cases = [
        (
            "Hermes-2",
            format!("<|im_start|>system\n{sys}<|im_end|><|im_start|>user\nQ<|im_end|><|im_start|>assistant\n"),
            "<|im_end|>",
        ),
        (
            "internlm2-chat",
            format!("<|im_start|>system\n{sys}<|im_end|><|im_start|>user\nQ<|im_end|><|im_start|>assistant\n"),
            "<|im_end|>",
        ),
        (
            "phi3-chat",
            format!("<|system|>\n{sys}<|end|><|user|>\nQ<|end|><|assistant|>\n"),
            "<|end|>",
        ),
        (
            "internvl2_5",
            format!(
                "<|im_start|>system\n{INTERNVL2_5_SYSTEM_MESSAGE}<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n"
            ),
            "<|im_end|>",
        ),
        ("internvl_zh", " <human>: Q <bot>:".to_string(), "</s>"),
        (
            "vicuna_v1",
            "A chat between a curious user and an artificial intelligence assistant. The \
             assistant gives helpful, detailed, and polite answers to the user's questions. \
             USER: Q ASSISTANT:"
                .to_string(),
            "</s>",
        ),
    ];
    for (name, want, stop) in cases {
        let template = ChatTemplate::by_name(name).unwrap();
        let no_history: &[(&str, &str)] = &[];
        assert_eq!(
            template.prompt(template.system_message, no_history, "Q"),
            want,
            "{name}"
        );
        assert_eq!(template.stop_token(), stop, "{name}");
    }
    // Byte-exact default system messages: ASCII ", " after InternVL in the older one.
    assert!(INTERNVL_SYSTEM_MESSAGE.contains("InternVL, 是"));
    assert!(INTERNVL2_5_SYSTEM_MESSAGE.starts_with("你是书生·万象，"));
    assert_eq!(
        ChatTemplate::by_name("Hermes-2").unwrap().stop_str,
        Some("<|endoftext|>")
    );
    assert_eq!(ChatTemplate::by_name("v1").unwrap().name, "vicuna_v1");
}

#[test]
fn multi_turn_history_follows_each_separator_style() {
    let history = [("<image>\nQ1", "A1"), ("Q2", "A2")];
    let hermes = ChatTemplate::by_name("Hermes-2").unwrap();
    assert_eq!(
        hermes.prompt("S", &history, "Q3"),
        "<|im_start|>system\nS<|im_end|><|im_start|>user\n<image>\nQ1<|im_end|><|im_start|>assistant\nA1<|im_end|><|im_start|>user\nQ2<|im_end|><|im_start|>assistant\nA2<|im_end|><|im_start|>user\nQ3<|im_end|><|im_start|>assistant\n"
    );
    let internvl2_5 = ChatTemplate::by_name("internvl2_5").unwrap();
    assert_eq!(
        internvl2_5.prompt("S", &history[1..], "Q3"),
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\nA2<|im_end|>\n<|im_start|>user\nQ3<|im_end|>\n<|im_start|>assistant\n"
    );
    let zh = ChatTemplate::by_name("internvl_zh").unwrap();
    assert_eq!(
        zh.prompt("S", &history[1..], "Q3"),
        "S <human>: Q2 <bot>: A2</s><human>: Q3 <bot>:"
    );
    let vicuna = ChatTemplate::by_name("vicuna_v1").unwrap();
    assert_eq!(
        vicuna.prompt("S", &history[1..], "Q3"),
        "S USER: Q2 ASSISTANT: A2</s>USER: Q3 ASSISTANT:"
    );
    // Python's `if message:`: an empty answer writes the role alone, without separator.
    assert_eq!(
        hermes.prompt("S", &[("Q", "")], "R"),
        "<|im_start|>system\nS<|im_end|><|im_start|>user\nQ<|im_end|><|im_start|>assistant\n<|im_start|>user\nR<|im_end|><|im_start|>assistant\n"
    );
}

#[test]
fn image_prefix_follows_the_release_rule() {
    let builder = PromptBuilder::new("internlm2-chat", Some("S"), 2).unwrap();
    let none: Option<&[(&str, &str)]> = None;
    let img = image_tokens(2, 1);
    assert_eq!(img, "<img><IMG_CONTEXT><IMG_CONTEXT></img>");
    // Images, no history, no placeholder: "<image>\n" is prefixed.
    let p = builder.chat("Q", none, &[1]).unwrap();
    assert_eq!(p.question, "<image>\nQ");
    assert!(p.query.contains(&format!("user\n{img}\nQ<|im_end|>")));
    assert_eq!(
        p.printable_query(),
        "<|im_start|>system\nS<|im_end|><|im_start|>user\n<image>\nQ<|im_end|><|im_start|>assistant\n"
    );
    // A placeholder in the question: no prefix, replaced in place.
    let p = builder.chat("look: <image> ok", none, &[1]).unwrap();
    assert_eq!(p.question, "look: <image> ok");
    assert!(p.query.contains(&format!("look: {img} ok")));
    // History given (even empty): no prefix, so the image needs a placeholder somewhere.
    let empty: &[(&str, &str)] = &[];
    assert!(matches!(
        builder.chat("Q", Some(empty), &[1]),
        Err(Error::InvalidArgument(_))
    ));
    // Text only: no prefix, no image tokens.
    let p = builder.chat("Q", none, &[]).unwrap();
    assert_eq!(p.question, "Q");
    assert!(!p.query.contains("<img>"));
    // Tiles multiply the context tokens: 2 tokens × 3 tiles.
    let p = builder.chat("<image>", none, &[3]).unwrap();
    assert_eq!(p.query.matches("<IMG_CONTEXT>").count(), 6);
}

#[test]
fn placeholder_and_image_counts_must_match() {
    let builder = PromptBuilder::new("Hermes-2", None, 4).unwrap();
    let none: Option<&[(&str, &str)]> = None;
    let err = builder
        .chat("<image> and <image>", none, &[1])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("more <image> placeholders than images"),
        "{err}"
    );
    let err = builder
        .chat("<image>", none, &[1, 2])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("more images than <image> placeholders"),
        "{err}"
    );
    let err = builder.chat("<image>", none, &[]).unwrap_err().to_string();
    assert!(err.contains("more <image> placeholders"), "{err}");
    // Images go to placeholders in order, across history turns.
    let history = [("<image>\nfirst", "ok")];
    let p = builder
        .chat("<image> second", Some(&history), &[1, 2])
        .unwrap();
    let first = p.query.find("<img>").unwrap();
    let second = p.query.rfind("<img>").unwrap();
    assert_eq!(p.query[first..].find("</img>").unwrap(), 5 + 4 * 13);
    assert_eq!(p.query[second..].find("</img>").unwrap(), 5 + 8 * 13);
    assert!(first < p.query.find("first").unwrap());
    assert_eq!(
        expand_image_placeholders("a<image>b<image>c", &[0, 1], 1).unwrap(),
        "a<img></img>b<img><IMG_CONTEXT></img>c"
    );
    // batch_chat: one image per question, lengths must agree.
    let err = builder
        .batch_chat(&["a", "b"], Some(&[1]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("2 questions but 1"), "{err}");
    let err = builder
        .batch_chat(&["<image><image>"], Some(&[1]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("more <image> placeholders"), "{err}");
    let text = builder.batch_chat(&["a", "b"], None).unwrap();
    assert!(text.iter().all(|p| !p.query.contains("<img>")));
}

#[test]
fn unknown_templates_are_refused() {
    let err = ChatTemplate::by_name("nope").unwrap_err().to_string();
    assert!(err.contains("unknown chat template \"nope\""), "{err}");
    assert!(err.contains("internvl2_5"), "{err}");
    assert!(PromptBuilder::new("qwen", None, 256).is_err());
    let config = serde_json::json!({"template": "nope", "vision_config": {"image_size": 448, "patch_size": 14}});
    assert!(PromptBuilder::from_config(&config).is_err());
    let config = serde_json::json!({"vision_config": {"image_size": 448, "patch_size": 14}});
    assert!(PromptBuilder::from_config(&config).is_err());
}

#[test]
fn released_config_values_give_256_tokens_and_the_system_message_override() {
    let config = serde_json::json!({
        "template": "internvl2_5",
        "force_image_size": 448,
        "downsample_ratio": 0.5,
        "system_message": "Be brief.",
        "vision_config": {"image_size": 448, "patch_size": 14}
    });
    let builder = PromptBuilder::from_config(&config).unwrap();
    assert_eq!(builder.num_image_token(), 256);
    assert_eq!(builder.system_message(), "Be brief.");
    let none: Option<&[(&str, &str)]> = None;
    let p = builder.chat("Hi", none, &[2]).unwrap();
    assert_eq!(p.query.matches("<IMG_CONTEXT>").count(), 512);
    assert!(p
        .query
        .starts_with("<|im_start|>system\nBe brief.<|im_end|>\n"));
}

#[test]
fn responses_are_cut_at_the_stop_token_and_stripped() {
    let template = ChatTemplate::by_name("internvl2_5").unwrap();
    assert_eq!(template.response("  Paris. <|im_end|>\nmore"), "Paris.");
    let phi3 = ChatTemplate::by_name("phi3-chat").unwrap();
    assert_eq!(phi3.response("\u{1c}ok<|end|>x"), "ok");
    assert_eq!(phi3.response("no stop "), "no stop");
}

#[test]
fn a_stop_token_missing_from_the_vocabulary_is_an_error() {
    let tokenizer = Tokenizer::from_folder(fixture("internvl_chat_qwen2").join("model")).unwrap();
    let phi3 = PromptBuilder::new("phi3-chat", None, 1).unwrap();
    let err = phi3.eos_token_id(&tokenizer).unwrap_err();
    assert!(matches!(err, Error::Tokenizer { .. }), "{err}");
    assert!(err.to_string().contains("<|end|>"), "{err}");
}
