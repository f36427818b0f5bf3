//! `#[guest_sdk::handler]`: turns an `impl guest_sdk::Handler for T` block into an exported
//! sagebrush guest. Use it through `guest_sdk::handler`; this crate is an implementation detail
//! of `guest-sdk` (contract §6, STYLE §6).

use proc_macro::TokenStream;
use proc_macro2::Span;
use quote::quote;
use syn::{ImplItem, ItemImpl, parse_macro_input};

/// Contract §6: the exact message when transform_fn is mixed with the other hooks.
const TRANSFORM_CONFLICT: &str = "Cannot use transform_fn implementation in conjunction with input_fn, predict_fn, and/or output_fn implementation";

/// The hooks, with the name of their `guest_sdk::HookSet` constant.
const HOOKS: [(&str, &str); 5] = [
    ("model_fn", "MODEL_FN"),
    ("input_fn", "INPUT_FN"),
    ("predict_fn", "PREDICT_FN"),
    ("output_fn", "OUTPUT_FN"),
    ("transform_fn", "TRANSFORM_FN"),
];

/// Exports the hooks written in an `impl guest_sdk::Handler for T` block, and only those.
///
/// # Examples
///
/// ```ignore
/// struct Clean;
///
/// #[guest_sdk::handler]
/// impl guest_sdk::Handler for Clean {
///     fn input_fn(body: Vec<u8>, _content_type: &str, _ctx: &guest_sdk::Context)
///         -> Result<guest_sdk::Payload, guest_sdk::Error> {
///         let text = String::from_utf8_lossy(&body).trim().to_owned();
///         guest_sdk::Payload::from_json(&guest_sdk::serde_json::json!({ "inputs": text }))
///     }
/// }
/// ```
///
/// # Requirements
///
/// - The block implements `guest_sdk::Handler` (any path ending in `Handler`) for a type without
///   generic parameters, and appears once per guest crate (a component exports one handler).
/// - `transform_fn` together with `input_fn`, `predict_fn` or `output_fn` is a compile error with
///   the message the runtime would refuse the component with at load.
/// - `const HOOKS` is not written by hand.
///
/// # Generated code
///
/// - `const HOOKS: guest_sdk::HookSet` listing the hook methods written in the block, which the
///   component reports through `implemented()`; the runtime uses its native default for the rest.
/// - `type Model = ();` when the block declares no `Model` type.
/// - `fn model_pipeline(model) -> Option<&Pipeline> { Some(model) }` when the block declares
///   `type Model = Pipeline` (a path ending in `Pipeline`) and writes no `model_pipeline`: the
///   runtime's default `predict_fn` then calls the pipeline `model_fn` returned.
/// - `guest_sdk::export_handler!(T);`, which exports the component's `hooks` interface.
#[proc_macro_attribute]
pub fn handler(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        let attr = proc_macro2::TokenStream::from(attr);
        return syn::Error::new_spanned(attr, "`#[guest_sdk::handler]` takes no arguments")
            .to_compile_error()
            .into();
    }
    let item = parse_macro_input!(item as ItemImpl);
    match expand(item) {
        Ok(tokens) => tokens.into(),
        Err(err) => err.to_compile_error().into(),
    }
}

fn expand(mut item: ItemImpl) -> syn::Result<proc_macro2::TokenStream> {
    let Some((_, trait_path, _)) = &item.trait_ else {
        return Err(syn::Error::new_spanned(
            &item.self_ty,
            "`#[guest_sdk::handler]` goes on `impl guest_sdk::Handler for YourType { .. }`",
        ));
    };
    if trait_path
        .segments
        .last()
        .is_none_or(|s| s.ident != "Handler")
    {
        return Err(syn::Error::new_spanned(
            trait_path,
            "`#[guest_sdk::handler]` goes on an implementation of `guest_sdk::Handler`",
        ));
    }
    if !item.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &item.generics,
            "a guest handler cannot be generic: the component exports one concrete type",
        ));
    }

    let mut written = Vec::new();
    let mut has_model_type = false;
    let mut model_is_pipeline = false;
    let mut has_model_pipeline = false;
    for impl_item in &item.items {
        match impl_item {
            ImplItem::Fn(f) => {
                let name = f.sig.ident.to_string();
                has_model_pipeline |= name == "model_pipeline";
                if let Some((_, flag)) = HOOKS.iter().find(|(hook, _)| *hook == name) {
                    written.push((name, *flag, f.sig.ident.clone()));
                }
            }
            ImplItem::Type(t) if t.ident == "Model" => {
                has_model_type = true;
                model_is_pipeline = matches!(&t.ty, syn::Type::Path(p)
                    if p.path.segments.last().is_some_and(|s| s.ident == "Pipeline"));
            }
            ImplItem::Const(c) if c.ident == "HOOKS" => {
                return Err(syn::Error::new_spanned(
                    c,
                    "`HOOKS` is written by `#[guest_sdk::handler]` from the hook methods in this block; remove it",
                ));
            }
            _ => {}
        }
    }

    let has = |hook: &str| written.iter().any(|(name, _, _)| name == hook);
    if let Some((_, _, transform)) = written.iter().find(|(name, _, _)| name == "transform_fn")
        && (has("input_fn") || has("predict_fn") || has("output_fn"))
    {
        return Err(syn::Error::new_spanned(transform, TRANSFORM_CONFLICT));
    }

    let flags = written
        .iter()
        .map(|(_, flag, _)| syn::Ident::new(flag, Span::call_site()));
    let hooks_const: ImplItem = syn::parse_quote! {
        const HOOKS: ::guest_sdk::HookSet = ::guest_sdk::HookSet::EMPTY #( .with(::guest_sdk::HookSet::#flags) )*;
    };
    item.items.push(hooks_const);
    if !has_model_type {
        item.items.push(syn::parse_quote! { type Model = (); });
    }
    // `type Model = Pipeline`: model_fn returned a native pipeline, which the runtime's
    // default predict_fn calls (the toolkit's default calls `model(inputs)`).
    if model_is_pipeline && !has_model_pipeline {
        item.items.push(syn::parse_quote! {
            fn model_pipeline(model: &Self::Model) -> ::core::option::Option<&::guest_sdk::pipeline::Pipeline> {
                ::core::option::Option::Some(model)
            }
        });
    }

    let self_ty = &item.self_ty;
    Ok(quote! {
        #item
        ::guest_sdk::export_handler!(#self_ty);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand_str(item: ItemImpl) -> Result<String, String> {
        expand(item)
            .map(|t| t.to_string())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn transform_with_input_is_a_compile_error_with_the_spec_message() {
        let item: ItemImpl = syn::parse_quote! {
            impl guest_sdk::Handler for Mixed {
                fn input_fn(body: Vec<u8>, ct: &str, ctx: &Context) -> Result<Payload, Error> { todo!() }
                fn transform_fn(m: Option<&()>, b: Vec<u8>, ct: &str, a: &str, ctx: &Context) -> Result<Response, Error> { todo!() }
            }
        };
        assert_eq!(
            expand_str(item).expect_err("refused"),
            "Cannot use transform_fn implementation in conjunction with input_fn, predict_fn, and/or output_fn implementation"
        );
    }

    #[test]
    fn hooks_lists_exactly_the_methods_written_and_model_defaults_to_unit() {
        let item: ItemImpl = syn::parse_quote! {
            impl Handler for Pre {
                fn input_fn(body: Vec<u8>, ct: &str, ctx: &Context) -> Result<Payload, Error> { todo!() }
                fn output_fn(p: Payload, accept: &str, ctx: &Context) -> Result<Response, Error> { todo!() }
                fn helper() {}
            }
        };
        let code = expand_str(item).expect("expands");
        assert!(code.contains("HookSet :: EMPTY . with (:: guest_sdk :: HookSet :: INPUT_FN) . with (:: guest_sdk :: HookSet :: OUTPUT_FN) ;"), "{code}");
        assert!(code.contains("type Model = () ;"), "{code}");
        assert!(
            code.contains(":: guest_sdk :: export_handler ! (Pre) ;"),
            "{code}"
        );
    }

    #[test]
    fn model_fn_with_transform_fn_is_fine_and_keeps_the_model_type() {
        let item: ItemImpl = syn::parse_quote! {
            impl Handler for T {
                type Model = Vocab;
                fn model_fn(dir: &str) -> Result<Vocab, Error> { todo!() }
                fn transform_fn(m: Option<&Vocab>, b: Vec<u8>, ct: &str, a: &str, ctx: &Context) -> Result<Response, Error> { todo!() }
            }
        };
        let code = expand_str(item).expect("expands");
        assert!(
            code.contains("MODEL_FN) . with (:: guest_sdk :: HookSet :: TRANSFORM_FN)"),
            "{code}"
        );
        assert!(!code.contains("type Model = ()"), "{code}");
    }

    #[test]
    fn a_pipeline_model_is_the_default_predictor_unless_model_pipeline_is_written() {
        let item: ItemImpl = syn::parse_quote! {
            impl Handler for T {
                type Model = guest_sdk::pipeline::Pipeline;
                fn model_fn(dir: &str) -> Result<Self::Model, Error> { todo!() }
            }
        };
        let code = expand_str(item).expect("expands");
        assert!(code.contains("fn model_pipeline"), "{code}");
        let item: ItemImpl = syn::parse_quote! {
            impl Handler for T {
                type Model = Pipeline;
                fn model_fn(dir: &str) -> Result<Self::Model, Error> { todo!() }
                fn model_pipeline(model: &Pipeline) -> Option<&Pipeline> { None }
            }
        };
        let code = expand_str(item).expect("expands");
        assert_eq!(code.matches("fn model_pipeline").count(), 1, "{code}");
        let item: ItemImpl = syn::parse_quote! {
            impl Handler for T {
                type Model = Vocab;
                fn model_fn(dir: &str) -> Result<Self::Model, Error> { todo!() }
            }
        };
        assert!(
            !expand_str(item)
                .expect("expands")
                .contains("model_pipeline")
        );
    }

    #[test]
    fn misuse_is_reported() {
        let inherent: ItemImpl = syn::parse_quote! { impl T { fn input_fn() {} } };
        assert!(
            expand_str(inherent)
                .expect_err("no trait")
                .contains("impl guest_sdk::Handler for YourType")
        );
        let other: ItemImpl =
            syn::parse_quote! { impl Clone for T { fn clone(&self) -> Self { todo!() } } };
        assert!(
            expand_str(other)
                .expect_err("wrong trait")
                .contains("implementation of `guest_sdk::Handler`")
        );
        let manual: ItemImpl =
            syn::parse_quote! { impl Handler for T { const HOOKS: HookSet = HookSet::EMPTY; } };
        assert!(
            expand_str(manual)
                .expect_err("manual HOOKS")
                .contains("`HOOKS` is written by")
        );
        let generic: ItemImpl = syn::parse_quote! { impl<X> Handler for T<X> {} };
        assert!(
            expand_str(generic)
                .expect_err("generic")
                .contains("cannot be generic")
        );
    }
}
