//! A SentencePiece `.model` file (protobuf `ModelProto`, read by our own parser): parse it, and
//! when it parses, build the tokenizer and encode a text with it. An input whose first byte is
//! even is the file itself; an odd first byte asks for a well-formed file built from the rest
//! (pieces with any score, including NaN and infinities, any piece type, the normalizer's
//! flags and precompiled charsmap), so that most inputs reach the tokenizer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sagebrush::tokenizer::sentencepiece::SpModel;

fn varint(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn bytes_field(out: &mut Vec<u8>, number: u64, payload: &[u8]) {
    varint(out, number << 3 | 2);
    varint(out, payload.len() as u64);
    out.extend_from_slice(payload);
}

fn varint_field(out: &mut Vec<u8>, number: u64, value: u64) {
    varint(out, number << 3);
    varint(out, value);
}

/// A `ModelProto` from `flags` and chunks separated by 0xFF: a chunk is 4 bytes of score (f32
/// bits), a piece type, the piece text; a chunk whose type byte is 0xFE is the charsmap.
fn model(flags: u8, rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut charsmap: &[u8] = &[];
    for chunk in rest.split(|b| *b == 0xff) {
        let Some((score, rest)) = chunk.split_first_chunk::<4>() else {
            continue;
        };
        let Some((&kind, text)) = rest.split_first() else {
            continue;
        };
        if kind == 0xfe {
            charsmap = text;
            continue;
        }
        let mut piece = Vec::new();
        bytes_field(&mut piece, 1, text);
        varint(&mut piece, 2 << 3 | 5);
        piece.extend_from_slice(score);
        varint_field(&mut piece, 3, u64::from(kind % 7));
        bytes_field(&mut out, 1, &piece);
    }
    let mut trainer = Vec::new();
    varint_field(&mut trainer, 3, 1);
    varint_field(&mut trainer, 40, u64::from(flags >> 4));
    varint_field(&mut trainer, 35, u64::from(flags >> 1 & 1));
    bytes_field(&mut out, 2, &trainer);
    let mut normalizer = Vec::new();
    bytes_field(&mut normalizer, 1, b"nmt_nfkc");
    if !charsmap.is_empty() {
        bytes_field(&mut normalizer, 2, charsmap);
    }
    varint_field(&mut normalizer, 3, u64::from(flags >> 2 & 1));
    varint_field(&mut normalizer, 4, u64::from(flags >> 3 & 1));
    bytes_field(&mut out, 3, &normalizer);
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let built;
    let bytes = if first & 1 == 0 {
        data
    } else {
        built = model(first, rest);
        &built
    };
    if let Ok(model) = SpModel::parse(bytes) {
        let _ = model.unk_id();
        if let Ok(tokenizer) = model.tokenizer() {
            let text = String::from_utf8_lossy(rest);
            for input in ["▁Hello, wörld 42 ½ 東京", text.as_ref()] {
                if let Ok(encoding) = tokenizer.encode_char_offsets(input, false) {
                    let _ = tokenizer.decode(encoding.get_ids(), false);
                }
            }
        }
    }
});
