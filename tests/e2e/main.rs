//! The one integration-test binary: every test starts the real `sagebrush` binary on a free
//! port and speaks HTTP to it (see `support`).

mod archive;
mod batch;
mod codec;
mod conformance;
mod guest_sdk;
mod hooks;
mod inference;
mod invocations;
mod ping;
mod process;
mod repository;
mod sentence;
mod sources;
mod support;
mod table_qa;
mod tasks;
