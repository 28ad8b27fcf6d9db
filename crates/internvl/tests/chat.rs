//! InternVL-Chat end to end (image files → tiles → ViT → mlp1 → prompt → LLM → greedy answer)
//! against every conversation of the three chat fixtures: prompt ids exact, per-step
//! log-probabilities equal to the log-softmax of the official logits, generated ids exact.

mod common;

use candle_core::{DType, Device, Tensor, D};
use common::{expected, fixture};
use internvl::tasks::chat::{ChatModel, GenerationOptions};
use serde_json::Value;

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn check_conversation(
    case: &str,
    model: &ChatModel,
    name: &str,
    row: usize,
    golden: &std::collections::HashMap<String, Tensor>,
) {
    let json: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture(case).join("expected.json")).unwrap(),
    )
    .unwrap();
    let inputs: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture(case).join("inputs/inputs.json")).unwrap(),
    )
    .unwrap();
    let conv = &json["conversations"][name];
    let all_images: Vec<_> = inputs["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| fixture(case).join(i["file"].as_str().unwrap()))
        .collect();
    let images = match name {
        "chat_multi_image" => all_images.clone(),
        "batch_chat" => vec![all_images[row].clone()],
        "multi_turn" => vec![all_images[0].clone()],
        _ => Vec::new(),
    };
    let question = match &conv["question"] {
        Value::Array(qs) => qs[row].as_str().unwrap().to_string(),
        q => q.as_str().unwrap().to_string(),
    };
    let history: Option<Vec<(String, String)>> = conv["history"].as_array().map(|h| {
        h.iter()
            .map(|t| {
                (
                    t[0].as_str().unwrap().to_string(),
                    t[1].as_str().unwrap().to_string(),
                )
            })
            .collect()
    });
    let prepared = model.prepare_images(&images, None).unwrap();
    let tiles = prepared
        .as_ref()
        .map(|p| p.num_patches_list.clone())
        .unwrap_or_default();
    let (_, prompt) = model
        .prompt_ids(&question, history.as_deref(), &tiles)
        .unwrap();
    // The reference rows are left-padded: drop the pads.
    let mask = ids(&conv["attention_mask"][row]);
    let reference_prompt: Vec<u32> = ids(&conv["input_ids"][row])
        .into_iter()
        .zip(&mask)
        .filter(|(_, &m)| m == 1)
        .map(|(t, _)| t)
        .collect();
    assert_eq!(prompt, reference_prompt, "{case}/{name}[{row}] prompt ids");

    let reference_new = ids(&conv["new_token_ids"][row]);
    let options = GenerationOptions {
        max_new_tokens: reference_new.len(),
        top_logprobs: Some(3),
        ..Default::default()
    };
    let out = model
        .generate(&prompt, prepared.as_ref(), &options, &mut |_| {})
        .unwrap();
    // A batched row that finished early is padded by the reference; compare up to our stop.
    assert_eq!(
        out.token_ids[..],
        reference_new[..out.token_ids.len()],
        "{case}/{name}[{row}] ids"
    );

    let steps = golden[&format!("{name}/step_logits")]
        .narrow(1, row, 1)
        .unwrap()
        .squeeze(1)
        .unwrap();
    let reference_lp = candle_nn::ops::log_softmax(&steps, D::Minus1)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let mut worst = 0f32;
    for (step, lp) in out.logprobs.unwrap().iter().enumerate() {
        let scale = reference_lp[step].iter().fold(0f32, |m, v| m.max(v.abs()));
        for &(id, value) in std::iter::once(&(lp.token_id, lp.logprob)).chain(&lp.top) {
            worst = worst.max((value - reference_lp[step][id as usize]).abs() / scale);
        }
    }
    println!("{case}/{name}[{row}]: prompt {} ids exact, {} new ids exact, log-prob max|diff|/max|ref| = {worst:.2e}", prompt.len(), out.token_ids.len());
    assert!(worst <= 1e-4, "{worst}");
}

fn check_case(case: &str) {
    let model = ChatModel::open(
        &fixture(case).join("model"),
        None,
        None,
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let golden = expected(case);
    for (name, rows) in [
        ("chat_multi_image", 1),
        ("batch_chat", 2),
        ("multi_turn", 1),
        ("text_only", 1),
    ] {
        for row in 0..rows {
            check_conversation(case, &model, name, row, &golden);
        }
    }
}

#[test]
fn qwen2_chat_matches_official() {
    check_case("internvl_chat_qwen2");
}

#[test]
fn internlm2_chat_matches_official() {
    check_case("internvl_chat_internlm2");
}

#[test]
fn llama_chat_matches_official() {
    check_case("internvl_chat_llama");
}

#[test]
fn bad_inputs_are_named() {
    let case = "internvl_chat_qwen2";
    let model = ChatModel::open(
        &fixture(case).join("model"),
        None,
        None,
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let image = fixture(case).join("inputs/imgA_300x170.png");
    let prepared = model
        .prepare_images(std::slice::from_ref(&image), None)
        .unwrap()
        .unwrap();
    let tiles = prepared.num_patches_list.clone();
    let err = model
        .prompt_ids("<image> and <image>?", None, &tiles)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("placeholder") || err.contains("<image>"),
        "{err}"
    );
    let err = model
        .prompt_ids(
            "no placeholder",
            Some(&[("a".to_string(), "b".to_string())]),
            &tiles,
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("image"), "{err}");
    let (_, long) = model
        .prompt_ids(&"word ".repeat(40_000), None, &[])
        .unwrap();
    let options = GenerationOptions {
        max_new_tokens: 4,
        ..Default::default()
    };
    let err = model
        .generate(&long, None, &options, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("exceeds the model's context length"), "{err}");
    let err = ChatModel::open(
        &fixture(case).join("model"),
        Some("no-such-template"),
        None,
        DType::F32,
        &Device::Cpu,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("no-such-template"), "{err}");
    let tmp = tempfile::tempdir().unwrap();
    let corrupt = tmp.path().join("corrupt.jpg");
    std::fs::write(&corrupt, b"\xff\xd8\xff\xe0 not really a jpeg").unwrap();
    let err = model
        .prepare_images(&[corrupt], None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("corrupt.jpg"), "{err}");
    let _ = Tensor::zeros(1, DType::F32, &Device::Cpu);
}

/// Continuous batching: generations that start at different steps and share decode steps give
/// the same ids as running each alone, and log-probabilities within float rounding.
#[test]
fn batched_decode_steps_equal_single_generations() {
    for case in [
        "internvl_chat_qwen2",
        "internvl_chat_internlm2",
        "internvl_chat_llama",
    ] {
        let model = ChatModel::open(
            &fixture(case).join("model"),
            None,
            None,
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        let inputs: Value = serde_json::from_str(
            &std::fs::read_to_string(fixture(case).join("inputs/inputs.json")).unwrap(),
        )
        .unwrap();
        let image = fixture(case).join(inputs["images"][0]["file"].as_str().unwrap());
        let prepared = model
            .prepare_images(std::slice::from_ref(&image), None)
            .unwrap();
        let tiles = prepared.as_ref().unwrap().num_patches_list.clone();
        let requests: Vec<(Vec<u32>, bool, usize)> = [
            ("<image>\nDescribe the image.", true, 12),
            ("Hello, who are you?", false, 9),
            ("<image>\nWhat is in it?", true, 15),
            ("Count to ten.", false, 5),
        ]
        .iter()
        .map(|&(q, with_image, n)| {
            let t: &[usize] = if with_image { &tiles } else { &[] };
            (model.prompt_ids(q, None, t).unwrap().1, with_image, n)
        })
        .collect();
        let options = |n: usize| GenerationOptions {
            max_new_tokens: n,
            top_logprobs: Some(2),
            ..Default::default()
        };
        let images = |with: bool| if with { prepared.as_ref() } else { None };
        let alone: Vec<_> = requests
            .iter()
            .map(|(p, w, n)| {
                model
                    .generate(p, images(*w), &options(*n), &mut |_| {})
                    .unwrap()
            })
            .collect();

        // Request r joins at step 2·r; every step feeds all running rows at once.
        let mut states: Vec<Option<internvl::tasks::chat::GenerationState>> =
            (0..requests.len()).map(|_| None).collect();
        let mut results: Vec<Option<internvl::tasks::chat::Generation>> =
            (0..requests.len()).map(|_| None).collect();
        let mut widest = 0;
        for step in 0.. {
            for (r, (p, w, n)) in requests.iter().enumerate() {
                if step == 2 * r {
                    states[r] = Some(model.start(p, images(*w), &options(*n)).unwrap());
                }
            }
            let mut batch = Vec::new();
            let mut tokens = Vec::new();
            for (r, slot) in states.iter_mut().enumerate() {
                let Some(mut state) = slot.take() else {
                    continue;
                };
                match model.choose_next(&mut state, &mut |_| {}).unwrap() {
                    Some(token) => {
                        tokens.push(token);
                        batch.push((r, state));
                    }
                    None => results[r] = Some(model.finish(state, &mut |_| {}).unwrap()),
                }
            }
            widest = widest.max(batch.len());
            let mut refs: Vec<_> = batch.iter_mut().map(|(_, s)| s).collect();
            model.decode_step(&mut refs, &tokens).unwrap();
            for (r, state) in batch {
                states[r] = Some(state);
            }
            if results.iter().all(Option::is_some) {
                break;
            }
        }
        assert!(widest >= 3, "the schedule should batch several rows");
        let mut worst = 0f32;
        for (r, (single, batched)) in alone.iter().zip(&results).enumerate() {
            let batched = batched.as_ref().unwrap();
            assert_eq!(single.token_ids, batched.token_ids, "{case} request {r}");
            assert_eq!(single.text, batched.text);
            let (a, b) = (
                single.logprobs.as_ref().unwrap(),
                batched.logprobs.as_ref().unwrap(),
            );
            for (x, y) in a.iter().zip(b) {
                worst = worst.max((x.logprob - y.logprob).abs() / x.logprob.abs().max(1.0));
            }
        }
        println!("{case}: {} requests, up to {widest} rows per step: ids identical, log-prob max|diff| = {worst:.2e}", requests.len());
        assert!(worst <= 1e-5, "{worst}");
    }
}
