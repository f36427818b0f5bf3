//! The wit-bindgen output for `wit/sagebrush.wit`, world `handler`. Hidden: guest authors use the
//! SDK's types; the paths below point wit-bindgen's generated code at the SDK's re-exports so a
//! guest crate needs no `wit-bindgen` dependency of its own.

wit_bindgen::generate!({
    world: "handler",
    path: "../wit",
    pub_export_macro: true,
    export_macro_name: "__export_sagebrush_handler",
    default_bindings_module: "::guest_sdk::bindings",
    runtime_path: "::guest_sdk::__rt::rt",
    bitflags_path: "::guest_sdk::__rt::rt::bitflags",
});
