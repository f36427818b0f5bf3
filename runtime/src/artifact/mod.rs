//! `model.tar.gz` archives: fetch them from `s3://` or `https://` (placeholder module file; the
//! lead's `artifact/mod.rs` with `unpack` replaces it).

pub mod fetch;
