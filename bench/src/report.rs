//! Results: each measurement appends one JSON object to a `.jsonl` file (`server`, `kind`,
//! `workload`, `concurrency`, then the figures), and `report` turns that file into a markdown
//! table with one column per server and the ratio of each server to the baseline.
//!
//! Ratios are `server / baseline` for every figure, as measured: for req/s above 1 is better,
//! for times and memory below 1 is better.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// The results file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The file could not be read or written.
    #[error("cannot access `{path}`")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        err: std::io::Error,
    },
    /// A line is not a JSON object.
    #[error("`{path}` line {line} is not a JSON object")]
    BadLine {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// A record could not be serialised.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// Result of this module.
pub type Result<T, E = ReportError> = std::result::Result<T, E>;

/// One figure of a record: (JSON key, row label, decimals).
type Figure = (&'static str, &'static str, usize);

/// Kinds of record and the figures each shows in the table.
const FIGURES: [(&str, &[Figure]); 5] = [
    (
        "run",
        &[
            ("req_per_s", "throughput (req/s)", 2),
            ("items_per_s", "inputs per second", 2),
            ("tokens_per_s", "generated tokens per second", 1),
            ("p50_ms", "latency p50 (ms)", 1),
            ("p99_ms", "latency p99 (ms)", 1),
        ],
    ),
    (
        "stream",
        &[
            ("ttft_p50_ms", "streamed: time to first token p50 (ms)", 1),
            ("ttft_p99_ms", "streamed: time to first token p99 (ms)", 1),
            ("itl_p50_ms", "streamed: inter-token latency p50 (ms)", 1),
            ("itl_p99_ms", "streamed: inter-token latency p99 (ms)", 1),
            ("total_p50_ms", "streamed: whole answer p50 (ms)", 1),
            ("tokens_per_s", "streamed: tokens per second", 1),
        ],
    ),
    (
        "cold",
        &[("cold_start_s", "cold start to first 200 (s)", 2)],
    ),
    (
        "mem",
        &[
            ("pss_mib", "memory, sum of PSS (MiB)", 0),
            ("rss_mib", "memory, sum of RSS (MiB)", 0),
            ("peak_rss_mib", "memory, sum of peak RSS (MiB)", 0),
        ],
    ),
    (
        "forward",
        &[
            ("tokenize_ms", "in-process tokenize (ms)", 2),
            ("forward_ms", "in-process forward, no HTTP (ms)", 1),
        ],
    ),
];

/// Appends `figures` (a serialisable struct) with its keys to `path`.
pub fn append(
    path: &Path,
    keys: &[(&str, Value)],
    figures: &impl serde::Serialize,
) -> Result<Value> {
    let mut obj = Map::new();
    for (k, v) in keys {
        obj.insert((*k).to_owned(), v.clone());
    }
    if let Value::Object(f) = serde_json::to_value(figures)? {
        obj.extend(f);
    }
    let value = Value::Object(obj);
    let io = |err| ReportError::Io {
        path: path.to_owned(),
        err,
    };
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io)?;
    writeln!(file, "{value}").map_err(io)?;
    Ok(value)
}

/// Reads every record of `path`.
pub fn load(path: &Path) -> Result<Vec<Map<String, Value>>> {
    let text = fs::read_to_string(path).map_err(|err| ReportError::Io {
        path: path.to_owned(),
        err,
    })?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| match serde_json::from_str::<Value>(l) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(ReportError::BadLine {
                path: path.to_owned(),
                line: i + 1,
            }),
        })
        .collect()
}

fn text(rec: &Map<String, Value>, key: &str) -> String {
    match rec.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(v) => v.to_string(),
    }
}

/// The row group of a record: workload plus concurrency for runs.
fn group(rec: &Map<String, Value>) -> String {
    let w = text(rec, "workload");
    match rec.get("concurrency").and_then(Value::as_u64) {
        Some(c) => format!("{w}, {c} client{}", if c == 1 { "" } else { "s" }),
        None => w,
    }
}

/// The markdown table: one row per (group, figure), one column per server, then the ratio of
/// each other server to `baseline`. A later record for the same cell replaces an earlier one.
pub fn table(records: &[Map<String, Value>], baseline: &str) -> String {
    let mut servers: Vec<String> = Vec::new();
    for r in records {
        let s = text(r, "server");
        if !servers.contains(&s) {
            servers.push(s);
        }
    }
    // The baseline goes last among the value columns.
    if let Some(i) = servers.iter().position(|s| s == baseline) {
        let b = servers.remove(i);
        servers.push(b);
    }
    let others: Vec<&String> = servers.iter().filter(|s| *s != baseline).collect();
    let has_baseline = servers.iter().any(|s| s == baseline);

    let mut out = String::from("| workload | figure |");
    for s in &servers {
        out.push_str(&format!(" {s} |"));
    }
    if has_baseline {
        for s in &others {
            out.push_str(&format!(" {s} / {baseline} |"));
        }
    }
    out.push_str("\n|---|---|");
    let ratio_cols = if has_baseline { others.len() } else { 0 };
    out.push_str(&"---:|".repeat(servers.len() + ratio_cols));
    out.push('\n');

    for (kind, figures) in FIGURES {
        let mut groups: Vec<String> = Vec::new();
        for r in records.iter().filter(|r| text(r, "kind") == kind) {
            let g = group(r);
            if !groups.contains(&g) {
                groups.push(g);
            }
        }
        for g in &groups {
            for (key, label, decimals) in figures {
                let cell = |server: &str| -> Option<f64> {
                    records
                        .iter()
                        .rev()
                        .find(|r| {
                            text(r, "kind") == kind && &group(r) == g && text(r, "server") == server
                        })
                        .and_then(|r| r.get(*key))
                        .and_then(Value::as_f64)
                };
                if servers.iter().all(|s| cell(s).is_none()) {
                    continue;
                }
                out.push_str(&format!("| {g} | {label} |"));
                for s in &servers {
                    match cell(s) {
                        Some(v) => out.push_str(&format!(" {v:.decimals$} |")),
                        None => out.push_str(" – |"),
                    }
                }
                if has_baseline {
                    for s in &others {
                        match (cell(s), cell(baseline)) {
                            (Some(a), Some(b)) if b != 0.0 => {
                                out.push_str(&format!(" {:.2} |", a / b));
                            }
                            _ => out.push_str(" – |"),
                        }
                    }
                }
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn table_has_server_columns_and_ratios_to_the_baseline() {
        let records = vec![
            rec(
                json!({"server":"reference","kind":"run","workload":"tc-1x128","concurrency":1,"req_per_s":4.0,"p50_ms":250.0,"p99_ms":300.0}),
            ),
            rec(
                json!({"server":"sagebrush","kind":"run","workload":"tc-1x128","concurrency":1,"req_per_s":6.0,"p50_ms":125.0,"p99_ms":150.0}),
            ),
            rec(
                json!({"server":"sagebrush","kind":"mem","workload":"tc-1x128","pss_mib":512.0,"rss_mib":600.0}),
            ),
        ];
        let t = table(&records, "reference");
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "| workload | figure | sagebrush | reference | sagebrush / reference |"
        );
        assert_eq!(
            lines[2],
            "| tc-1x128, 1 client | throughput (req/s) | 6.00 | 4.00 | 1.50 |"
        );
        assert_eq!(
            lines[3],
            "| tc-1x128, 1 client | latency p50 (ms) | 125.0 | 250.0 | 0.50 |"
        );
        assert!(lines.contains(&"| tc-1x128 | memory, sum of PSS (MiB) | 512 | – | – |"));
    }

    #[test]
    fn appended_records_load_back() {
        let path = std::env::temp_dir().join(format!(
            "sagebrush-bench-report-{}.jsonl",
            std::process::id()
        ));
        let _ = fs::remove_file(&path);
        append(
            &path,
            &[("server", json!("a")), ("kind", json!("mem"))],
            &json!({"pss_mib": 1.5}),
        )
        .unwrap();
        append(&path, &[("server", json!("b"))], &json!({})).unwrap();
        let recs = load(&path).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0]["pss_mib"], 1.5);
        fs::remove_file(path).unwrap();
    }
}
