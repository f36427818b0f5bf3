//! `sagebrush-bench`: measures sagebrush against the Python SageMaker Hugging Face Inference
//! Toolkit on the same model and inputs. The binary (`main.rs`) is the command line; these
//! modules do the work. `scripts/bench` drives them; `docs/benchmarks.md` has the results.

/// In-process timing of tokenization and candle-transformers' BERT forward.
pub mod forward;
/// The HTTP load generator and the cold-start probe.
pub mod loadgen;
/// Writes a BERT-base-sized classifier with random weights.
pub mod model;
/// Memory (PSS, RSS) of a process tree.
pub mod procmem;
/// Results file (`.jsonl`) and the markdown table.
pub mod report;
/// Streamed generation: time to first token and inter-token gaps.
pub mod stream;
/// Workload names and the request bodies they send.
pub mod workload;
