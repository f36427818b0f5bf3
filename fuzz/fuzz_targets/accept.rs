//! Content negotiation: the input split at the first NUL into an `Accept` header and a
//! `Content-Type` header, negotiated against every default encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
// The codec's own source (the module `sagebrush::codec`), compiled into this target.
#[allow(dead_code, unreachable_pub)]
#[path = "../../runtime/src/codec/mod.rs"]
mod codec;

use codec::{Decoding, Encoding};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (accept, content_type) = text.split_once('\0').unwrap_or((&text, ""));
    for default in [Encoding::Json, Encoding::JsonLines, Encoding::Csv] {
        let chosen = codec::choose_encoding(Some(accept), default);
        let negotiated = codec::negotiate(Some(content_type), Some(accept), default);
        // The two entry points agree on the encoding whenever the content type is accepted.
        if let (Ok(a), Ok((_, b))) = (&chosen, &negotiated) {
            assert_eq!(a, b);
        }
    }
    let _ = Decoding::from_content_type(Some(content_type));
    let _ = Encoding::from_media_type(accept);
});
