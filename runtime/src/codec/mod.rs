//! Media types (contract §5): which request bodies we decode and which answers we encode.
//! `negotiate()` decides 406 and 415 before any model work; `decode()` turns a body into
//! records (one per JSON line, one for a JSON/CSV/text body); `encode()` turns predictions
//! into bytes, records kept in order.

mod csv;
mod json;

use serde_json::Value;

/// A request body format chosen from `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoding {
    /// `application/json`.
    Json,
    /// `application/jsonlines`, `application/x-jsonlines`: one request per line.
    JsonLines,
    /// `text/csv`: a header row with an `inputs` column, or `question`,`context` columns.
    Csv,
    /// `text/plain`: the body is `inputs`.
    Text,
}

impl Decoding {
    /// Media types accepted in `Content-Type`.
    pub const ACCEPTED: &'static [&'static str] = &[
        "application/json",
        "application/jsonlines",
        "application/x-jsonlines",
        "text/csv",
        "text/plain",
    ];

    /// The decoding of a media type (parameters ignored, any case); missing means JSON.
    pub fn from_content_type(content_type: Option<&str>) -> Result<Self, CodecError> {
        let Some(raw) = content_type.filter(|c| !c.trim().is_empty()) else {
            return Ok(Self::Json);
        };
        match essence(raw).as_str() {
            "application/json" => Ok(Self::Json),
            "application/jsonlines" | "application/x-jsonlines" | "application/jsonl" => {
                Ok(Self::JsonLines)
            }
            "text/csv" => Ok(Self::Csv),
            "text/plain" => Ok(Self::Text),
            _ => Err(CodecError::UnsupportedMediaType {
                content_type: raw.to_owned(),
            }),
        }
    }
}

/// A response encoding chosen from `Accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `application/json`.
    Json,
    /// `application/jsonlines`.
    JsonLines,
    /// `text/csv`.
    Csv,
}

impl Encoding {
    /// Media types accepted in `Accept` and `SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT`.
    pub const ACCEPTED: &'static [&'static str] = &[
        "application/json",
        "application/jsonlines",
        "application/x-jsonlines",
        "text/csv",
    ];

    /// The encoding of a media type (parameters ignored, any case).
    pub fn from_media_type(media_type: &str) -> Option<Self> {
        match essence(media_type).as_str() {
            "application/json" => Some(Self::Json),
            "application/jsonlines" | "application/x-jsonlines" | "application/jsonl" => {
                Some(Self::JsonLines)
            }
            "text/csv" => Some(Self::Csv),
            _ => None,
        }
    }

    /// The `Content-Type` written for this encoding.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::JsonLines => "application/jsonlines",
            Self::Csv => "text/csv",
        }
    }
}

/// A body we cannot decode or an answer we cannot encode.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// `Content-Type` names a format we do not decode (415).
    #[error(
        "unsupported Content-Type {content_type:?}; accepted: application/json, application/jsonlines, text/csv, text/plain"
    )]
    UnsupportedMediaType {
        /// The header as sent.
        content_type: String,
    },
    /// No media range of `Accept` names a format we encode (406).
    #[error(
        "cannot answer with Accept {accept:?}; accepted: application/json, application/jsonlines, text/csv"
    )]
    NotAcceptable {
        /// The header as sent.
        accept: String,
    },
    /// The body is not valid JSON.
    #[error("the body is not valid JSON: {source}")]
    Json {
        /// The parser's error (line and column).
        #[source]
        source: serde_json::Error,
    },
    /// A JSON Lines line is not valid JSON.
    #[error("line {line} of the JSON Lines body is not valid JSON: {source}")]
    JsonLine {
        /// 1-based line number.
        line: usize,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// The body is empty.
    #[error("the request body is empty")]
    Empty,
    /// The body is not UTF-8.
    #[error("the body is not valid UTF-8 text")]
    NotUtf8,
    /// The CSV body cannot be read.
    #[error("the CSV body cannot be read: {source}")]
    Csv {
        /// The reader's error.
        #[source]
        source: ::csv::Error,
    },
    /// The CSV header has none of the columns we understand.
    #[error(
        "the CSV body needs a header row with an `inputs` column, or `question` and `context` columns (or `text` and `text_pair`); got header {header:?}"
    )]
    CsvHeader {
        /// The header row as read.
        header: Vec<String>,
    },
    /// The answer cannot be written as CSV.
    #[error("the answer cannot be written as text/csv ({reason}); ask for application/json")]
    NotCsv {
        /// Why.
        reason: &'static str,
    },
    /// The answer holds NaN or infinity.
    #[error("the answer holds a non-finite number (NaN or infinity)")]
    NonFinite,
}

/// Picks the response encoding (406) and the request decoding (415).
pub fn negotiate(
    content_type: Option<&str>,
    accept: Option<&str>,
    default: Encoding,
) -> Result<(Decoding, Encoding), CodecError> {
    let encoding = choose_encoding(accept, default)?;
    let decoding = Decoding::from_content_type(content_type)?;
    Ok((decoding, encoding))
}

/// Picks the response encoding from an `Accept` header: media ranges ordered by q-value
/// (stable), `q=0` ranges excluded; `*/*` or a missing header means `default`.
pub fn choose_encoding(accept: Option<&str>, default: Encoding) -> Result<Encoding, CodecError> {
    let Some(raw) = accept.filter(|a| !a.trim().is_empty()) else {
        return Ok(default);
    };
    let mut ranges: Vec<(f32, String)> = raw
        .split(',')
        .filter_map(|part| {
            let mut pieces = part.split(';');
            let range = pieces.next()?.trim().to_ascii_lowercase();
            if range.is_empty() {
                return None;
            }
            let q = pieces
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .and_then(|(_, v)| v.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            Some((q, range))
        })
        .filter(|(q, _)| *q > 0.0)
        .collect();
    ranges.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (_, range) in &ranges {
        let chosen = match range.as_str() {
            "*/*" => Some(default),
            "application/*" => Some(match default {
                Encoding::Csv => Encoding::Json,
                other => other,
            }),
            "text/*" => Some(Encoding::Csv),
            other => Encoding::from_media_type(other),
        };
        if let Some(encoding) = chosen {
            return Ok(encoding);
        }
    }
    Err(CodecError::NotAcceptable {
        accept: raw.to_owned(),
    })
}

/// Decoded request records: one for a JSON, CSV or text body, one per line for JSON Lines.
#[derive(Debug, Clone, PartialEq)]
pub struct Records {
    /// The records in body order.
    pub values: Vec<Value>,
    /// Whether the body was JSON Lines (then the answer has one line per record).
    pub multi: bool,
}

/// Decodes a request body into records.
pub fn decode(decoding: Decoding, body: &[u8]) -> Result<Records, CodecError> {
    match decoding {
        Decoding::Json => Ok(Records {
            values: vec![json::decode(body)?],
            multi: false,
        }),
        Decoding::JsonLines => Ok(Records {
            values: json::decode_lines(body)?,
            multi: true,
        }),
        Decoding::Csv => Ok(Records {
            values: vec![csv::decode(body)?],
            multi: false,
        }),
        Decoding::Text => {
            let text = std::str::from_utf8(body).map_err(|_| CodecError::NotUtf8)?;
            Ok(Records {
                values: vec![serde_json::json!({ "inputs": text })],
                multi: false,
            })
        }
    }
}

/// Encodes one prediction per record.
///
/// JSON: the prediction (an array of them for JSON Lines requests). JSON Lines: one line per
/// record; a single record whose prediction is a list gets one line per element. CSV: a flat
/// list of objects (or one object) as a header row and one row each.
pub fn encode(
    encoding: Encoding,
    predictions: &[Value],
    multi: bool,
) -> Result<Vec<u8>, CodecError> {
    for p in predictions {
        json::check_finite(p)?;
    }
    match encoding {
        Encoding::Json => {
            if multi {
                json::encode(&Value::Array(predictions.to_vec()))
            } else {
                json::encode(predictions.first().unwrap_or(&Value::Null))
            }
        }
        Encoding::JsonLines => {
            let lines: Vec<&Value> = match predictions {
                [Value::Array(items)] if !multi => items.iter().collect(),
                _ => predictions.iter().collect(),
            };
            json::encode_lines(&lines)
        }
        Encoding::Csv => {
            let rows: Vec<&Value> = predictions
                .iter()
                .flat_map(|p| match p {
                    Value::Array(items) => items.iter().collect::<Vec<_>>(),
                    other => vec![other],
                })
                .collect();
            csv::encode(&rows)
        }
    }
}

/// The lower-case `type/subtype` of a media type, parameters dropped.
pub fn essence(media_type: &str) -> String {
    media_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accept_lists_and_q_values() {
        let d = Encoding::Json;
        assert_eq!(choose_encoding(None, d).unwrap(), Encoding::Json);
        assert_eq!(
            choose_encoding(Some("*/*"), Encoding::Csv).unwrap(),
            Encoding::Csv
        );
        assert_eq!(
            choose_encoding(Some("TEXT/CSV; charset=utf-8"), d).unwrap(),
            Encoding::Csv
        );
        assert_eq!(
            choose_encoding(Some("application/json;q=0.5, text/csv;q=0.9"), d).unwrap(),
            Encoding::Csv
        );
        assert_eq!(
            choose_encoding(Some("image/png, application/jsonlines;q=0.1"), d).unwrap(),
            Encoding::JsonLines
        );
        assert!(matches!(
            choose_encoding(Some("image/png, text/csv;q=0"), d),
            Err(CodecError::NotAcceptable { .. })
        ));
    }

    #[test]
    fn content_types_with_parameters() {
        assert_eq!(
            Decoding::from_content_type(Some("Application/JSON; charset=UTF-8")).unwrap(),
            Decoding::Json
        );
        assert_eq!(Decoding::from_content_type(None).unwrap(), Decoding::Json);
        assert_eq!(
            Decoding::from_content_type(Some("application/x-jsonlines")).unwrap(),
            Decoding::JsonLines
        );
        assert!(matches!(
            Decoding::from_content_type(Some("application/xml")),
            Err(CodecError::UnsupportedMediaType { .. })
        ));
    }

    #[test]
    fn csv_inputs_column_becomes_a_list() {
        let r = decode(
            Decoding::Csv,
            b"inputs\r\n\"hello, world\"\r\n\"quoted \"\"x\"\"\"\r\n",
        )
        .unwrap();
        assert_eq!(
            r.values,
            vec![json!({"inputs": ["hello, world", "quoted \"x\""]})]
        );
        let err = decode(Decoding::Csv, b"just text\nmore text\n").unwrap_err();
        assert!(matches!(err, CodecError::CsvHeader { .. }));
    }

    #[test]
    fn jsonlines_is_one_record_per_line() {
        let r = decode(
            Decoding::JsonLines,
            b"{\"inputs\":\"a\"}\n\n{\"inputs\":\"b\"}\n",
        )
        .unwrap();
        assert_eq!(r.values.len(), 2);
        let out = encode(
            Encoding::JsonLines,
            &[json!([{"a":1}]), json!([{"a":2}])],
            true,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "[{\"a\":1}]\n[{\"a\":2}]\n"
        );
        let err = decode(Decoding::JsonLines, b"{\"inputs\":\"a\"}\n{oops\n").unwrap_err();
        assert!(matches!(err, CodecError::JsonLine { line: 2, .. }));
    }

    #[test]
    fn csv_encoding_of_a_flat_list() {
        let out = encode(
            Encoding::Csv,
            &[json!([{"label": "A", "score": 0.5}, {"label": "B, c", "score": 0.25}])],
            false,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "label,score\r\nA,0.5\r\n\"B, c\",0.25\r\n"
        );
        let nested = encode(Encoding::Csv, &[json!([[{"label": "A"}]])], false);
        assert!(matches!(nested, Err(CodecError::NotCsv { .. })));
    }

    #[test]
    fn compact_json() {
        let out = encode(
            Encoding::Json,
            &[json!({"label": "A", "score": 0.5})],
            false,
        )
        .unwrap();
        assert_eq!(out, br#"{"label":"A","score":0.5}"#);
    }
}
