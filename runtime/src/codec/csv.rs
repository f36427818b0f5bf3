//! CSV bodies, as the toolkit reads and writes them (`csv.DictReader`, `csv.DictWriter`).

use serde_json::{Map, Value};

use super::CodecError;

/// A header with an `inputs` column gives `{"inputs": [cell, ...]}`; other headers (e.g.
/// `question`,`context`) give `{"inputs": [{column: cell, ...}, ...]}`.
pub(super) fn decode(body: &[u8]) -> Result<Value, CodecError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(body);
    let header: Vec<String> = reader
        .headers()
        .map_err(|source| CodecError::Csv { source })?
        .iter()
        .map(str::to_owned)
        .collect();
    let has = |name: &str| header.iter().any(|h| h == name);
    let known = has("inputs") || (has("question") && has("context")) || has("text");
    if !known {
        return Err(CodecError::CsvHeader { header });
    }
    let inputs_col = header.iter().position(|h| h == "inputs");
    let mut inputs = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|source| CodecError::Csv { source })?;
        let value = match inputs_col {
            Some(i) => Value::String(record.get(i).unwrap_or_default().to_owned()),
            None => Value::Object(
                header
                    .iter()
                    .zip(record.iter())
                    .map(|(k, v)| (k.clone(), Value::String(v.to_owned())))
                    .collect::<Map<_, _>>(),
            ),
        };
        inputs.push(value);
    }
    if inputs.is_empty() {
        return Err(CodecError::Empty);
    }
    Ok(serde_json::json!({ "inputs": inputs }))
}

/// Writes objects as a header row (the first object's keys) and one row each.
pub(super) fn encode(rows: &[&Value]) -> Result<Vec<u8>, CodecError> {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    let mut columns: Option<Vec<String>> = None;
    for row in rows {
        let Value::Object(map) = row else {
            return Err(CodecError::NotCsv {
                reason: "the answer is not a flat list of objects",
            });
        };
        let cols = match &columns {
            Some(cols) if columns_changed(cols, map) => {
                return Err(CodecError::NotCsv {
                    reason: "the objects do not share the same keys",
                });
            }
            Some(cols) => cols,
            None => {
                let cols: Vec<String> = map.keys().cloned().collect();
                writer
                    .write_record(&cols)
                    .map_err(|source| CodecError::Csv { source })?;
                columns.insert(cols)
            }
        };
        let cells = cols
            .iter()
            .map(|c| cell(map.get(c).unwrap_or(&Value::Null)))
            .collect::<Result<Vec<_>, _>>()?;
        writer
            .write_record(&cells)
            .map_err(|source| CodecError::Csv { source })?;
    }
    writer.into_inner().map_err(|_| CodecError::NotCsv {
        reason: "the CSV writer failed",
    })
}

fn columns_changed(cols: &[String], map: &Map<String, Value>) -> bool {
    map.len() != cols.len() || !cols.iter().all(|c| map.contains_key(c))
}

fn cell(value: &Value) -> Result<String, CodecError> {
    match value {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Bool(b) => Ok(if *b { "True".into() } else { "False".into() }),
        Value::Number(n) => Ok(n.to_string()),
        Value::Array(_) | Value::Object(_) => Err(CodecError::NotCsv {
            reason: "a cell holds a list or an object",
        }),
    }
}
