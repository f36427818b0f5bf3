//! sagebrush: a SageMaker Hugging Face inference runtime. Native candle pipelines, user code as
//! WebAssembly components, the SageMaker HTTP contract.

/// Command line, environment and the checked configuration.
pub mod config;
/// Media types: decode request bodies, encode answers, negotiate.
pub mod codec;
/// The hook chain and the types its stages share.
pub mod handler;
/// Architectures, heads and weights.
pub mod models;
/// Tasks and their pre- and post-processing.
pub mod pipelines;
/// `sagebrush package`: a SageMaker `model.tar.gz` from a model directory and a guest.
pub mod package;
/// User code as WebAssembly components: compile, sandbox, pool, call the hooks.
pub mod wasm;
