//! A SentencePiece `.model` file (protobuf `ModelProto`, read by our own parser): parse it, and
//! when it parses, build the tokenizer and encode a fixed text with it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sagebrush::tokenizer::sentencepiece::SpModel;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(model) = SpModel::parse(bytes) {
        let _ = model.unk_id();
        if let Ok(tokenizer) = model.tokenizer() {
            let _ = tokenizer.encode_char_offsets("▁Hello, wörld 42 ½ 東京", false);
        }
    }
});
