//! Deep comparison with a float tolerance, as the conformance README defines it: numbers
//! within `tol`, everything else (labels, tokens, spans, key sets, lengths, order) identical.

use serde_json::Value;

/// `Err(path: reason)` at the first difference.
pub fn json_close(actual: &Value, expected: &Value, tol: f64) -> Result<(), String> {
    walk(actual, expected, tol, "$")
}

fn walk(a: &Value, e: &Value, tol: f64, path: &str) -> Result<(), String> {
    match (a, e) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            // Integers (spans, indices) must be equal; floats within the tolerance.
            let ok = if e.is_f64() {
                (x - y).abs() <= tol
            } else {
                x == y
            };
            if ok {
                Ok(())
            } else {
                Err(format!("{path}: {x} != {y} (tol {tol})"))
            }
        }
        (Value::Array(xs), Value::Array(ys)) => {
            if xs.len() != ys.len() {
                return Err(format!("{path}: length {} != {}", xs.len(), ys.len()));
            }
            xs.iter()
                .zip(ys)
                .enumerate()
                .try_for_each(|(i, (x, y))| walk(x, y, tol, &format!("{path}[{i}]")))
        }
        (Value::Object(xm), Value::Object(ym)) => {
            let xk: Vec<_> = xm.keys().collect();
            let mut xs = xk.clone();
            let mut ys: Vec<_> = ym.keys().collect();
            xs.sort();
            ys.sort();
            if xs != ys {
                return Err(format!("{path}: keys {xs:?} != {ys:?}"));
            }
            ym.iter()
                .try_for_each(|(k, y)| walk(&xm[k], y, tol, &format!("{path}.{k}")))
        }
        _ if a == e => Ok(()),
        _ => Err(format!("{path}: {a} != {e}")),
    }
}

/// Compares CSV text with expected rows of cells (numbers within `tol`).
pub fn csv_close(actual: &str, expected: &Value, tol: f64) -> Result<(), String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(actual.as_bytes());
    let rows: Vec<Vec<String>> = reader
        .records()
        .map(|r| {
            r.map(|r| r.iter().map(str::to_owned).collect())
                .map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    let expected = expected.as_array().ok_or("expected rows")?;
    if rows.len() != expected.len() {
        return Err(format!(
            "{} rows != {} rows: {actual:?}",
            rows.len(),
            expected.len()
        ));
    }
    for (i, (row, exp)) in rows.iter().zip(expected).enumerate() {
        let exp = exp.as_array().ok_or("expected a row")?;
        if row.len() != exp.len() {
            return Err(format!("row {i}: {row:?} vs {exp:?}"));
        }
        for (cell, e) in row.iter().zip(exp) {
            match e {
                Value::Number(n) => {
                    let x: f64 = cell
                        .parse()
                        .map_err(|_| format!("row {i}: {cell:?} is not a number"))?;
                    if (x - n.as_f64().unwrap_or(f64::NAN)).abs() > tol {
                        return Err(format!("row {i}: {x} != {n}"));
                    }
                }
                Value::String(s) if s == cell => {}
                other => return Err(format!("row {i}: {cell:?} != {other}")),
            }
        }
    }
    Ok(())
}
