//! Host bindings generated from the two WIT versions (world `handler` in both), synchronous:
//! guests run in `spawn_blocking`, never on a tokio worker (STYLE §2, wasmtime notes §6).
//! `v1` is `sagebrush:handler@0.1.0` (`wit/0.1.0/`), frozen; `v2` is 0.2.0 (`wit/`). The rest
//! of the module speaks v1's types; v2's convert (`wasm::versions`).

/// `sagebrush:handler@0.1.0`.
pub(crate) mod v1 {
    wasmtime::component::bindgen!({
        world: "handler",
        path: "../wit/0.1.0",
    });
}

/// `sagebrush:handler@0.2.0`: the `pipeline` and `tokenizer` resources are host values.
pub(crate) mod v2 {
    wasmtime::component::bindgen!({
        world: "handler",
        path: "../wit",
        with: {
            "sagebrush:handler/pipeline.pipeline": crate::wasm::host::GuestPipeline,
            "sagebrush:handler/tokenizer.tokenizer": crate::wasm::host::GuestTokenizer,
        },
    });
}

pub(crate) use v1::exports::sagebrush::handler::hooks::{
    Context as WitContext, Error as WitError, HookSet as WitHookSet, Payload as WitPayload,
    Response as WitResponse,
};
