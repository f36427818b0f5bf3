//! Task-independent generation machinery (issue 11): the generation parameters as transformers
//! 4.51 resolves them (`params`), the logits processors and warpers in transformers' order with
//! seeded sampling (`logits`), the stopping rules (`stop`) and beam search (`beam`).
//!
//! Everything here works on one logits row and the token ids of one sequence so far, so greedy
//! decoding, sampling and beam search, decoder-only and encoder-decoder models all use the same
//! code. No model, tensor, HTTP or task in here: the inference core (`infer::generate`) drives a
//! model with it and the pipelines parse requests with it.

pub mod beam;
pub mod logits;
pub mod params;
pub mod stop;

pub use beam::BeamSearch;
pub use logits::{LogitsProcessor, Rng};
pub use params::{EarlyStopping, GenerationConfig, GenerationParams, ParamsError};
pub use stop::{StopHold, StopRule, StopStrings, TextStop};
