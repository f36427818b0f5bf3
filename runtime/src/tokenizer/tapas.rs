//! The TAPAS tokenizer: a table and a question flattened into `[CLS] question [SEP] header
//! cells…`, with the seven token types TAPAS reads (segment, column, row, previous label, column
//! rank, inverse column rank, numeric relation), and the `drop_rows_to_fit` truncation that
//! removes rows from the end until the table fits (contract §4, table-question-answering).
//!
//! WordPiece itself is the `vocab.txt` tokenizer of [`TextTokenizer`]; this module adds what
//! `TapasTokenizer` of transformers v4.51.3 does around it:
//! <https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/models/tapas/tokenization_tapas.py>
//! Number and date parsing is in `numeric.rs`. Does not run the model nor read answers.

pub mod numeric;

use std::path::Path;

use serde::Deserialize;

use super::{Result, TextTokenizer, TokenizerConfig, TokenizerError, read_json};
use crate::models::ModelConfig;
use crate::models::tapas::TOKEN_TYPES;
use numeric::NumericValue;

/// `TapasTokenizer`'s default `model_max_length`.
const DEFAULT_MAX_LENGTH: usize = 512;

/// The TAPAS keys of `tokenizer_config.json`.
#[derive(Debug, Clone, Default, Deserialize)]
struct TapasKeys {
    #[serde(default)]
    model_max_length: Option<f64>,
    #[serde(default)]
    max_column_id: Option<usize>,
    #[serde(default)]
    max_row_id: Option<usize>,
    #[serde(default)]
    cell_trim_length: Option<i64>,
    #[serde(default)]
    strip_column_names: Option<bool>,
    #[serde(default)]
    min_question_length: Option<usize>,
    #[serde(default)]
    max_question_length: Option<usize>,
    #[serde(default)]
    empty_token: Option<String>,
}

/// A table as TAPAS reads it: column names and rows of cell texts, all rows as long as the
/// header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// Column names.
    pub columns: Vec<String>,
    /// Cell texts, row by row.
    pub rows: Vec<Vec<String>>,
}

/// How a too-long table is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truncation {
    /// `drop_rows_to_fit`: drop rows from the end (and shorten cells) until the table fits.
    DropRowsToFit,
    /// `do_not_truncate`.
    None,
}

/// A table that this tokenizer cannot encode as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// More columns than `max_column_id` allows.
    #[error("the table has {columns} columns; this model reads fewer than {max}")]
    TooManyColumns {
        /// Columns in the table.
        columns: usize,
        /// `max_column_id`.
        max: usize,
    },
    /// More rows than `max_row_id` allows, and truncation is off.
    #[error(
        "the table has {rows} rows; this model reads fewer than {max} (set `truncation` to true to drop rows)"
    )]
    TooManyRows {
        /// Rows in the table.
        rows: usize,
        /// `max_row_id`.
        max: usize,
    },
}

/// One encoded (question, table) pair: ids and token types, no padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapasEncoding {
    /// Token ids.
    pub input_ids: Vec<u32>,
    /// The seven token types of each token.
    pub token_type_ids: Vec<[u32; TOKEN_TYPES]>,
}

impl TapasEncoding {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    /// Whether there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }
}

/// A word piece: its id and whether it continues a word (`##…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Piece {
    id: u32,
    inner: bool,
}

/// A table after tokenization, with what every question against it shares.
#[derive(Debug, Clone)]
pub struct TokenizedTable {
    /// Word pieces of each cell; row 0 is the header.
    cells: Vec<Vec<Vec<Piece>>>,
    /// Column count.
    num_columns: usize,
    /// Data row count.
    num_rows: usize,
    /// Each column's consolidated numeric value of each data row.
    numeric: Vec<Vec<Option<NumericValue>>>,
    /// Each column's (rank, inverse rank) of each data row.
    ranks: Vec<Vec<(u32, u32)>>,
}

/// The TAPAS tokenizer of a model directory.
pub struct TapasTokenizer {
    text: TextTokenizer,
    keys: TapasKeys,
    cls: u32,
    sep: u32,
    empty: u32,
    max_length: usize,
}

impl TapasTokenizer {
    /// Reads `vocab.txt` (or `tokenizer.json`) and the TAPAS keys of `tokenizer_config.json`.
    pub fn from_dir(dir: &Path, config: &ModelConfig) -> Result<Self> {
        let text = TextTokenizer::from_dir(dir, config)?;
        let keys: TapasKeys = read_json(&dir.join("tokenizer_config.json"))?.unwrap_or_default();
        let tok_config = TokenizerConfig::from_dir(dir)?;
        let id = |key: &str, default: &str| -> Result<u32> {
            let token = tok_config.special(key).unwrap_or(default).to_owned();
            text.inner()
                .token_to_id(&token)
                .ok_or(TokenizerError::UnknownSpecialToken {
                    key: key.to_owned(),
                    token,
                })
        };
        let empty_text = keys.empty_token.clone().unwrap_or_else(|| "[EMPTY]".into());
        let empty =
            text.inner()
                .token_to_id(&empty_text)
                .ok_or(TokenizerError::UnknownSpecialToken {
                    key: "empty_token".into(),
                    token: empty_text,
                })?;
        let max_length = keys
            .model_max_length
            .filter(|m| m.is_finite() && *m > 0.0 && *m < 1e29)
            .map_or(DEFAULT_MAX_LENGTH, |m| m as usize);
        Ok(Self {
            cls: id("cls_token", "[CLS]")?,
            sep: id("sep_token", "[SEP]")?,
            empty,
            text,
            keys,
            max_length,
        })
    }

    /// `model_max_length`: the length `drop_rows_to_fit` fits the table into.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// The padding id.
    pub fn pad_id(&self) -> u32 {
        self.text.pad_id()
    }

    fn max_column_id(&self) -> usize {
        self.keys.max_column_id.unwrap_or(self.max_length)
    }

    fn max_row_id(&self) -> usize {
        self.keys.max_row_id.unwrap_or(self.max_length)
    }

    /// `_tokenize`: `[EMPTY]` for a text without letters or digits (or `n/a`, `?`, `nan`), else
    /// WordPiece.
    fn tokenize(&self, text: &str) -> Result<Vec<Piece>> {
        if is_empty_text(text) {
            return Ok(vec![Piece {
                id: self.empty,
                inner: false,
            }]);
        }
        let encoding = self
            .text
            .inner()
            .encode(text, false)
            .map_err(|source| TokenizerError::Encode { source })?;
        Ok(encoding
            .get_ids()
            .iter()
            .zip(encoding.get_tokens())
            .map(|(&id, token)| Piece {
                id,
                inner: token.starts_with("##"),
            })
            .collect())
    }

    /// Tokenizes the header and every cell, and annotates numbers and dates per column.
    pub fn tokenize_table(&self, table: &Table) -> Result<TokenizedTable> {
        let mut cells = Vec::with_capacity(table.rows.len() + 1);
        let strip = self.keys.strip_column_names.unwrap_or(false);
        cells.push(
            table
                .columns
                .iter()
                .map(|c| self.tokenize(if strip { "" } else { c }))
                .collect::<Result<Vec<_>>>()?,
        );
        for row in &table.rows {
            cells.push(
                row.iter()
                    .map(|c| self.tokenize(c))
                    .collect::<Result<Vec<_>>>()?,
            );
        }
        let numeric: Vec<Vec<Option<NumericValue>>> = (0..table.columns.len())
            .map(|c| {
                let values: Vec<Vec<NumericValue>> = table
                    .rows
                    .iter()
                    .map(|row| numeric::numeric_values(&numeric::normalize_for_match(&row[c])))
                    .collect();
                numeric::consolidate(&values)
            })
            .collect();
        let ranks = numeric.iter().map(|c| numeric::column_ranks(c)).collect();
        Ok(TokenizedTable {
            cells,
            num_columns: table.columns.len(),
            num_rows: table.rows.len(),
            numeric,
            ranks,
        })
    }

    /// Encodes one question against a tokenized table (`prepare_for_model`).
    pub fn encode(
        &self,
        table: &TokenizedTable,
        query: &str,
        truncation: Truncation,
    ) -> Result<std::result::Result<TapasEncoding, TableError>> {
        let (query, query_pieces) = self.question(query)?;
        if table.num_columns >= self.max_column_id() {
            return Ok(Err(TableError::TooManyColumns {
                columns: table.num_columns,
                max: self.max_column_id(),
            }));
        }
        let mut num_rows = table.num_rows;
        if num_rows >= self.max_row_id() {
            match truncation {
                Truncation::DropRowsToFit => num_rows = self.max_row_id() - 1,
                Truncation::None => {
                    return Ok(Err(TableError::TooManyRows {
                        rows: num_rows,
                        max: self.max_row_id(),
                    }));
                }
            }
        }
        let num_tokens = match truncation {
            Truncation::None => table.max_cell_tokens(),
            Truncation::DropRowsToFit => {
                let (rows, tokens) = self.fit_rows(table, query_pieces.len(), num_rows);
                num_rows = rows;
                tokens
            }
        };
        let mut input_ids = Vec::with_capacity(self.max_length);
        let mut types: Vec<[u32; TOKEN_TYPES]> = Vec::with_capacity(self.max_length);
        input_ids.push(self.cls);
        input_ids.extend(query_pieces.iter().map(|p| p.id));
        input_ids.push(self.sep);
        types.resize(input_ids.len(), [0; TOKEN_TYPES]);
        let question_values: Vec<NumericValue> =
            numeric::numeric_values(&numeric::normalize_for_match(&query));
        let relations: Vec<Vec<u32>> = table
            .numeric
            .iter()
            .map(|column| numeric::column_relations(&question_values, column))
            .collect();
        table.for_each_value(num_rows, num_tokens, |piece, column, row| {
            input_ids.push(piece.id);
            let mut t = [0u32; TOKEN_TYPES];
            t[0] = 1;
            t[1] = column as u32 + 1;
            t[2] = row as u32;
            if row > 0 {
                let (rank, inverse) = table.ranks[column][row - 1];
                t[4] = rank;
                t[5] = inverse;
                t[6] = relations[column][row - 1];
            }
            types.push(t);
        });
        Ok(Ok(TapasEncoding {
            input_ids,
            token_type_ids: types,
        }))
    }

    /// `_get_question_tokens`: the question and its pieces, or an empty question when its length
    /// is outside `min_question_length`..`max_question_length`.
    fn question(&self, query: &str) -> Result<(String, Vec<Piece>)> {
        let pieces = self.tokenize(query)?;
        let too_long = self
            .keys
            .max_question_length
            .is_some_and(|m| pieces.len() > m);
        let too_short = self
            .keys
            .min_question_length
            .is_some_and(|m| pieces.len() < m);
        if too_long || too_short {
            tracing::warn!(
                tokens = pieces.len(),
                "question skipped: its length is outside the tokenizer's question length limits"
            );
            return Ok((String::new(), Vec::new()));
        }
        Ok((query.to_owned(), pieces))
    }

    /// `_get_truncated_table_rows` with `drop_rows_to_fit`: (rows kept, tokens per cell).
    fn fit_rows(
        &self,
        table: &TokenizedTable,
        query_len: usize,
        mut num_rows: usize,
    ) -> (usize, usize) {
        let budget = self.max_length as i64 - (query_len as i64 + 2);
        let trim = self.keys.cell_trim_length.unwrap_or(-1);
        let mut max_tokens = table.max_cell_tokens();
        if trim >= 0 && max_tokens as i64 > trim {
            max_tokens = trim as usize;
        }
        // Tokens kept per word-start index, over the rows currently kept.
        let mut histogram = vec![0i64; table.max_cell_tokens() + 1];
        for row in 0..=num_rows.min(table.num_rows) {
            table.add_row(row, &mut histogram, 1);
        }
        loop {
            if let Some(tokens) = max_num_tokens(&histogram, budget, max_tokens, trim >= 0) {
                return (num_rows, tokens.max(1));
            }
            // No row left to drop (a table of a header only, a question longer than the
            // budget): transformers' count goes to -1, that is no row.
            if num_rows == 0 {
                return (0, 1);
            }
            table.add_row(num_rows, &mut histogram, -1);
            num_rows -= 1;
            if num_rows < 1 {
                return (num_rows, 1);
            }
        }
    }
}

/// `_get_max_num_tokens`: the most tokens per cell that fit `budget`, given how many tokens
/// start their word at each index (`histogram`; -1 is stored at 0: always kept).
fn max_num_tokens(
    histogram: &[i64],
    budget: i64,
    max_tokens: usize,
    trimmed: bool,
) -> Option<usize> {
    // cost(k) = tokens whose word starts before k.
    let mut cost = 0i64;
    let mut num_tokens = 0;
    for k in 0..=max_tokens {
        num_tokens = k;
        cost += histogram.get(k).copied().unwrap_or(0);
        if cost > budget {
            break;
        }
    }
    if num_tokens < max_tokens && (trimmed || num_tokens == 0) {
        return None;
    }
    Some(num_tokens)
}

impl TokenizedTable {
    /// The longest cell (or header) in word pieces.
    fn max_cell_tokens(&self) -> usize {
        self.cells.iter().flatten().map(Vec::len).max().unwrap_or(0)
    }

    /// Adds `sign` for each token of tokenized row `row` at the index its word starts
    /// (a word that starts before the cell counts at 0).
    fn add_row(&self, row: usize, histogram: &mut [i64], sign: i64) {
        let Some(cells) = self.cells.get(row) else {
            return;
        };
        for cell in cells {
            for t in 0..cell.len() {
                let start = word_start(cell, t).unwrap_or(0);
                histogram[start] += sign;
            }
        }
    }

    /// `_get_table_values`: each kept piece with its column index and row id (0 = header), in
    /// row, column, token order.
    fn for_each_value(
        &self,
        num_rows: usize,
        num_tokens: usize,
        mut f: impl FnMut(Piece, usize, usize),
    ) {
        for (row, cells) in self.cells.iter().enumerate().take(num_rows + 1) {
            for (column, cell) in cells.iter().enumerate().take(self.num_columns) {
                for (t, piece) in cell.iter().enumerate() {
                    if word_start(cell, t).is_some_and(|s| s >= num_tokens) {
                        continue;
                    }
                    f(*piece, column, row);
                }
            }
        }
    }
}

/// The index of the first piece of the word piece `t` belongs to; `None` when the cell starts
/// inside a word.
fn word_start(cell: &[Piece], t: usize) -> Option<usize> {
    (0..=t).rev().find(|&i| !cell[i].inner)
}

/// `format_text(text) == EMPTY_TEXT`: no letters or digits, or `n/a`, `?`, `nan`.
pub fn is_empty_text(text: &str) -> bool {
    let t = text.to_lowercase();
    let t = t.trim();
    if matches!(t, "n/a" | "?" | "nan") {
        return true;
    }
    !t.chars().any(char::is_alphanumeric)
}

#[cfg(test)]
mod tests;
