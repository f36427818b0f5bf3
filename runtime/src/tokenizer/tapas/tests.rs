//! The TAPAS tokenizer against transformers 4.51.3 on the tapas-tqa fixture: number and date
//! parsing, and whole encodings (ranks, inverse ranks, numeric relations, dropped rows and
//! shortened cells). Expected values: `tests/fixtures/tapas/expected.json`, written by
//! `tests/fixtures/tapas/make_expected.py`.

use std::path::PathBuf;

use serde_json::Value;

use super::numeric::{self, NumericValue};
use super::*;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn expected() -> Value {
    let text = std::fs::read_to_string(root().join("tapas/expected.json")).expect("expected.json");
    serde_json::from_str(&text).expect("json")
}

fn tokenizer() -> TapasTokenizer {
    let dir = root().join("conformance/models/tapas-tqa");
    let config = ModelConfig::from_dir(&dir).expect("config");
    TapasTokenizer::from_dir(&dir, &config).expect("tokenizer")
}

fn value_json(v: &NumericValue) -> Value {
    match *v {
        NumericValue::Float(f) => serde_json::json!({ "float": f }),
        NumericValue::Date { year, month, day } => {
            serde_json::json!({ "date": [year, month, day] })
        }
    }
}

#[test]
fn numbers_and_dates_parse_as_transformers_parses_them() {
    let cases = expected()["parse_text"].as_array().unwrap().clone();
    assert!(cases.len() >= 25);
    let mut failures = Vec::new();
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let got: Vec<Value> = numeric::parse_text(text)
            .iter()
            .map(|s| {
                serde_json::json!([
                    s.begin,
                    s.end,
                    s.values.iter().map(value_json).collect::<Vec<_>>()
                ])
            })
            .collect();
        if Value::Array(got.clone()) != case["spans"] {
            failures.push(format!("{text:?}: {got:?} != {}", case["spans"]));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn table_of(case: &Value) -> Table {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    };
    Table {
        columns: strings(&case["columns"]),
        rows: case["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(strings)
            .collect(),
    }
}

#[test]
fn encodings_equal_transformers_with_ranks_relations_and_truncation() {
    let tok = tokenizer();
    let cases = expected()["encodings"].as_array().unwrap().clone();
    assert!(cases.len() >= 10);
    for case in cases {
        let table = table_of(&case);
        let tokenized = tok.tokenize_table(&table).unwrap();
        let truncation = if case["truncation"].as_bool().unwrap() {
            Truncation::DropRowsToFit
        } else {
            Truncation::None
        };
        let query = case["query"].as_str().unwrap();
        let enc = tok.encode(&tokenized, query, truncation).unwrap().unwrap();
        let label = format!("{} / {query}", case["table"]);
        let ids: Vec<u32> = serde_json::from_value(case["input_ids"].clone()).unwrap();
        assert_eq!(enc.input_ids, ids, "{label}: input ids");
        let types: Vec<[u32; TOKEN_TYPES]> =
            serde_json::from_value(case["token_type_ids"].clone()).unwrap();
        for (i, (got, want)) in enc.token_type_ids.iter().zip(&types).enumerate() {
            assert_eq!(got, want, "{label}: token {i}");
        }
        assert_eq!(enc.token_type_ids.len(), types.len(), "{label}");
    }
}

/// Our encoding of a fixture case.
fn encode_case(tok: &TapasTokenizer, case: &Value) -> TapasEncoding {
    let tokenized = tok.tokenize_table(&table_of(case)).unwrap();
    let truncation = if case["truncation"].as_bool().unwrap() {
        Truncation::DropRowsToFit
    } else {
        Truncation::None
    };
    tok.encode(&tokenized, case["query"].as_str().unwrap(), truncation)
        .unwrap()
        .unwrap()
}

/// The highest row id (token type 2) of an encoding: how many data rows it kept.
fn rows_kept(types: &[[u32; TOKEN_TYPES]]) -> u32 {
    types.iter().map(|t| t[2]).max().unwrap_or(0)
}

#[test]
fn big_tables_drop_the_rows_transformers_drops_and_wordy_cells_are_shortened() {
    let tok = tokenizer();
    let cases = expected()["encodings"].as_array().unwrap().clone();
    let big: Vec<&Value> = cases.iter().filter(|c| c["table"] == "big").collect();
    assert!(!big.is_empty());
    for case in big {
        let rows = case["rows"].as_array().unwrap().len();
        let want: Vec<[u32; TOKEN_TYPES]> =
            serde_json::from_value(case["token_type_ids"].clone()).unwrap();
        let got = encode_case(&tok, case);
        // transformers keeps 11 or 12 of the 50 rows (drop_rows_to_fit) for these questions.
        assert_eq!(
            rows_kept(&got.token_type_ids),
            rows_kept(&want),
            "{}",
            case["query"]
        );
        assert!(
            (rows_kept(&want) as usize) < rows,
            "the fixture must drop rows"
        );
        assert_eq!(got.len(), case["input_ids"].as_array().unwrap().len());
        assert!(got.len() <= 128);
    }
    let wordy = cases.iter().find(|c| c["table"] == "wordy").unwrap();
    let got = encode_case(&tok, wordy);
    let want: Vec<u32> = serde_json::from_value(wordy["input_ids"].clone()).unwrap();
    assert_eq!(
        got.input_ids, want,
        "wordy cells are cut as transformers cuts them"
    );
}

#[test]
fn rank_ids_and_numeric_relations_equal_transformers() {
    let tok = tokenizer();
    let cases = expected()["encodings"].as_array().unwrap().clone();
    let mut ranked = 0;
    for case in &cases {
        let want: Vec<[u32; TOKEN_TYPES]> =
            serde_json::from_value(case["token_type_ids"].clone()).unwrap();
        let got = encode_case(&tok, case);
        let channel = |types: &[[u32; TOKEN_TYPES]], k: usize| -> Vec<u32> {
            types.iter().map(|t| t[k]).collect()
        };
        for (k, name) in [
            (4, "column rank"),
            (5, "inverse column rank"),
            (6, "numeric relation"),
        ] {
            assert_eq!(
                channel(&got.token_type_ids, k),
                channel(&want, k),
                "{} / {}: {name}",
                case["table"],
                case["query"]
            );
        }
        ranked += usize::from(want.iter().any(|t| t[4] > 1));
    }
    assert!(
        ranked >= 5,
        "the fixture must exercise ranks, {ranked} cases do"
    );
}

/// Found by the `tokenizer` fuzz target: a header-only table with a question longer than
/// `model_max_length` made `drop_rows_to_fit` drop a row below zero (an overflow panic).
#[test]
fn a_question_longer_than_the_budget_with_no_row_to_drop_keeps_no_row() {
    let tok = tokenizer();
    let question = "! ".repeat(200);
    for rows in [vec![], vec![vec!["x".to_owned()]]] {
        let table = Table {
            columns: vec![String::new()],
            rows,
        };
        let tokenized = tok.tokenize_table(&table).unwrap();
        // The row budget once went below zero here and panicked: now it answers.
        let _answered = tok
            .encode(&tokenized, &question, Truncation::DropRowsToFit)
            .unwrap();
    }
}

#[test]
fn too_many_rows_without_truncation_is_an_error() {
    let tok = tokenizer();
    let table = Table {
        columns: vec!["n".into()],
        rows: (0..130).map(|i| vec![i.to_string()]).collect(),
    };
    let tokenized = tok.tokenize_table(&table).unwrap();
    let err = tok.encode(&tokenized, "q", Truncation::None).unwrap();
    assert_eq!(
        err,
        Err(TableError::TooManyRows {
            rows: 130,
            max: 128
        })
    );
    let ok = tok
        .encode(&tokenized, "q", Truncation::DropRowsToFit)
        .unwrap();
    assert!(ok.unwrap().len() <= 128);
}

#[test]
fn column_ranks_and_relations() {
    let col: Vec<Option<NumericValue>> = vec![
        Some(NumericValue::Float(87.0)),
        Some(NumericValue::Float(53.0)),
        None,
        Some(NumericValue::Float(69.0)),
        Some(NumericValue::Float(53.0)),
    ];
    assert_eq!(
        numeric::column_ranks(&col),
        vec![(3, 1), (1, 3), (0, 0), (2, 2), (1, 3)]
    );
    // 60 < 87 (LT = 2), 60 > 53 (GT = 4); 53 == 53 adds EQ = 1.
    let q = [NumericValue::Float(60.0), NumericValue::Float(53.0)];
    assert_eq!(numeric::column_relations(&q, &col), vec![2, 5, 0, 2, 5]);
    // A date question value is not comparable with numbers.
    let date = NumericValue::Date {
        year: Some(1990),
        month: None,
        day: None,
    };
    assert_eq!(numeric::column_relations(&[date], &col), vec![0; 5]);
}

#[test]
fn consolidation_needs_seventy_percent_and_prefers_dates_on_ties() {
    let n = |v| vec![NumericValue::Float(v)];
    let year = |y| NumericValue::Date {
        year: Some(y),
        month: None,
        day: None,
    };
    // 2 of 3 rows < 70%.
    assert_eq!(
        numeric::consolidate(&[n(1.0), n(2.0), vec![]]),
        vec![None, None, None]
    );
    // "1990" is both a number and a year: dates win the tie.
    let both = vec![NumericValue::Float(1990.0), year(1990)];
    assert_eq!(
        numeric::consolidate(&[both.clone(), vec![year(2001)]]),
        vec![Some(year(1990)), Some(year(2001))]
    );
    assert!(is_empty_text("n/a") && is_empty_text(" ?? ") && !is_empty_text("a?"));
}
