//! Records (contract §8): cutting an input file into records, filtering them, building request
//! bodies, and cutting an answer back into one output per record.
//!
//! JSON records are JSON values; CSV records are rows, seen by the filters as lists of cells. A
//! CSV file starts with a header row (the toolkit's CSV decoding needs its `inputs` column),
//! which is sent at the top of every request.

use std::io::BufRead;

use serde_json::Value;

use super::filter::{self, JsonPath};
use crate::codec::essence;
use crate::config::JoinSource;

/// How records and answers are framed, from a media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/json`: one JSON value.
    Json,
    /// `application/jsonlines`: one JSON value per line.
    JsonLines,
    /// `text/csv`: a header row, then one row per record.
    Csv,
    /// Anything else (user code decides): lines of bytes.
    Other,
}

impl Format {
    /// The framing of a media type.
    pub fn of(media_type: &str) -> Self {
        match essence(media_type).as_str() {
            "application/json" => Self::Json,
            "application/jsonlines" | "application/x-jsonlines" | "application/jsonl" => {
                Self::JsonLines
            }
            "text/csv" => Self::Csv,
            _ => Self::Other,
        }
    }

    fn is_json(self) -> bool {
        matches!(self, Self::Json | Self::JsonLines)
    }
}

/// One record of an input file.
#[derive(Debug, Clone)]
pub struct Record {
    /// 1-based line number in the (decompressed) file.
    pub line: usize,
    /// The record as read.
    pub raw: Vec<u8>,
}

/// A record that cannot be processed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    /// 1-based line number.
    pub line: usize,
    /// Status an endpoint would answer (400 for bad input, 500 for a fault).
    pub code: u16,
    /// The `error_type` an endpoint would answer.
    pub error_type: String,
    /// Why.
    pub message: String,
}

impl RecordError {
    /// A record error of the caller's making (400, `validation`).
    pub fn validation(line: usize, message: impl Into<String>) -> Self {
        Self {
            line,
            code: 400,
            error_type: "validation".to_owned(),
            message: message.into(),
        }
    }

    /// The placeholder written for this record with `--on-error placeholder`.
    pub fn placeholder(&self) -> Vec<u8> {
        let value = serde_json::json!({
            "error": {
                "line": self.line,
                "code": self.code,
                "error_type": self.error_type,
                "message": self.message,
            }
        });
        serde_json::to_vec(&value).unwrap_or_default()
    }
}

/// Reads the next non-empty line (without its `\n` or `\r\n`); `None` at the end.
pub fn read_line(reader: &mut dyn BufRead, line_no: &mut usize) -> std::io::Result<Option<Record>> {
    loop {
        let mut buf = Vec::new();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            return Ok(None);
        }
        *line_no += 1;
        while matches!(buf.last(), Some(b'\n' | b'\r')) {
            buf.pop();
        }
        if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        return Ok(Some(Record {
            line: *line_no,
            raw: buf,
        }));
    }
}

/// Data processing of one job: the input filter, the join and the output filter.
#[derive(Debug, Clone)]
pub struct Processing {
    /// Framing of the records (`--content-type`).
    pub input: Format,
    /// Framing of the answers (`--accept`).
    pub output: Format,
    /// `--input-filter`, unless `$`.
    pub input_filter: Option<JsonPath>,
    /// `--output-filter`, unless `$`.
    pub output_filter: Option<JsonPath>,
    /// `--join-source`.
    pub join: JoinSource,
}

impl Processing {
    /// Whether outputs are rewritten (joined or filtered) rather than copied.
    pub fn rewrites_output(&self) -> bool {
        self.join == JoinSource::Input || self.output_filter.is_some()
    }

    /// A record as a JSON value: parsed JSON, or a CSV row as a list of cells.
    fn parse(&self, format: Format, line: usize, raw: &[u8]) -> Result<Value, RecordError> {
        match format {
            Format::Csv => parse_csv_row(raw)
                .ok_or_else(|| RecordError::validation(line, "the record is not a CSV row")),
            Format::Json | Format::JsonLines => serde_json::from_slice(raw).map_err(|e| {
                RecordError::validation(line, format!("the record is not valid JSON: {e}"))
            }),
            Format::Other => Ok(Value::String(String::from_utf8_lossy(raw).into_owned())),
        }
    }

    fn render(&self, format: Format, line: usize, value: &Value) -> Result<Vec<u8>, RecordError> {
        match format {
            Format::Csv => write_csv_row(value).ok_or_else(|| {
                RecordError::validation(line, "the filtered record is not a flat list of cells")
            }),
            Format::Other => match value {
                Value::String(s) => Ok(s.clone().into_bytes()),
                other => serde_json::to_vec(other)
                    .map_err(|e| RecordError::validation(line, e.to_string())),
            },
            Format::Json | Format::JsonLines => {
                serde_json::to_vec(value).map_err(|e| RecordError::validation(line, e.to_string()))
            }
        }
    }

    /// The bytes sent for a record (or a CSV header): the input filter applied.
    pub fn filter_input(&self, line: usize, raw: &[u8]) -> Result<Vec<u8>, RecordError> {
        let Some(path) = &self.input_filter else {
            return Ok(raw.to_vec());
        };
        let value = self.parse(self.input, line, raw)?;
        let selected = path
            .apply(&value)
            .map_err(|e| RecordError::validation(line, e.to_string()))?;
        let format = if self.input == Format::Csv {
            Format::Csv
        } else {
            Format::Json
        };
        self.render(format, line, &selected)
    }

    /// The bytes written for a record: its output, joined with the input and filtered.
    pub fn finish_output(&self, record: &Record, output: Vec<u8>) -> Result<Vec<u8>, RecordError> {
        if !self.rewrites_output() {
            return Ok(output);
        }
        let line = record.line;
        let out_format = if self.output.is_json() {
            Format::Json
        } else {
            self.output
        };
        let out_value = self.parse(out_format, line, &output)?;
        let value = match self.join {
            JoinSource::Input => {
                let input = self.parse(self.input, line, &record.raw)?;
                if self.output == Format::Csv && self.input == Format::Csv {
                    filter::join_csv(input, out_value)
                } else {
                    filter::join_json(input, out_value)
                }
            }
            JoinSource::None => out_value,
        };
        let value = match &self.output_filter {
            Some(path) => path
                .apply(&value)
                .map_err(|e| RecordError::validation(line, e.to_string()))?,
            None => value,
        };
        self.render(out_format, line, &value)
    }
}

/// One CSV row as a list of string cells.
pub fn parse_csv_row(raw: &[u8]) -> Option<Value> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(raw);
    let record = reader.records().next()?.ok()?;
    Some(Value::Array(
        record
            .iter()
            .map(|cell| Value::String(cell.to_owned()))
            .collect(),
    ))
}

/// A list of scalars as one CSV row (no line end); `None` for nested values.
pub fn write_csv_row(value: &Value) -> Option<Vec<u8>> {
    let cells: Vec<String> = match value {
        Value::Array(items) => items.iter().map(csv_cell).collect::<Option<_>>()?,
        other => vec![csv_cell(other)?],
    };
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    writer.write_record(&cells).ok()?;
    let mut bytes = writer.into_inner().ok()?;
    bytes.pop();
    Some(bytes)
}

fn csv_cell(value: &Value) -> Option<String> {
    match value {
        Value::Null => Some(String::new()),
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(if *b { "True".into() } else { "False".into() }),
        Value::Number(n) => Some(n.to_string()),
        Value::Array(_) | Value::Object(_) => None,
    }
}

/// The body of one request: the CSV header (if any), then the records, one per line.
pub fn request_body(header: Option<&[u8]>, records: &[Vec<u8>]) -> Vec<u8> {
    let mut body = Vec::new();
    if let Some(header) = header {
        body.extend_from_slice(header);
        body.push(b'\n');
    }
    for record in records {
        body.extend_from_slice(record);
        body.push(b'\n');
    }
    body
}

/// An answer cut into one output per record, and the CSV header row it started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// One output per record, without line ends.
    pub outputs: Vec<Vec<u8>>,
    /// The header row of a CSV answer.
    pub header: Option<Vec<u8>>,
}

/// Cuts an answer of `content_type` into `n` outputs; `None` when it does not have one per
/// record (then the records are sent one by one).
pub fn split_answer(body: &[u8], content_type: &str, n: usize) -> Option<Split> {
    let whole = || Split {
        outputs: vec![trim_end(body).to_vec()],
        header: None,
    };
    match Format::of(content_type) {
        Format::JsonLines | Format::Other => {
            let lines: Vec<Vec<u8>> = body
                .split(|&b| b == b'\n')
                .map(|l| trim_end(l).to_vec())
                .filter(|l| !l.is_empty())
                .collect();
            if lines.len() == n {
                Some(Split {
                    outputs: lines,
                    header: None,
                })
            } else {
                (n == 1).then(whole)
            }
        }
        Format::Json => match serde_json::from_slice::<Value>(body) {
            Ok(Value::Array(items)) if items.len() == n => Some(Split {
                outputs: items
                    .iter()
                    .map(|v| serde_json::to_vec(v).unwrap_or_default())
                    .collect(),
                header: None,
            }),
            _ => (n == 1).then(whole),
        },
        Format::Csv => {
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_reader(body);
            let mut rows = Vec::new();
            for record in reader.records() {
                let cells = record.ok()?;
                let value =
                    Value::Array(cells.iter().map(|c| Value::String(c.to_owned())).collect());
                rows.push(write_csv_row(&value)?);
            }
            if rows.is_empty() {
                return None;
            }
            let header = rows.remove(0);
            if rows.len() == n {
                Some(Split {
                    outputs: rows,
                    header: Some(header),
                })
            } else {
                None
            }
        }
    }
}

fn trim_end(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .rposition(|b| !matches!(b, b'\n' | b'\r'))
        .map_or(0, |i| i + 1);
    &bytes[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lines_skip_blanks_and_keep_numbers() {
        let mut input: &[u8] = b"{\"a\":1}\r\n\n{\"a\":2}\n  \n{\"a\":3}";
        let mut n = 0;
        let mut got = Vec::new();
        while let Some(r) = read_line(&mut input, &mut n).unwrap() {
            got.push((r.line, String::from_utf8(r.raw).unwrap()));
        }
        assert_eq!(
            got,
            [
                (1, "{\"a\":1}".to_owned()),
                (3, "{\"a\":2}".to_owned()),
                (5, "{\"a\":3}".to_owned())
            ]
        );
    }

    #[test]
    fn answers_split_per_record() {
        let s = split_answer(b"[1]\n[2]\n", "application/jsonlines", 2).unwrap();
        assert_eq!(s.outputs, [b"[1]".to_vec(), b"[2]".to_vec()]);
        assert!(split_answer(b"[1]\n", "application/jsonlines", 2).is_none());
        let s = split_answer(br#"[{"a":1},{"a":2}]"#, "application/json", 2).unwrap();
        assert_eq!(s.outputs, [br#"{"a":1}"#.to_vec(), br#"{"a":2}"#.to_vec()]);
        let s = split_answer(b"label,score\r\nA,0.5\r\n\"B, c\",0.25\r\n", "text/csv", 2).unwrap();
        assert_eq!(s.header.as_deref(), Some(&b"label,score"[..]));
        assert_eq!(s.outputs, [b"A,0.5".to_vec(), b"\"B, c\",0.25".to_vec()]);
        let s = split_answer(b"whatever\nlines\n", "application/octet-stream", 1).unwrap();
        assert_eq!(s.outputs, [b"whatever\nlines".to_vec()]);
    }

    #[test]
    fn filters_and_join_on_json_and_csv() {
        let p = Processing {
            input: Format::JsonLines,
            output: Format::JsonLines,
            input_filter: Some(JsonPath::parse("--input-filter", "$.features").unwrap()),
            output_filter: Some(
                JsonPath::parse("--output-filter", "$['id','SageMakerOutput']").unwrap(),
            ),
            join: JoinSource::Input,
        };
        let raw = br#"{"id":7,"features":{"inputs":"hi"}}"#.to_vec();
        assert_eq!(p.filter_input(1, &raw).unwrap(), br#"{"inputs":"hi"}"#);
        let record = Record { line: 1, raw };
        let out = p
            .finish_output(&record, br#"[{"label":"A"}]"#.to_vec())
            .unwrap();
        let out: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(out, json!({"id": 7, "SageMakerOutput": [{"label": "A"}]}));

        let p = Processing {
            input: Format::Csv,
            output: Format::Csv,
            input_filter: Some(JsonPath::parse("--input-filter", "$[1:]").unwrap()),
            output_filter: Some(JsonPath::parse("--output-filter", "$[0,2]").unwrap()),
            join: JoinSource::Input,
        };
        assert_eq!(
            p.filter_input(2, b"7,\"hi, there\"").unwrap(),
            b"\"hi, there\""
        );
        let record = Record {
            line: 2,
            raw: b"7,\"hi, there\"".to_vec(),
        };
        assert_eq!(p.finish_output(&record, b"A,0.5".to_vec()).unwrap(), b"7,A");
        let bad = p.filter_input(3, b"");
        assert!(bad.is_err());
    }

    #[test]
    fn placeholder_is_an_error_object() {
        let e = RecordError::validation(4, "`inputs` is missing");
        let v: Value = serde_json::from_slice(&e.placeholder()).unwrap();
        assert_eq!(v["error"]["line"], 4);
        assert_eq!(v["error"]["code"], 400);
    }
}
