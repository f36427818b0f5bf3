//! sentence-transformers models: what turns an encoder's token states into one sentence vector.
//! Reads `modules.json` and the module folders it names — `Pooling` (`1_Pooling/config.json`),
//! `Dense` (`2_Dense/config.json` + weights), `Normalize` — plus `sentence_bert_config.json`
//! (`max_seq_length`, `do_lower_case`) and `config_sentence_transformers.json` (`prompts`,
//! `default_prompt_name`). Serves the sentence tasks of contract §4.
//!
//! Does not own the encoder (the `Transformer` module is the model directory itself, run by
//! [`super::Encoder`]) nor the request shapes (`crate::pipelines::sentence_*`).
//!
//! Numerics follow sentence-transformers 4.1.0, in f32:
//! <https://github.com/UKPLab/sentence-transformers/blob/v4.1.0/sentence_transformers/models/Pooling.py>,
//! `models/Dense.py`, `models/Normalize.py`, `models/Transformer.py` (`tokenize`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use serde::Deserialize;
use serde_json::Value;

use super::{ModelError, Result, WeightFiles};

/// `modules.json`: the module chain of a sentence-transformers folder.
pub const MODULES_FILE: &str = "modules.json";

/// Whether `dir` is a sentence-transformers folder (it has `modules.json`).
pub fn is_sentence_transformers(dir: &Path) -> bool {
    dir.join(MODULES_FILE).is_file()
}

/// One entry of `modules.json`.
#[derive(Debug, Clone, Deserialize)]
struct ModuleEntry {
    #[serde(default)]
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

/// `1_Pooling/config.json`. Every mode that is on contributes a vector; they are concatenated
/// in this order (cls, max, mean, mean-sqrt-len, weighted-mean, last-token). `Default` has every
/// mode off.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct PoolingConfig {
    /// The first token (`[CLS]`).
    #[serde(default)]
    pub pooling_mode_cls_token: bool,
    /// Element-wise maximum over the tokens.
    #[serde(default)]
    pub pooling_mode_max_tokens: bool,
    /// Mean over the tokens (on when the key is absent, as `Pooling.__init__`'s default).
    #[serde(default = "yes")]
    pub pooling_mode_mean_tokens: bool,
    /// Sum over the tokens divided by the square root of their number.
    #[serde(default)]
    pub pooling_mode_mean_sqrt_len_tokens: bool,
    /// Mean weighted by position (1, 2, 3, ...).
    #[serde(default)]
    pub pooling_mode_weightedmean_tokens: bool,
    /// The last real token.
    #[serde(default)]
    pub pooling_mode_lasttoken: bool,
    /// The width of the token vectors (the encoder's hidden size), when given.
    #[serde(default)]
    pub word_embedding_dimension: Option<usize>,
    /// Whether the prompt's tokens take part in pooling (default true).
    #[serde(default = "yes")]
    pub include_prompt: bool,
}

fn yes() -> bool {
    true
}

impl PoolingConfig {
    /// Pools one sequence's token states (`tokens × hidden`, real tokens only). The first
    /// `skip` tokens (a prompt, with `include_prompt: false`) are masked out, as
    /// sentence-transformers sets their attention mask to 0.
    pub fn pool(&self, tokens: &[Vec<f32>], skip: usize) -> Vec<f32> {
        let hidden = tokens.first().map_or(0, Vec::len);
        let skip = if self.include_prompt {
            0
        } else {
            skip.min(tokens.len())
        };
        let kept = &tokens[skip..];
        let mut out = Vec::new();
        if self.pooling_mode_cls_token {
            // Pooling.py takes token 0 whatever the mask says.
            out.extend(tokens.first().cloned().unwrap_or_default());
        }
        if self.pooling_mode_max_tokens {
            // Masked positions are set to -1e9 before the maximum.
            let init = if skip > 0 { -1e9 } else { f32::NEG_INFINITY };
            let mut max = vec![init; hidden];
            for t in kept {
                max.iter_mut().zip(t).for_each(|(m, &v)| *m = m.max(v));
            }
            out.extend(max);
        }
        if self.pooling_mode_mean_tokens || self.pooling_mode_mean_sqrt_len_tokens {
            let sum = weighted_sum(kept, |_| 1.0, hidden);
            let count = (kept.len() as f32).max(1e-9);
            if self.pooling_mode_mean_tokens {
                out.extend(sum.iter().map(|s| s / count));
            }
            if self.pooling_mode_mean_sqrt_len_tokens {
                let root = count.sqrt();
                out.extend(sum.iter().map(|s| s / root));
            }
        }
        if self.pooling_mode_weightedmean_tokens {
            // Weights are 1-based positions in the whole sequence, prompt included.
            let sum = weighted_sum(kept, |i| (skip + i + 1) as f32, hidden);
            let total: f32 = (0..kept.len()).map(|i| (skip + i + 1) as f32).sum();
            let total = total.max(1e-9);
            out.extend(sum.iter().map(|s| s / total));
        }
        if self.pooling_mode_lasttoken {
            // The last attended token; none attended gives zeros (token 0 times a 0 mask).
            match kept.last() {
                Some(last) => out.extend(last.iter().copied()),
                None => out.extend(std::iter::repeat_n(0.0, hidden)),
            }
        }
        out
    }

    /// How many pooling modes are on.
    pub fn modes(&self) -> usize {
        [
            self.pooling_mode_cls_token,
            self.pooling_mode_max_tokens,
            self.pooling_mode_mean_tokens,
            self.pooling_mode_mean_sqrt_len_tokens,
            self.pooling_mode_weightedmean_tokens,
            self.pooling_mode_lasttoken,
        ]
        .into_iter()
        .filter(|on| *on)
        .count()
    }
}

fn weighted_sum(tokens: &[Vec<f32>], weight: impl Fn(usize) -> f32, hidden: usize) -> Vec<f32> {
    let mut sum = vec![0.0f32; hidden];
    for (i, t) in tokens.iter().enumerate() {
        let w = weight(i);
        sum.iter_mut().zip(t).for_each(|(s, &v)| *s += v * w);
    }
    sum
}

/// The activation after a `Dense` layer (its `activation_function`, a torch class path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `torch.nn.modules.activation.Tanh` (the default).
    Tanh,
    /// `torch.nn.modules.linear.Identity`.
    Identity,
    /// `torch.nn.modules.activation.ReLU`.
    Relu,
    /// `torch.nn.modules.activation.Sigmoid`.
    Sigmoid,
    /// `torch.nn.modules.activation.GELU` (erf).
    Gelu,
}

impl Activation {
    /// Parses a torch class path by its last component.
    pub fn parse(path: &str) -> Option<Self> {
        Some(match path.rsplit('.').next().unwrap_or(path) {
            "Tanh" => Self::Tanh,
            "Identity" => Self::Identity,
            "ReLU" => Self::Relu,
            "Sigmoid" => Self::Sigmoid,
            "GELU" => Self::Gelu,
            _ => return None,
        })
    }

    /// Applies the activation to one value.
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Self::Tanh => x.tanh(),
            Self::Identity => x,
            Self::Relu => x.max(0.0),
            Self::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Self::Gelu => {
                let x = f64::from(x);
                (0.5 * x * (1.0 + candle_core::cpu::erf::erf_f64(x / std::f64::consts::SQRT_2)))
                    as f32
            }
        }
    }
}

/// `2_Dense/config.json`.
#[derive(Debug, Deserialize)]
struct DenseConfig {
    in_features: usize,
    out_features: usize,
    #[serde(default = "yes")]
    bias: bool,
    #[serde(default)]
    activation_function: Option<String>,
}

/// A `Dense` module: `activation(W x + b)`.
#[derive(Debug, Clone)]
pub struct Dense {
    /// `out × in`, row-major.
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
    in_features: usize,
    out_features: usize,
    activation: Activation,
}

impl Dense {
    fn load(dir: &Path) -> Result<Self> {
        let cfg: DenseConfig = read_json(&dir.join("config.json"))?;
        let activation = match cfg.activation_function.as_deref() {
            None => Activation::Identity,
            Some(path) => Activation::parse(path).ok_or_else(|| ModelError::SentenceModule {
                path: dir.join("config.json"),
                reason: format!("unsupported `activation_function` {path:?}"),
            })?,
        };
        let vb = WeightFiles::find(dir)?.var_builder(DType::F32, &Device::Cpu)?;
        let weight = vb
            .get((cfg.out_features, cfg.in_features), "linear.weight")?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let bias = if cfg.bias {
            Some(vb.get(cfg.out_features, "linear.bias")?.to_vec1::<f32>()?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            in_features: cfg.in_features,
            out_features: cfg.out_features,
            activation,
        })
    }

    /// Applies the layer to one vector of `in_features` (the chain's widths are checked at
    /// load).
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        (0..self.out_features)
            .map(|o| {
                let row = &self.weight[o * self.in_features..(o + 1) * self.in_features];
                let dot: f32 = row.iter().zip(x).map(|(w, v)| w * v).sum();
                let b = self.bias.as_ref().map_or(0.0, |b| b[o]);
                self.activation.apply(dot + b)
            })
            .collect()
    }
}

/// L2-normalizes `v` as `torch.nn.functional.normalize(p=2, eps=1e-12)`.
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
}

/// What follows pooling.
#[derive(Debug, Clone)]
enum Step {
    Dense(Dense),
    Normalize,
}

/// `sentence_bert_config.json`.
#[derive(Debug, Default, Deserialize)]
struct SentenceBertConfig {
    #[serde(default)]
    max_seq_length: Option<usize>,
    #[serde(default)]
    do_lower_case: bool,
}

/// `config_sentence_transformers.json` (the keys read here).
#[derive(Debug, Default, Deserialize)]
struct SentenceTransformersConfig {
    #[serde(default)]
    prompts: BTreeMap<String, String>,
    #[serde(default)]
    default_prompt_name: Option<String>,
}

/// A sentence-transformers module chain after the encoder: pooling, then Dense and Normalize
/// steps in `modules.json` order, with the tokenization settings and prompts.
#[derive(Debug, Clone)]
pub struct SentenceModules {
    pooling: PoolingConfig,
    steps: Vec<Step>,
    /// `max_seq_length` (None: the tokenizer's maximum).
    pub max_seq_length: Option<usize>,
    /// Lowercase texts before tokenizing.
    pub do_lower_case: bool,
    /// Named prompts, prepended to the text.
    pub prompts: BTreeMap<String, String>,
    /// The prompt used when a request names none.
    pub default_prompt_name: Option<String>,
}

impl SentenceModules {
    /// Reads the module chain of the sentence-transformers folder `dir`.
    pub fn load(dir: &Path) -> Result<Self> {
        let modules: Vec<ModuleEntry> = read_json(&dir.join(MODULES_FILE))?;
        let mut pooling = None;
        let mut steps = Vec::new();
        for (i, module) in modules.iter().enumerate() {
            let name = module.kind.rsplit('.').next().unwrap_or(&module.kind);
            let module_dir = inside(dir, &module.path)?;
            match (name, i) {
                ("Transformer", 0) if module.path.is_empty() => {}
                ("Transformer", 0) => {
                    return Err(unusable(
                        dir,
                        format!(
                            "the Transformer module must be the model folder itself (`path` \"\"), got {:?}",
                            module.path
                        ),
                    ));
                }
                ("Pooling", _) if pooling.is_none() && steps.is_empty() => {
                    let cfg: PoolingConfig = read_json(&module_dir.join("config.json"))?;
                    if cfg.modes() == 0 {
                        return Err(ModelError::SentenceModule {
                            path: module_dir.join("config.json"),
                            reason: "no pooling mode is on".into(),
                        });
                    }
                    pooling = Some(cfg);
                }
                ("Dense", _) if pooling.is_some() => {
                    steps.push(Step::Dense(Dense::load(&module_dir)?))
                }
                ("Normalize", _) if pooling.is_some() => steps.push(Step::Normalize),
                _ => {
                    return Err(unusable(
                        dir,
                        format!(
                            "module {i} `{}` is not supported here; supported: Transformer (first), Pooling, then Dense and Normalize",
                            module.kind
                        ),
                    ));
                }
            }
        }
        let pooling =
            pooling.ok_or_else(|| unusable(dir, "there is no Pooling module".to_owned()))?;
        let bert: SentenceBertConfig = read_optional(&dir.join("sentence_bert_config.json"))?;
        let st: SentenceTransformersConfig =
            read_optional(&dir.join("config_sentence_transformers.json"))?;
        if let Some(name) = &st.default_prompt_name
            && !st.prompts.contains_key(name)
        {
            return Err(ModelError::SentenceModule {
                path: dir.join("config_sentence_transformers.json"),
                reason: format!("`default_prompt_name` {name:?} is not a key of `prompts`"),
            });
        }
        Ok(Self {
            pooling,
            steps,
            max_seq_length: bert.max_seq_length,
            do_lower_case: bert.do_lower_case,
            prompts: st.prompts,
            default_prompt_name: st.default_prompt_name,
        })
    }

    /// Transformer + mean pooling and nothing after: what sentence-transformers builds for a
    /// plain transformers model (no `modules.json`).
    pub fn mean_pooling() -> Self {
        Self {
            pooling: PoolingConfig {
                pooling_mode_mean_tokens: true,
                include_prompt: true,
                ..PoolingConfig::default()
            },
            steps: Vec::new(),
            max_seq_length: None,
            do_lower_case: false,
            prompts: BTreeMap::new(),
            default_prompt_name: None,
        }
    }

    /// The pooling configuration.
    pub fn pooling(&self) -> &PoolingConfig {
        &self.pooling
    }

    /// One sentence vector from a sequence's token states (real tokens only): pooling, then
    /// the Dense and Normalize steps. `prompt_tokens` leading tokens are the prompt's.
    pub fn embed(&self, tokens: &[Vec<f32>], prompt_tokens: usize) -> Vec<f32> {
        let mut v = self.pooling.pool(tokens, prompt_tokens);
        for step in &self.steps {
            match step {
                Step::Dense(dense) => v = dense.forward(&v),
                Step::Normalize => normalize(&mut v),
            }
        }
        v
    }

    /// Checks that the chain fits an encoder of width `hidden`: the pooling's
    /// `word_embedding_dimension` and each Dense layer's `in_features`.
    pub fn check_width(&self, hidden: usize, dir: &Path) -> Result<()> {
        if let Some(w) = self
            .pooling
            .word_embedding_dimension
            .filter(|w| *w != hidden)
        {
            return Err(ModelError::SentenceModule {
                path: dir.join(MODULES_FILE),
                reason: format!(
                    "the Pooling module's `word_embedding_dimension` is {w}, but the encoder's hidden size is {hidden}"
                ),
            });
        }
        let mut width = hidden * self.pooling.modes();
        for step in &self.steps {
            if let Step::Dense(dense) = step {
                if dense.in_features != width {
                    return Err(ModelError::SentenceModule {
                        path: dir.join(MODULES_FILE),
                        reason: format!(
                            "a Dense module takes `in_features` {}, but receives {width}",
                            dense.in_features
                        ),
                    });
                }
                width = dense.out_features;
            }
        }
        Ok(())
    }

    /// The text as sentence-transformers tokenizes it: stripped, lowercased with `do_lower_case`.
    pub fn prepare(&self, text: &str) -> String {
        let text = text.trim();
        if self.do_lower_case {
            text.to_lowercase()
        } else {
            text.to_owned()
        }
    }
}

/// `dir/rel` for a module path, refused when it leaves `dir`.
fn inside(dir: &Path, rel: &str) -> Result<PathBuf> {
    let plain = Path::new(rel)
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    if plain {
        Ok(dir.join(rel))
    } else {
        Err(unusable(
            dir,
            format!("module path {rel:?} is not a folder inside the model directory"),
        ))
    }
}

fn unusable(dir: &Path, reason: String) -> ModelError {
    ModelError::SentenceModule {
        path: dir.join(MODULES_FILE),
        reason,
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|source| ModelError::ConfigRead {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| ModelError::Config {
        path: path.to_path_buf(),
        source,
    })
}

fn read_optional<T: serde::de::DeserializeOwned + Default>(path: &Path) -> Result<T> {
    if path.is_file() {
        read_json(path)
    } else {
        Ok(T::default())
    }
}

/// The cross-encoder activation of a sequence-classification model, as sentence-transformers'
/// `CrossEncoder.get_default_activation_fn`: `config.json` `sentence_transformers.activation_fn`,
/// else the older `sbert_ce_default_activation_function`, else sigmoid for one label and
/// identity for more. Only `torch.*` paths are honoured (others fall back to the default).
pub fn cross_encoder_activation(raw_config: &Value, num_labels: usize) -> Activation {
    let path = raw_config
        .get("sentence_transformers")
        .and_then(|st| st.get("activation_fn"))
        .or_else(|| raw_config.get("sbert_ce_default_activation_function"))
        .and_then(Value::as_str)
        .filter(|p| p.starts_with("torch."));
    path.and_then(Activation::parse)
        .unwrap_or(if num_labels == 1 {
            Activation::Sigmoid
        } else {
            Activation::Identity
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pooling config with only the given modes on.
    fn modes(json: &serde_json::Value) -> PoolingConfig {
        let mut all = serde_json::json!({"pooling_mode_mean_tokens": false});
        for (k, v) in json.as_object().unwrap() {
            all[k] = v.clone();
        }
        serde_json::from_value(all).unwrap()
    }

    #[test]
    fn an_absent_mean_key_means_mean_pooling() {
        let cfg: PoolingConfig =
            serde_json::from_value(serde_json::json!({"pooling_mode_cls_token": true})).unwrap();
        assert!(cfg.pooling_mode_cls_token && cfg.pooling_mode_mean_tokens);
        assert!(cfg.include_prompt);
    }

    const TOKENS: [[f32; 2]; 3] = [[1.0, -2.0], [3.0, 0.0], [-1.0, 4.0]];

    fn tokens() -> Vec<Vec<f32>> {
        TOKENS.iter().map(|t| t.to_vec()).collect()
    }

    #[test]
    fn each_pooling_mode_and_their_concatenation() {
        let t = tokens();
        let cls = modes(&serde_json::json!({"pooling_mode_cls_token": true}));
        assert_eq!(cls.pool(&t, 0), vec![1.0, -2.0]);
        let max = modes(&serde_json::json!({"pooling_mode_max_tokens": true}));
        assert_eq!(max.pool(&t, 0), vec![3.0, 4.0]);
        let mean = modes(&serde_json::json!({"pooling_mode_mean_tokens": true}));
        assert_eq!(mean.pool(&t, 0), vec![1.0, 2.0 / 3.0]);
        let sqrt = modes(&serde_json::json!({"pooling_mode_mean_sqrt_len_tokens": true}));
        let r = 3f32.sqrt();
        assert_eq!(sqrt.pool(&t, 0), vec![3.0 / r, 2.0 / r]);
        let weighted = modes(&serde_json::json!({"pooling_mode_weightedmean_tokens": true}));
        assert_eq!(
            weighted.pool(&t, 0),
            vec![(1.0 + 6.0 - 3.0) / 6.0, 10.0 / 6.0]
        );
        let last = modes(&serde_json::json!({"pooling_mode_lasttoken": true}));
        assert_eq!(last.pool(&t, 0), vec![-1.0, 4.0]);
        let both = modes(
            &serde_json::json!({"pooling_mode_mean_tokens": true, "pooling_mode_cls_token": true}),
        );
        // cls comes first whatever the key order.
        assert_eq!(both.pool(&t, 0), vec![1.0, -2.0, 1.0, 2.0 / 3.0]);
        assert_eq!(both.modes(), 2);
    }

    #[test]
    fn an_excluded_prompt_is_masked_out_of_pooling() {
        let t = tokens();
        let mean =
            modes(&serde_json::json!({"pooling_mode_mean_tokens": true, "include_prompt": false}));
        assert_eq!(mean.pool(&t, 1), vec![1.0, 2.0]);
        let included = modes(&serde_json::json!({"pooling_mode_mean_tokens": true}));
        assert_eq!(included.pool(&t, 1), included.pool(&t, 0));
        // Weighted mean keeps the positions of the whole sequence.
        let weighted = modes(
            &serde_json::json!({"pooling_mode_weightedmean_tokens": true, "include_prompt": false}),
        );
        assert_eq!(weighted.pool(&t, 1), vec![(6.0 - 3.0) / 5.0, 12.0 / 5.0]);
    }

    #[test]
    fn normalize_matches_torch_and_leaves_zero_alone() {
        let mut v = vec![3.0, 4.0];
        normalize(&mut v);
        assert_eq!(v, vec![0.6, 0.8]);
        let mut z = vec![0.0, 0.0];
        normalize(&mut z);
        assert_eq!(z, vec![0.0, 0.0]);
    }

    #[test]
    fn activations_by_torch_path() {
        assert_eq!(
            Activation::parse("torch.nn.modules.activation.Tanh"),
            Some(Activation::Tanh)
        );
        assert_eq!(
            Activation::parse("torch.nn.modules.linear.Identity"),
            Some(Activation::Identity)
        );
        assert_eq!(Activation::parse("my.Custom"), None);
        let gelu = Activation::Gelu.apply(1.0);
        assert!((gelu - 0.841_344_7).abs() < 1e-6, "{gelu}");
        let cfg = serde_json::json!({"sentence_transformers": {"activation_fn": "torch.nn.modules.linear.Identity"}});
        assert_eq!(cross_encoder_activation(&cfg, 1), Activation::Identity);
        assert_eq!(
            cross_encoder_activation(&serde_json::json!({}), 1),
            Activation::Sigmoid
        );
        assert_eq!(
            cross_encoder_activation(&serde_json::json!({}), 3),
            Activation::Identity
        );
        let untrusted = serde_json::json!({"sbert_ce_default_activation_function": "evil.Thing"});
        assert_eq!(cross_encoder_activation(&untrusted, 1), Activation::Sigmoid);
    }

    #[test]
    fn module_paths_stay_inside_the_folder() {
        let dir = Path::new("/m");
        assert!(inside(dir, "1_Pooling").is_ok());
        assert!(inside(dir, "../x").is_err());
        assert!(inside(dir, "/etc").is_err());
    }
}
