//! Trainable parameters: while a model loads, the checkpoint hands every tensor whose released
//! name is trainable out as a candle [`Var`] (so autograd tracks it) and every frozen one as a
//! plain tensor (so it never enters the backward graph and costs no gradient memory).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use crate::models::checkpoint::Checkpoint;
use crate::{Error, Result};

/// Which parameters train: glob patterns over released names (`*` matches any run of
/// characters); a pattern starting with `!` excludes. A name trains when it matches an include
/// pattern and no exclude pattern.
#[derive(Debug, Clone, Default)]
pub struct NamePatterns {
    include: Vec<String>,
    exclude: Vec<String>,
}

impl NamePatterns {
    /// Parses comma-separated patterns (`"mlp1.*,!*.bias"`).
    pub fn parse(spec: &str) -> Result<Self> {
        let mut patterns = Self::default();
        for p in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match p.strip_prefix('!') {
                Some("") => {
                    return Err(Error::InvalidArgument(format!(
                        "empty exclusion in the parameter patterns `{spec}`"
                    )))
                }
                Some(x) => patterns.exclude.push(x.to_string()),
                None => patterns.include.push(p.to_string()),
            }
        }
        Ok(patterns)
    }

    /// Every parameter.
    pub fn all() -> Self {
        Self {
            include: vec!["*".into()],
            exclude: Vec::new(),
        }
    }

    /// Whether `name` is selected.
    pub fn matches(&self, name: &str) -> bool {
        self.include.iter().any(|p| glob_match(p, name))
            && !self.exclude.iter().any(|p| glob_match(p, name))
    }
}

/// `*`-only glob matching (greedy with backtracking over the last star).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// The trainable variables handed out while a model loaded, by released name.
#[derive(Clone, Default)]
pub struct Parameters {
    vars: Arc<Mutex<BTreeMap<String, Var>>>,
}

impl std::fmt::Debug for Parameters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parameters")
            .field("count", &self.len())
            .finish()
    }
}

impl Parameters {
    /// Makes `checkpoint` hand out the tensors that `trainable` selects as variables (until
    /// [`Parameters::detach`]); load the model after this call.
    pub fn attach(checkpoint: &Checkpoint, trainable: NamePatterns) -> Self {
        let params = Self::default();
        let vars = params.vars.clone();
        checkpoint.set_tensor_hook(Some(Arc::new(move |name: &str, tensor: Tensor| {
            if !trainable.matches(name) {
                return Ok(tensor);
            }
            let mut vars = vars
                .lock()
                .map_err(|_| candle_core::Error::Msg("parameter table poisoned".into()))?;
            // A name asked for twice (a tied weight) is one variable.
            let var = match vars.get(name) {
                Some(v) => v.clone(),
                None => {
                    let v = Var::from_tensor(&tensor)?;
                    vars.insert(name.to_string(), v.clone());
                    v
                }
            };
            Ok(var.as_tensor().clone())
        })));
        params
    }

    /// Parameters made of given variables (for models built without a checkpoint).
    pub fn from_vars(vars: BTreeMap<String, Var>) -> Self {
        Self {
            vars: Arc::new(Mutex::new(vars)),
        }
    }

    /// Stops handing out variables (frozen models load as usual again).
    pub fn detach(checkpoint: &Checkpoint) {
        checkpoint.set_tensor_hook(None);
    }

    /// Number of variables.
    pub fn len(&self) -> usize {
        self.vars.lock().map_or(0, |v| v.len())
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The variables by name.
    pub fn vars(&self) -> BTreeMap<String, Var> {
        self.vars.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// The gradient of every variable in `grads` (zeros for one the loss does not reach), by
    /// name.
    pub fn gradients(&self, grads: &GradStore) -> Result<BTreeMap<String, Tensor>> {
        self.vars()
            .into_iter()
            .map(|(name, var)| {
                let grad = match grads.get(var.as_tensor()) {
                    Some(g) => g.clone(),
                    None => var.as_tensor().zeros_like()?,
                };
                Ok((name, grad))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_and_exclusions() {
        assert!(glob_match("mlp1.*", "mlp1.0.weight"));
        assert!(glob_match("*.bias", "a.b.bias"));
        assert!(glob_match(
            "qllama.*.cross_attn.*",
            "qllama.model.layers.0.cross_attn.q_proj.weight"
        ));
        assert!(!glob_match("mlp1.*", "vision_model.mlp1"));
        assert!(glob_match("query_tokens", "query_tokens"));
        assert!(!glob_match("query_tokens", "query_tokens2"));
        let p = NamePatterns::parse("mlp1.*, !*.bias").unwrap();
        assert!(p.matches("mlp1.1.weight"));
        assert!(!p.matches("mlp1.1.bias"));
        assert!(!p.matches("language_model.lm_head.weight"));
        assert!(NamePatterns::parse("!").is_err());
    }
}
