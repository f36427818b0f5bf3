//! `GuestError`: everything that can go wrong loading or calling a guest. Each per-call variant
//! names the hook; the server maps the variants to statuses (`server/error.rs`).

use std::path::PathBuf;
use std::time::Duration;

use crate::handler::{Hook, TRANSFORM_CONFLICT};

use super::bindings::WitError;

/// A boxed error kept as a source (wasmtime's own error type is not `std::error::Error`).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Loading or calling a guest failed.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// The `.wasm` file cannot be read.
    #[error("cannot read the guest component `{}`", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The wasmtime engine could not be built (e.g. no address space for the instance pool).
    #[error("cannot set up the WebAssembly engine")]
    Engine {
        /// Why.
        #[source]
        source: BoxError,
    },
    /// The file is not a valid WebAssembly component.
    #[error("`{}` is not a valid WebAssembly component", path.display())]
    Compile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// The component fits neither `sagebrush:handler` world, 0.2.0 or 0.1.0 (missing export, an import
    /// the host does not provide, e.g. `wasi:http`).
    #[error(
        "the guest component implements neither the `sagebrush:handler@0.2.0` nor the `@0.1.0` world"
    )]
    Link {
        /// Why.
        #[source]
        source: BoxError,
    },
    /// A new instance could not be started (sandbox set-up or instantiation failed).
    #[error("cannot start a guest instance")]
    Instantiate {
        /// Why.
        #[source]
        source: BoxError,
    },
    /// Contract §6: transform_fn together with input_fn, predict_fn or output_fn.
    #[error("{}", TRANSFORM_CONFLICT)]
    TransformConflict,
    /// The guest answered `bad-request`: the client's input is wrong (400).
    #[error("{message}")]
    BadRequest {
        /// The hook.
        hook: Hook,
        /// The guest's message.
        message: String,
    },
    /// The guest answered `unsupported-media-type` (415).
    #[error("{message}")]
    UnsupportedMedia {
        /// The hook.
        hook: Hook,
        /// The guest's message.
        message: String,
    },
    /// The guest answered `not-acceptable` (406).
    #[error("{message}")]
    NotAcceptable {
        /// The hook.
        hook: Hook,
        /// The guest's message.
        message: String,
    },
    /// The guest answered `internal` (500).
    #[error("user code `{hook}` failed: {message}")]
    Internal {
        /// The hook.
        hook: Hook,
        /// The guest's message.
        message: String,
    },
    /// The guest answered `not-implemented` for a hook its `implemented()` listed.
    #[error("user code `{hook}` is listed by `implemented()` but answered not-implemented")]
    NotImplemented {
        /// The hook.
        hook: Hook,
    },
    /// The guest returned a `json` payload that is not JSON.
    #[error("user code `{hook}` returned a JSON payload that does not parse: {detail}")]
    InvalidJson {
        /// The hook.
        hook: Hook,
        /// The parser's message.
        detail: String,
    },
    /// The guest trapped (a panic, `unreachable`, a bad memory access...). The instance was
    /// dropped and replaced.
    #[error("user code `{hook}` trapped: {detail}{}", panic_suffix(stderr))]
    Trap {
        /// The hook.
        hook: Hook,
        /// The trap (e.g. `wasm trap: wasm 'unreachable' instruction executed`).
        detail: String,
        /// What the call wrote to stderr (a Rust panic message is there).
        stderr: String,
    },
    /// The call ran past the time limit and was interrupted. The instance was replaced.
    #[error("user code `{hook}` did not finish within {} ms and was interrupted", limit.as_millis())]
    Timeout {
        /// The hook.
        hook: Hook,
        /// The limit.
        limit: Duration,
    },
    /// The guest needed more memory than the limit. The instance was replaced.
    #[error("user code `{hook}` exceeded its memory limit of {} MiB", limit_bytes / (1024 * 1024))]
    OutOfMemory {
        /// The hook.
        hook: Hook,
        /// The limit.
        limit_bytes: usize,
    },
}

impl GuestError {
    /// The hook the error belongs to; `None` for load-time errors outside any hook.
    pub fn hook(&self) -> Option<Hook> {
        match self {
            Self::BadRequest { hook, .. }
            | Self::UnsupportedMedia { hook, .. }
            | Self::NotAcceptable { hook, .. }
            | Self::Internal { hook, .. }
            | Self::NotImplemented { hook }
            | Self::InvalidJson { hook, .. }
            | Self::Trap { hook, .. }
            | Self::Timeout { hook, .. }
            | Self::OutOfMemory { hook, .. } => Some(*hook),
            Self::Read { .. }
            | Self::Engine { .. }
            | Self::Compile { .. }
            | Self::Link { .. }
            | Self::Instantiate { .. }
            | Self::TransformConflict => None,
        }
    }

    /// Whether the client caused it (400, 406, 415) rather than the server or the user code.
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            Self::BadRequest { .. } | Self::UnsupportedMedia { .. } | Self::NotAcceptable { .. }
        )
    }

    pub(crate) fn from_wit(hook: Hook, error: WitError) -> Self {
        match error {
            WitError::NotImplemented => Self::NotImplemented { hook },
            WitError::BadRequest(message) => Self::BadRequest { hook, message },
            WitError::UnsupportedMediaType(message) => Self::UnsupportedMedia { hook, message },
            WitError::NotAcceptable(message) => Self::NotAcceptable { hook, message },
            WitError::Internal(message) => Self::Internal { hook, message },
        }
    }
}

/// Converts wasmtime's error into a boxed `std::error::Error` to keep as a source.
pub(crate) fn boxed(err: wasmtime::Error) -> BoxError {
    err.into_boxed_dyn_error()
}

/// The panic message in a guest's stderr: from Rust's `panicked at FILE:LINE:COL:` line up to
/// the `note:` line, joined on one line. `None` when the guest did not panic (or is not Rust).
pub(crate) fn panic_message(stderr: &str) -> Option<String> {
    let start = stderr.find("panicked at ")?;
    let text: Vec<&str> = stderr[start..]
        .lines()
        .take_while(|line| !line.starts_with("note: "))
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    Some(text.join(" "))
}

fn panic_suffix(stderr: &str) -> String {
    panic_message(stderr)
        .map(|m| format!("; {m}"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_panic_message_is_cut_out_of_stderr() {
        let stderr = "some log line\n\nthread '<unnamed>' panicked at src/lib.rs:26:24:\nguest panic: bad input\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        assert_eq!(
            panic_message(stderr).as_deref(),
            Some("panicked at src/lib.rs:26:24: guest panic: bad input")
        );
        assert_eq!(panic_message("just output\n"), None);
        let err = GuestError::Trap {
            hook: Hook::InputFn,
            detail: "wasm trap: unreachable".into(),
            stderr: stderr.into(),
        };
        assert_eq!(
            err.to_string(),
            "user code `input_fn` trapped: wasm trap: unreachable; panicked at src/lib.rs:26:24: guest panic: bad input"
        );
    }
}
