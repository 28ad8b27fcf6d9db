//! Tensor operations that candle does not provide.

use candle_core::{DType, Device, Tensor};

use crate::{Error, Result};

/// PyTorch's cubic-convolution constant (`A = -0.75`), used by `F.interpolate(mode="bicubic")`.
/// (PIL's image resampling uses -0.5; see `processing::resize`.)
const TORCH_CUBIC_A: f32 = -0.75;

/// Taps and weights of PyTorch's bicubic kernel along one axis (`align_corners = False`).
struct CubicAxis {
    /// For each output index, the 4 clamped input indices.
    taps: Vec<[usize; 4]>,
    /// For each output index, the 4 weights.
    weights: Vec<[f32; 4]>,
}

impl CubicAxis {
    /// Computes, in f32 as ATen's CPU kernel does, the taps for `input` -> `output` samples.
    fn new(input: usize, output: usize) -> Self {
        let scale = input as f32 / output as f32;
        let last = input as i64 - 1;
        let (taps, weights) = (0..output)
            .map(|o| {
                // No clamping of the source coordinate for cubic (it may be negative).
                let src = scale * (o as f32 + 0.5) - 0.5;
                let index = (src.floor() as i64).min(last);
                let t = (src - index as f32).clamp(0.0, 1.0);
                let taps = std::array::from_fn(|k| (index - 1 + k as i64).clamp(0, last) as usize);
                (taps, cubic_weights(t))
            })
            .unzip();
        Self { taps, weights }
    }
}

fn cubic_weights(t: f32) -> [f32; 4] {
    let a = TORCH_CUBIC_A;
    // |x| <= 1 and 1 < |x| < 2 branches of the Keys kernel.
    let near = |x: f32| ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
    let far = |x: f32| ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a;
    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
}

/// Resizes a channels-first f32 grid `[C, H, W]` to `[C, out_h, out_w]` exactly as
/// `torch.nn.functional.interpolate(x, size, mode="bicubic", align_corners=False)` does on CPU:
/// f32 arithmetic, edge-replicated taps, no antialiasing, rows accumulated in ATen's order.
pub fn bicubic_resize_chw(grid: &Tensor, out_h: usize, out_w: usize) -> Result<Tensor> {
    let (channels, in_h, in_w) = grid.dims3()?;
    if out_h == 0 || out_w == 0 || in_h == 0 || in_w == 0 {
        return Err(Error::InvalidArgument(format!(
            "bicubic resize from {in_h}x{in_w} to {out_h}x{out_w}: sizes must be positive"
        )));
    }
    let data = grid.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let rows = CubicAxis::new(in_h, out_h);
    let cols = CubicAxis::new(in_w, out_w);
    let mut out = Vec::with_capacity(channels * out_h * out_w);
    for plane in data.chunks_exact(in_h * in_w) {
        for (row_taps, row_weights) in rows.taps.iter().zip(&rows.weights) {
            for (col_taps, col_weights) in cols.taps.iter().zip(&cols.weights) {
                let horizontal = |r: usize| {
                    let line = &plane[r * in_w..(r + 1) * in_w];
                    let mut acc = line[col_taps[0]] * col_weights[0];
                    for k in 1..4 {
                        acc += line[col_taps[k]] * col_weights[k];
                    }
                    acc
                };
                let mut acc = horizontal(row_taps[0]) * row_weights[0];
                for k in 1..4 {
                    acc += horizontal(row_taps[k]) * row_weights[k];
                }
                out.push(acc);
            }
        }
    }
    Ok(Tensor::from_vec(out, (channels, out_h, out_w), &Device::Cpu)?.to_device(grid.device())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_at_same_size() {
        let x = Tensor::arange(0f32, 24.0, &Device::Cpu).unwrap();
        let x = x.reshape((2, 3, 4)).unwrap();
        let y = bicubic_resize_chw(&x, 3, 4).unwrap();
        let diff = (x - y).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
    }

    #[test]
    fn weights_sum_to_one() {
        for t in [0.0f32, 0.25, 0.5, 0.9] {
            let s: f32 = cubic_weights(t).iter().sum();
            assert!((s - 1.0).abs() < 1e-6, "t={t} sum={s}");
        }
    }

    #[test]
    fn constant_grid_stays_constant() {
        let x = Tensor::full(3.5f32, (1, 4, 4), &Device::Cpu).unwrap();
        let y = bicubic_resize_chw(&x, 7, 3).unwrap();
        let v = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(v.iter().all(|v| (v - 3.5).abs() < 1e-5));
    }

    #[test]
    fn zero_size_is_an_error() {
        let x = Tensor::zeros((1, 4, 4), DType::F32, &Device::Cpu).unwrap();
        let err = bicubic_resize_chw(&x, 0, 3).unwrap_err().to_string();
        assert!(err.contains("sizes must be positive"), "{err}");
    }
}
