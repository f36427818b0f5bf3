//! The hook chain: input_fn → predict_fn → output_fn, or one transform_fn; each stage native
//! or guest (spec §6).

mod types;

pub use types::*;
