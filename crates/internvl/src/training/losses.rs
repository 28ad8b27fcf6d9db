//! Loss functions with PyTorch's semantics (`F.cross_entropy` with `ignore_index = -100` and
//! `label_smoothing`, soft-target cross-entropy), differentiable with candle's autograd.

use candle_core::{DType, Tensor, D};

use crate::{Error, Result};

/// The label value that [`cross_entropy`] skips (PyTorch's default `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

/// Per-row cross-entropy `[N]` of logits `[N, C]` against class indices (rows whose target is
/// [`IGNORE_INDEX`] give 0), with PyTorch's label smoothing:
/// `(1 − ε)·(−log p_target) + ε·mean_j(−log p_j)`.
pub fn cross_entropy_rows(logits: &Tensor, targets: &[i64], smoothing: f64) -> Result<Tensor> {
    let (rows, classes) = logits.dims2()?;
    if targets.len() != rows {
        return Err(Error::InvalidArgument(format!(
            "{} targets for {rows} rows of logits",
            targets.len()
        )));
    }
    if let Some(bad) = targets
        .iter()
        .find(|&&t| t != IGNORE_INDEX && (t < 0 || t as usize >= classes))
    {
        return Err(Error::InvalidArgument(format!(
            "target {bad} is outside the {classes} classes"
        )));
    }
    let device = logits.device();
    let log_probs = candle_nn::ops::log_softmax(&logits.to_dtype(DType::F32)?, D::Minus1)?;
    let index: Vec<u32> = targets.iter().map(|&t| t.max(0) as u32).collect();
    let index = Tensor::from_vec(index, (rows, 1), device)?;
    let nll = log_probs.gather(&index, 1)?.squeeze(1)?.neg()?;
    let per_row = if smoothing > 0.0 {
        let smooth = log_probs.mean(1)?.neg()?;
        ((nll * (1.0 - smoothing))? + (smooth * smoothing)?)?
    } else {
        nll
    };
    let keep: Vec<f32> = targets
        .iter()
        .map(|&t| f32::from(u8::from(t != IGNORE_INDEX)))
        .collect();
    Ok((per_row * Tensor::from_vec(keep, rows, device)?)?)
}

/// `F.cross_entropy(logits, targets, label_smoothing=ε)`: the mean of [`cross_entropy_rows`]
/// over the rows that are not ignored (NaN when every row is ignored, as PyTorch).
pub fn cross_entropy(logits: &Tensor, targets: &[i64], smoothing: f64) -> Result<Tensor> {
    let counted = targets.iter().filter(|&&t| t != IGNORE_INDEX).count();
    let total = cross_entropy_rows(logits, targets, smoothing)?.sum_all()?;
    Ok((total / counted as f64)?)
}

/// `−mean_i Σ_j log_softmax(logits)[i, j] · targets[i, j]` (soft targets `[N, C]`).
pub fn soft_cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let log_probs = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    Ok((log_probs * targets)?.sum(1)?.mean_all()?.neg()?)
}

/// Rows divided by their L2 norm (`x / x.norm(dim=-1, keepdim=True)`, differentiable).
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    Ok(x.broadcast_div(&x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?)?)
}

/// The symmetric InfoNCE of CLIP: `½ [CE(s·u·tᵀ, targets) + CE(s·t·uᵀ, targets)]` with
/// `s = exp(logit_scale)` (not clamped, as the release's stage-2 ITC) over L2-normalised image
/// embeddings `u` and text embeddings `t`; `targets[i]` is the matching column of row `i`
/// ([`IGNORE_INDEX`] to skip a row). Returns (loss, `s·u·tᵀ`).
pub fn clip_loss(
    image: &Tensor,
    text: &Tensor,
    logit_scale: &Tensor,
    targets: &[i64],
    smoothing: f64,
) -> Result<(Tensor, Tensor)> {
    let scale = logit_scale.to_dtype(DType::F32)?.exp()?;
    let i2t = image.matmul(&text.t()?)?.broadcast_mul(&scale)?;
    let t2i = text.matmul(&image.t()?)?.broadcast_mul(&scale)?;
    let loss = ((cross_entropy(&i2t, targets, smoothing)?
        + cross_entropy(&t2i, targets, smoothing)?)?
        / 2.0)?;
    Ok((loss, i2t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn cross_entropy_matches_the_definition() {
        let logits = Tensor::new(&[[1.0f32, 2.0, 0.5], [0.0, -1.0, 3.0]], &Device::Cpu).unwrap();
        let lse = |r: [f32; 3]| r.iter().map(|v| v.exp()).sum::<f32>().ln();
        let a = lse([1.0, 2.0, 0.5]) - 2.0;
        let b = lse([0.0, -1.0, 3.0]) - 3.0;
        let got = cross_entropy(&logits, &[1, 2], 0.0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((got - (a + b) / 2.0).abs() < 1e-6);
        let ignored = cross_entropy(&logits, &[1, IGNORE_INDEX], 0.0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((ignored - a).abs() < 1e-6);
        // Smoothing ε: (1-ε)·nll + ε·mean(−log p).
        let eps = 0.1;
        let mean_nll = (lse([1.0, 2.0, 0.5]) * 3.0 - 3.5) / 3.0;
        let smoothed = cross_entropy(&logits.narrow(0, 0, 1).unwrap(), &[1], eps)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((smoothed - ((1.0 - eps as f32) * a + eps as f32 * mean_nll)).abs() < 1e-6);
        assert!(cross_entropy(&logits, &[3, 0], 0.0).is_err());
    }
}
