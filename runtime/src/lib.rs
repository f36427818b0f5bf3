//! sagebrush: a SageMaker Hugging Face inference runtime. Native candle pipelines, user code as
//! WebAssembly components, the SageMaker HTTP contract.

/// model.tar.gz archives: fetch (path, https, s3) and unpack.
pub mod artifact;
/// Command line, environment and the checked configuration.
pub mod config;
/// Media types: decode request bodies, encode answers, negotiate.
pub mod codec;
/// The hook chain and the types its stages share.
pub mod handler;
/// `HF_MODEL_ID`: Hub download, revision, cache, offline mode, token.
pub mod hub;
/// Architectures, heads and weights.
pub mod models;
/// Tasks and their pre- and post-processing.
pub mod pipelines;
