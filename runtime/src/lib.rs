//! sagebrush: a SageMaker Hugging Face inference runtime. Native candle pipelines, user code as
//! WebAssembly components, the SageMaker HTTP contract.

/// Media types: decode request bodies, encode answers, negotiate.
pub mod codec;
/// Command line, environment and the checked configuration.
pub mod config;
/// The hook chain and the types its stages share.
pub mod handler;
/// Architectures, heads and weights.
pub mod models;
/// Tasks and their pre- and post-processing.
pub mod pipelines;
/// Tokenizer loading (fast or slow files), truncation and batch padding.
pub mod tokenizer;
