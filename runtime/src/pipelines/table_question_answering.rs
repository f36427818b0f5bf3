//! table-question-answering (contract §4): answers questions about a table with TAPAS. A port
//! of transformers 4.51.3 `pipelines/table_question_answering.py` and
//! `TapasTokenizer.convert_logits_to_predictions`
//! (<https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/pipelines/table_question_answering.py>):
//! the cells whose mean token probability is above 0.5 are the answer, the aggregation head
//! names the operator, and with `sequential` each question sees the previous answer as
//! `prev_labels`.
//!
//! Input: `{"query": str | [str], "table": {column: [cells]}}` (alias `question`), or a list of
//! such objects. Cells are strings or numbers (a number is read as its decimal text, and
//! `cells` answers with that text). Not here: tokenization (`tokenizer::tapas`) and the model
//! (`models::tapas`).
//!
//! Questions go to the inference core as rows whose `type_ids` are the segment ids and whose
//! `extra_type_ids` are TAPAS's six other token types. Independent questions (every question
//! of every item) go as one request, which the core batches; `sequential` questions go one
//! request at a time, in order, each built from the previous answer.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::answer::one_alone;
use super::params::check_names;
use super::{Envelope, Pipeline, PipelineError, Result, Task, json_kind};
use crate::infer::{Infer, Outputs, Row};
use crate::models::ModelConfig;
use crate::models::tapas::{RowOutput, TOKEN_TYPES};
use crate::tokenizer::tapas::{Table, TapasEncoding, TapasTokenizer, Truncation};

/// Parameter names this task accepts (contract §4).
pub const ACCEPTED: &[&str] = &["sequential", "truncation", "padding"];

/// The probability above which a cell is part of the answer.
const CELL_THRESHOLD: f64 = 0.5;

/// The parameters of table-question-answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Answer the questions one after the other, each seeing the previous answer (false).
    pub sequential: bool,
    /// `drop_rows_to_fit` (default) or `do_not_truncate`.
    pub truncation: Truncation,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            sequential: false,
            truncation: Truncation::DropRowsToFit,
        }
    }
}

impl Params {
    /// Parses `parameters`: unknown names are a 400 naming them. `padding` is checked and has
    /// no effect on answers (padding is masked).
    pub fn parse(params: &Map<String, Value>) -> Result<Self> {
        check_names(&Task::TableQuestionAnswering, ACCEPTED, params)?;
        let mut out = Self::default();
        match params.get("sequential") {
            None | Some(Value::Null) => {}
            Some(Value::Bool(b)) => out.sequential = *b,
            Some(other) => {
                return Err(PipelineError::validation(format!(
                    "`sequential` must be a boolean, got {}",
                    json_kind(other)
                )));
            }
        }
        match params.get("truncation") {
            None | Some(Value::Null) => {}
            Some(Value::Bool(true)) => out.truncation = Truncation::DropRowsToFit,
            Some(Value::Bool(false)) => out.truncation = Truncation::None,
            Some(Value::String(s)) if s == "drop_rows_to_fit" => {
                out.truncation = Truncation::DropRowsToFit;
            }
            Some(Value::String(s)) if s == "do_not_truncate" => out.truncation = Truncation::None,
            Some(other) => {
                return Err(PipelineError::validation(format!(
                    "`truncation` must be true, false, \"drop_rows_to_fit\" or \"do_not_truncate\", got {other}"
                )));
            }
        }
        match params.get("padding") {
            None | Some(Value::Null | Value::Bool(_)) => {}
            Some(Value::String(s))
                if matches!(s.as_str(), "longest" | "max_length" | "do_not_pad") => {}
            Some(other) => {
                return Err(PipelineError::validation(format!(
                    "`padding` must be true, false, \"longest\", \"max_length\" or \"do_not_pad\", got {other}"
                )));
            }
        }
        Ok(out)
    }
}

/// One `{query, table}` item of a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// The table, cells as text.
    pub table: Table,
    /// The questions.
    pub queries: Vec<String>,
}

/// The answer to one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The cells joined by ", ", after `"AGG > "` when an aggregator applies.
    pub answer: String,
    /// `[row, column]` of each answer cell, sorted.
    pub coordinates: Vec<[usize; 2]>,
    /// The answer cells' texts.
    pub cells: Vec<String>,
    /// The aggregation head's choice, when the model has one.
    pub aggregator: Option<String>,
}

impl Answer {
    /// `{"answer", "coordinates", "cells", "aggregator"}`; no `aggregator` without the head.
    pub fn to_json(&self) -> Value {
        let mut map = Map::new();
        map.insert("answer".into(), Value::String(self.answer.clone()));
        map.insert(
            "coordinates".into(),
            Value::Array(
                self.coordinates
                    .iter()
                    .map(|&[r, c]| Value::Array(vec![r.into(), c.into()]))
                    .collect(),
            ),
        );
        map.insert(
            "cells".into(),
            Value::Array(self.cells.iter().cloned().map(Value::String).collect()),
        );
        if let Some(a) = &self.aggregator {
            map.insert("aggregator".into(), Value::String(a.clone()));
        }
        Value::Object(map)
    }
}

/// Reads the request inputs: one `{query, table}` object or a list of them.
pub fn parse_inputs(inputs: &Value) -> Result<Vec<Item>> {
    match inputs {
        Value::Object(map) => Ok(vec![parse_item(map)?]),
        Value::Array(list) if !list.is_empty() => {
            let items = list
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::Object(map) => parse_item(map),
                    other => Err(PipelineError::validation(format!(
                        "`inputs[{i}]` must be an object with `query` and `table`, got {}",
                        json_kind(other)
                    ))),
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(items)
        }
        other => Err(PipelineError::validation(format!(
            "`inputs` must be an object {{\"query\": ..., \"table\": {{column: [cells]}}}} or a non-empty list of them, got {}",
            json_kind(other)
        ))),
    }
}

fn parse_item(map: &Map<String, Value>) -> Result<Item> {
    let query = map
        .get("query")
        .filter(|v| !v.is_null())
        .or_else(|| map.get("question").filter(|v| !v.is_null()))
        .ok_or_else(|| {
            PipelineError::validation(
                "`query` is missing: send {\"query\": \"...\", \"table\": {column: [cells]}}",
            )
        })?;
    let queries = match query {
        Value::String(s) => vec![s.clone()],
        Value::Array(list) if !list.is_empty() => list
            .iter()
            .map(|q| match q {
                Value::String(s) => Ok(s.clone()),
                other => Err(PipelineError::validation(format!(
                    "`query` must be a string or a list of strings, found {} in the list",
                    json_kind(other)
                ))),
            })
            .collect::<Result<Vec<_>>>()?,
        other => {
            return Err(PipelineError::validation(format!(
                "`query` must be a string or a non-empty list of strings, got {}",
                json_kind(other)
            )));
        }
    };
    if queries.iter().any(String::is_empty) {
        return Err(PipelineError::validation("`query` is empty"));
    }
    let table = match map.get("table") {
        Some(Value::Object(columns)) => parse_table(columns)?,
        None | Some(Value::Null) => {
            return Err(PipelineError::validation(
                "`table` is missing: send {\"query\": \"...\", \"table\": {column: [cells]}}",
            ));
        }
        Some(other) => {
            return Err(PipelineError::validation(format!(
                "`table` must be an object {{column: [cells]}}, got {}",
                json_kind(other)
            )));
        }
    };
    Ok(Item { table, queries })
}

/// `{column: [cells]}` → a table; columns must be lists of equal length of strings or numbers.
pub fn parse_table(columns: &Map<String, Value>) -> Result<Table> {
    let mut names = Vec::with_capacity(columns.len());
    let mut data: Vec<Vec<String>> = Vec::with_capacity(columns.len());
    for (name, cells) in columns {
        let Value::Array(cells) = cells else {
            return Err(PipelineError::validation(format!(
                "`table` column `{name}` must be a list of cells, got {}",
                json_kind(cells)
            )));
        };
        let texts = cells
            .iter()
            .enumerate()
            .map(|(row, cell)| match cell {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(number_text(n)),
                other => Err(PipelineError::validation(format!(
                    "`table` column `{name}` row {row}: a cell must be a string or a number, got {}",
                    json_kind(other)
                ))),
            })
            .collect::<Result<Vec<_>>>()?;
        if let (Some(first), Some(first_name)) = (data.first(), names.first())
            && first.len() != texts.len()
        {
            return Err(PipelineError::validation(format!(
                "`table` columns must all have the same length: `{first_name}` has {} cells, `{name}` has {}",
                first.len(),
                texts.len()
            )));
        }
        names.push(name.clone());
        data.push(texts);
    }
    let rows = data.first().map_or(0, Vec::len);
    if names.is_empty() || rows == 0 {
        return Err(PipelineError::validation("`table` is empty"));
    }
    let rows = (0..rows)
        .map(|r| data.iter().map(|column| column[r].clone()).collect())
        .collect();
    Ok(Table {
        columns: names,
        rows,
    })
}

/// A JSON number as Python's `str()` writes the value pandas holds: integers as is, floats
/// with a fraction (`2.0`).
fn number_text(n: &serde_json::Number) -> String {
    if n.is_f64() {
        let f = n.as_f64().unwrap_or(0.0);
        if f.fract() == 0.0 && f.abs() < 1e16 {
            return format!("{f:.1}");
        }
        return f.to_string();
    }
    n.to_string()
}

/// The core's row for an encoding: token type 0 (segment) as `type_ids`, the other six as
/// `extra_type_ids`.
pub fn row_of(encoding: &TapasEncoding) -> Row {
    let channel = |k: usize| encoding.token_type_ids.iter().map(|t| t[k]).collect();
    Row {
        extra_type_ids: (1..TOKEN_TYPES).map(channel).collect(),
        ..Row::new(encoding.input_ids.clone(), channel(0))
    }
}

/// `convert_logits_to_predictions` for one question: the mean probability of each table cell
/// (data rows only), keyed by (column, row), 0-based.
pub fn cell_probabilities(
    logits: &[f32],
    types: &[[u32; TOKEN_TYPES]],
) -> HashMap<(usize, usize), f64> {
    let mut sums: HashMap<(usize, usize), (f64, usize)> = HashMap::new();
    for (&logit, t) in logits.iter().zip(types) {
        if t[0] != 1 || t[1] == 0 || t[2] == 0 {
            continue;
        }
        // numpy: logits clipped at -88.7, then 1 / (1 + exp(-x)) in float32.
        let x = logit.max(-88.7);
        let p = 1.0f32 / (1.0 + (-x).exp());
        let e = sums
            .entry((t[1] as usize - 1, t[2] as usize - 1))
            .or_insert((0.0, 0));
        e.0 += f64::from(p);
        e.1 += 1;
    }
    sums.into_iter()
        .map(|(k, (s, n))| (k, s / n as f64))
        .collect()
}

/// The answer cells (row, column), sorted, of one question.
pub fn answer_coordinates(logits: &[f32], types: &[[u32; TOKEN_TYPES]]) -> Vec<[usize; 2]> {
    let mut coords: Vec<[usize; 2]> = cell_probabilities(logits, types)
        .into_iter()
        .filter(|(_, p)| *p > CELL_THRESHOLD)
        .map(|((column, row), _)| [row, column])
        .collect();
    coords.sort_unstable();
    coords
}

/// The aggregation labels of `config.json`, by index, and the index meaning "no aggregation".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Aggregation {
    /// `aggregation_labels`, by index; empty when the model does not aggregate.
    pub labels: Vec<String>,
    /// `no_aggregation_label_index`.
    pub none_index: Option<usize>,
}

impl Aggregation {
    /// Reads `aggregation_labels`, `num_aggregation_labels` and `no_aggregation_label_index`.
    pub fn from_config(config: &ModelConfig) -> Self {
        let raw = &config.raw;
        let count = raw["num_aggregation_labels"].as_u64().unwrap_or(0) as usize;
        let mut labels = Vec::new();
        if let Some(map) = raw["aggregation_labels"].as_object()
            && count > 0
        {
            let mut pairs: Vec<(usize, String)> = map
                .iter()
                .filter_map(|(k, v)| Some((k.trim().parse().ok()?, v.as_str()?.to_owned())))
                .collect();
            pairs.sort();
            let len = pairs.iter().map(|(i, _)| i + 1).max().unwrap_or(0);
            labels = vec![String::new(); len];
            for (i, label) in pairs {
                labels[i] = label;
            }
        }
        Self {
            labels,
            none_index: raw["no_aggregation_label_index"]
                .as_u64()
                .map(|i| i as usize),
        }
    }

    /// The aggregator of the argmax of `logits` (first of equal maxima), and whether it applies
    /// (is not the "no aggregation" index).
    fn choose(&self, logits: &[f32]) -> Option<(String, bool)> {
        if self.labels.is_empty() {
            return None;
        }
        let best = logits
            .iter()
            .enumerate()
            .fold(
                (0, f32::NEG_INFINITY),
                |b, (i, &v)| if v > b.1 { (i, v) } else { b },
            )
            .0;
        let label = self.labels.get(best).cloned().unwrap_or_default();
        Some((label, self.none_index != Some(best)))
    }
}

/// Builds the answer of one question from its logits.
pub fn answer(
    table: &Table,
    logits: &[f32],
    types: &[[u32; TOKEN_TYPES]],
    aggregation_logits: Option<&[f32]>,
    aggregation: &Aggregation,
) -> Answer {
    let coordinates = answer_coordinates(logits, types);
    let cells: Vec<String> = coordinates
        .iter()
        .filter_map(|&[row, column]| table.rows.get(row)?.get(column).cloned())
        .collect();
    let chosen = aggregation_logits.and_then(|l| aggregation.choose(l));
    let (aggregator, prefix) = match chosen {
        // transformers includes the key only for a non-empty label.
        Some((label, applies)) if !label.is_empty() => {
            let prefix = if applies {
                format!("{label} > ")
            } else {
                String::new()
            };
            (Some(label), prefix)
        }
        _ => (None, String::new()),
    };
    Answer {
        answer: format!("{prefix}{}", cells.join(", ")),
        coordinates,
        cells,
        aggregator,
    }
}

/// A server fault: the core answered fewer rows than the pipeline sent.
fn missing_output(what: &str) -> PipelineError {
    PipelineError::Output(candle_core::Error::Msg(what.to_owned()))
}

/// The table-question-answering pipeline.
pub struct TableQuestionAnswering {
    tokenizer: Arc<TapasTokenizer>,
    infer: Infer,
    aggregation: Aggregation,
    max_positions: usize,
}

impl TableQuestionAnswering {
    /// A pipeline over a TAPAS tokenizer and the inference core that owns the model.
    pub fn new(tokenizer: TapasTokenizer, infer: Infer, config: &ModelConfig) -> Self {
        Self {
            tokenizer: Arc::new(tokenizer),
            infer,
            aggregation: Aggregation::from_config(config),
            max_positions: config.max_position_embeddings.unwrap_or(usize::MAX),
        }
    }

    /// Runs rows through the model: one output per row, in order.
    fn forward(&self, rows: Vec<Row>) -> Result<Vec<RowOutput>> {
        self.infer
            .run(rows, Outputs::All)?
            .iter()
            .map(|t| RowOutput::from_tensor(t).map_err(PipelineError::Output))
            .collect()
    }

    /// The encodings of one item's questions (validation errors before any model work).
    fn encode_item(&self, item: &Item, params: Params) -> Result<Vec<TapasEncoding>> {
        let tokenizer_failed = |e: crate::tokenizer::TokenizerError| PipelineError::Tokenizer {
            source: Box::new(e),
        };
        let table = self
            .tokenizer
            .tokenize_table(&item.table)
            .map_err(tokenizer_failed)?;
        let mut encodings = Vec::with_capacity(item.queries.len());
        for query in &item.queries {
            let encoding = self
                .tokenizer
                .encode(&table, query, params.truncation)
                .map_err(tokenizer_failed)?
                .map_err(|e| PipelineError::validation(e.to_string()))?;
            if encoding.len() > self.max_positions {
                return Err(PipelineError::validation(format!(
                    "the question and table take {} tokens, more than this model's maximum of {}; {}",
                    encoding.len(),
                    self.max_positions,
                    if params.truncation == Truncation::None {
                        "set `truncation` to true to drop rows"
                    } else {
                        "shorten the question or the column names"
                    }
                )));
            }
            encodings.push(encoding);
        }
        Ok(encodings)
    }

    /// `sequential_inference`: the questions of one item one after the other, each seeing the
    /// cells chosen for the previous one as its previous-label token type.
    fn answer_sequentially(
        &self,
        item: &Item,
        mut encodings: Vec<TapasEncoding>,
    ) -> Result<Vec<Answer>> {
        let mut answers = Vec::with_capacity(encodings.len());
        let mut previous: Option<HashMap<(usize, usize), f64>> = None;
        for encoding in &mut encodings {
            if let Some(prev) = &previous {
                for t in &mut encoding.token_type_ids {
                    if t[0] == 1 && t[1] > 0 && t[2] > 0 {
                        let key = (t[1] as usize - 1, t[2] as usize - 1);
                        t[3] = u32::from(prev.get(&key).is_some_and(|p| *p > CELL_THRESHOLD));
                    }
                }
            }
            let out = self
                .forward(vec![row_of(encoding)])?
                .pop()
                .ok_or_else(|| missing_output("the model answered no row"))?;
            previous = Some(cell_probabilities(&out.logits, &encoding.token_type_ids));
            answers.push(answer(
                &item.table,
                &out.logits,
                &encoding.token_type_ids,
                out.aggregation.as_deref(),
                &self.aggregation,
            ));
        }
        Ok(answers)
    }

    /// Answers every item: independent questions in one request to the core, sequential ones
    /// one request per question.
    fn answer_items(&self, items: &[Item], params: Params) -> Result<Vec<Vec<Answer>>> {
        let encoded = items
            .iter()
            .map(|item| self.encode_item(item, params))
            .collect::<Result<Vec<_>>>()?;
        if params.sequential {
            return items
                .iter()
                .zip(encoded)
                .map(|(item, encodings)| self.answer_sequentially(item, encodings))
                .collect();
        }
        let rows = encoded.iter().flatten().map(row_of).collect();
        let mut outputs = self.forward(rows)?.into_iter();
        let mut answers = Vec::with_capacity(items.len());
        for (item, encodings) in items.iter().zip(&encoded) {
            let mut item_answers = Vec::with_capacity(encodings.len());
            for encoding in encodings {
                let out = outputs
                    .next()
                    .ok_or_else(|| missing_output("the model answered fewer rows than asked"))?;
                item_answers.push(answer(
                    &item.table,
                    &out.logits,
                    &encoding.token_type_ids,
                    out.aggregation.as_deref(),
                    &self.aggregation,
                ));
            }
            answers.push(item_answers);
        }
        Ok(answers)
    }
}

impl Pipeline for TableQuestionAnswering {
    fn task(&self) -> Task {
        Task::TableQuestionAnswering
    }

    fn run(&self, request: Envelope) -> Result<Value> {
        let params = Params::parse(&request.parameters)?;
        let items = parse_inputs(&request.inputs)?;
        let mut results = Vec::with_capacity(items.len());
        for item_answers in self.answer_items(&items, params)? {
            // transformers: one answer is an object, several a list; so is one result.
            results.push(one_alone(
                item_answers.iter().map(Answer::to_json).collect(),
            ));
        }
        Ok(one_alone(results))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn params(v: &Value) -> Result<Params> {
        Params::parse(v.as_object().expect("an object"))
    }

    #[test]
    fn parameters_take_transformers_values_and_refuse_others() {
        assert_eq!(params(&json!({})).unwrap(), Params::default());
        let p = params(
            &json!({"sequential": true, "truncation": "do_not_truncate", "padding": "longest"}),
        )
        .unwrap();
        assert!(p.sequential);
        assert_eq!(p.truncation, Truncation::None);
        assert_eq!(
            params(&json!({"truncation": true})).unwrap().truncation,
            Truncation::DropRowsToFit
        );
        for bad in [
            json!({"sequential": 1}),
            json!({"truncation": "longest_first"}),
            json!({"padding": 3}),
            json!({"top_k": 1}),
        ] {
            assert!(params(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tables_are_read_column_by_column_into_rows() {
        let table = parse_table(
            json!({"a": ["x", 1, 2.5, 3.0], "b": ["p", "q", "r", "s"]})
                .as_object()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(table.columns, ["a", "b"]);
        // Numbers as Python's str() of the value pandas holds.
        assert_eq!(table.rows[1], ["1", "q"]);
        assert_eq!(table.rows[2], ["2.5", "r"]);
        assert_eq!(table.rows[3], ["3.0", "s"]);
        let uneven = parse_table(json!({"a": ["x"], "b": []}).as_object().unwrap()).unwrap_err();
        assert!(uneven.to_string().contains("same length"), "{uneven}");
        let nested = parse_table(json!({"a": [["x"]]}).as_object().unwrap()).unwrap_err();
        assert!(
            nested.to_string().contains("string or a number"),
            "{nested}"
        );
    }

    #[test]
    fn a_query_is_required_and_question_is_its_alias() {
        let table = json!({"a": ["x"]});
        let item = &parse_inputs(&json!({"question": "q", "table": table})).unwrap()[0];
        assert_eq!(item.queries, ["q"]);
        let missing = parse_inputs(&json!({"table": table})).unwrap_err();
        assert!(
            missing.to_string().contains("`query` is missing"),
            "{missing}"
        );
        let many = parse_inputs(&json!([{"query": ["a", "b"], "table": table}])).unwrap();
        assert_eq!(many[0].queries, ["a", "b"]);
    }

    /// Token types of `[CLS] q [SEP] header cell(0,0) cell(1,0)`: segment, column, row.
    fn types() -> Vec<[u32; TOKEN_TYPES]> {
        [
            (0, 0, 0),
            (0, 0, 0),
            (0, 0, 0),
            (1, 1, 0),
            (1, 1, 1),
            (1, 1, 2),
        ]
        .iter()
        .map(|&(s, c, r)| {
            let mut t = [0; TOKEN_TYPES];
            t[0] = s;
            t[1] = c;
            t[2] = r;
            t
        })
        .collect()
    }

    #[test]
    fn cells_above_one_half_answer_with_the_aggregator_prefix() {
        let table = Table {
            columns: vec!["n".into()],
            rows: vec![vec!["7".into()], vec!["9".into()]],
        };
        let aggregation = Aggregation {
            labels: ["NONE", "SUM", "AVERAGE", "COUNT"]
                .map(String::from)
                .to_vec(),
            none_index: Some(0),
        };
        // Header and question logits never count; the second cell is below 0.5.
        let logits = [9.0, 9.0, 9.0, 9.0, 2.0, -2.0];
        let sum = answer(
            &table,
            &logits,
            &types(),
            Some(&[0.0, 3.0, 1.0, 1.0]),
            &aggregation,
        );
        assert_eq!(sum.coordinates, vec![[0, 0]]);
        assert_eq!(sum.answer, "SUM > 7");
        assert_eq!(sum.aggregator.as_deref(), Some("SUM"));
        let none = answer(
            &table,
            &logits,
            &types(),
            Some(&[3.0, 0.0, 0.0, 0.0]),
            &aggregation,
        );
        assert_eq!(none.answer, "7");
        assert_eq!(none.aggregator.as_deref(), Some("NONE"));
        let headless = answer(&table, &logits, &types(), None, &Aggregation::default());
        assert_eq!(
            headless.to_json(),
            json!({"answer": "7", "coordinates": [[0, 0]], "cells": ["7"]})
        );
    }

    #[test]
    fn rows_carry_the_segment_and_six_extra_channels() {
        let encoding = TapasEncoding {
            input_ids: vec![1, 2, 3, 4, 5, 6],
            token_type_ids: types(),
        };
        let row = row_of(&encoding);
        assert_eq!(row.type_ids, [0, 0, 0, 1, 1, 1]);
        assert_eq!(row.extra_type_ids.len(), TOKEN_TYPES - 1);
        assert_eq!(row.extra_type_ids[0], [0, 0, 0, 1, 1, 1]);
        assert_eq!(row.extra_type_ids[1], [0, 0, 0, 0, 1, 2]);
    }
}
