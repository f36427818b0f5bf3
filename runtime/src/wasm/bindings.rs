//! Host bindings generated from `wit/sagebrush.wit` (world `handler`), synchronous: guests run
//! in `spawn_blocking`, never on a tokio worker (STYLE §2, wasmtime notes §6).

wasmtime::component::bindgen!({
    world: "handler",
    path: "../wit/0.1.0",
});

pub(crate) use exports::sagebrush::handler::hooks::{
    Context as WitContext, Error as WitError, HookSet as WitHookSet, Payload as WitPayload,
    Response as WitResponse,
};
