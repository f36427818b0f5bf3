//! The sandbox of one guest instance: its `WasiCtx` (the model directory read-only at
//! `/opt/ml/model`, no environment, no arguments, no network, stdout and stderr captured), its
//! memory cap, and the per-call state the host imports read (request id, current hook).
//!
//! Never call `inherit_env`, `inherit_network` or `inherit_stdio` here: tokens live in the
//! environment (contract §2, §6).

use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::GuestHost;
use crate::handler::Hook;

/// Where the model directory appears inside the guest (the SageMaker path).
pub(crate) const GUEST_MODEL_DIR: &str = "/opt/ml/model";

/// Bytes of stdout or stderr kept per call; older output of a chatty call is dropped, the tail
/// (where a panic message is) is kept.
const OUTPUT_TAIL_BYTES: usize = 64 * 1024;

/// Largest table a guest may grow (function references; a Rust guest needs a few hundred).
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// Everything a guest `Store` owns.
pub(crate) struct HostState {
    wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) memory: MemoryCap,
    pub(crate) stdout: CapturedOutput,
    pub(crate) stderr: CapturedOutput,
    /// The model's native pipelines, for the `pipeline` and `tokenizer` imports.
    pub(crate) host: Arc<dyn GuestHost>,
    /// Time the current call spent in host loads, given back to its time budget when the
    /// deadline comes (the epoch callback in `pool.rs`).
    pub(crate) credit: std::time::Duration,
    /// The request being served, for log lines the guest writes.
    pub(crate) request_id: String,
    /// The hook being called.
    pub(crate) hook: Option<Hook>,
}

impl HostState {
    /// A fresh sandbox that sees `model_dir` read-only at [`GUEST_MODEL_DIR`].
    pub(crate) fn new(
        model_dir: &Path,
        memory_bytes: usize,
        host: Arc<dyn GuestHost>,
    ) -> wasmtime::Result<Self> {
        let stdout = CapturedOutput::new();
        let stderr = CapturedOutput::new();
        let mut builder = WasiCtxBuilder::new();
        builder
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            // Guests run on blocking threads; this halves filesystem call costs (notes §2).
            .allow_blocking_current_thread(true)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }))
            .preopened_dir(model_dir, GUEST_MODEL_DIR, FsPerms::ReadOnly)?;
        Ok(Self {
            wasi: builder.build(),
            table: ResourceTable::new(),
            memory: MemoryCap {
                limit_bytes: memory_bytes,
                exceeded: false,
                peak_bytes: 0,
            },
            stdout,
            stderr,
            host,
            credit: std::time::Duration::ZERO,
            request_id: String::new(),
            hook: None,
        })
    }

    /// Prepares the state for a call of `hook` for request `request_id`.
    pub(crate) fn begin_call(&mut self, hook: Hook, request_id: &str) {
        request_id.clone_into(&mut self.request_id);
        self.hook = Some(hook);
        self.credit = std::time::Duration::ZERO;
        self.memory.exceeded = false;
        self.stdout.take();
        self.stderr.take();
    }
}

impl HostState {
    /// Gives `spent` (host work inside a guest call, e.g. loading a model) back to the call's
    /// time budget.
    pub(crate) fn credit(&mut self, spent: std::time::Duration) {
        self.credit = self.credit.saturating_add(spent);
    }

    /// Whole epoch ticks of credit, taken out of the credit: how far to extend a deadline that
    /// has come. Zero: the call used its own budget up.
    pub(crate) fn take_credit_ticks(&mut self) -> u64 {
        let tick = super::engine::EPOCH_TICK.as_nanos();
        let ticks = self.credit.as_nanos() / tick;
        let used = std::time::Duration::from_nanos(u64::try_from(ticks * tick).unwrap_or(u64::MAX));
        self.credit = self.credit.saturating_sub(used);
        u64::try_from(ticks).unwrap_or(u64::MAX)
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Caps the linear memory of one instance; remembers whether a guest hit the cap, so a trap
/// can be reported as out-of-memory.
pub(crate) struct MemoryCap {
    pub(crate) limit_bytes: usize,
    pub(crate) exceeded: bool,
    /// The largest linear memory granted so far (memory never shrinks).
    pub(crate) peak_bytes: usize,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit_bytes {
            self.exceeded = true;
            // An error (not `Ok(false)`) traps at once with this message, instead of letting the
            // guest's allocator abort with an opaque `unreachable` (notes §3).
            return Err(wasmtime::Error::msg(format!(
                "memory limit of {} bytes reached: the guest asked for {desired} bytes",
                self.limit_bytes
            )));
        }
        let granted = maximum.is_none_or(|max| desired <= max);
        if granted {
            self.peak_bytes = self.peak_bytes.max(desired);
        }
        Ok(granted)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS && maximum.is_none_or(|max| desired <= max))
    }
}

/// A guest's stdout or stderr: kept in memory (the last [`OUTPUT_TAIL_BYTES`] of a call), then
/// drained into the log after each call. Writes never fail, so a chatty guest never traps.
#[derive(Clone)]
pub(crate) struct CapturedOutput {
    buffer: Arc<Mutex<Vec<u8>>>,
}

impl CapturedOutput {
    fn new() -> Self {
        Self {
            buffer: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Takes what was written since the last call.
    pub(crate) fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.buffer.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn append(&self, bytes: &[u8]) {
        let mut buffer = self.buffer.lock().unwrap_or_else(PoisonError::into_inner);
        buffer.extend_from_slice(bytes);
        if buffer.len() > OUTPUT_TAIL_BYTES {
            let excess = buffer.len() - OUTPUT_TAIL_BYTES;
            buffer.drain(..excess);
        }
    }
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for CapturedOutput {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(OUTPUT_TAIL_BYTES)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CapturedOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for CapturedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captured_output_keeps_the_tail_and_never_fails() {
        let mut out = CapturedOutput::new();
        let chunk = vec![b'a'; OUTPUT_TAIL_BYTES];
        for _ in 0..3 {
            out.write(Bytes::from(chunk.clone()))
                .expect("writes never fail");
        }
        out.write(Bytes::from_static(b"panicked at the end"))
            .expect("writes never fail");
        let kept = out.take();
        assert_eq!(kept.len(), OUTPUT_TAIL_BYTES);
        assert!(kept.ends_with(b"panicked at the end"));
        assert!(out.take().is_empty(), "take drains");
    }

    #[test]
    fn host_load_time_is_given_back_in_whole_ticks_once() {
        let host: Arc<dyn GuestHost> = Arc::new(super::super::FixedPipeline(Arc::new(
            crate::wasm::tests::WordCountPipeline::default(),
        )));
        let dir = tempfile::tempdir().expect("tempdir");
        let mut state = HostState::new(dir.path(), 1 << 20, host).expect("state");
        assert_eq!(state.take_credit_ticks(), 0, "no host work, no credit");
        state.credit(std::time::Duration::from_millis(25));
        state.credit(std::time::Duration::from_millis(10));
        assert_eq!(state.take_credit_ticks(), 3, "35 ms is 3 whole 10 ms ticks");
        state.credit(std::time::Duration::from_millis(5));
        assert_eq!(
            state.take_credit_ticks(),
            1,
            "the 5 ms left over and 5 ms more"
        );
        assert_eq!(state.take_credit_ticks(), 0, "credit is spent once");
        state.credit(std::time::Duration::from_millis(50));
        state.begin_call(Hook::InputFn, "r");
        assert_eq!(
            state.take_credit_ticks(),
            0,
            "a new call starts without credit"
        );
    }

    #[test]
    fn memory_cap_refuses_growth_past_the_limit_and_remembers_it() {
        let mut cap = MemoryCap {
            limit_bytes: 1 << 20,
            exceeded: false,
            peak_bytes: 0,
        };
        assert!(cap.memory_growing(0, 1 << 19, None).expect("under the cap"));
        assert!(!cap.exceeded);
        assert_eq!(cap.peak_bytes, 1 << 19);
        assert!(cap.memory_growing(1 << 19, (1 << 20) + 1, None).is_err());
        assert!(cap.exceeded);
    }
}
