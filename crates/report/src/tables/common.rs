//! What every table shares: the [`Table`] value, Markdown rendering, percent and mean/spread
//! formatting, and how results are grouped (by benchmark, method, setting column and seed).

use polars::prelude::*;
use study::{Cell, CellState, Study};

use crate::ReportError;
use crate::results::CellResult;

/// One table of a report, written as `<stem>.csv` and `<stem>.md`.
pub struct Table {
    /// The file stem (`accuracy`, `claims`, ...).
    pub stem: String,
    /// The values, for the CSV file.
    pub frame: DataFrame,
    /// The Markdown rendering, with its notes.
    pub markdown: String,
}

impl Table {
    pub(super) fn new(stem: &str, frame: DataFrame, markdown: String) -> Self {
        Self { stem: stem.to_owned(), frame, markdown }
    }
}

pub(super) fn pct(x: f64) -> String {
    format!("{:.2}", 100.0 * x)
}

pub(super) fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let std = if values.len() > 1 {
        (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    (mean, std)
}

/// Markdown table.
pub fn markdown<H: AsRef<str>>(headers: &[H], rows: &[Vec<String>]) -> String {
    let headers: Vec<&str> = headers.iter().map(AsRef::as_ref).collect();
    let mut s = format!("| {} |\n|{}\n", headers.join(" | "), "---|".repeat(headers.len()));
    for r in rows {
        s += &format!("| {} |\n", r.join(" | "));
    }
    s
}

/// Whether `cell` belongs in the column whose template is `column` (same settings, as far as the
/// cell's method uses them).
pub(super) fn in_column(cell: &Cell, column: &Cell) -> bool {
    let mut t = column.config.clone();
    t.method = cell.config.method.clone();
    t.seed = cell.config.seed;
    study::canonical(t) == cell.config
}

/// Column templates of a benchmark: one cell per distinct setting among methods with an ADC.
pub(super) fn columns<'a>(results: &[&'a CellResult]) -> Vec<&'a Cell> {
    let mut cols: Vec<&Cell> = Vec::new();
    for r in results {
        let c = &r.cell.config;
        if c.uses_adc_setting() && !cols.iter().any(|col| col.config.setting_label() == c.setting_label()) {
            cols.push(&r.cell);
        }
    }
    if cols.is_empty() {
        // only fp / ideal-adc: one column
        if let Some(r) = results.first() {
            cols.push(&r.cell);
        }
    }
    cols
}

/// Methods in the order of the benchmark's list.
pub(super) fn method_order(study: &Study, benchmark: &str) -> Vec<String> {
    study.benchmark.iter().find(|b| b.name == benchmark).map(|b| b.methods.clone()).unwrap_or_default()
}

/// Finished final and best accuracies of matching cells, and a state note for the others.
pub(super) struct Agg {
    pub(super) finals: Vec<f64>,
    pub(super) bests: Vec<f64>,
    pub(super) expected: usize,
    pub(super) note: Option<String>,
}

pub(super) fn aggregate(cells: &[&CellResult]) -> Agg {
    let mut a = Agg { finals: Vec::new(), bests: Vec::new(), expected: cells.len(), note: None };
    let (mut partial, mut failed) = (Vec::new(), 0);
    for r in cells {
        match (&r.summary, r.state) {
            (Some(s), _) => {
                a.finals.push(s.final_test_acc);
                a.bests.push(s.best_test_acc);
            }
            (None, CellState::Partial(_)) => partial.push(*r),
            (None, CellState::Failed) => failed += 1,
            _ => {}
        }
    }
    let missing = cells.len() - a.finals.len() - partial.len() - failed;
    // a run still training that is the cell's whole story says how far it has come (a long one
    // spans several reports)
    let lone = match &partial[..] {
        [r] if a.finals.is_empty() => r.history.last().map(|last| (last, r.cell.config.epochs)),
        _ => None,
    };
    let partial_note = match lone {
        Some((last, epochs)) => format!("1 partial (epoch {} of {epochs}: {})", last.epoch, pct(last.test_acc)),
        None => format!("{} partial", partial.len()),
    };
    let notes: Vec<String> = [
        (failed > 0).then(|| format!("{failed} failed")),
        (!partial.is_empty()).then_some(partial_note),
        (missing > 0).then(|| format!("{missing} missing")),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !notes.is_empty() {
        a.note = Some(notes.join(", "));
    }
    a
}

pub(super) fn agg_text(a: &Agg) -> String {
    if a.expected == 0 {
        return "—".into();
    }
    if a.finals.is_empty() {
        return a.note.clone().unwrap_or_else(|| "missing".into());
    }
    let (m, s) = mean_std(&a.finals);
    let (bm, _) = mean_std(&a.bests);
    let spread = if a.finals.len() > 1 { format!(" ± {}", pct(s)) } else { String::new() };
    let mut t = format!("{}{spread} (best {})", pct(m), pct(bm));
    if a.finals.len() > 1 || a.expected > 1 {
        t += &format!(" n={}", a.finals.len());
    }
    if let Some(n) = &a.note {
        t += &format!(" [{n}]");
    }
    t
}

pub(super) fn benchmark_results<'a>(results: &'a [CellResult], benchmark: &str) -> Vec<&'a CellResult> {
    results.iter().filter(|r| r.cell.benchmark == benchmark).collect()
}

/// The first result of every method and setting among `rs`, in order: the rows of a table that
/// describes settings, not runs.
pub(super) fn one_per_setting<'a>(rs: &[&'a CellResult]) -> Vec<&'a CellResult> {
    let mut seen = std::collections::HashSet::new();
    rs.iter().filter(|r| seen.insert((r.cell.config.method.clone(), r.cell.config.setting_label()))).copied().collect()
}

/// Final accuracies (in points) of the finished cells of `method` in column `col`, by seed.
pub(super) fn finals_by_seed(rs: &[&CellResult], method: &str, col: &Cell) -> Vec<(u64, f64)> {
    rs.iter()
        .filter(|r| !r.cell.pretraining && r.cell.config.method == method && in_column(&r.cell, col))
        .filter_map(|r| r.summary.as_ref().map(|s| (r.cell.config.seed, 100.0 * s.final_test_acc)))
        .collect()
}

pub(super) fn mean_of(values: &[(u64, f64)]) -> f64 {
    values.iter().map(|v| v.1).sum::<f64>() / values.len() as f64
}

/// The finished and unfinished cells of `method` in column `col`.
pub(super) fn method_cells<'a>(rs: &[&'a CellResult], method: &str, col: &Cell) -> Vec<&'a CellResult> {
    rs.iter()
        .copied()
        .filter(|r| !r.cell.pretraining && r.cell.config.method == method && in_column(&r.cell, col))
        .collect()
}

/// `P3` for a setting with the built-in ADC, else the whole setting label.
pub(super) fn short_setting(cell: &Cell) -> String {
    if cell.config.uses_adc_setting() { format!("P = {}", cell.config.psum_bits) } else { cell.config.setting_label() }
}

/// `a`, `a and b`, `a, b and c`.
pub(super) fn join_and(parts: &[String]) -> String {
    match parts {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// What a CSV column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// Text.
    Text,
    /// Text, or empty.
    MaybeText,
    /// A whole number (seeds, epochs, counts).
    Count,
    /// A whole number, or empty.
    MaybeCount,
    /// Yes or no.
    Flag,
    /// A number (NaN where undefined).
    Number,
    /// A number, or empty.
    MaybeNumber,
}

/// One value of a CSV row.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value {
    /// [`Kind::Text`].
    Text(String),
    /// [`Kind::MaybeText`].
    MaybeText(Option<String>),
    /// [`Kind::Count`].
    Count(u64),
    /// [`Kind::MaybeCount`].
    MaybeCount(Option<u64>),
    /// [`Kind::Flag`].
    Flag(bool),
    /// [`Kind::Number`].
    Number(f64),
    /// [`Kind::MaybeNumber`].
    MaybeNumber(Option<f64>),
}

impl Value {
    fn kind(&self) -> Kind {
        match self {
            Value::Text(_) => Kind::Text,
            Value::MaybeText(_) => Kind::MaybeText,
            Value::Count(_) => Kind::Count,
            Value::MaybeCount(_) => Kind::MaybeCount,
            Value::Flag(_) => Kind::Flag,
            Value::Number(_) => Kind::Number,
            Value::MaybeNumber(_) => Kind::MaybeNumber,
        }
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_string())
    }
}
impl From<Option<String>> for Value {
    fn from(v: Option<String>) -> Self {
        Value::MaybeText(v)
    }
}
impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::Count(v)
    }
}
impl From<usize> for Value {
    fn from(v: usize) -> Self {
        Value::Count(v as u64)
    }
}
impl From<Option<u64>> for Value {
    fn from(v: Option<u64>) -> Self {
        Value::MaybeCount(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Flag(v)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Number(v)
    }
}
impl From<Option<f64>> for Value {
    fn from(v: Option<f64>) -> Self {
        Value::MaybeNumber(v)
    }
}

/// The CSV side of a table, filled one row at a time: its columns are named and typed once, and
/// every row gives one value per column, in order. (The Markdown side is [`markdown`] of the
/// rows as they are shown.)
pub(super) struct Frame {
    columns: Vec<(&'static str, Kind)>,
    rows: Vec<Vec<Value>>,
}

impl Frame {
    /// A frame of these columns, with no rows yet.
    pub(super) fn new(columns: &[(&'static str, Kind)]) -> Self {
        Self { columns: columns.to_vec(), rows: Vec::new() }
    }

    /// Adds a row: one value per column, in the columns' order.
    pub(super) fn push<const N: usize>(&mut self, row: [Value; N]) {
        self.rows.push(row.into());
    }

    /// The polars frame; refused when a row does not fit the columns (a mistake of the table's
    /// code, said by column, not a wrong number in a file).
    pub(super) fn finish(self) -> Result<DataFrame, ReportError> {
        let mismatch = |i: usize, what: String| ReportError::Invalid(format!("table row {}: {what}", i + 1));
        for (i, row) in self.rows.iter().enumerate() {
            if row.len() != self.columns.len() {
                return Err(mismatch(i, format!("{} values for {} columns", row.len(), self.columns.len())));
            }
            if let Some(((name, kind), v)) = self.columns.iter().zip(row).find(|((_, k), v)| v.kind() != *k) {
                return Err(mismatch(i, format!("column `{name}` holds {kind:?} values, not {:?}", v.kind())));
            }
        }
        let columns = self.columns.iter().enumerate().map(|(c, &(name, kind))| {
            let values = self.rows.iter().map(|r| &r[c]);
            let name = name.into();
            match kind {
                Kind::Text => Column::new(name, values.map(|v| text(v).unwrap_or_default()).collect::<Vec<_>>()),
                Kind::MaybeText => Column::new(name, values.map(text).collect::<Vec<_>>()),
                Kind::Count => Column::new(name, values.map(|v| count(v).unwrap_or_default()).collect::<Vec<_>>()),
                Kind::MaybeCount => Column::new(name, values.map(count).collect::<Vec<_>>()),
                Kind::Flag => Column::new(name, values.map(|v| *v == Value::Flag(true)).collect::<Vec<_>>()),
                Kind::Number => Column::new(name, values.map(|v| number(v).unwrap_or(f64::NAN)).collect::<Vec<_>>()),
                Kind::MaybeNumber => Column::new(name, values.map(number).collect::<Vec<_>>()),
            }
        });
        Ok(DataFrame::new_infer_height(columns.collect())?)
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::Text(t) => Some(t.clone()),
        Value::MaybeText(t) => t.clone(),
        _ => None,
    }
}

fn count(v: &Value) -> Option<u64> {
    match v {
        Value::Count(n) => Some(*n),
        Value::MaybeCount(n) => *n,
        _ => None,
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(x) => Some(*x),
        Value::MaybeNumber(x) => *x,
        _ => None,
    }
}
