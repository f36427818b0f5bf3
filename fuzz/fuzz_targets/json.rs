//! An `application/json` request body: decode, then encode what was decoded in every response
//! encoding (a guest's `predict_fn` can hand the native encoder any JSON value).
#![no_main]

use libfuzzer_sys::fuzz_target;
// The codec's own source (the module `sagebrush::codec`), compiled into this target.
#[allow(dead_code, unreachable_pub)]
#[path = "../../runtime/src/codec/mod.rs"]
mod codec;

use codec::{Decoding, Encoding};

fuzz_target!(|body: &[u8]| {
    if let Ok(records) = codec::decode(Decoding::Json, body) {
        for encoding in [Encoding::Json, Encoding::JsonLines, Encoding::Csv] {
            let _ = codec::encode(encoding, &records.values, records.multi);
        }
    }
});
