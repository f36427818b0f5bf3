//! The one integration-test binary: every test starts the real `sagebrush` binary on a free
//! port and speaks HTTP to it (see `support`).

mod archive;
mod batch;
mod chat;
mod codec;
mod conformance;
mod container;
mod dtype;
mod faults;
mod generation;
mod guest_resources;
mod guest_sdk;
mod hooks;
mod inference;
mod invocations;
mod malformed;
mod metrics;
mod openai;
mod ping;
mod process;
mod python;
mod python_clients;
mod reliability;
mod repository;
mod sentence;
mod seq2seq;
mod sources;
mod streaming;
mod support;
mod table_qa;
mod tasks;
