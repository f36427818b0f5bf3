//! The host's tokenizers (Hugging Face `tokenizers`, from `tokenizer.json`), so a guest need not
//! compile one in.
//!
//! ```no_run
//! # fn main() -> Result<(), guest_sdk::Error> {
//! let tokenizer = guest_sdk::tokenizer::Tokenizer::load(None)?;
//! let encoding = tokenizer.tokenize("Hello world", true)?;
//! assert_eq!(encoding.ids.len(), encoding.offsets.len());
//! let text = tokenizer.decode(&encoding.ids, true)?;
//! # let _ = text;
//! # Ok(())
//! # }
//! ```

use crate::Error;
use crate::bindings::sagebrush::handler::tokenizer as wit;

/// One tokenized text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoding {
    /// Token ids.
    pub ids: Vec<u32>,
    /// Each token's `(start, end)` byte offsets into the text; `(0, 0)` for special tokens.
    pub offsets: Vec<(u32, u32)>,
    /// Each token's text as the vocabulary spells it.
    pub tokens: Vec<String>,
}

/// A tokenizer of the model directory or of a subfolder, held by the host (loaded once per
/// model, shared by all instances).
#[derive(Debug)]
pub struct Tokenizer(wit::Tokenizer);

impl Tokenizer {
    /// The tokenizer (`tokenizer.json`) of the model directory, or of `subfolder` of it
    /// (relative, inside the model directory). A missing or bad file is
    /// [`Error::BadRequest`] naming it.
    pub fn load(subfolder: Option<&str>) -> Result<Self, Error> {
        wit::Tokenizer::load(subfolder)
            .map(Self)
            .map_err(crate::adapter::error_from_wit)
    }

    /// Tokenizes `text`, adding the model's special tokens (`[CLS]`, `</s>`, ...) when
    /// `add_special_tokens`. No truncation, no padding.
    pub fn tokenize(&self, text: &str, add_special_tokens: bool) -> Result<Encoding, Error> {
        self.0
            .tokenize(text, add_special_tokens)
            .map(|e| Encoding {
                ids: e.ids,
                offsets: e.offsets,
                tokens: e.tokens,
            })
            .map_err(crate::adapter::error_from_wit)
    }

    /// Turns `ids` back into text, leaving special tokens out when `skip_special_tokens`.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, Error> {
        self.0
            .decode(ids, skip_special_tokens)
            .map_err(crate::adapter::error_from_wit)
    }
}
