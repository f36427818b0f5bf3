//! The one integration-test binary: every test starts the real `sagebrush` binary on a free
//! port and speaks HTTP to it (see `support`).

mod archive;
mod codec;
mod conformance;
mod generation;
mod guest_sdk;
mod hooks;
mod inference;
mod invocations;
mod ping;
mod process;
mod repository;
mod sentence;
mod seq2seq;
mod sources;
mod support;
mod tasks;
