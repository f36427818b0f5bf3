//! Weight files of a model directory → a candle `VarBuilder`.
//!
//! Order of preference, as transformers `from_pretrained`: `model.safetensors`, the sharded
//! `model.safetensors.index.json`, `pytorch_model.bin`, the sharded `pytorch_model.bin.index.json`.
//! Safetensors are memory-mapped (this file holds the crate's only `unsafe`); PyTorch pickles are
//! read with `candle_core::pickle`. Old checkpoints that name LayerNorm parameters `gamma`/`beta`
//! are served under `weight`/`bias`, as transformers renames them on load.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;

use super::{ModelError, Result};

const SAFETENSORS: &str = "model.safetensors";
const SAFETENSORS_INDEX: &str = "model.safetensors.index.json";
const PTH: &str = "pytorch_model.bin";
const PTH_INDEX: &str = "pytorch_model.bin.index.json";

/// The weight files found in a model directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightFiles {
    /// One or more safetensors files (shards in index order).
    Safetensors(Vec<PathBuf>),
    /// One or more PyTorch pickle files (shards in index order).
    Pth(Vec<PathBuf>),
}

/// `*.index.json`: tensor name → shard file.
#[derive(Deserialize)]
struct Index {
    weight_map: HashMap<String, String>,
}

impl WeightFiles {
    /// Finds the weights in `dir`, preferring safetensors.
    pub fn find(dir: &Path) -> Result<Self> {
        if dir.join(SAFETENSORS).is_file() {
            return Ok(Self::Safetensors(vec![dir.join(SAFETENSORS)]));
        }
        if dir.join(SAFETENSORS_INDEX).is_file() {
            return Ok(Self::Safetensors(shards(
                dir,
                &dir.join(SAFETENSORS_INDEX),
            )?));
        }
        if dir.join(PTH).is_file() {
            return Ok(Self::Pth(vec![dir.join(PTH)]));
        }
        if dir.join(PTH_INDEX).is_file() {
            return Ok(Self::Pth(shards(dir, &dir.join(PTH_INDEX))?));
        }
        Err(ModelError::MissingWeights {
            dir: dir.to_path_buf(),
        })
    }

    /// A `VarBuilder` over these files, producing `dtype` tensors on `device`.
    pub(crate) fn var_builder(&self, dtype: DType, device: &Device) -> Result<VarBuilder<'static>> {
        let (vb, names) = match self {
            Self::Safetensors(paths) => {
                let st = mmap_safetensors(paths)?;
                let names: HashSet<String> = st.tensors().into_iter().map(|(n, _)| n).collect();
                (
                    VarBuilder::from_backend(Box::new(st), dtype, device.clone()),
                    names,
                )
            }
            Self::Pth(paths) if paths.len() == 1 => {
                let pth = candle_core::pickle::PthTensors::new(&paths[0], None)?;
                let names: HashSet<String> = pth.tensor_infos().keys().cloned().collect();
                (
                    VarBuilder::from_backend(Box::new(pth), dtype, device.clone()),
                    names,
                )
            }
            Self::Pth(paths) => {
                let mut all: HashMap<String, Tensor> = HashMap::new();
                for path in paths {
                    all.extend(candle_core::pickle::read_all(path)?);
                }
                let names: HashSet<String> = all.keys().cloned().collect();
                (VarBuilder::from_tensors(all, dtype, device), names)
            }
        };
        Ok(with_legacy_names(vb, names))
    }
}

/// Memory-maps safetensors files.
#[allow(unsafe_code)]
fn mmap_safetensors(paths: &[PathBuf]) -> Result<candle_core::safetensors::MmapedSafetensors> {
    // SAFETY: the mapping is read-only and lives as long as the returned value. It is sound as
    // long as no one truncates or rewrites the files while the model is loaded; sagebrush never
    // writes into a model directory after it is unpacked, and SageMaker mounts it read-only.
    let st = unsafe { candle_core::safetensors::MmapedSafetensors::multi(paths)? };
    Ok(st)
}

/// The distinct shard files of an index, in sorted order, checked to stay inside `dir`.
fn shards(dir: &Path, index_path: &Path) -> Result<Vec<PathBuf>> {
    let bad = |source: Box<dyn std::error::Error + Send + Sync>| ModelError::WeightIndex {
        path: index_path.to_path_buf(),
        source,
    };
    let text = std::fs::read_to_string(index_path).map_err(|e| bad(Box::new(e)))?;
    let index: Index = serde_json::from_str(&text).map_err(|e| bad(Box::new(e)))?;
    let files: BTreeSet<String> = index.weight_map.into_values().collect();
    if files.is_empty() {
        return Err(bad("`weight_map` is empty".into()));
    }
    files
        .into_iter()
        .map(|file| {
            let plain = Path::new(&file)
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
            if plain {
                Ok(dir.join(&file))
            } else {
                Err(bad(format!(
                    "shard `{file}` is not a file name inside the model directory"
                )
                .into()))
            }
        })
        .collect()
}

/// Serves `*.LayerNorm.weight`/`bias` from `gamma`/`beta` when only those are stored
/// (transformers `_fix_state_dict_key_on_load`).
fn with_legacy_names(vb: VarBuilder<'static>, names: HashSet<String>) -> VarBuilder<'static> {
    let legacy = names
        .iter()
        .any(|n| n.ends_with(".gamma") || n.ends_with(".beta"));
    if !legacy {
        return vb;
    }
    let names = Arc::new(names);
    vb.rename_f(move |name: &str| {
        if names.contains(name) {
            return name.to_owned();
        }
        let alt = if let Some(stem) = name.strip_suffix(".weight") {
            format!("{stem}.gamma")
        } else if let Some(stem) = name.strip_suffix(".bias") {
            format!("{stem}.beta")
        } else {
            return name.to_owned();
        };
        if names.contains(&alt) {
            alt
        } else {
            name.to_owned()
        }
    })
}
