//! TAPAS's numeric annotation: numbers and dates found in cell and question text, consolidated
//! per column, and turned into column ranks and question/cell relations (contract §4,
//! table-question-answering). A port of the `parse_text` / `number_annotation_utils` part of
//! transformers v4.51.3 `tokenization_tapas.py`:
//! <https://github.com/huggingface/transformers/blob/v4.51.3/src/transformers/models/tapas/tokenization_tapas.py#L2380>
//!
//! Python's `float()`, `re` and `datetime.strptime` are replaced by hand-written scanners that
//! accept the same texts for the patterns TAPAS uses; digits are ASCII digits (Python's `\d`
//! also takes other Unicode decimal digits).

use std::collections::BTreeSet;

/// The earliest year a date may have (`_MIN_YEAR`).
const MIN_YEAR: i32 = 1700;
/// The latest year a date may have (`_MAX_YEAR`).
const MAX_YEAR: i32 = 2016;
/// Longest n-gram tried as a date (`_MAX_DATE_NGRAM_SIZE`).
const MAX_DATE_NGRAM: usize = 5;
/// Share of a column's cells that must agree on a type (`min_consolidation_fraction`).
const MIN_CONSOLIDATION: f64 = 0.7;

const NUMBER_WORDS: [&str; 13] = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve",
];
// "fith" is transformers' spelling.
const ORDINAL_WORDS: [&str; 13] = [
    "zeroth", "first", "second", "third", "fourth", "fith", "sixth", "seventh", "eighth", "ninth",
    "tenth", "eleventh", "twelfth",
];
const ORDINAL_SUFFIXES: [&str; 4] = ["st", "nd", "rd", "th"];
const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];
const WEEKDAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

/// A number or a (partial) date found in text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NumericValue {
    /// A number.
    Float(f64),
    /// A date; the fields its pattern did not give are `None`.
    Date {
        /// Year.
        year: Option<i32>,
        /// Month, 1–12.
        month: Option<u32>,
        /// Day of the month.
        day: Option<u32>,
    },
}

impl NumericValue {
    fn is_date(&self) -> bool {
        matches!(self, Self::Date { .. })
    }

    /// `_get_value_as_primitive_value`: the float, or (year, month, day).
    fn primitive(&self) -> [Option<f64>; 3] {
        match *self {
            Self::Float(v) => [Some(v), None, None],
            Self::Date { year, month, day } => [
                year.map(f64::from),
                month.map(f64::from),
                day.map(f64::from),
            ],
        }
    }
}

/// The values found in one span of text.
#[derive(Debug, Clone, PartialEq)]
pub struct NumericSpan {
    /// First character (in chars).
    pub begin: usize,
    /// One past the last character.
    pub end: usize,
    /// The values, in the order they were found.
    pub values: Vec<NumericValue>,
}

/// `normalize_for_match`: lowercase, whitespace runs collapsed to one space.
pub fn normalize_for_match(text: &str) -> String {
    text.to_lowercase()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// `_parse_number`: a cardinal or ordinal number (`"1,000"`, `"3rd"`, `"2.5"`), or `None`.
pub fn parse_number(text: &str) -> Option<f64> {
    let mut text = text;
    if let Some(suffix) = ORDINAL_SUFFIXES.iter().find(|s| text.ends_with(*s)) {
        text = &text[..text.len() - suffix.len()];
    }
    let text = text.replace(',', "");
    let value = python_float(&text)?;
    if value.is_nan() || value == f64::INFINITY {
        return None;
    }
    Some(value)
}

/// Python's `float(str)` for the texts TAPAS feeds it: surrounding whitespace, a sign, digits,
/// a decimal point, an exponent, `inf`/`infinity`/`nan`.
fn python_float(text: &str) -> Option<f64> {
    let t = text.trim();
    let body = t.strip_prefix(['+', '-']).unwrap_or(t);
    let lower = body.to_ascii_lowercase();
    if matches!(lower.as_str(), "inf" | "infinity" | "nan") {
        return t.to_ascii_lowercase().parse().ok();
    }
    // Rust also accepts these words; Python only in the forms above. Anything else must be a
    // plain decimal literal, which both languages parse to the same correctly rounded double.
    if !body
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
        || !body.chars().any(|c| c.is_ascii_digit())
    {
        return None;
    }
    t.parse().ok()
}

/// Matches `((^|\s)[+-])?((\.\d+)|(\d+(,\d\d\d)*(\.\d*)?))` at `i`: the end of the match.
fn number_pattern_at(chars: &[char], i: usize) -> Option<usize> {
    let digit = |j: usize| chars.get(j).is_some_and(char::is_ascii_digit);
    let number_at = |mut j: usize| -> Option<usize> {
        if chars.get(j) == Some(&'.') && digit(j + 1) {
            j += 1;
            while digit(j) {
                j += 1;
            }
            return Some(j);
        }
        if !digit(j) {
            return None;
        }
        while digit(j) {
            j += 1;
        }
        while chars.get(j) == Some(&',') && digit(j + 1) && digit(j + 2) && digit(j + 3) {
            j += 4;
        }
        if chars.get(j) == Some(&'.') {
            j += 1;
            while digit(j) {
                j += 1;
            }
        }
        Some(j)
    };
    let sign = |j: usize| chars.get(j).is_some_and(|c| matches!(c, '+' | '-'));
    // The optional sign group first (greedy), then without it.
    if i == 0
        && sign(0)
        && let Some(end) = number_at(1)
    {
        return Some(end);
    }
    if chars.get(i).is_some_and(|c| c.is_whitespace())
        && sign(i + 1)
        && let Some(end) = number_at(i + 2)
    {
        return Some(end);
    }
    number_at(i)
}

/// `get_all_spans`: every n-gram of up to `max_ngram` alphanumeric runs, as (begin, end).
fn all_spans(chars: &[char], max_ngram: usize) -> Vec<(usize, usize)> {
    let mut starts = Vec::new();
    let mut spans = Vec::new();
    let alnum = |j: usize| chars.get(j).is_some_and(|c| c.is_alphanumeric());
    for i in 0..chars.len() {
        if !alnum(i) {
            continue;
        }
        if i == 0 || !alnum(i - 1) {
            starts.push(i);
        }
        if i + 1 == chars.len() || !alnum(i + 1) {
            let from = starts.len().saturating_sub(max_ngram);
            spans.extend(starts[from..].iter().map(|&s| (s, i + 1)));
        }
    }
    spans
}

/// Spans and their values, in the order the spans were first found (Python's dict order).
type SpanValues = Vec<((usize, usize), Vec<NumericValue>)>;

fn add(spans: &mut SpanValues, span: (usize, usize), value: NumericValue) {
    match spans.iter_mut().find(|(s, _)| *s == span) {
        Some((_, values)) => values.push(value),
        None => spans.push((span, vec![value])),
    }
}

/// `parse_text`: the longest number and date spans of a (normalized) text, in text order.
pub fn parse_text(text: &str) -> Vec<NumericSpan> {
    let chars: Vec<char> = text.chars().collect();
    let slice = |b: usize, e: usize| chars[b..e].iter().collect::<String>();
    let mut spans: SpanValues = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match number_pattern_at(&chars, i) {
            Some(end) => {
                if let Some(v) = parse_number(&slice(i, end)) {
                    add(&mut spans, (i, end), NumericValue::Float(v));
                }
                i = end;
            }
            None => i += 1,
        }
    }
    for (b, e) in all_spans(&chars, 1) {
        if spans.iter().any(|(s, _)| *s == (b, e)) {
            continue;
        }
        let word = slice(b, e);
        if let Some(v) = parse_number(&word) {
            add(&mut spans, (b, e), NumericValue::Float(v));
        }
        if let Some(n) = NUMBER_WORDS.iter().position(|w| *w == word) {
            add(&mut spans, (b, e), NumericValue::Float(n as f64));
        }
        if let Some(n) = ORDINAL_WORDS.iter().position(|w| *w == word) {
            add(&mut spans, (b, e), NumericValue::Float(n as f64));
        }
    }
    for (b, e) in all_spans(&chars, MAX_DATE_NGRAM) {
        if let Some(date) = parse_date(&chars[b..e]) {
            add(&mut spans, (b, e), date);
        }
    }
    // Longest first, then leftmost; keep spans not inside an already kept one.
    spans.sort_by_key(|((b, e), _)| (std::cmp::Reverse(e - b), *b));
    let mut selected: SpanValues = Vec::new();
    for (span, values) in spans {
        if !selected
            .iter()
            .any(|((sb, se), _)| *sb <= span.0 && span.1 <= *se)
        {
            selected.push((span, values));
        }
    }
    selected.sort_by_key(|((b, _), _)| *b);
    selected
        .into_iter()
        .map(|((begin, end), values)| NumericSpan { begin, end, values })
        .collect()
}

/// All values of a text, span after span (`_get_numeric_values`).
pub fn numeric_values(text: &str) -> Vec<NumericValue> {
    parse_text(text)
        .into_iter()
        .flat_map(|s| s.values)
        .collect()
}

/// One element of a date pattern.
#[derive(Clone, Copy)]
enum Field {
    /// `%B`: a full month name.
    MonthName,
    /// `%b`: an abbreviated month name.
    MonthAbbr,
    /// `%A`: a weekday name (ignored).
    Weekday,
    /// `%Y`: four digits.
    Year,
    /// `%d`: day of the month, 1–2 digits.
    Day,
    /// `%m`: month number, 1–2 digits.
    Month,
    /// A literal character; a space matches one or more whitespace characters.
    Lit(char),
}

/// `_DATE_PATTERNS` in order, with the fields each sets (year, month, day).
const DATE_PATTERNS: [(&str, [bool; 3]); 21] = [
    ("%B", [false, true, false]),
    ("%Y", [true, false, false]),
    ("%Ys", [true, false, false]),
    ("%b %Y", [true, true, false]),
    ("%B %Y", [true, true, false]),
    ("%B %d", [false, true, true]),
    ("%b %d", [false, true, true]),
    ("%d %b", [false, true, true]),
    ("%d %B", [false, true, true]),
    ("%B %d, %Y", [true, true, true]),
    ("%d %B %Y", [true, true, true]),
    ("%m-%d-%Y", [true, true, true]),
    ("%Y-%m-%d", [true, true, true]),
    ("%Y-%m", [true, true, false]),
    ("%B %Y", [true, true, false]),
    ("%d %b %Y", [true, true, true]),
    ("%Y-%m-%d", [true, true, true]),
    ("%b %d, %Y", [true, true, true]),
    ("%d.%m.%Y", [true, true, true]),
    ("%A, %b %d", [false, true, true]),
    ("%A, %B %d", [false, true, true]),
];

fn fields(pattern: &str) -> Vec<Field> {
    let mut out = Vec::new();
    let mut it = pattern.chars();
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(Field::Lit(c));
            continue;
        }
        out.push(match it.next() {
            Some('B') => Field::MonthName,
            Some('b') => Field::MonthAbbr,
            Some('A') => Field::Weekday,
            Some('Y') => Field::Year,
            Some('d') => Field::Day,
            _ => Field::Month,
        });
    }
    out
}

/// What a matched date pattern gave.
#[derive(Default, Clone, Copy)]
struct Parsed {
    year: Option<i32>,
    month: Option<u32>,
    day: Option<u32>,
}

/// Candidate matches of one field at `i`: (end, value), in the order Python's `_strptime`
/// regex alternation tries them.
fn field_matches(field: Field, chars: &[char], i: usize) -> Vec<(usize, u32)> {
    let digit = |j: usize| chars.get(j).and_then(|c| c.to_digit(10));
    let word_at = |words: &[&str], len: Option<usize>| -> Vec<(usize, u32)> {
        // Longest names first, as `__seqToRE` sorts them; case-insensitive.
        let mut candidates: Vec<(usize, u32)> = words
            .iter()
            .enumerate()
            .filter_map(|(n, w)| {
                let w: String =
                    len.map_or_else(|| (*w).to_owned(), |l| w.chars().take(l).collect());
                let n_chars = w.chars().count();
                let text: String = chars.get(i..i + n_chars)?.iter().collect();
                (text.to_lowercase() == w).then_some((i + n_chars, n as u32 + 1))
            })
            .collect();
        candidates.sort_by_key(|&(end, _)| std::cmp::Reverse(end));
        candidates
    };
    match field {
        Field::MonthName => word_at(&MONTHS, None),
        Field::MonthAbbr => word_at(&MONTHS, Some(3)),
        Field::Weekday => word_at(&WEEKDAYS, None),
        Field::Year => match (digit(i), digit(i + 1), digit(i + 2), digit(i + 3)) {
            (Some(a), Some(b), Some(c), Some(d)) => vec![(i + 4, a * 1000 + b * 100 + c * 10 + d)],
            _ => vec![],
        },
        // 3[0-1]|[1-2]\d|0[1-9]|[1-9]| [1-9]
        Field::Day => {
            let mut out = Vec::new();
            match (digit(i), digit(i + 1)) {
                (Some(3), Some(b)) if b <= 1 => out.push((i + 2, 30 + b)),
                (Some(a @ 1..=2), Some(b)) => out.push((i + 2, a * 10 + b)),
                (Some(0), Some(b)) if b >= 1 => out.push((i + 2, b)),
                _ => {}
            }
            if let Some(a @ 1..=9) = digit(i) {
                out.push((i + 1, a));
            }
            if chars.get(i) == Some(&' ')
                && let Some(a @ 1..=9) = digit(i + 1)
            {
                out.push((i + 2, a));
            }
            out
        }
        // 1[0-2]|0[1-9]|[1-9]
        Field::Month => {
            let mut out = Vec::new();
            match (digit(i), digit(i + 1)) {
                (Some(1), Some(b)) if b <= 2 => out.push((i + 2, 10 + b)),
                (Some(0), Some(b)) if b >= 1 => out.push((i + 2, b)),
                _ => {}
            }
            if let Some(a @ 1..=9) = digit(i) {
                out.push((i + 1, a));
            }
            out
        }
        Field::Lit(' ') => {
            let mut j = i;
            while chars.get(j).is_some_and(|c| c.is_whitespace()) {
                j += 1;
            }
            if j > i { vec![(j, 0)] } else { vec![] }
        }
        Field::Lit(c) => {
            if chars
                .get(i)
                .is_some_and(|&x| x.to_lowercase().eq(c.to_lowercase()))
            {
                vec![(i + 1, 0)]
            } else {
                vec![]
            }
        }
    }
}

/// Backtracking match of `fields` against the whole of `chars[i..]`.
fn match_fields(fields: &[Field], chars: &[char], i: usize, parsed: Parsed) -> Option<Parsed> {
    let Some((&field, rest)) = fields.split_first() else {
        return (i == chars.len()).then_some(parsed);
    };
    for (end, value) in field_matches(field, chars, i) {
        let mut next = parsed;
        match field {
            Field::MonthName | Field::MonthAbbr | Field::Month => next.month = Some(value),
            Field::Year => next.year = Some(value as i32),
            Field::Day => next.day = Some(value),
            Field::Weekday | Field::Lit(_) => {}
        }
        if let Some(done) = match_fields(rest, chars, end, next) {
            return Some(done);
        }
    }
    None
}

fn days_in_month(year: i32, month: u32) -> u32 {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// The prefilter regex of `_process_date_pattern`: `%B`/`%A` → `\w+`, `%b` → `\w{3}`,
/// `%Y` → `\d{4}`, `%d`/`%m` → `\d{1,2}`, a space → `\s+`.
fn prefilter(fields: &[Field], chars: &[char]) -> bool {
    fn go(fields: &[Field], chars: &[char], i: usize) -> bool {
        let Some((&field, rest)) = fields.split_first() else {
            return i == chars.len();
        };
        let word = |j: usize| {
            chars
                .get(j)
                .is_some_and(|c| c.is_alphanumeric() || *c == '_')
        };
        let digit = |j: usize| chars.get(j).is_some_and(char::is_ascii_digit);
        let run = |j: usize, f: &dyn Fn(usize) -> bool| {
            let mut k = j;
            while f(k) {
                k += 1;
            }
            k - j
        };
        let ends: Vec<usize> = match field {
            Field::MonthName | Field::Weekday => (1..=run(i, &word)).map(|n| i + n).collect(),
            Field::MonthAbbr => (run(i, &word) >= 3).then_some(i + 3).into_iter().collect(),
            Field::Year => (run(i, &digit) >= 4).then_some(i + 4).into_iter().collect(),
            Field::Day | Field::Month => (1..=run(i, &digit).min(2)).map(|n| i + n).collect(),
            Field::Lit(' ') => (1..=run(i, &|k| chars.get(k).is_some_and(|c| c.is_whitespace())))
                .map(|n| i + n)
                .collect(),
            Field::Lit(c) => (chars.get(i) == Some(&c))
                .then_some(i + 1)
                .into_iter()
                .collect(),
        };
        ends.into_iter().rev().any(|end| go(rest, chars, end))
    }
    go(fields, chars, 0)
}

/// `_parse_date`: the first pattern that matches as `strptime` would, with a valid calendar
/// date (year 1900 when the pattern has none) and a year in 1700–2016.
fn parse_date(chars: &[char]) -> Option<NumericValue> {
    for (pattern, [has_year, has_month, has_day]) in DATE_PATTERNS {
        let fields = fields(pattern);
        if !prefilter(&fields, chars) {
            continue;
        }
        let Some(p) = match_fields(&fields, chars, 0, Parsed::default()) else {
            continue;
        };
        let year = p.year.unwrap_or(1900);
        let month = p.month.unwrap_or(1);
        let day = p.day.unwrap_or(1);
        if year < 1 || day > days_in_month(year, month) {
            continue;
        }
        if !(MIN_YEAR..=MAX_YEAR).contains(&year) {
            continue;
        }
        return Some(NumericValue::Date {
            year: has_year.then_some(year),
            month: has_month.then_some(month),
            day: has_day.then_some(day),
        });
    }
    None
}

/// `_consolidate_numeric_values`: for each row of a column, the first value of the column's
/// most common type (dates win ties), or `None`; all `None` when fewer than 70% of the rows
/// agree.
pub fn consolidate(rows: &[Vec<NumericValue>]) -> Vec<Option<NumericValue>> {
    let (mut numbers, mut dates) = (0usize, 0usize);
    for values in rows {
        numbers += usize::from(values.iter().any(|v| !v.is_date()));
        dates += usize::from(values.iter().any(NumericValue::is_date));
    }
    let max = numbers.max(dates);
    if max == 0 || (max as f64) < rows.len() as f64 * MIN_CONSOLIDATION {
        return vec![None; rows.len()];
    }
    let want_date = dates == max;
    rows.iter()
        .map(|values| values.iter().find(|v| v.is_date() == want_date).copied())
        .collect()
}

/// `get_numeric_sort_key_fn`: how to compare a set of values, or `None` when they have no
/// common type (numbers and dates) or, for dates, no field they all have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    /// The primitive-tuple positions compared, in order.
    indexes: Vec<usize>,
}

impl SortKey {
    /// The key of `values`, or `None` when they cannot be compared.
    pub fn of<'a>(values: impl IntoIterator<Item = &'a NumericValue>) -> Option<Self> {
        let values: Vec<&NumericValue> = values.into_iter().collect();
        let first = values.first()?;
        if values.iter().any(|v| v.is_date() != first.is_date()) {
            return None;
        }
        if !first.is_date() {
            return Some(Self { indexes: vec![0] });
        }
        let indexes: Vec<usize> = (0..3)
            .filter(|&i| values.iter().all(|v| v.primitive()[i].is_some()))
            .collect();
        (!indexes.is_empty()).then_some(Self { indexes })
    }

    /// The comparable tuple of `value`.
    pub fn key(&self, value: &NumericValue) -> Vec<f64> {
        let p = value.primitive();
        self.indexes.iter().map(|&i| p[i].unwrap_or(0.0)).collect()
    }
}

fn compare(a: &[f64], b: &[f64]) -> std::cmp::Ordering {
    a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal)
}

/// `_get_numeric_column_ranks` for one column: (rank, inverse rank) of each row's value among
/// the column's distinct values (1-based), `(0, 0)` for rows without a value.
pub fn column_ranks(column: &[Option<NumericValue>]) -> Vec<(u32, u32)> {
    let present: Vec<&NumericValue> = column.iter().flatten().collect();
    let Some(sort) = SortKey::of(present.iter().copied()) else {
        return vec![(0, 0); column.len()];
    };
    let mut unique: Vec<Vec<f64>> = present.iter().map(|v| sort.key(v)).collect();
    unique.sort_by(|a, b| compare(a, b));
    unique.dedup();
    let n = unique.len() as u32;
    column
        .iter()
        .map(|v| match v {
            Some(v) => {
                let key = sort.key(v);
                let rank = unique.iter().position(|u| *u == key).unwrap_or(0) as u32;
                (rank + 1, n - rank)
            }
            None => (0, 0),
        })
        .collect()
}

/// `_get_numeric_relations` for one column: for each row, the set of relations between the
/// question's values and the cell's value as `EQ = 1 | LT = 2 | GT = 4` ("the question value
/// is less than the cell"), 0 for none.
pub fn column_relations(question: &[NumericValue], column: &[Option<NumericValue>]) -> Vec<u32> {
    let mut sets: Vec<BTreeSet<u32>> = vec![BTreeSet::new(); column.len()];
    let present: Vec<&NumericValue> = column.iter().flatten().collect();
    if present.is_empty() {
        return vec![0; column.len()];
    }
    for value in question {
        let Some(sort) = SortKey::of(present.iter().copied().chain(std::iter::once(value))) else {
            continue;
        };
        let q = sort.key(value);
        for (row, cell) in column.iter().enumerate() {
            let Some(cell) = cell else { continue };
            let c = sort.key(cell);
            let relation = match compare(&q, &c) {
                std::cmp::Ordering::Equal => 1,
                std::cmp::Ordering::Less => 2,
                std::cmp::Ordering::Greater => 4,
            };
            sets[row].insert(relation);
        }
    }
    sets.into_iter().map(|s| s.into_iter().sum()).collect()
}
