//! The one integration-test binary: every test starts the real `sagebrush` binary on a free
//! port and speaks HTTP to it (see `support`).

mod archive;
mod batch;
mod codec;
mod conformance;
mod hooks;
mod invocations;
mod ping;
mod process;
mod sources;
mod support;
mod tasks;
