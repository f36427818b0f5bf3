//! `make-model`: writes a `BertForSequenceClassification` directory with random weights, the way
//! transformers' `BertPreTrainedModel._init_weights` initialises one (linear and embedding
//! weights normal with std `initializer_range`, biases 0, LayerNorm weight 1 and bias 0, the
//! padding row of the word embeddings 0), so both servers load the same BERT-base-sized model.
//!
//! Weights come from a seeded generator of our own (SplitMix64 + Box–Muller): the same seed gives
//! the same `model.safetensors` on every machine, whatever candle's RNG does. Tensor names are
//! the transformers state-dict names (`bert.` prefix, `bert.pooler.*`, `classifier.*`), without
//! `bert.embeddings.position_ids` (a buffer transformers rebuilds itself).
//! The tokenizer files are copied from a fixture model; `model_max_length` is set to
//! `--max-pos`.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde_json::{Value, json};

/// A model directory that could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read or written.
    #[error("cannot access `{path}`")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        err: std::io::Error,
    },
    /// A JSON file of the tokenizer source is not valid JSON.
    #[error("`{path}` is not valid JSON")]
    Json {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        err: serde_json::Error,
    },
    /// `tokenizer_config.json` of the source is not a JSON object.
    #[error("`{path}` is not a JSON object")]
    NotAnObject {
        /// The file.
        path: PathBuf,
    },
    /// The sizes do not make a valid BERT.
    #[error("`hidden` ({hidden}) must be a multiple of `heads` ({heads})")]
    HeadsDontDivide {
        /// Hidden size.
        hidden: usize,
        /// Attention heads.
        heads: usize,
    },
    /// A tensor could not be built or saved.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result of this module.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;

/// Sizes and seed of the model to write (defaults: BERT-base, 110 M parameters).
#[derive(Debug, Clone, clap::Args)]
pub struct ModelSpec {
    /// Encoder layers.
    #[arg(long, default_value_t = 12)]
    pub layers: usize,
    /// Hidden size.
    #[arg(long, default_value_t = 768)]
    pub hidden: usize,
    /// Attention heads.
    #[arg(long, default_value_t = 12)]
    pub heads: usize,
    /// Feed-forward size.
    #[arg(long, default_value_t = 3072)]
    pub intermediate: usize,
    /// Rows of the word-embedding table (the tokenizer may use fewer).
    #[arg(long, default_value_t = 30522)]
    pub vocab: usize,
    /// Position embeddings, and the tokenizer's `model_max_length`.
    #[arg(long, default_value_t = 512)]
    pub max_pos: usize,
    /// Classification labels (`LABEL_0`, `LABEL_1`, ...).
    #[arg(long, default_value_t = 2)]
    pub labels: usize,
    /// Seed of the weight generator.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Standard deviation of the normal weights (transformers' `initializer_range`).
    #[arg(long, default_value_t = 0.02)]
    pub std: f32,
}

/// Tokenizer files copied from the source model directory.
const TOKENIZER_FILES: [&str; 3] = ["tokenizer.json", "vocab.txt", "special_tokens_map.json"];
/// Written with `model_max_length` replaced.
const TOKENIZER_CONFIG: &str = "tokenizer_config.json";

/// Writes `config.json`, `model.safetensors` and the tokenizer files into `out`.
pub fn make_model(spec: &ModelSpec, out: &Path, tokenizer_from: &Path) -> Result<()> {
    if spec.heads == 0 || !spec.hidden.is_multiple_of(spec.heads) {
        return Err(ModelError::HeadsDontDivide {
            hidden: spec.hidden,
            heads: spec.heads,
        });
    }
    fs::create_dir_all(out).map_err(|err| io(out, err))?;
    write_json(&out.join("config.json"), &config_json(spec))?;
    copy_tokenizer(tokenizer_from, out, spec.max_pos)?;
    let tensors = weights(spec)?;
    candle_core::safetensors::save(&tensors, out.join("model.safetensors"))?;
    Ok(())
}

/// `config.json` as transformers 4.51.3 writes it for `BertForSequenceClassification`.
fn config_json(spec: &ModelSpec) -> Value {
    let id2label: serde_json::Map<String, Value> = (0..spec.labels)
        .map(|i| (i.to_string(), json!(format!("LABEL_{i}"))))
        .collect();
    let label2id: serde_json::Map<String, Value> = (0..spec.labels)
        .map(|i| (format!("LABEL_{i}"), json!(i)))
        .collect();
    json!({
        "architectures": ["BertForSequenceClassification"],
        "attention_probs_dropout_prob": 0.1,
        "classifier_dropout": null,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": spec.hidden,
        "id2label": id2label,
        "initializer_range": spec.std,
        "intermediate_size": spec.intermediate,
        "label2id": label2id,
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": spec.max_pos,
        "model_type": "bert",
        "num_attention_heads": spec.heads,
        "num_hidden_layers": spec.layers,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        "torch_dtype": "float32",
        "transformers_version": "4.51.3",
        "type_vocab_size": 2,
        "use_cache": true,
        "vocab_size": spec.vocab,
    })
}

fn copy_tokenizer(from: &Path, out: &Path, max_len: usize) -> Result<()> {
    for name in TOKENIZER_FILES {
        let (src, dst) = (from.join(name), out.join(name));
        fs::copy(&src, &dst).map_err(|err| io(&src, err))?;
    }
    let src = from.join(TOKENIZER_CONFIG);
    let text = fs::read_to_string(&src).map_err(|err| io(&src, err))?;
    let mut cfg: Value = serde_json::from_str(&text).map_err(|err| ModelError::Json {
        path: src.clone(),
        err,
    })?;
    let obj = cfg
        .as_object_mut()
        .ok_or_else(|| ModelError::NotAnObject { path: src.clone() })?;
    obj.insert("model_max_length".to_owned(), json!(max_len));
    write_json(&out.join(TOKENIZER_CONFIG), &cfg)
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value).map_err(|err| ModelError::Json {
        path: path.to_owned(),
        err,
    })?;
    text.push('\n');
    fs::write(path, text).map_err(|err| io(path, err))
}

fn io(path: &Path, err: std::io::Error) -> ModelError {
    ModelError::Io {
        path: path.to_owned(),
        err,
    }
}

/// How a tensor is initialised (transformers `BertPreTrainedModel._init_weights`).
#[derive(Clone, Copy)]
enum Init {
    Normal,
    Zeros,
    Ones,
}

/// The state dict being built: tensors are drawn in call order, so the seed fixes the values.
struct StateDict {
    rng: Normal,
    std: f32,
    hidden: usize,
    tensors: HashMap<String, Tensor>,
}

impl StateDict {
    fn add(&mut self, name: String, shape: &[usize], init: Init) -> Result<()> {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = match init {
            Init::Normal => (0..n).map(|_| self.rng.sample() * self.std).collect(),
            Init::Zeros => vec![0.0; n],
            Init::Ones => vec![1.0; n],
        };
        let tensor = Tensor::from_vec(data, shape, &Device::Cpu)?;
        self.tensors.insert(name, tensor);
        Ok(())
    }

    /// `nn.Linear(cols, rows)`: weight `[rows, cols]`, bias `[rows]`.
    fn linear(&mut self, prefix: &str, rows: usize, cols: usize) -> Result<()> {
        self.add(format!("{prefix}.weight"), &[rows, cols], Init::Normal)?;
        self.add(format!("{prefix}.bias"), &[rows], Init::Zeros)
    }

    fn layer_norm(&mut self, prefix: &str) -> Result<()> {
        let h = self.hidden;
        self.add(format!("{prefix}.weight"), &[h], Init::Ones)?;
        self.add(format!("{prefix}.bias"), &[h], Init::Zeros)
    }
}

/// Builds every tensor of the state dict.
fn weights(spec: &ModelSpec) -> Result<HashMap<String, Tensor>> {
    let (h, i) = (spec.hidden, spec.intermediate);
    let mut sd = StateDict {
        rng: Normal::new(spec.seed),
        std: spec.std,
        hidden: h,
        tensors: HashMap::new(),
    };
    let e = "bert.embeddings";
    sd.add(
        format!("{e}.word_embeddings.weight"),
        &[spec.vocab, h],
        Init::Normal,
    )?;
    sd.add(
        format!("{e}.position_embeddings.weight"),
        &[spec.max_pos, h],
        Init::Normal,
    )?;
    sd.add(
        format!("{e}.token_type_embeddings.weight"),
        &[2, h],
        Init::Normal,
    )?;
    sd.layer_norm(&format!("{e}.LayerNorm"))?;
    for l in 0..spec.layers {
        let p = format!("bert.encoder.layer.{l}");
        for proj in ["query", "key", "value"] {
            sd.linear(&format!("{p}.attention.self.{proj}"), h, h)?;
        }
        sd.linear(&format!("{p}.attention.output.dense"), h, h)?;
        sd.layer_norm(&format!("{p}.attention.output.LayerNorm"))?;
        sd.linear(&format!("{p}.intermediate.dense"), i, h)?;
        sd.linear(&format!("{p}.output.dense"), h, i)?;
        sd.layer_norm(&format!("{p}.output.LayerNorm"))?;
    }
    sd.linear("bert.pooler.dense", h, h)?;
    sd.linear("classifier", spec.labels, h)?;
    let mut out = sd.tensors;
    zero_padding_row(&mut out, h)?;
    Ok(out)
}

/// transformers zeroes the `padding_idx` (0) row of the word embeddings.
fn zero_padding_row(tensors: &mut HashMap<String, Tensor>, hidden: usize) -> Result<()> {
    let name = "bert.embeddings.word_embeddings.weight";
    if let Some(t) = tensors.get(name) {
        let rows = t.dim(0)?;
        let zero = Tensor::zeros((1, hidden), t.dtype(), t.device())?;
        let rest = t.narrow(0, 1, rows - 1)?;
        let fixed = Tensor::cat(&[&zero, &rest], 0)?;
        tensors.insert(name.to_owned(), fixed);
    }
    Ok(())
}

/// Standard normal samples from SplitMix64 and the Box–Muller transform: small, seeded, and
/// identical on every platform.
struct Normal {
    state: u64,
    spare: Option<f32>,
}

impl Normal {
    fn new(seed: u64) -> Self {
        Self {
            state: seed,
            spare: None,
        }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1]: never 0, so the logarithm is finite.
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    fn sample(&mut self) -> f32 {
        if let Some(s) = self.spare.take() {
            return s;
        }
        let (u1, u2) = (self.uniform(), self.uniform());
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = std::f64::consts::TAU * u2;
        self.spare = Some((r * theta.sin()) as f32);
        (r * theta.cos()) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> ModelSpec {
        ModelSpec {
            layers: 2,
            hidden: 8,
            heads: 2,
            intermediate: 16,
            vocab: 2000,
            max_pos: 64,
            labels: 3,
            seed: 7,
            std: 0.02,
        }
    }

    #[test]
    fn normal_samples_have_unit_variance_and_repeat_with_the_seed() {
        let mut a = Normal::new(1);
        let xs: Vec<f64> = (0..100_000).map(|_| f64::from(a.sample())).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(mean.abs() < 0.02, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "variance {var}");
        let mut b = Normal::new(1);
        assert_eq!(b.sample(), xs[0] as f32);
    }

    #[test]
    fn state_dict_has_transformers_names_and_shapes() {
        let t = weights(&tiny()).unwrap();
        // 5 embedding tensors, 16 per layer, pooler 2, classifier 2.
        assert_eq!(t.len(), 5 + 2 * 16 + 2 + 2);
        let dims = |n: &str| t[n].dims().to_vec();
        assert_eq!(dims("bert.embeddings.word_embeddings.weight"), [2000, 8]);
        assert_eq!(
            dims("bert.encoder.layer.1.intermediate.dense.weight"),
            [16, 8]
        );
        assert_eq!(dims("bert.encoder.layer.1.output.dense.weight"), [8, 16]);
        assert_eq!(dims("classifier.weight"), [3, 8]);
        assert_eq!(dims("bert.pooler.dense.bias"), [8]);
        let pad: Vec<f32> = t["bert.embeddings.word_embeddings.weight"]
            .get(0)
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(pad.iter().all(|&x| x == 0.0));
        let ln: Vec<f32> = t["bert.embeddings.LayerNorm.weight"].to_vec1().unwrap();
        assert!(ln.iter().all(|&x| x == 1.0));
    }

    #[test]
    fn written_model_loads_in_candle_bert() {
        let dir =
            std::env::temp_dir().join(format!("sagebrush-bench-model-{}", std::process::id()));
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/conformance/models/bert-seqcls");
        make_model(&tiny(), &dir, &fixture).unwrap();
        let cfg: candle_transformers::models::bert::Config =
            serde_json::from_str(&fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
        let vb = crate::forward::var_builder(&dir).unwrap();
        candle_transformers::models::bert::BertModel::load(vb, &cfg).unwrap();
        let tc: Value =
            serde_json::from_str(&fs::read_to_string(dir.join(TOKENIZER_CONFIG)).unwrap()).unwrap();
        assert_eq!(tc["model_max_length"], 64);
        fs::remove_dir_all(dir).unwrap();
    }
}
