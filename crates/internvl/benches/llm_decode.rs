//! `cargo bench -p internvl --bench llm_decode`: greedy decode speed of an InternVL2-1B-shaped
//! language model (Qwen2-0.5B: 24 layers, width 896, 14 heads / 2 KV heads, MLP 4864, vocab
//! 151674) with random weights, f32, after a 64-token prompt; prints a table with the peers,
//! then the aggregate speed of batched decode steps over independent sequences (what
//! `internvl serve`'s continuous batching runs) against one sequence at a time.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use internvl::benchmark::random_var_builder;
use internvl::models::llm::{KvCache, Llm, LlmConfig};

/// Tokens per second of the peers on the reference machine (2 threads), from the project's
/// measurements.
const PEERS: &[(&str, f64)] = &[
    ("PyTorch f32", 4.9),
    ("llama.cpp f32", 13.9),
    ("llama.cpp f16", 22.0),
    ("llama.cpp q8_0", 32.0),
    ("llama.cpp q4_0", 51.0),
];

fn main() -> internvl::Result<()> {
    let config = LlmConfig::from_value(&serde_json::json!({
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
        "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
        "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151674,
        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "max_position_embeddings": 32768,
        "tie_word_embeddings": false, "bos_token_id": 151643, "eos_token_id": 151645
    }))
    .map_err(internvl::Error::InvalidArgument)?;
    let device = Device::Cpu;
    let llm = Llm::load(&config, random_var_builder(DType::F32, &device))?;
    let (prompt, steps) = (64usize, 32usize);
    let ids = Tensor::arange(0u32, prompt as u32, &device)?.unsqueeze(0)?;
    let mut cache = KvCache::new();
    let positions = Tensor::arange(0i64, prompt as i64, &device)?.unsqueeze(0)?;
    let start = Instant::now();
    let mut logits = llm.forward_last(&llm.embed(&ids)?, &positions, None, &mut cache)?;
    let prefill = start.elapsed().as_secs_f64();
    let start = Instant::now();
    for step in 0..steps {
        let token = logits.argmax(candle_core::D::Minus1)?.to_vec1::<u32>()?[0];
        let embeds = llm.embed(&Tensor::new(&[[token]], &device)?)?;
        let position = Tensor::new(&[[(prompt + step) as i64]], &device)?;
        logits = llm.forward_last(&embeds, &position, None, &mut cache)?;
    }
    let decode = steps as f64 / start.elapsed().as_secs_f64();
    println!("CPU: {} threads\n", rayon_threads());
    println!("| what | value |\n|---|---:|");
    println!(
        "| prefill, {prompt} tokens | {:.2} s ({:.0} tok/s) |",
        prefill,
        prompt as f64 / prefill
    );
    println!("| greedy decode, {steps} tokens after the prompt | {decode:.2} tok/s |\n");
    println!("| peer (reference machine, 2 threads) | tok/s | ours / peer |\n|---|---:|---:|");
    for (peer, rate) in PEERS {
        println!("| {peer} | {rate:.1} | {:.2}x |", decode / rate);
    }
    batched_decode(&llm, prompt, &device)
}

/// Aggregate tokens per second when `n` sequences (each after its own `prompt`-token prompt)
/// share every decode step via `Llm::forward_many`.
fn batched_decode(llm: &Llm, prompt: usize, device: &Device) -> internvl::Result<()> {
    const STEPS: usize = 16;
    let widths = [1usize, 2, 4, 8];
    let mut caches = Vec::new();
    for s in 0..widths[widths.len() - 1] {
        let ids =
            Tensor::arange(s as u32 * 100, (s * 100 + prompt) as u32, device)?.unsqueeze(0)?;
        let positions = Tensor::arange(0i64, prompt as i64, device)?.unsqueeze(0)?;
        let mut cache = KvCache::new();
        llm.forward_last(&llm.embed(&ids)?, &positions, None, &mut cache)?;
        caches.push(cache);
    }
    println!("\n| sequences per decode step | aggregate tok/s | per sequence tok/s | vs 1 |\n|---:|---:|---:|---:|");
    let mut single = 0.0;
    for &n in &widths {
        let mut rows: Vec<KvCache> = caches[..n].to_vec();
        let tokens: Vec<u32> = (0..n as u32).collect();
        let start = Instant::now();
        for step in 0..STEPS {
            let embeds = llm.embed(&Tensor::new(tokens.as_slice(), device)?.unsqueeze(1)?)?;
            let positions = vec![(prompt + step) as i64; n];
            let mut refs: Vec<&mut KvCache> = rows.iter_mut().collect();
            llm.forward_many(&embeds, &positions, &mut refs)?;
        }
        let rate = (n * STEPS) as f64 / start.elapsed().as_secs_f64();
        if n == 1 {
            single = rate;
        }
        println!(
            "| {n} | {rate:.1} | {:.1} | {:.2}x |",
            rate / n as f64,
            rate / single
        );
    }
    Ok(())
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
