//! Shaping answers: model output rows as finite numbers (NaN or infinity cannot be answered as
//! JSON, contract §5), one answer or a list as the input was given, and Python-style character
//! slicing of the input text.

use serde_json::Value;

use super::{PipelineError, Result};

/// The answer shape that goes with [`texts`]: the list of answers for a list input, the one
/// answer for a single input.
pub fn one_or_list(answers: Vec<Value>, listed: bool) -> Value {
    if listed {
        Value::Array(answers)
    } else {
        answers.into_iter().next().unwrap_or(Value::Null)
    }
}

/// transformers' habit in fill-mask, question-answering and table-question-answering: a list
/// of one answer is answered as that answer alone, whatever the shape of the input.
pub fn one_alone(mut answers: Vec<Value>) -> Value {
    if answers.len() == 1 {
        answers.swap_remove(0)
    } else {
        Value::Array(answers)
    }
}

/// The first `n` rows of a `[tokens, k]` model output as `f32`; NaN or infinity is an error
/// (it cannot be answered as JSON, contract §5).
pub fn matrix(t: &candle_core::Tensor, n: usize) -> Result<Vec<Vec<f32>>> {
    let rows = t
        .narrow(0, 0, n)
        .and_then(|t| t.to_dtype(candle_core::DType::F32))
        .and_then(|t| t.to_vec2::<f32>())
        .map_err(PipelineError::Output)?;
    if rows.iter().flatten().any(|v| !v.is_finite()) {
        return Err(PipelineError::NonFinite);
    }
    Ok(rows)
}

/// A `[k]` model output row as `f32`; NaN or infinity is an error.
pub fn vector(t: &candle_core::Tensor) -> Result<Vec<f32>> {
    let row = t
        .to_dtype(candle_core::DType::F32)
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(PipelineError::Output)?;
    if row.iter().any(|v| !v.is_finite()) {
        return Err(PipelineError::NonFinite);
    }
    Ok(row)
}

/// A JSON number from a float; NaN and infinity are errors, never `null`.
pub fn finite(x: f32) -> Result<Value> {
    serde_json::Number::from_f64(f64::from(x))
        .map(Value::Number)
        .ok_or(PipelineError::NonFinite)
}

/// Maps character positions of a text to byte positions, to slice it the way Python does.
#[derive(Debug, Clone)]
pub struct CharIndex<'a> {
    text: &'a str,
    bytes: Vec<usize>,
}

impl<'a> CharIndex<'a> {
    /// Indexes `text`.
    pub fn new(text: &'a str) -> Self {
        let bytes = text
            .char_indices()
            .map(|(b, _)| b)
            .chain(std::iter::once(text.len()))
            .collect();
        Self { text, bytes }
    }

    /// The number of characters.
    pub fn len(&self) -> usize {
        self.bytes.len() - 1
    }

    /// Whether the text is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `text[start:end]` in Python: character positions, clamped to the text.
    pub fn slice(&self, start: usize, end: usize) -> &'a str {
        let end = end.min(self.len());
        let start = start.min(end);
        &self.text[self.bytes[start]..self.bytes[end]]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn char_index_slices_like_python() {
        let idx = CharIndex::new("Kraków!");
        assert_eq!(idx.len(), 7);
        assert_eq!(idx.slice(4, 6), "ów");
        assert_eq!(idx.slice(5, 100), "w!");
        assert_eq!(idx.slice(9, 3), "");
    }
}
