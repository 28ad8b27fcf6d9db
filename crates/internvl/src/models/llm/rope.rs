//! Rotary position embeddings (rotate-half convention) with the scaling variants of spec §8.
//!
//! Angles follow the release arithmetic: `inv_freq = 1 / base^(2j/d)` and `position · inv_freq`
//! in f32, cos/sin in f32, cast to the activation dtype only when applied.

use candle_core::{DType, Device, Tensor, D};

use super::config::{LlmConfig, RopeScaling};
use crate::{Error, Result};

/// Frequencies and scaling of one model's rotary embedding.
#[derive(Debug, Clone)]
pub(super) struct Rope {
    head_dim: usize,
    theta: f64,
    scaling: RopeScaling,
    max_positions: usize,
}

/// The frequencies used by one forward call, and the factor applied to cos and sin.
struct Frequencies {
    inv_freq: Vec<f32>,
    position_divisor: f32,
    magnitude: f32,
}

impl Rope {
    pub(super) fn new(config: &LlmConfig) -> Self {
        Self {
            head_dim: config.head_dim,
            theta: config.rope_theta,
            scaling: config.rope_scaling.clone(),
            max_positions: config.max_position_embeddings,
        }
    }

    /// Rejects a sequence (cache + new tokens) longer than the model supports; only dynamic NTK
    /// defines what happens beyond `max_position_embeddings`.
    pub(super) fn check_length(&self, seq_len: usize) -> Result<()> {
        let extends = matches!(self.scaling, RopeScaling::DynamicNtk { .. });
        if seq_len > self.max_positions && !extends {
            return Err(Error::InvalidArgument(format!(
                "sequence of {seq_len} positions exceeds max_position_embeddings {} of this model",
                self.max_positions
            )));
        }
        Ok(())
    }

    /// cos and sin `[B, 1, T, head_dim]` (f32) for `positions` (B rows of T), in a forward whose
    /// whole sequence (cache + new tokens) is `seq_len` long.
    pub(super) fn tables(
        &self,
        positions: &[Vec<i64>],
        seq_len: usize,
        device: &Device,
    ) -> Result<(Tensor, Tensor)> {
        let batch = positions.len();
        let len = positions.first().map_or(0, Vec::len);
        let largest = positions.iter().flatten().copied().max().unwrap_or(0);
        let freqs = self.frequencies(seq_len, largest as usize + 1);
        let half = freqs.inv_freq.len();
        let mut cos = Vec::with_capacity(batch * len * half * 2);
        let mut sin = Vec::with_capacity(batch * len * half * 2);
        for &p in positions.iter().flatten() {
            let t = p as f32 / freqs.position_divisor;
            let angles: Vec<f32> = freqs.inv_freq.iter().map(|f| t * f).collect();
            // cat(freqs, freqs): both halves of a head see the same angles.
            for _ in 0..2 {
                cos.extend(angles.iter().map(|a| a.cos() * freqs.magnitude));
                sin.extend(angles.iter().map(|a| a.sin() * freqs.magnitude));
            }
        }
        let shape = (batch, 1, len, half * 2);
        Ok((
            Tensor::from_vec(cos, shape, device)?,
            Tensor::from_vec(sin, shape, device)?,
        ))
    }

    fn frequencies(&self, seq_len: usize, position_span: usize) -> Frequencies {
        let plain = |base: f64| inverse_frequencies(base, self.head_dim, None);
        let (inv_freq, position_divisor, magnitude) = match &self.scaling {
            RopeScaling::None => (plain(self.theta), 1.0, 1.0),
            RopeScaling::Linear { factor } => (plain(self.theta), *factor as f32, 1.0),
            RopeScaling::DynamicNtk { factor } => {
                (plain(self.dynamic_base(*factor, seq_len)), 1.0, 1.0)
            }
            RopeScaling::LongRope {
                short_factor,
                long_factor,
                original_max_position_embeddings: original,
            } => {
                // The release picks the factors from this call's largest position id.
                let factors = if position_span > *original {
                    long_factor
                } else {
                    short_factor
                };
                let inv = inverse_frequencies(self.theta, self.head_dim, Some(factors));
                (inv, 1.0, self.long_rope_magnitude(*original))
            }
        };
        Frequencies {
            inv_freq,
            position_divisor,
            magnitude,
        }
    }

    /// `base · ((factor · L / max) − (factor − 1))^(d / (d − 2))` once `L` exceeds the maximum.
    fn dynamic_base(&self, factor: f64, seq_len: usize) -> f64 {
        if seq_len <= self.max_positions {
            return self.theta;
        }
        let d = self.head_dim as f64;
        let growth = factor * seq_len as f64 / self.max_positions as f64 - (factor - 1.0);
        self.theta * growth.powf(d / (d - 2.0))
    }

    fn long_rope_magnitude(&self, original: usize) -> f32 {
        let scale = self.max_positions as f64 / original as f64;
        if scale <= 1.0 {
            1.0
        } else {
            (1.0 + scale.ln() / (original as f64).ln()).sqrt() as f32
        }
    }
}

/// `1 / (factor_j · base^(2j/d))` with the exponent, power and division in f32 like the release.
fn inverse_frequencies(base: f64, head_dim: usize, factors: Option<&Vec<f64>>) -> Vec<f32> {
    (0..head_dim / 2)
        .map(|j| {
            let exponent = (2 * j) as f32 / head_dim as f32;
            let power = (base as f32).powf(exponent);
            let scaled = factors.map_or(power, |f| f[j] as f32 * power);
            1.0 / scaled
        })
        .collect()
}

/// `x·cos + rotate_half(x)·sin` on `[B, H, T, D]` with cos/sin `[B, 1, T, D]`.
pub(super) fn apply(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    let first = x.narrow(D::Minus1, 0, d / 2)?;
    let second = x.narrow(D::Minus1, d / 2, d / 2)?;
    let rotated = Tensor::cat(&[&second.neg()?, &first], D::Minus1)?;
    let dtype = x.dtype();
    let (cos, sin) = if dtype == DType::F32 {
        (cos.clone(), sin.clone())
    } else {
        (cos.to_dtype(dtype)?, sin.to_dtype(dtype)?)
    };
    Ok((x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::llm::config::LlmFamily;

    fn config(scaling: RopeScaling, max: usize) -> LlmConfig {
        LlmConfig {
            family: LlmFamily::Llama,
            hidden_size: 16,
            intermediate_size: 32,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            num_key_value_heads: 1,
            head_dim: 8,
            vocab_size: 10,
            rms_norm_eps: 1e-6,
            rope_theta: 10000.0,
            rope_scaling: scaling,
            max_position_embeddings: max,
            sliding_window: None,
            qkv_bias: false,
            o_bias: false,
            mlp_bias: false,
            tie_word_embeddings: false,
            bos_token_id: None,
            eos_token_ids: vec![],
            pad_token_id: None,
        }
    }

    #[test]
    fn plain_rope_at_position_zero_is_identity() {
        let rope = Rope::new(&config(RopeScaling::None, 16));
        let (cos, sin) = rope.tables(&[vec![0, 3]], 4, &Device::Cpu).unwrap();
        let cos = cos.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let sin = sin.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(cos[..8].iter().all(|c| *c == 1.0) && sin[..8].iter().all(|s| *s == 0.0));
        // Position 3, frequency 0 (inv_freq 1): cos 3.
        assert!((cos[8] - 3f32.cos()).abs() < 1e-7);
    }

    #[test]
    fn linear_scaling_divides_the_positions() {
        let scaled = Rope::new(&config(RopeScaling::Linear { factor: 2.0 }, 16));
        let plain = Rope::new(&config(RopeScaling::None, 16));
        let (cos_scaled, sin_scaled) = scaled.tables(&[vec![6]], 7, &Device::Cpu).unwrap();
        let (cos_plain, sin_plain) = plain.tables(&[vec![3]], 7, &Device::Cpu).unwrap();
        let values = |t: Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(values(cos_scaled), values(cos_plain));
        assert_eq!(values(sin_scaled), values(sin_plain));
    }

    #[test]
    fn dynamic_ntk_only_beyond_the_maximum() {
        let rope = Rope::new(&config(RopeScaling::DynamicNtk { factor: 2.0 }, 16));
        assert_eq!(rope.dynamic_base(2.0, 16), 10000.0);
        let expected = 10000.0 * (2.0f64 * 32.0 / 16.0 - 1.0).powf(8.0 / 6.0);
        assert!((rope.dynamic_base(2.0, 32) - expected).abs() < 1e-6);
        assert!(rope.check_length(100).is_ok());
        let plain = Rope::new(&config(RopeScaling::None, 16));
        let err = plain.check_length(17).unwrap_err().to_string();
        assert!(err.contains("max_position_embeddings 16"), "{err}");
    }
}
