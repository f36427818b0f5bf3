//! Which files of a Hub repository a model needs (contract §3): `config.json`, the tokenizer files,
//! `generation_config.json`, one set of weights (safetensors preferred, sharded or not, else
//! PyTorch pickles) and everything under `code/`. Nothing else is downloaded.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;

use super::{HubError, Result, cache::safe_relative};

/// Tokenizer files at the repository root that any of our tokenizers may read (the slow
/// SentencePiece names of Llama, XLM-R and DeBERTa included, and the chat template files that
/// newer transformers write beside `tokenizer_config.json`).
pub(crate) const TOKENIZER_FILES: [&str; 15] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "tokenizer.model",
    "sentencepiece.bpe.model",
    "spm.model",
    "source.spm",
    "target.spm",
    "chat_template.jinja",
    "chat_template.json",
];

const SAFETENSORS: &str = "model.safetensors";
const SAFETENSORS_INDEX: &str = "model.safetensors.index.json";
const PICKLE: &str = "pytorch_model.bin";
const PICKLE_INDEX: &str = "pytorch_model.bin.index.json";

/// The files to fetch, in two steps: a sharded checkpoint's index must be read before its shards
/// are known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Selection {
    /// Files known from the listing alone.
    pub(crate) files: Vec<String>,
    /// The weight index (`*.index.json`) whose shards are still to be fetched.
    pub(crate) index: Option<String>,
}

/// Picks the files from the repository listing.
pub(crate) fn select(model_id: &str, revision: &str, siblings: &[String]) -> Result<Selection> {
    let present: HashSet<&str> = siblings.iter().map(String::as_str).collect();
    let mut files: BTreeSet<String> = BTreeSet::new();
    for wanted in ["config.json", "generation_config.json"]
        .into_iter()
        .chain(TOKENIZER_FILES)
    {
        if present.contains(wanted) {
            files.insert(wanted.to_owned());
        }
    }
    files.extend(siblings.iter().filter(|f| f.starts_with("code/")).cloned());
    let index = if present.contains(SAFETENSORS) {
        files.insert(SAFETENSORS.to_owned());
        None
    } else if present.contains(SAFETENSORS_INDEX) {
        Some(SAFETENSORS_INDEX.to_owned())
    } else if present.contains(PICKLE) {
        files.insert(PICKLE.to_owned());
        None
    } else if present.contains(PICKLE_INDEX) {
        Some(PICKLE_INDEX.to_owned())
    } else {
        return Err(HubError::NoWeights {
            model_id: model_id.to_owned(),
            revision: revision.to_owned(),
            files: siblings.to_vec(),
        });
    };
    if let Some(bad) = files.iter().find(|f| !safe_relative(f)) {
        return Err(HubError::UnsafeFileName { file: bad.clone() });
    }
    Ok(Selection {
        files: files.into_iter().collect(),
        index,
    })
}

/// The shard files a weight index (`{"weight_map": {tensor: file}}`) names, each once, sorted.
pub(crate) fn shards(index_path: &Path) -> Result<Vec<String>> {
    let bytes = std::fs::read(index_path).map_err(|source| HubError::Io {
        path: index_path.to_owned(),
        source,
    })?;
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: std::collections::BTreeMap<String, String>,
    }
    let index: Index = serde_json::from_slice(&bytes).map_err(|e| HubError::BadIndex {
        path: index_path.to_owned(),
        reason: e.to_string(),
    })?;
    let shards: BTreeSet<String> = index.weight_map.into_values().collect();
    if let Some(bad) = shards.iter().find(|f| !safe_relative(f)) {
        return Err(HubError::UnsafeFileName { file: bad.clone() });
    }
    Ok(shards.into_iter().collect())
}

/// Whether `dir` holds one complete set of weights (the index and all its shards, if sharded).
pub(crate) fn local_weights_complete(dir: &Path) -> bool {
    if dir.join(SAFETENSORS).is_file() || dir.join(PICKLE).is_file() {
        return true;
    }
    [SAFETENSORS_INDEX, PICKLE_INDEX].iter().any(|index| {
        let path = dir.join(index);
        path.is_file()
            && shards(&path).is_ok_and(|s| !s.is_empty() && s.iter().all(|f| dir.join(f).is_file()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn safetensors_are_preferred_and_other_files_skipped() {
        let sel = select(
            "o/m",
            "main",
            &names(&[
                "config.json",
                "model.safetensors",
                "pytorch_model.bin",
                "tf_model.h5",
                "README.md",
                "vocab.txt",
                "tokenizer_config.json",
                "code/inference.wasm",
                "onnx/model.onnx",
            ]),
        )
        .expect("selects");
        assert_eq!(
            sel.files,
            names(&[
                "code/inference.wasm",
                "config.json",
                "model.safetensors",
                "tokenizer_config.json",
                "vocab.txt"
            ])
        );
        assert_eq!(sel.index, None);
    }

    #[test]
    fn every_file_of_every_conformance_model_is_selected() {
        let models =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/conformance/models");
        for entry in std::fs::read_dir(models).expect("fixtures") {
            let dir = entry.expect("entry").path();
            let mut files: Vec<String> = std::fs::read_dir(&dir)
                .expect("model dir")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .filter(|f| f != "model.tar.gz")
                .collect();
            if files.is_empty() {
                continue;
            }
            files.sort();
            let sel = select("o/m", "main", &files).expect("selects");
            assert_eq!(sel.files, files, "{}", dir.display());
        }
    }

    #[test]
    fn pickles_and_indexes_are_the_fallbacks() {
        let sel =
            select("o/m", "main", &names(&["config.json", "pytorch_model.bin"])).expect("selects");
        assert!(sel.files.contains(&"pytorch_model.bin".to_owned()));
        let sel = select(
            "o/m",
            "main",
            &names(&[
                "config.json",
                "model.safetensors.index.json",
                "pytorch_model.bin",
            ]),
        )
        .expect("selects");
        assert_eq!(sel.index.as_deref(), Some("model.safetensors.index.json"));
        assert!(!sel.files.contains(&"pytorch_model.bin".to_owned()));
    }

    #[test]
    fn no_weights_is_an_error_listing_the_files() {
        let err = select("o/m", "v1", &names(&["config.json", "tf_model.h5"])).unwrap_err();
        assert!(
            matches!(err, HubError::NoWeights { ref files, .. } if files.len() == 2),
            "{err:?}"
        );
    }

    #[test]
    fn shards_are_read_from_the_index_and_must_stay_inside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let index = dir.path().join("model.safetensors.index.json");
        std::fs::write(
            &index,
            r#"{"metadata":{},"weight_map":{"a":"model-00002-of-00002.safetensors","b":"model-00001-of-00002.safetensors","c":"model-00001-of-00002.safetensors"}}"#,
        )
        .expect("write");
        assert_eq!(
            shards(&index).expect("parses"),
            names(&[
                "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors"
            ])
        );
        assert!(!local_weights_complete(dir.path()));
        std::fs::write(dir.path().join("model-00001-of-00002.safetensors"), b"x").expect("write");
        std::fs::write(dir.path().join("model-00002-of-00002.safetensors"), b"x").expect("write");
        assert!(local_weights_complete(dir.path()));
        std::fs::write(&index, r#"{"weight_map":{"a":"../../evil"}}"#).expect("write");
        assert!(matches!(
            shards(&index),
            Err(HubError::UnsafeFileName { .. })
        ));
    }
}
