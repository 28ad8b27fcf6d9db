//! The InternVL-Chat language models against the official fixtures (Qwen2, InternLM2, LLaMA):
//! every conversation's greedy step logits and generated ids, with the fixture's projected image
//! embeddings scattered over the `<IMG_CONTEXT>` positions; left-padded batches against single
//! rows; Phi-3 and the GGUF loader against independent computations; bad inputs.

mod common;

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value as GgufValue};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use internvl::models::llm::generate::{self, GreedyOptions};
use internvl::models::llm::{KvCache, Llm, LlmConfig, LlmFamily};
use internvl::models::ModelFolder;
use serde_json::{json, Value};

use common::{fixture, rel_diff, F32_TOLERANCE};

const CONVERSATIONS: [&str; 4] = ["text_only", "batch_chat", "multi_turn", "chat_multi_image"];

/// One official chat fixture: the model, its golden tensors and its expected.json.
struct Case {
    name: &'static str,
    llm: Llm,
    expected: HashMap<String, Tensor>,
    json: Value,
}

impl Case {
    fn load(name: &'static str) -> Self {
        let folder = ModelFolder::open(&fixture(name).join("model")).expect("fixture model");
        let llm = Llm::load_chat(&folder, DType::F32, &Device::Cpu).expect("language model");
        let json: Value = serde_json::from_str(
            &std::fs::read_to_string(fixture(name).join("expected.json")).unwrap(),
        )
        .unwrap();
        Self {
            name,
            llm,
            expected: common::expected(name),
            json,
        }
    }

    fn tensor(&self, key: &str) -> &Tensor {
        self.expected
            .get(key)
            .unwrap_or_else(|| panic!("{}: no expected tensor {key}", self.name))
    }

    fn image_token_id(&self) -> u32 {
        self.json["special_token_ids"]["<IMG_CONTEXT>"]
            .as_u64()
            .unwrap() as u32
    }

    fn options(&self, conversation: &str) -> GreedyOptions {
        let generation = &self.json["conversations"][conversation]["generation_config"];
        let mut options = GreedyOptions::new(
            generation["max_new_tokens"].as_u64().unwrap() as usize,
            vec![generation["eos_token_id"].as_u64().unwrap() as u32],
        );
        options.keep_step_logits = true;
        options
    }

    /// Prompt embeddings: token embeddings with the projected image embeddings of
    /// `chat_multi_image` (image A's tiles, then image B's) over the `<IMG_CONTEXT>` positions.
    /// Every conversation uses the same images in that order, so the first `n` rows serve.
    fn prompt_embeds(&self, ids: &Tensor) -> Tensor {
        let embeds = self.llm.embed(ids).unwrap();
        let context = self.image_token_id();
        let placeholders = count_token(ids, context);
        if placeholders == 0 {
            return embeds;
        }
        let all = self.tensor("chat_multi_image/image_embeds");
        let rows = all.reshape(((), self.llm.hidden_size())).unwrap();
        let rows = rows.narrow(0, 0, placeholders).unwrap();
        generate::scatter_image_embeds(&embeds, ids, context, &rows).unwrap()
    }
}

fn count_token(ids: &Tensor, token: u32) -> usize {
    let ids = ids.to_dtype(DType::I64).unwrap().flatten_all().unwrap();
    let ids = ids.to_vec1::<i64>().unwrap();
    ids.iter().filter(|&&id| id == i64::from(token)).count()
}

fn token_rows(tensor: &Tensor) -> Vec<Vec<u32>> {
    let rows = tensor
        .to_dtype(DType::I64)
        .unwrap()
        .to_vec2::<i64>()
        .unwrap();
    rows.into_iter()
        .map(|row| row.into_iter().map(|id| id as u32).collect())
        .collect()
}

/// Checks each step's logits (rows `rows` of the reference) and the generated ids.
fn check_steps(
    label: &str,
    output: &generate::GreedyOutput,
    reference_logits: &Tensor,
    reference_ids: &[Vec<u32>],
    rows: &[usize],
) {
    let mut diffs = Vec::new();
    for (step, logits) in output.step_logits.iter().enumerate() {
        let reference = reference_logits.get(step).unwrap();
        let index = Tensor::new(
            rows.iter().map(|&r| r as u32).collect::<Vec<_>>(),
            &Device::Cpu,
        )
        .unwrap();
        let reference = reference.index_select(&index, 0).unwrap();
        diffs.push(rel_diff(logits, &reference));
    }
    let worst = diffs.iter().copied().fold(0f32, f32::max);
    let shown: Vec<String> = diffs.iter().map(|d| format!("{d:.1e}")).collect();
    println!(
        "{label:<40} steps {:>2}, max|diff|/max|ref| per step: worst {worst:.2e} [{}]",
        diffs.len(),
        shown.join(" ")
    );
    assert!(
        worst <= F32_TOLERANCE,
        "{label}: step logits differ by {worst:e}"
    );
    for (&row, tokens) in rows.iter().zip(&output.tokens) {
        assert_eq!(
            tokens, &reference_ids[row],
            "{label}: generated ids of row {row}"
        );
    }
    println!(
        "{label:<40} generated ids equal the reference: {:?}",
        output.tokens
    );
}

fn check_conversation(case: &Case, conversation: &str) {
    let ids = case.tensor(&format!("{conversation}/input_ids"));
    let mask = case.tensor(&format!("{conversation}/attention_mask"));
    let embeds = case.prompt_embeds(ids);
    let output = generate::greedy(&case.llm, &embeds, mask, &case.options(conversation)).unwrap();
    let reference_ids = token_rows(case.tensor(&format!("{conversation}/new_token_ids")));
    let rows: Vec<usize> = (0..reference_ids.len()).collect();
    check_steps(
        &format!("{} {conversation}", case.name),
        &output,
        case.tensor(&format!("{conversation}/step_logits")),
        &reference_ids,
        &rows,
    );
}

/// Each row of the left-padded `batch_chat`, run alone without its pads, gives the batch's
/// reference logits and ids for that row.
fn check_rows_alone(case: &Case) {
    let ids = case.tensor("batch_chat/input_ids");
    let mask = token_rows(case.tensor("batch_chat/attention_mask"));
    let reference_ids = token_rows(case.tensor("batch_chat/new_token_ids"));
    let all_images = case.tensor("chat_multi_image/image_embeds");
    let all_images = all_images.reshape(((), case.llm.hidden_size())).unwrap();
    let mut image_offset = 0;
    for (row, row_mask) in mask.iter().enumerate() {
        let pads = row_mask.iter().take_while(|m| **m == 0).count();
        let len = row_mask.len() - pads;
        let row_ids = ids.narrow(0, row, 1).unwrap().narrow(1, pads, len).unwrap();
        let placeholders = count_token(&row_ids, case.image_token_id());
        let images = all_images.narrow(0, image_offset, placeholders).unwrap();
        image_offset += placeholders;
        let embeds = case.llm.embed(&row_ids).unwrap();
        let embeds =
            generate::scatter_image_embeds(&embeds, &row_ids, case.image_token_id(), &images)
                .unwrap();
        let ones = Tensor::ones((1, len), DType::U32, &Device::Cpu).unwrap();
        let output =
            generate::greedy(&case.llm, &embeds, &ones, &case.options("batch_chat")).unwrap();
        check_steps(
            &format!("{} batch_chat row {row} alone ({pads} pads)", case.name),
            &output,
            case.tensor("batch_chat/step_logits"),
            &reference_ids,
            &[row],
        );
    }
}

fn check_case(name: &'static str, family: LlmFamily) {
    let case = Case::load(name);
    assert_eq!(case.llm.family(), family);
    for conversation in CONVERSATIONS {
        check_conversation(&case, conversation);
    }
    check_rows_alone(&case);
}

#[test]
fn qwen2_matches_the_official_chat_outputs() {
    check_case("internvl_chat_qwen2", LlmFamily::Qwen2);
}

#[test]
fn internlm2_matches_the_official_chat_outputs() {
    check_case("internvl_chat_internlm2", LlmFamily::InternLM2);
}

#[test]
fn llama_matches_the_official_chat_outputs() {
    check_case("internvl_chat_llama", LlmFamily::Llama);
}

/// Prefill logits of all positions equal the per-step logits of incremental decoding.
#[test]
fn cache_steps_equal_one_full_forward() {
    let case = Case::load("internvl_chat_qwen2");
    let ids = case.tensor("text_only/input_ids");
    let t = ids.dim(1).unwrap();
    let embeds = case.llm.embed(ids).unwrap();
    let positions = Tensor::arange(0i64, t as i64, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let full = case
        .llm
        .forward(&embeds, &positions, None, &mut KvCache::new())
        .unwrap();
    let split = t - 5;
    let mut cache = KvCache::new();
    let first = case
        .llm
        .forward(
            &embeds.narrow(1, 0, split).unwrap(),
            &positions.narrow(1, 0, split).unwrap(),
            None,
            &mut cache,
        )
        .unwrap();
    let mut parts = vec![first];
    for p in split..t {
        parts.push(
            case.llm
                .forward(
                    &embeds.narrow(1, p, 1).unwrap(),
                    &positions.narrow(1, p, 1).unwrap(),
                    None,
                    &mut cache,
                )
                .unwrap(),
        );
    }
    assert_eq!(cache.len(), t);
    let stepped = Tensor::cat(&parts, 1).unwrap();
    common::assert_close("qwen2 cached steps vs one forward", &stepped, &full, 1e-5);
}

/// bf16 (the release's inference dtype): last-prompt logits of `chat_multi_image` against the
/// official bf16 run (loose: both round differently) and the same greedy ids.
#[test]
fn bf16_runs_close_to_the_official_bf16_outputs() {
    for name in [
        "internvl_chat_qwen2",
        "internvl_chat_internlm2",
        "internvl_chat_llama",
    ] {
        let folder = ModelFolder::open(&fixture(name).join("model")).unwrap();
        let llm = Llm::load_chat(&folder, DType::BF16, &Device::Cpu).unwrap();
        assert_eq!(llm.dtype(), DType::BF16);
        let expected = common::expected(name);
        let json: Value = serde_json::from_str(
            &std::fs::read_to_string(fixture(name).join("expected.json")).unwrap(),
        )
        .unwrap();
        let ids = &expected["chat_multi_image/input_ids"];
        let mask = &expected["chat_multi_image/attention_mask"];
        let context = json["special_token_ids"]["<IMG_CONTEXT>"].as_u64().unwrap() as u32;
        let images = &expected["bf16/chat_multi_image/image_embeds"];
        let embeds = llm.embed(ids).unwrap();
        let embeds = generate::scatter_image_embeds(&embeds, ids, context, images).unwrap();
        let mut options = GreedyOptions::new(
            16,
            vec![
                json["conversations"]["chat_multi_image"]["generation_config"]["eos_token_id"]
                    .as_u64()
                    .unwrap() as u32,
            ],
        );
        options.keep_step_logits = true;
        let output = generate::greedy(&llm, &embeds, mask, &options).unwrap();
        let vs_bf16 = rel_diff(
            &output.step_logits[0],
            &expected["bf16/chat_multi_image/logits_last_prompt"],
        );
        let vs_f32 = rel_diff(
            &output.step_logits[0],
            &expected["chat_multi_image/logits_last_prompt"],
        );
        let official = json["bf16"]["logits_last_prompt_rel_maxdiff_vs_f32"]
            .as_f64()
            .unwrap();
        println!(
            "{name} bf16 last-prompt logits: vs official bf16 {vs_bf16:.2e}, vs f32 {vs_f32:.2e} \
             (official bf16 vs f32: {official:.2e})"
        );
        assert!(vs_bf16 < 5e-2 && vs_f32 < 5e-2);
        let reference = token_rows(&expected["bf16/chat_multi_image/new_token_ids"]);
        let f32_logits = &expected["chat_multi_image/step_logits"];
        check_bf16_ids(name, &output.tokens[0], &reference[0], f32_logits);
    }
}

/// bf16 greedy ids equal the official bf16 ids, except that they may part from the first step
/// whose float32 top-1/top-2 gap is below bf16's resolution of these logits (≈ 0.05).
fn check_bf16_ids(name: &str, ours: &[u32], official: &[u32], f32_step_logits: &Tensor) {
    let Some(step) = ours.iter().zip(official).position(|(a, b)| a != b) else {
        println!("{name} bf16 greedy ids equal the official bf16 ids: {ours:?}");
        return;
    };
    let logits = f32_step_logits.get(step).unwrap().get(0).unwrap();
    let mut values = logits.to_vec1::<f32>().unwrap();
    values.sort_by(|a, b| b.total_cmp(a));
    let gap = values[0] - values[1];
    println!(
        "{name} bf16 greedy ids part from the official bf16 ids at step {step}, where the f32 \
         top-1/top-2 gap is {gap:.4}: ours {ours:?}, official {official:?}"
    );
    assert!(
        step > 0 && gap < 0.05,
        "{name}: bf16 ids differ at step {step} (f32 gap {gap})"
    );
}

/// A plain transformers LLM folder (`config.json` = the llm_config, tensors without the
/// `language_model.` prefix) loads the same model.
#[test]
fn plain_transformers_folder_loads_the_same_model() {
    let name = "internvl_chat_qwen2";
    let source = fixture(name).join("model");
    let folder = ModelFolder::open(&source).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = serde_json::to_string(&folder.config()["llm_config"]).unwrap();
    std::fs::write(dir.path().join("config.json"), config).unwrap();
    let tensors: HashMap<String, Tensor> =
        candle_core::safetensors::load(source.join("model.safetensors"), &Device::Cpu)
            .unwrap()
            .into_iter()
            .filter_map(|(k, t)| Some((k.strip_prefix("language_model.")?.to_string(), t)))
            .collect();
    candle_core::safetensors::save(&tensors, dir.path().join("model.safetensors")).unwrap();
    let plain = Llm::load_folder(dir.path(), DType::F32, &Device::Cpu).unwrap();
    let expected = common::expected(name);
    let ids = &expected["text_only/input_ids"];
    let mask = &expected["text_only/attention_mask"];
    let logits = plain
        .forward_last(
            &plain.embed(ids).unwrap(),
            &generate::position_ids(mask).unwrap(),
            Some(mask),
            &mut KvCache::new(),
        )
        .unwrap();
    common::assert_close(
        "plain folder text_only last-prompt logits",
        &logits,
        &expected["text_only/logits_last_prompt"],
        F32_TOLERANCE,
    );
}

// ---------------------------------------------------------------------------------------------
// Bad inputs

#[test]
fn unknown_architecture_is_a_clear_error() {
    let config = json!({
        "architectures": ["MistralForCausalLM"], "model_type": "mistral",
        "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "vocab_size": 100, "max_position_embeddings": 512
    });
    let err = LlmConfig::from_value(&config).unwrap_err();
    println!("unknown architecture: {err}");
    assert!(
        err.contains("MistralForCausalLM") && err.contains("supported"),
        "{err}"
    );

    let mut config = config;
    config["architectures"] = json!(["LlamaForCausalLM"]);
    config["rope_scaling"] = json!({"rope_type": "yarn", "factor": 4.0});
    let err = LlmConfig::from_value(&config).unwrap_err();
    println!("unsupported rope scaling: {err}");
    assert!(err.contains("yarn"), "{err}");
}

#[test]
fn missing_tensor_is_named() {
    let source = fixture("internvl_chat_qwen2").join("model");
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() != "model.safetensors" {
            std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    let missing = "language_model.model.layers.1.mlp.up_proj.weight";
    let mut tensors =
        candle_core::safetensors::load(source.join("model.safetensors"), &Device::Cpu).unwrap();
    tensors.remove(missing).unwrap();
    candle_core::safetensors::save(&tensors, dir.path().join("model.safetensors")).unwrap();
    let folder = ModelFolder::open(dir.path()).unwrap();
    let err = Llm::load_chat(&folder, DType::F32, &Device::Cpu)
        .unwrap_err()
        .to_string();
    println!("missing tensor: {err}");
    assert!(err.contains(missing), "{err}");
}

#[test]
fn sequence_beyond_max_position_embeddings_is_rejected() {
    let case = "internvl_chat_llama";
    let folder = ModelFolder::open(&fixture(case).join("model")).unwrap();
    let mut llm_config = folder.config()["llm_config"].clone();
    llm_config["max_position_embeddings"] = json!(100);
    let config = LlmConfig::from_value(&llm_config).unwrap();
    let vb = folder
        .checkpoint()
        .var_builder(DType::F32, &Device::Cpu)
        .pp("language_model");
    let llm = Llm::load(&config, vb).unwrap();
    let expected = common::expected(case);
    let ids = &expected["text_only/input_ids"];
    let mask = &expected["text_only/attention_mask"];
    let embeds = llm.embed(ids).unwrap();
    let err = llm
        .forward_last(
            &embeds,
            &generate::position_ids(mask).unwrap(),
            Some(mask),
            &mut KvCache::new(),
        )
        .unwrap_err()
        .to_string();
    println!("too long: {err}");
    assert!(err.contains("max_position_embeddings 100"), "{err}");
}

/// InternLM2 dynamic NTK: a forward whose sequence exceeds `max_position_embeddings` rotates
/// with `base · ((factor · L / max) − (factor − 1))^(d / (d − 2))` (spec §8.2).
#[test]
fn internlm2_dynamic_ntk_enlarges_the_base_beyond_the_maximum() {
    let case = "internvl_chat_internlm2";
    let folder = ModelFolder::open(&fixture(case).join("model")).unwrap();
    let llm_config = folder.config()["llm_config"].clone();
    let expected = common::expected(case);
    let ids = &expected["text_only/input_ids"];
    let len = ids.dim(1).unwrap();
    let (max, factor, theta) = (40usize, 3.0f64, 1e6f64);
    let head_dim = 16.0; // 80 wide, 5 heads
    let load = |config: Value| {
        let config = LlmConfig::from_value(&config).unwrap();
        let vb = folder
            .checkpoint()
            .var_builder(DType::F32, &Device::Cpu)
            .pp("language_model");
        Llm::load(&config, vb).unwrap()
    };
    let mut dynamic = llm_config.clone();
    dynamic["max_position_embeddings"] = json!(max);
    let mut plain = llm_config;
    let growth = factor * len as f64 / max as f64 - (factor - 1.0);
    plain["rope_theta"] = json!(theta * growth.powf(head_dim / (head_dim - 2.0)));
    plain["rope_scaling"] = Value::Null;
    let run = |llm: &Llm| {
        let positions = Tensor::arange(0i64, len as i64, &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        llm.forward(
            &llm.embed(ids).unwrap(),
            &positions,
            None,
            &mut KvCache::new(),
        )
        .unwrap()
    };
    let (dynamic, plain) = (load(dynamic), load(plain));
    common::assert_close(
        "internlm2 dynamic NTK vs enlarged base",
        &run(&dynamic),
        &run(&plain),
        1e-6,
    );
}

// ---------------------------------------------------------------------------------------------
// Phi-3: tiny random weights against a straightforward f64 computation of the release's code.

/// A small deterministic generator (xorshift64*), uniform in [−scale, scale].
struct Noise(u64);

impl Noise {
    fn next(&mut self, scale: f32) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let bits = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40;
        (bits as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
    }

    fn tensor(&mut self, shape: &[usize], scale: f32) -> Tensor {
        let n = shape.iter().product();
        let data: Vec<f32> = (0..n).map(|_| self.next(scale)).collect();
        Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
    }

    /// A Linear weight `[out, in]` of variance ≈ 1/in.
    fn linear(&mut self, out: usize, input: usize) -> Tensor {
        self.tensor(&[out, input], (3.0 / input as f32).sqrt())
    }

    fn norm(&mut self, n: usize) -> Tensor {
        (self.tensor(&[n], 0.1) + 1.0).unwrap()
    }
}

const PHI3_LAYERS: usize = 2;

fn phi3_config() -> Value {
    json!({
        "architectures": ["Phi3ForCausalLM"], "model_type": "phi3",
        "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": PHI3_LAYERS,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 50,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu",
        "max_position_embeddings": 64, "original_max_position_embeddings": 8,
        "sliding_window": 128, "tie_word_embeddings": false,
        "rope_scaling": {"type": "su", "short_factor": [1.0, 1.2, 1.5, 2.0],
                         "long_factor": [1.1, 2.0, 4.0, 9.0]},
        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2
    })
}

fn phi3_weights() -> HashMap<String, Tensor> {
    let mut noise = Noise(0x5eed_1234_abcd_0001);
    let (c, i, v, qkv) = (32, 48, 50, 32 + 2 * 2 * 8);
    let mut w = HashMap::new();
    w.insert(
        "model.embed_tokens.weight".into(),
        noise.tensor(&[v, c], 1.0),
    );
    for l in 0..PHI3_LAYERS {
        let p = format!("model.layers.{l}.");
        w.insert(
            format!("{p}self_attn.qkv_proj.weight"),
            noise.linear(qkv, c),
        );
        w.insert(format!("{p}self_attn.o_proj.weight"), noise.linear(c, c));
        w.insert(
            format!("{p}mlp.gate_up_proj.weight"),
            noise.linear(2 * i, c),
        );
        w.insert(format!("{p}mlp.down_proj.weight"), noise.linear(c, i));
        w.insert(format!("{p}input_layernorm.weight"), noise.norm(c));
        w.insert(format!("{p}post_attention_layernorm.weight"), noise.norm(c));
    }
    w.insert("model.norm.weight".into(), noise.norm(c));
    w.insert("lm_head.weight".into(), noise.linear(v, c));
    w
}

/// Phi-3 written out plainly from the release's modeling_phi3.py, in f64: one call processes
/// `tokens` at `positions` after the cached keys/values, choosing the su factors from this
/// call's largest position like `Phi3SuScaledRotaryEmbedding.forward`.
struct NaivePhi3 {
    w: HashMap<String, Vec<Vec<f64>>>,
    /// Per layer: cached (key, value) per position, `[kv_heads][d]` flattened.
    cache: Vec<Vec<(Vec<f64>, Vec<f64>)>>,
}

impl NaivePhi3 {
    const H: usize = 4;
    const KV: usize = 2;
    const D: usize = 8;
    const I: usize = 48;
    const ORIGINAL: usize = 8;
    const MAX: usize = 64;
    const SHORT: [f64; 4] = [1.0, 1.2, 1.5, 2.0];
    const LONG: [f64; 4] = [1.1, 2.0, 4.0, 9.0];

    fn new(weights: &HashMap<String, Tensor>) -> Self {
        let w = weights
            .iter()
            .map(|(k, t)| {
                let t = t.to_dtype(DType::F64).unwrap();
                let rows = if t.rank() == 1 {
                    vec![t.to_vec1::<f64>().unwrap()]
                } else {
                    t.to_vec2::<f64>().unwrap()
                };
                (k.clone(), rows)
            })
            .collect();
        Self {
            w,
            cache: vec![Vec::new(); PHI3_LAYERS],
        }
    }

    fn matvec(&self, name: &str, x: &[f64]) -> Vec<f64> {
        self.w[name]
            .iter()
            .map(|row| row.iter().zip(x).map(|(a, b)| a * b).sum())
            .collect()
    }

    fn rms_norm(&self, name: &str, x: &[f64]) -> Vec<f64> {
        let mean = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
        let inv = 1.0 / (mean + 1e-5).sqrt();
        x.iter()
            .zip(&self.w[name][0])
            .map(|(v, g)| v * inv * g)
            .collect()
    }

    /// cos/sin of one position for this call's factors, scaled like the release.
    fn rotation(position: usize, long: bool) -> (Vec<f64>, Vec<f64>) {
        let factors = if long { Self::LONG } else { Self::SHORT };
        let scale = Self::MAX as f64 / Self::ORIGINAL as f64;
        let magnitude = (1.0 + scale.ln() / (Self::ORIGINAL as f64).ln()).sqrt();
        let half = Self::D / 2;
        let angles: Vec<f64> = (0..half)
            .map(|j| {
                let inv_freq = 1.0 / (factors[j] * 10000f64.powf(2.0 * j as f64 / Self::D as f64));
                position as f64 * inv_freq
            })
            .collect();
        let cos = angles
            .iter()
            .chain(&angles)
            .map(|a| a.cos() * magnitude)
            .collect();
        let sin = angles
            .iter()
            .chain(&angles)
            .map(|a| a.sin() * magnitude)
            .collect();
        (cos, sin)
    }

    fn rotate(head: &[f64], cos: &[f64], sin: &[f64]) -> Vec<f64> {
        let half = head.len() / 2;
        (0..head.len())
            .map(|e| {
                let rotated = if e < half {
                    -head[e + half]
                } else {
                    head[e - half]
                };
                head[e] * cos[e] + rotated * sin[e]
            })
            .collect()
    }

    /// Logits of each token of one call.
    fn call(&mut self, tokens: &[u32], positions: &[usize]) -> Vec<Vec<f64>> {
        let long = positions.iter().max().unwrap() + 1 > Self::ORIGINAL;
        let mut xs: Vec<Vec<f64>> = tokens
            .iter()
            .map(|&t| self.w["model.embed_tokens.weight"][t as usize].clone())
            .collect();
        for l in 0..PHI3_LAYERS {
            let p = format!("model.layers.{l}.");
            let mut queries = Vec::new();
            for (x, &pos) in xs.iter().zip(positions) {
                let h = self.rms_norm(&format!("{p}input_layernorm.weight"), x);
                let qkv = self.matvec(&format!("{p}self_attn.qkv_proj.weight"), &h);
                let (cos, sin) = Self::rotation(pos, long);
                let (d, q_width, kv_width) = (Self::D, Self::H * Self::D, Self::KV * Self::D);
                let rotate_heads = |part: &[f64]| -> Vec<f64> {
                    part.chunks(d)
                        .flat_map(|head| Self::rotate(head, &cos, &sin))
                        .collect()
                };
                queries.push(rotate_heads(&qkv[..q_width]));
                let k = rotate_heads(&qkv[q_width..q_width + kv_width]);
                let v = qkv[q_width + kv_width..].to_vec();
                self.cache[l].push((k, v));
            }
            let past = self.cache[l].len() - xs.len();
            for (i, x) in xs.iter_mut().enumerate() {
                let visible = &self.cache[l][..past + i + 1];
                let mut merged = Vec::new();
                for head in 0..Self::H {
                    let kv = head / (Self::H / Self::KV);
                    let q = &queries[i][head * Self::D..(head + 1) * Self::D];
                    let scores: Vec<f64> = visible
                        .iter()
                        .map(|(k, _)| {
                            let k = &k[kv * Self::D..(kv + 1) * Self::D];
                            q.iter().zip(k).map(|(a, b)| a * b).sum::<f64>()
                                / (Self::D as f64).sqrt()
                        })
                        .collect();
                    let top = scores.iter().copied().fold(f64::MIN, f64::max);
                    let exps: Vec<f64> = scores.iter().map(|s| (s - top).exp()).collect();
                    let total: f64 = exps.iter().sum();
                    for e in 0..Self::D {
                        let value: f64 = visible
                            .iter()
                            .zip(&exps)
                            .map(|((_, v), w)| v[kv * Self::D + e] * w / total)
                            .sum();
                        merged.push(value);
                    }
                }
                let attn = self.matvec(&format!("{p}self_attn.o_proj.weight"), &merged);
                x.iter_mut().zip(&attn).for_each(|(a, b)| *a += b);
                let h = self.rms_norm(&format!("{p}post_attention_layernorm.weight"), x);
                let gate_up = self.matvec(&format!("{p}mlp.gate_up_proj.weight"), &h);
                let (gate, up) = gate_up.split_at(Self::I);
                let act: Vec<f64> = gate
                    .iter()
                    .zip(up)
                    .map(|(g, u)| u * g / (1.0 + (-g).exp()))
                    .collect();
                let down = self.matvec(&format!("{p}mlp.down_proj.weight"), &act);
                x.iter_mut().zip(&down).for_each(|(a, b)| *a += b);
            }
        }
        xs.iter()
            .map(|x| self.matvec("lm_head.weight", &self.rms_norm("model.norm.weight", x)))
            .collect()
    }
}

fn as_tensor(rows: &[Vec<f64>]) -> Tensor {
    let data: Vec<f32> = rows.iter().flatten().map(|v| *v as f32).collect();
    Tensor::from_vec(data, (1, rows.len(), rows[0].len()), &Device::Cpu).unwrap()
}

/// Prefill of 6 tokens (short factors), then decode steps crossing `original_max` (8): each
/// step switches to the long factors for its own query/key only, like the release.
#[test]
fn phi3_matches_a_straightforward_computation() {
    let config = LlmConfig::from_value(&phi3_config()).unwrap();
    let weights = phi3_weights();
    let vb = VarBuilder::from_tensors(weights.clone(), DType::F32, &Device::Cpu);
    let llm = Llm::load(&config, vb).unwrap();
    let mut naive = NaivePhi3::new(&weights);
    let mut cache = KvCache::new();
    let tokens: Vec<u32> = vec![3, 17, 42, 8, 8, 29, 1, 44, 13, 5, 36];
    let prefill = 6;
    let mut worst = 0f32;
    let mut start = 0;
    while start < tokens.len() {
        let len = if start == 0 { prefill } else { 1 };
        let call = &tokens[start..start + len];
        let positions: Vec<usize> = (start..start + len).collect();
        let reference = as_tensor(&naive.call(call, &positions));
        let ids = Tensor::new(call, &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let pos: Vec<i64> = positions.iter().map(|p| *p as i64).collect();
        let pos = Tensor::from_vec(pos, (1, len), &Device::Cpu).unwrap();
        let logits = llm
            .forward(&llm.embed(&ids).unwrap(), &pos, None, &mut cache)
            .unwrap();
        let diff = rel_diff(&logits, &reference);
        println!("phi3 positions {positions:?}: max|diff|/max|ref| = {diff:.2e}");
        worst = worst.max(diff);
        start += len;
    }
    assert!(worst <= F32_TOLERANCE, "phi3 differs by {worst:e}");
    // One call over all 11 positions uses the long factors everywhere: a different result.
    let ids = Tensor::new(tokens.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let pos = Tensor::arange(0i64, tokens.len() as i64, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let whole = llm
        .forward(&llm.embed(&ids).unwrap(), &pos, None, &mut KvCache::new())
        .unwrap();
    let mut fresh = NaivePhi3::new(&weights);
    let positions: Vec<usize> = (0..tokens.len()).collect();
    let reference = as_tensor(&fresh.call(&tokens, &positions));
    common::assert_close(
        "phi3 one call, long factors",
        &whole,
        &reference,
        F32_TOLERANCE,
    );
}

// ---------------------------------------------------------------------------------------------
// GGUF: a tiny llama written the way llama.cpp's converter writes it (names, permuted q/k rows,
// metadata) loads into the same model as its transformers tensors.

/// llama.cpp's converter permutation: per head, rows `[2][d/2]` → `[d/2][2]`.
fn llama_cpp_permute(t: &Tensor, heads: usize) -> Tensor {
    let (rows, cols) = t.dims2().unwrap();
    t.reshape((heads, 2, rows / heads / 2, cols))
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .contiguous()
        .unwrap()
        .reshape((rows, cols))
        .unwrap()
}

fn tiny_llama() -> (Value, HashMap<String, Tensor>) {
    let config = json!({
        "architectures": ["LlamaForCausalLM"], "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 40, "rms_norm_eps": 1e-5, "rope_theta": 50000.0,
        "max_position_embeddings": 128, "tie_word_embeddings": true
    });
    let mut noise = Noise(0x1a2b_3c4d_5e6f_7788);
    let mut w = HashMap::new();
    w.insert(
        "model.embed_tokens.weight".to_string(),
        noise.tensor(&[40, 32], 1.0),
    );
    for l in 0..2 {
        let p = format!("model.layers.{l}.");
        for (name, out, input) in [
            ("self_attn.q_proj", 32, 32),
            ("self_attn.k_proj", 16, 32),
            ("self_attn.v_proj", 16, 32),
            ("self_attn.o_proj", 32, 32),
            ("mlp.gate_proj", 64, 32),
            ("mlp.up_proj", 64, 32),
            ("mlp.down_proj", 32, 64),
        ] {
            w.insert(format!("{p}{name}.weight"), noise.linear(out, input));
        }
        w.insert(format!("{p}input_layernorm.weight"), noise.norm(32));
        w.insert(
            format!("{p}post_attention_layernorm.weight"),
            noise.norm(32),
        );
    }
    w.insert("model.norm.weight".to_string(), noise.norm(32));
    (config, w)
}

fn write_llama_gguf(path: &Path, weights: &HashMap<String, Tensor>, permute: bool) {
    let mut tensors = Vec::new();
    for (name, t) in weights {
        let gguf_name = name
            .replace("model.embed_tokens", "token_embd")
            .replace("model.norm", "output_norm")
            .replace("model.layers.", "blk.")
            .replace("self_attn.q_proj", "attn_q")
            .replace("self_attn.k_proj", "attn_k")
            .replace("self_attn.v_proj", "attn_v")
            .replace("self_attn.o_proj", "attn_output")
            .replace("mlp.gate_proj", "ffn_gate")
            .replace("mlp.up_proj", "ffn_up")
            .replace("mlp.down_proj", "ffn_down")
            .replace("input_layernorm", "attn_norm")
            .replace("post_attention_layernorm", "ffn_norm");
        let t = if !permute {
            t.clone()
        } else if gguf_name.contains("attn_q") {
            llama_cpp_permute(t, 4)
        } else if gguf_name.contains("attn_k") {
            llama_cpp_permute(t, 2)
        } else {
            t.clone()
        };
        tensors.push((gguf_name, QTensor::quantize(&t, GgmlDType::F32).unwrap()));
    }
    let metadata = [
        ("general.architecture", GgufValue::String("llama".into())),
        ("llama.context_length", GgufValue::U32(128)),
        ("llama.embedding_length", GgufValue::U32(32)),
        ("llama.feed_forward_length", GgufValue::U32(64)),
        ("llama.block_count", GgufValue::U32(2)),
        ("llama.attention.head_count", GgufValue::U32(4)),
        ("llama.attention.head_count_kv", GgufValue::U32(2)),
        ("llama.rope.freq_base", GgufValue::F32(50000.0)),
        ("llama.rope.dimension_count", GgufValue::U32(8)),
        (
            "llama.attention.layer_norm_rms_epsilon",
            GgufValue::F32(1e-5),
        ),
        ("tokenizer.ggml.eos_token_id", GgufValue::U32(2)),
    ];
    let metadata: Vec<(&str, &GgufValue)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut file = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut file, &metadata, &tensors).unwrap();
}

#[test]
fn gguf_llama_equals_its_transformers_weights() {
    let (config, weights) = tiny_llama();
    let config = LlmConfig::from_value(&config).unwrap();
    let vb = VarBuilder::from_tensors(weights.clone(), DType::F32, &Device::Cpu);
    let reference = Llm::load(&config, vb).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny-llama.gguf");
    write_llama_gguf(&path, &weights, true);
    let from_gguf = Llm::load_gguf(&path, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(from_gguf.config().num_key_value_heads, 2);
    assert!(from_gguf.config().tie_word_embeddings);
    assert_eq!(from_gguf.config().eos_token_ids, vec![2]);
    let ids = Tensor::new(&[[5u32, 9, 31, 2, 17, 17, 30]], &Device::Cpu).unwrap();
    let pos = Tensor::arange(0i64, 7, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let run = |llm: &Llm| {
        llm.forward(&llm.embed(&ids).unwrap(), &pos, None, &mut KvCache::new())
            .unwrap()
    };
    common::assert_close(
        "gguf vs transformers tiny llama",
        &run(&from_gguf),
        &run(&reference),
        1e-6,
    );
    // q/k stored in transformers order (not permuted) give another model: the permutation
    // matters, and is undone rather than ignored.
    write_llama_gguf(&path, &weights, false);
    let unpermuted = Llm::load_gguf(&path, DType::F32, &Device::Cpu).unwrap();
    let diff = rel_diff(&run(&unpermuted), &run(&reference));
    println!("gguf without the converter's permutation differs by {diff:.2e}");
    assert!(diff > 1e-3);
}

#[test]
fn gguf_of_another_architecture_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.gguf");
    let arch = GgufValue::String("gpt2".into());
    let mut file = std::fs::File::create(&path).unwrap();
    gguf_file::write(&mut file, &[("general.architecture", &arch)], &[]).unwrap();
    let err = Llm::load_gguf(&path, DType::F32, &Device::Cpu)
        .unwrap_err()
        .to_string();
    println!("gguf architecture: {err}");
    assert!(err.contains("gpt2") && err.contains("llama"), "{err}");
}
