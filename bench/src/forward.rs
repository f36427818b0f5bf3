//! `forward`: the floor under the HTTP figures. Times, in this process and without a server,
//! tokenizing a workload's texts and one forward pass over them, so that the server's overhead
//! is the HTTP p50 minus these. `--code candle` runs candle-transformers' `BertModel` (plus the
//! pooler and classifier matmuls): what candle itself can do on this machine. `--code sagebrush`
//! runs sagebrush's own model code (`sagebrush::models::Encoder`, loaded the way the server
//! loads it, sequence-classification head): the forward pass the server runs.

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use serde::Serialize;

use crate::workload::{Texts, Workload, WorkloadError};

/// The in-process measurement failed.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// `config.json` could not be read.
    #[error("cannot read `config.json` of `{dir}`")]
    Config {
        /// The model directory.
        dir: String,
        /// The cause.
        #[source]
        err: Box<dyn std::error::Error + Send + Sync>,
    },
    /// sagebrush's model code failed.
    #[error(transparent)]
    Model(#[from] sagebrush::models::ModelError),
    /// The texts could not be built.
    #[error(transparent)]
    Workload(#[from] WorkloadError),
    /// candle failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result of this module.
pub type Result<T, E = ForwardError> = std::result::Result<T, E>;

/// Whose model code runs the forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Code {
    /// candle-transformers' `BertModel`.
    Candle,
    /// sagebrush's `models::Encoder`.
    Sagebrush,
}

/// Median times in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct ForwardStats {
    /// Tokenizing the workload's inputs (`encode_batch`).
    pub tokenize_ms: f64,
    /// One forward pass over all inputs (encoder + pooler + classifier).
    pub forward_ms: f64,
    /// Timed iterations.
    pub iters: usize,
    /// Whose model code ran.
    pub code: Code,
    /// Loading the model (weights into memory, fused layouts), once.
    pub load_ms: f64,
    /// candle's element-wise pool spin limit in effect (`CANDLE_BARRIER_POOL_SPIN_LIMIT`).
    pub spin_limit: Option<String>,
    /// The weight type (`--dtype`; sagebrush's code only).
    pub dtype: String,
    /// CPU time (user + system, all threads) of one forward pass, the mean over the timed
    /// iterations (`/proc/self/stat`, 10 ms ticks; the machine may be shared, so wall time
    /// alone does not say how much CPU a pass took).
    pub forward_cpu_ms: Option<f64>,
    /// This process's PSS right after the load (`/proc/self/smaps_rollup`), MiB.
    pub pss_after_load_mib: Option<f64>,
    /// Peak RSS after the load (`VmHWM`), MiB.
    pub peak_rss_after_load_mib: Option<f64>,
}

/// User + system CPU time of this process so far, in milliseconds (Linux).
fn cpu_ms() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command's closing parenthesis; utime and stime are the 14th and 15th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks * 10.0)
}

/// A `kB` field of a `/proc/self` file, in MiB.
fn proc_mib(file: &str, field: &str) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/self/{file}")).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    let kib: f64 = line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// Loads `model.safetensors` without mmap (the workspace denies `unsafe`).
pub fn var_builder(dir: &Path) -> Result<VarBuilder<'static>> {
    let tensors = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu)?;
    Ok(VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu))
}

/// Times tokenizing and one forward pass of `workload` (`iters` times after one warm-up).
pub fn measure(
    dir: &Path,
    workload: Workload,
    code: Code,
    iters: usize,
    dtype: sagebrush::models::WeightDtype,
) -> Result<ForwardStats> {
    let cfg_err = |err: Box<dyn std::error::Error + Send + Sync>| ForwardError::Config {
        dir: dir.display().to_string(),
        err,
    };
    let text = std::fs::read_to_string(dir.join("config.json")).map_err(|e| cfg_err(e.into()))?;
    let cfg: Config = serde_json::from_str(&text).map_err(|e| cfg_err(e.into()))?;
    let labels: serde_json::Value = serde_json::from_str(&text).map_err(|e| cfg_err(e.into()))?;
    let n_labels = labels["id2label"].as_object().map_or(2, |m| m.len());
    let t = Instant::now();
    let forward: Box<dyn Fn(&[Vec<u32>]) -> Result<Tensor>> = match code {
        Code::Candle => {
            let vb = var_builder(dir)?;
            let bert = BertModel::load(vb.pp("bert"), &cfg)?;
            let pooler =
                candle_nn::linear(cfg.hidden_size, cfg.hidden_size, vb.pp("bert.pooler.dense"))?;
            let classifier = candle_nn::linear(cfg.hidden_size, n_labels, vb.pp("classifier"))?;
            Box::new(move |ids: &[Vec<u32>]| -> Result<Tensor> {
                let ids = Tensor::new(ids.to_vec(), &Device::Cpu)?;
                let types = ids.zeros_like()?;
                let mask = ids.ones_like()?;
                let hidden = bert.forward(&ids, &types, Some(&mask))?;
                let cls = hidden.narrow(1, 0, 1)?.squeeze(1)?;
                let pooled = candle_nn::Module::forward(&pooler, &cls)?.tanh()?;
                Ok(candle_nn::Module::forward(&classifier, &pooled)?)
            })
        }
        Code::Sagebrush => {
            let config = sagebrush::models::ModelConfig::from_dir(dir)?;
            let encoder = sagebrush::models::Encoder::load(
                dir,
                &config,
                sagebrush::models::Head::SequenceClassification,
                dtype,
            )?;
            Box::new(move |ids: &[Vec<u32>]| -> Result<Tensor> {
                let batch = sagebrush::models::EncoderBatch {
                    input_ids: ids.to_vec(),
                    type_ids: ids.iter().map(|r| vec![0; r.len()]).collect(),
                    attention_mask: ids.iter().map(|r| vec![1; r.len()]).collect(),
                    extra_type_ids: Vec::new(),
                };
                Ok(encoder.forward(&batch)?)
            })
        }
    };
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    let pss_after_load_mib = proc_mib("smaps_rollup", "Pss:");
    let peak_rss_after_load_mib = proc_mib("status", "VmHWM:");

    let texts = Texts::load(dir)?;
    let inputs = texts.make(workload.inputs, workload.tokens)?;
    let tokenize = || -> Result<Vec<Vec<u32>>> {
        let encs = texts
            .tokenizer()
            .encode_batch(inputs.clone(), true)
            .map_err(|e| WorkloadError::Encode {
                message: e.to_string(),
            })?;
        Ok(encs.iter().map(|e| e.get_ids().to_vec()).collect())
    };

    let ids = tokenize()?;
    forward(&ids)?;
    let (mut tok, mut fwd) = (Vec::new(), Vec::new());
    let mut cpu = Some(0.0);
    for _ in 0..iters.max(1) {
        let t = Instant::now();
        let ids = tokenize()?;
        tok.push(t.elapsed().as_secs_f64() * 1e3);
        let c0 = cpu_ms();
        let t = Instant::now();
        forward(&ids)?.to_vec2::<f32>()?;
        fwd.push(t.elapsed().as_secs_f64() * 1e3);
        cpu = match (cpu, c0, cpu_ms()) {
            (Some(sum), Some(a), Some(b)) => Some(sum + b - a),
            _ => None,
        };
    }
    Ok(ForwardStats {
        tokenize_ms: median(&mut tok),
        forward_ms: median(&mut fwd),
        iters: iters.max(1),
        code,
        load_ms,
        spin_limit: std::env::var("CANDLE_BARRIER_POOL_SPIN_LIMIT").ok(),
        dtype: match code {
            Code::Candle => "float32".to_owned(),
            Code::Sagebrush => dtype.to_string(),
        },
        forward_cpu_ms: cpu.map(|c| c / iters.max(1) as f64),
        pss_after_load_mib,
        peak_rss_after_load_mib,
    })
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}
