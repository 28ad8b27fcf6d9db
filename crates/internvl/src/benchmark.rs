//! Speed measurement of the vision encoder at the real InternViT-300M-448px shape with random
//! weights (no download needed), shared by `cargo bench` and `internvl bench`.

use std::time::Instant;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use crate::models::intern_vit::{InternVisionConfig, InternVisionModel, NormType};
use crate::Result;

/// Nominal f32 peak of the reference machine in GFLOP/s: 2 cores × 2 FMA units × 8 f32 lanes
/// (AVX2) × 2 flops per FMA × ≈2.45 GHz sustained all-core clock ≈ 157.
pub const REFERENCE_PEAK_GFLOPS: f64 = 157.0;

/// Seconds per 448² image of the peers on the reference machine (2 threads), from the project's
/// measurements: (name, seconds).
pub const PEERS_300M_448: &[(&str, f64)] = &[
    ("PyTorch f32", 8.4),
    ("llama.cpp f32", 9.4),
    ("llama.cpp f16", 6.7),
];

/// The configuration of OpenGVLab/InternViT-300M-448px.
pub fn intern_vit_300m_448px() -> InternVisionConfig {
    InternVisionConfig {
        hidden_size: 1024,
        num_attention_heads: 16,
        intermediate_size: 4096,
        num_hidden_layers: 24,
        image_size: 448,
        patch_size: 14,
        qkv_bias: true,
        qk_normalization: false,
        norm_type: NormType::LayerNorm,
        layer_norm_eps: 1e-6,
        hidden_act: "gelu".into(),
        num_channels: 3,
    }
}

/// Serves N(0, 0.02²) tensors of whatever shape is asked for.
struct RandomWeights;

impl SimpleBackend for RandomWeights {
    fn get(
        &self,
        shape: Shape,
        _name: &str,
        _init: candle_nn::Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        Tensor::randn(0f32, 0.02, shape, device)?.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("random weights need a shape for `{name}`")
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        true
    }
}

/// A [`VarBuilder`] that serves N(0, 0.02²) weights of whatever shape a model asks for (speed
/// measurements at real shapes without a checkpoint).
pub fn random_var_builder(dtype: DType, device: &Device) -> VarBuilder<'static> {
    let backend: Box<dyn SimpleBackend> = Box::new(RandomWeights);
    VarBuilder::from_backend(backend, dtype, device.clone())
}

/// An encoder with random weights.
pub fn random_intern_vit(
    config: &InternVisionConfig,
    dtype: DType,
    device: &Device,
) -> Result<InternVisionModel> {
    InternVisionModel::load(config, random_var_builder(dtype, device))
}

/// Multiply-add FLOPs (×2) of one forward over an `h × w` image: patch embedding, the four
/// projections and the two attention products of every block.
pub fn intern_vit_flops(config: &InternVisionConfig, h: usize, w: usize) -> f64 {
    let p = config.patch_size;
    let patches = ((h / p) * (w / p)) as f64;
    let n = patches + 1.0;
    let (c, i) = (config.hidden_size as f64, config.intermediate_size as f64);
    let embed = 2.0 * patches * c * (3 * p * p) as f64;
    let projections = 2.0 * n * (4.0 * c * c + 2.0 * c * i);
    let attention = 2.0 * 2.0 * n * n * c;
    embed + config.num_hidden_layers as f64 * (projections + attention)
}

/// One row of the benchmark table.
#[derive(Debug, Clone)]
pub struct BenchRow {
    /// What was timed.
    pub name: String,
    /// Best wall time of one run, seconds.
    pub seconds: f64,
    /// Achieved GFLOP/s.
    pub gflops: f64,
}

fn best_of<F: FnMut() -> Result<()>>(iterations: usize, mut f: F) -> Result<f64> {
    let mut best = f64::INFINITY;
    for _ in 0..iterations.max(1) {
        let start = Instant::now();
        f()?;
        best = best.min(start.elapsed().as_secs_f64());
    }
    Ok(best)
}

/// Times the encoder on one 448×448 image (after one warm-up run) and, as the in-run baseline,
/// candle's f32 GEMM at the shape of the encoder's MLP (1025×1024 · 1024×4096).
pub fn run_intern_vit_bench(iterations: usize, dtype: DType) -> Result<Vec<BenchRow>> {
    let device = Device::Cpu;
    let config = intern_vit_300m_448px();
    let model = random_intern_vit(&config, dtype, &device)?;
    let pixels = Tensor::randn(0f32, 1.0, (1, 3, 448, 448), &device)?;
    model.forward(&pixels, false)?;
    let vit = best_of(iterations, || model.forward(&pixels, false).map(|_| ()))?;
    let flops = intern_vit_flops(&config, 448, 448);

    let a = Tensor::randn(0f32, 1.0, (1025, 1024), &device)?;
    let b = Tensor::randn(0f32, 1.0, (4096, 1024), &device)?;
    a.matmul(&b.t()?)?;
    let gemm = best_of(iterations.max(3), || {
        a.matmul(&b.t()?)?;
        Ok(())
    })?;
    let gemm_flops = 2.0 * 1025.0 * 1024.0 * 4096.0;
    Ok(vec![
        BenchRow {
            name: format!("InternViT-300M-448px forward ({dtype:?}), 1 image"),
            seconds: vit,
            gflops: flops / vit / 1e9,
        },
        BenchRow {
            name: "baseline: candle f32 GEMM 1025x1024x4096".into(),
            seconds: gemm,
            gflops: gemm_flops / gemm / 1e9,
        },
    ])
}

/// Renders the rows as a Markdown table: GFLOP/s against the nominal peak and against the in-run
/// GEMM baseline (the last row), then the speed-up over the peers.
pub fn render_table(rows: &[BenchRow]) -> String {
    let gemm = rows.last().map(|r| r.gflops).unwrap_or(f64::NAN);
    let mut out = format!(
        "CPU: {} threads, {}\n\n| what | seconds | GFLOP/s | of {REFERENCE_PEAK_GFLOPS:.0} GFLOP/s nominal peak | of in-run GEMM |\n|---|---:|---:|---:|---:|\n",
        rayon::current_num_threads(),
        simd_features()
    );
    for row in rows {
        out += &format!(
            "| {} | {:.3} | {:.1} | {:.0}% | {:.0}% |\n",
            row.name,
            row.seconds,
            row.gflops,
            100.0 * row.gflops / REFERENCE_PEAK_GFLOPS,
            100.0 * row.gflops / gemm
        );
    }
    if let Some(vit) = rows.first() {
        out += "\n| peer (measured on the reference machine, 2 threads) | s/image | speed-up of ours |\n|---|---:|---:|\n";
        for (peer, seconds) in PEERS_300M_448 {
            out += &format!(
                "| {peer} | {seconds:.1} | {:.2}x |\n",
                seconds / vit.seconds
            );
        }
    }
    out
}

/// The vector extensions the GEMM kernels can use here (AVX-512 raises the f32 peak above the
/// nominal AVX2 figure).
fn simd_features() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        let mut found = Vec::new();
        if is_x86_feature_detected!("avx2") {
            found.push("avx2");
        }
        if is_x86_feature_detected!("fma") {
            found.push("fma");
        }
        if is_x86_feature_detected!("avx512f") {
            found.push("avx512f");
        }
        found.join("+")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        std::env::consts::ARCH.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flop_count_of_300m_at_448() {
        // ≈ 0.72 TFLOP: 24 × (2·1025·12·1024² + 4·1025²·1024) + patch embedding.
        let gflop = intern_vit_flops(&intern_vit_300m_448px(), 448, 448) / 1e9;
        assert!((gflop - 722.6).abs() < 1.0, "{gflop}");
    }
}
