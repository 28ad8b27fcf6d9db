//! AdamW as `torch.optim.AdamW` computes it, per-parameter learning-rate scales and weight decay
//! (the release's exclusions and layer-wise decay), the cosine schedule with warm-up of
//! transformers, and gradient clipping by the global norm (`clip_grad_norm_`).

use std::collections::{BTreeMap, HashMap};

use candle_core::{DType, Tensor, Var};

use crate::{Error, Result};

/// AdamW hyper-parameters (torch defaults).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    /// β₁.
    pub beta1: f64,
    /// β₂.
    pub beta2: f64,
    /// ε.
    pub eps: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// How one parameter is optimised.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParamGroup {
    /// Multiplies the scheduled learning rate (layer-wise decay).
    pub lr_scale: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
}

/// One optimised parameter with its moments.
#[derive(Debug)]
struct Slot {
    name: String,
    var: Var,
    group: ParamGroup,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
}

/// AdamW over named variables.
#[derive(Debug)]
pub struct AdamW {
    slots: Vec<Slot>,
    config: AdamWConfig,
    step: u64,
}

impl AdamW {
    /// An optimiser over `params` (name, variable, group) with zero moments.
    pub fn new(params: Vec<(String, Var, ParamGroup)>, config: AdamWConfig) -> Result<Self> {
        let slots = params
            .into_iter()
            .map(|(name, var, group)| {
                let zeros = var.as_tensor().to_dtype(DType::F32)?.zeros_like()?;
                Ok(Slot {
                    name,
                    var,
                    group,
                    exp_avg: zeros.clone(),
                    exp_avg_sq: zeros,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            slots,
            config,
            step: 0,
        })
    }

    /// Updates taken so far.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// One update with learning rate `lr` (times each group's scale) from `grads` by name
    /// (a parameter without a gradient is left alone, as PyTorch skips `grad is None`):
    /// `p ← p·(1 − lr·wd)`, `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`,
    /// `p ← p − lr/(1−β₁ᵗ) · m / (√v/√(1−β₂ᵗ) + ε)`.
    pub fn step(&mut self, grads: &BTreeMap<String, Tensor>, lr: f64) -> Result<()> {
        self.step += 1;
        let t = self.step as i32;
        let AdamWConfig { beta1, beta2, eps } = self.config;
        let correction1 = 1.0 - beta1.powi(t);
        let correction2_sqrt = (1.0 - beta2.powi(t)).sqrt();
        for slot in &mut self.slots {
            let Some(grad) = grads.get(&slot.name) else {
                continue;
            };
            let grad = grad.to_dtype(DType::F32)?;
            let lr = lr * slot.group.lr_scale;
            let param = slot.var.as_tensor().to_dtype(DType::F32)?;
            let param = (param * (1.0 - lr * slot.group.weight_decay))?;
            slot.exp_avg = ((&slot.exp_avg * beta1)? + (&grad * (1.0 - beta1))?)?;
            slot.exp_avg_sq = ((&slot.exp_avg_sq * beta2)? + (grad.sqr()? * (1.0 - beta2))?)?;
            let denom = ((slot.exp_avg_sq.sqrt()? / correction2_sqrt)? + eps)?;
            let update = ((&slot.exp_avg / denom)? * (lr / correction1))?;
            let dtype = slot.var.as_tensor().dtype();
            slot.var.set(&(param - update)?.to_dtype(dtype)?)?;
        }
        Ok(())
    }

    /// The moments as tensors named `exp_avg/<param>` and `exp_avg_sq/<param>`.
    pub fn state_tensors(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for slot in &self.slots {
            out.insert(format!("exp_avg/{}", slot.name), slot.exp_avg.clone());
            out.insert(format!("exp_avg_sq/{}", slot.name), slot.exp_avg_sq.clone());
        }
        out
    }

    /// Restores moments saved by [`AdamW::state_tensors`] after `steps` updates.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, steps: u64) -> Result<()> {
        for slot in &mut self.slots {
            for (key, target) in [
                ("exp_avg", &mut slot.exp_avg),
                ("exp_avg_sq", &mut slot.exp_avg_sq),
            ] {
                let name = format!("{key}/{}", slot.name);
                let saved = tensors.get(&name).ok_or_else(|| {
                    Error::InvalidArgument(format!("the optimizer state has no `{name}`"))
                })?;
                if saved.dims() != target.dims() {
                    return Err(Error::InvalidArgument(format!(
                        "optimizer state `{name}` has shape {:?}, the parameter {:?}",
                        saved.dims(),
                        target.dims()
                    )));
                }
                *target = saved.to_dtype(DType::F32)?;
            }
        }
        self.step = steps;
        Ok(())
    }
}

/// Whether the release's recipes exempt a parameter from weight decay: tensors of rank ≤ 1
/// (norm weights, biases, `logit_scale`), names ending in `.bias`, embeddings (token, position,
/// class) and the query tokens.
pub fn no_weight_decay(name: &str, rank: usize) -> bool {
    rank <= 1
        || name.ends_with(".bias")
        || name.ends_with("_bias")
        || name.contains("embed")
        || name.contains("query_tokens")
}

/// The learning-rate scale of the release's layer-wise decay (`internvl_g` optimizer, spec
/// training.md §4.1): `rate^(n − id − 1)` (at most 1) with the layer id of `name` in its family,
/// `n = layers + 2`. `vit` and `qllama` give (layers, rate) of each family; names outside both
/// families (e.g. `mlp1`, `language_model`) get 1.
pub fn layer_decay_scale(name: &str, vit: (usize, f64), qllama: (usize, f64)) -> f64 {
    let layer_of = |rest: &str| -> Option<usize> {
        let after = rest.split("layers.").nth(1)?;
        after.split('.').next()?.parse().ok()
    };
    let (n_vit, n_q) = (vit.0 + 2, qllama.0 + 2);
    let (id, n, rate) = if name.starts_with("vision_model.") {
        // Embeddings and anything outside the blocks get id 0 (the spec's "everything else").
        let id = if name.contains("embeddings") {
            0
        } else {
            layer_of(name).map_or(0, |k| k + 1)
        };
        (id, n_vit, vit.1)
    } else if name.starts_with("clip_projector.") {
        (n_vit, n_vit, vit.1)
    } else if name.starts_with("qllama.") {
        let id = if name.contains("embed_tokens") {
            0
        } else {
            layer_of(name).map_or(n_q, |k| k + 1)
        };
        (id, n_q, qllama.1)
    } else if name == "query_tokens" || name == "logit_scale" {
        (0, n_q, qllama.1)
    } else if name.starts_with("clip_projector2.")
        || name.starts_with("itm_head.")
        || name == "text_projection"
    {
        (n_q, n_q, qllama.1)
    } else {
        return 1.0;
    };
    let exponent = n as i64 - id as i64 - 1;
    rate.powi(exponent.max(0) as i32).min(1.0)
}

/// transformers' `get_cosine_schedule_with_warmup` multiplier at optimizer step `step`
/// (0-based: the first update uses step 0, so with warm-up it has learning rate 0).
pub fn cosine_with_warmup(step: u64, warmup: u64, total: u64) -> f64 {
    if step < warmup {
        return step as f64 / warmup.max(1) as f64;
    }
    let progress = (step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
    (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0)
}

/// `torch.nn.utils.clip_grad_norm_`: scales every gradient by `max_norm / (norm + 1e-6)` when
/// the global L2 norm exceeds `max_norm`; returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut BTreeMap<String, Tensor>, max_norm: f64) -> Result<f64> {
    let mut total = 0f64;
    for g in grads.values() {
        total += g
            .to_dtype(DType::F32)?
            .sqr()?
            .sum_all()?
            .to_scalar::<f32>()? as f64;
    }
    let norm = total.sqrt();
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        for g in grads.values_mut() {
            *g = (&*g * coef)?;
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// One AdamW step by hand (values from the update formula, as torch computes it).
    #[test]
    fn adamw_follows_torch() {
        let var = Var::new(&[1.0f32, -2.0], &Device::Cpu).unwrap();
        let group = ParamGroup {
            lr_scale: 1.0,
            weight_decay: 0.1,
        };
        let mut opt = AdamW::new(
            vec![("p".into(), var.clone(), group)],
            AdamWConfig::default(),
        )
        .unwrap();
        let grads = BTreeMap::from([(
            "p".to_string(),
            Tensor::new(&[0.5f32, -0.25], &Device::Cpu).unwrap(),
        )]);
        opt.step(&grads, 0.01).unwrap();
        opt.step(&grads, 0.01).unwrap();
        // Step 1: p·(1−0.001), m̂ = g, v̂ = g² → update = lr·g/(|g| + ε) = ±0.01.
        // Step 2 (constant g): again m̂ = g, v̂ = g².
        let mut want = [1.0f64, -2.0];
        for _ in 0..2 {
            for (w, g) in want.iter_mut().zip([0.5f64, -0.25]) {
                *w *= 1.0 - 0.01 * 0.1;
                *w -= 0.01 * g / (g.abs() + 1e-8);
            }
        }
        let got = var.as_tensor().to_vec1::<f32>().unwrap();
        for (g, w) in got.iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-6, "{got:?} vs {want:?}");
        }
        let state = opt.state_tensors();
        let mut fresh = AdamW::new(
            vec![(
                "p".into(),
                Var::new(&[0f32, 0.0], &Device::Cpu).unwrap(),
                group,
            )],
            AdamWConfig::default(),
        )
        .unwrap();
        fresh.load_state(&state, 2).unwrap();
        assert_eq!(fresh.steps(), 2);
    }

    #[test]
    fn schedule_and_decay_rules() {
        assert_eq!(cosine_with_warmup(0, 10, 100), 0.0);
        assert_eq!(cosine_with_warmup(5, 10, 100), 0.5);
        assert!((cosine_with_warmup(10, 10, 100) - 1.0).abs() < 1e-12);
        assert!((cosine_with_warmup(55, 10, 100) - 0.5).abs() < 1e-12);
        assert!(cosine_with_warmup(100, 10, 100).abs() < 1e-12);
        assert!(no_weight_decay(
            "vision_model.encoder.layers.0.norm1.weight",
            1
        ));
        assert!(no_weight_decay("query_tokens", 3));
        assert!(no_weight_decay("qllama.model.embed_tokens.weight", 2));
        assert!(!no_weight_decay("mlp1.1.weight", 2));
        // Spec §4.1 with 48 ViT and 32 QLLaMA layers, rate 0.9.
        let (vit, q) = ((48, 0.9), (32, 0.9));
        assert!((layer_decay_scale("query_tokens", vit, q) - 0.9f64.powi(33)).abs() < 1e-12);
        assert_eq!(layer_decay_scale("text_projection", vit, q), 1.0);
        assert!(
            (layer_decay_scale("vision_model.encoder.layers.47.mlp.fc1.weight", vit, q) - 0.9)
                .abs()
                < 1e-12
        );
        assert!(
            (layer_decay_scale("vision_model.embeddings.class_embedding", vit, q)
                - 0.9f64.powi(49))
            .abs()
                < 1e-12
        );
        assert_eq!(layer_decay_scale("mlp1.1.weight", vit, q), 1.0);
    }

    #[test]
    fn clipping_scales_to_the_max_norm() {
        let mut grads = BTreeMap::from([(
            "a".to_string(),
            Tensor::new(&[3.0f32, 4.0], &Device::Cpu).unwrap(),
        )]);
        let norm = clip_grad_norm(&mut grads, 1.0).unwrap();
        assert!((norm - 5.0).abs() < 1e-9);
        let v = grads["a"].to_vec1::<f32>().unwrap();
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
    }
}
