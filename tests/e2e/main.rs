//! The one integration-test binary: every test starts the real `sagebrush` binary on a free
//! port and speaks HTTP to it (see `support`).

mod archive;
mod codec;
mod conformance;
mod container;
mod hooks;
mod inference;
mod invocations;
mod ping;
mod process;
mod sources;
mod support;
mod tasks;
