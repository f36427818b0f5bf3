//! Weight files of a model directory → a candle `VarBuilder`.
//!
//! Order of preference, as transformers `from_pretrained`: `model.safetensors`, the sharded
//! `model.safetensors.index.json`, `pytorch_model.bin`, the sharded `pytorch_model.bin.index.json`.
//! Safetensors are read tensor by tensor, straight into the buffer each tensor keeps
//! ([`SafetensorsFiles`]): no memory map and no whole-file copy, so the load peak is the weights
//! themselves (a map's pages counted in the process's memory next to the copies made from them
//! was twice the weights, docs/benchmarks.md). PyTorch pickles are read with
//! `candle_core::pickle`. Old checkpoints that name LayerNorm parameters `gamma`/`beta`
//! are served under `weight`/`bias`, as transformers renames them on load.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
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
                let st = SafetensorsFiles::open(paths)?;
                let names: HashSet<String> = st.entries.keys().cloned().collect();
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

/// Where one tensor lies in a safetensors file.
#[derive(Debug, Clone)]
struct Entry {
    /// Index into [`SafetensorsFiles::paths`].
    file: usize,
    dtype: DType,
    shape: Vec<usize>,
    /// Absolute byte offset of the data in the file.
    offset: u64,
    /// Bytes of data.
    len: usize,
}

/// `safetensors` files read on demand: the headers are parsed once; each tensor is read from its
/// file when a layer asks for it, into the vector that becomes its storage.
pub(crate) struct SafetensorsFiles {
    paths: Vec<PathBuf>,
    entries: HashMap<String, Entry>,
}

/// A safetensors header entry (`{"dtype", "shape", "data_offsets"}`).
#[derive(Deserialize)]
struct HeaderEntry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [u64; 2],
}

/// Largest header accepted (the format's own limit is 100 MB).
const MAX_HEADER: u64 = 100_000_000;

fn st_dtype(name: &str) -> Option<DType> {
    Some(match name {
        "F32" => DType::F32,
        "F16" => DType::F16,
        "BF16" => DType::BF16,
        "F64" => DType::F64,
        "I64" => DType::I64,
        "I32" => DType::I32,
        "I16" => DType::I16,
        "U32" => DType::U32,
        "U8" | "BOOL" => DType::U8,
        _ => return None,
    })
}

impl SafetensorsFiles {
    /// Reads the headers of `paths` (shards: a name found in two files is an error).
    pub(crate) fn open(paths: &[PathBuf]) -> Result<Self> {
        let mut entries = HashMap::new();
        for (file, path) in paths.iter().enumerate() {
            let bad = |msg: String| candle_core::Error::Msg(format!("`{}`: {msg}", path.display()));
            let mut f = File::open(path).map_err(|e| bad(format!("cannot open: {e}")))?;
            let file_len = f
                .metadata()
                .map_err(|e| bad(format!("cannot stat: {e}")))?
                .len();
            let mut n = [0u8; 8];
            f.read_exact(&mut n)
                .map_err(|e| bad(format!("cannot read the header size: {e}")))?;
            let n = u64::from_le_bytes(n);
            if n > MAX_HEADER || 8 + n > file_len {
                return Err(bad(format!("header size {n} is invalid")).into());
            }
            let mut header = vec![0u8; n as usize];
            f.read_exact(&mut header)
                .map_err(|e| bad(format!("cannot read the header: {e}")))?;
            let header: HashMap<String, serde_json::Value> = serde_json::from_slice(&header)
                .map_err(|e| bad(format!("the header is not valid JSON: {e}")))?;
            let data_start = 8 + n;
            for (name, value) in header {
                if name == "__metadata__" {
                    continue;
                }
                let h: HeaderEntry = serde_json::from_value(value)
                    .map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
                let dtype = st_dtype(&h.dtype).ok_or_else(|| {
                    bad(format!("tensor `{name}`: unsupported dtype {}", h.dtype))
                })?;
                let [begin, end] = h.data_offsets;
                let want = h
                    .shape
                    .iter()
                    .try_fold(dtype.size_in_bytes(), |acc, &d| acc.checked_mul(d));
                let fits =
                    end >= begin && data_start.checked_add(end).is_some_and(|e| e <= file_len);
                if !fits || want != usize::try_from(end - begin).ok() {
                    return Err(bad(format!(
                        "tensor `{name}`: data offsets [{begin}, {end}] do not hold a {} {:?} tensor inside the file",
                        h.dtype, h.shape
                    ))
                    .into());
                }
                let entry = Entry {
                    file,
                    dtype,
                    shape: h.shape,
                    offset: data_start + begin,
                    len: (end - begin) as usize,
                };
                if entries.insert(name.clone(), entry).is_some() {
                    return Err(bad(format!("tensor `{name}` is in more than one file")).into());
                }
            }
        }
        Ok(Self {
            paths: paths.to_vec(),
            entries,
        })
    }

    /// Reads tensor `name` as stored (dtype and shape of the file), on the CPU.
    fn read(&self, name: &str) -> candle_core::Result<Tensor> {
        let entry = self.entries.get(name).ok_or_else(|| {
            candle_core::Error::CannotFindTensor {
                path: name.to_owned(),
            }
            .bt()
        })?;
        let path = &self.paths[entry.file];
        let io = |e: std::io::Error| {
            candle_core::Error::Msg(format!(
                "`{}`: cannot read tensor `{name}`: {e}",
                path.display()
            ))
        };
        let mut f = File::open(path).map_err(io)?;
        f.seek(SeekFrom::Start(entry.offset)).map_err(io)?;
        if entry.dtype == DType::F32 {
            // Straight into the tensor's own buffer.
            let mut v = vec![0f32; entry.len / 4];
            f.read_exact(bytemuck::cast_slice_mut(&mut v)).map_err(io)?;
            if cfg!(target_endian = "big") {
                for x in &mut v {
                    *x = f32::from_bits(u32::from_le(x.to_bits()));
                }
            }
            return Tensor::from_vec(v, entry.shape.as_slice(), &Device::Cpu);
        }
        let mut bytes = vec![0u8; entry.len];
        f.read_exact(&mut bytes).map_err(io)?;
        Tensor::from_raw_buffer(&bytes, entry.dtype, &entry.shape, &Device::Cpu)
    }
}

impl candle_nn::var_builder::SimpleBackend for SafetensorsFiles {
    fn get(
        &self,
        s: candle_core::Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let tensor = self.get_unchecked(name, dtype, dev)?;
        if tensor.shape() != &s {
            return Err(candle_core::Error::UnexpectedShape {
                msg: format!("shape mismatch for {name}"),
                expected: s,
                got: tensor.shape().clone(),
            }
            .bt());
        }
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.read(name)?.to_dtype(dtype)?.to_device(dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }
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
