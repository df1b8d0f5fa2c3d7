//! The report's tables: built as polars frames (written as CSV), rendered as Markdown.

use std::collections::BTreeMap;
use std::path::Path;

use method_api::Recipe;
use polars::prelude::*;
use study::{Cell, CellState, Study};

use crate::energy::{EnergyModel, ModelCosts};
use crate::results::CellResult;
use crate::stats::{PairedInterval, paired_differences};
use crate::writer::ReportWriter;
use crate::{Claims, ReportError};

mod budget;

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
    fn new(stem: &str, frame: DataFrame, markdown: String) -> Self {
        Self { stem: stem.to_owned(), frame, markdown }
    }
}

/// Every table of a report.
pub struct Tables {
    /// The tables, in the order the README shows them.
    pub tables: Vec<Table>,
    /// What the claim, stage and variation tables find, one sentence per benchmark and table,
    /// with the intervals (empty where they have no comparison).
    pub findings: Vec<String>,
    /// Every failed cell: (its label, why).
    pub failed: Vec<(String, String)>,
}

fn pct(x: f64) -> String {
    format!("{:.2}", 100.0 * x)
}

fn mean_std(values: &[f64]) -> (f64, f64) {
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
fn in_column(cell: &Cell, column: &Cell) -> bool {
    let mut t = column.config.clone();
    t.method = cell.config.method.clone();
    t.seed = cell.config.seed;
    study::canonical(t) == cell.config
}

/// Column templates of a benchmark: one cell per distinct setting among methods with an ADC.
fn columns<'a>(results: &[&'a CellResult]) -> Vec<&'a Cell> {
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
fn method_order(study: &Study, benchmark: &str) -> Vec<String> {
    study.benchmark.iter().find(|b| b.name == benchmark).map(|b| b.methods.clone()).unwrap_or_default()
}

/// Finished final and best accuracies of matching cells, and a state note for the others.
struct Agg {
    finals: Vec<f64>,
    bests: Vec<f64>,
    expected: usize,
    note: Option<String>,
}

fn aggregate(cells: &[&CellResult]) -> Agg {
    let mut a = Agg { finals: Vec::new(), bests: Vec::new(), expected: cells.len(), note: None };
    let (mut partial, mut failed) = (0, 0);
    for r in cells {
        match (&r.summary, r.state) {
            (Some(s), _) => {
                a.finals.push(s.final_test_acc);
                a.bests.push(s.best_test_acc);
            }
            (None, CellState::Partial(_)) => partial += 1,
            (None, CellState::Failed) => failed += 1,
            _ => {}
        }
    }
    let missing = cells.len() - a.finals.len() - partial - failed;
    let notes: Vec<String> = [(failed, "failed"), (partial, "partial"), (missing, "missing")]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
    if !notes.is_empty() {
        a.note = Some(notes.join(", "));
    }
    a
}

fn agg_text(a: &Agg) -> String {
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

fn opt_series(name: &str, v: Vec<Option<f64>>) -> Column {
    Column::new(name.into(), v)
}

impl Tables {
    /// Builds every table from the results.
    pub fn build(
        study: &Study,
        results: &[CellResult],
        claims: &Claims,
        energy: &EnergyModel,
    ) -> Result<Self, ReportError> {
        let mut tables = Vec::new();
        let mut findings = Vec::new();
        tables.push(accuracy_table(study, results)?);
        tables.push(claim_table(study, results, claims, &mut findings)?);
        tables.push(stage_table(study, results, &mut findings)?);
        // only a profile that trains some method at several budgets has this table
        let budget = budget::budget_table(study, results, &mut findings)?;
        if budget.frame.height() > 0 {
            tables.push(budget);
        }
        tables.push(ptq_table(study, results)?);
        tables.push(hardware_table(study, results)?);
        tables.push(energy_table(study, results, energy)?);
        tables.push(adc_quality_table(study, results)?);
        tables.push(variation_table(study, results)?);
        tables.push(variation_claim_table(study, results, &mut findings)?);
        let failed = results
            .iter()
            .filter(|r| r.state == CellState::Failed)
            .map(|r| {
                let why = r.failure.as_ref().map_or_else(|| "failed".to_string(), |f| f.message.clone());
                (r.cell.label(), why)
            })
            .collect();
        Ok(Self { tables, findings, failed })
    }

    /// Writes `<stem>.csv` and `<stem>.md` for every table.
    pub fn write(&self, out: &mut ReportWriter) -> Result<(), ReportError> {
        for Table { stem, frame, markdown: md } in &self.tables {
            let mut df = frame.clone();
            let mut buf = Vec::new();
            // accuracies are counts over at most a few 10^4 images: six decimals hold them exactly,
            // and the files stay free of binary-fraction noise such as 0.8289999999999998
            CsvWriter::new(&mut buf).with_float_precision(Some(6)).finish(&mut df)?;
            out.add(Path::new(&format!("{stem}.csv")), buf);
            out.add(Path::new(&format!("{stem}.md")), md.as_bytes());
        }
        Ok(())
    }

    /// The findings as one paragraph.
    pub fn finding(&self) -> String {
        self.findings.join(" ")
    }

    /// The Markdown of one table.
    pub fn markdown(&self, stem: &str) -> &str {
        self.tables.iter().find(|t| t.stem == stem).map_or("", |t| t.markdown.as_str())
    }

    /// The profile's README: tables, figures, configurations and code versions.
    pub fn readme(
        &self,
        study: &Study,
        results: &[CellResult],
        claims: &Claims,
        figures: &[crate::figures::Figure],
    ) -> String {
        let finished = results.iter().filter(|r| r.summary.is_some()).count();
        let mut versions: Vec<String> =
            results.iter().filter_map(|r| r.summary.as_ref().map(|s| s.code_version.clone())).collect();
        versions.sort();
        versions.dedup();
        let mut s = format!("# Report: profile `{}`\n\n{}\n\n", study.name, study.description.trim());
        s += &format!(
            "Generated by `cargo xtask report --profile {}` from {} of {} runs finished (code version{} {}). Every number below comes from the runs listed at the end, whose configurations and results are copied under [`runs/`](runs/). Accuracies are test accuracies in percent after the last epoch (mean ± sample standard deviation over seeds, best epoch of the final training stage in brackets).\n\n",
            study.name,
            finished,
            results.len(),
            if versions.len() == 1 { "" } else { "s" },
            if versions.is_empty() { "none".to_string() } else { versions.join(", ") }
        );
        // results of code nobody can check out are said to be so, at the top and beside each table
        let dirty: Vec<&String> = versions.iter().filter(|v| v.ends_with("-dirty")).collect();
        for v in &dirty {
            let runs: Vec<&CellResult> =
                results.iter().filter(|r| r.summary.as_ref().is_some_and(|x| &x.code_version == *v)).collect();
            let mut benchmarks: Vec<&str> = runs.iter().map(|r| r.cell.benchmark.as_str()).collect();
            benchmarks.dedup();
            s += &format!(
                "> **Warning:** {} of these runs ({}) were trained by code version `{v}`, built from a checkout with \
                 uncommitted changes: no commit holds that code, so they cannot be traced to it or rerun from it. \
                 Every table below includes them.\n\n",
                runs.len(),
                benchmarks.join("; ")
            );
        }
        let beside = match dirty.as_slice() {
            [] => String::new(),
            vs => format!(
                "> Includes runs of uncommitted code ({}): see the warning at the top.\n\n",
                vs.iter().map(|v| format!("`{v}`")).collect::<Vec<_>>().join(", ")
            ),
        };
        if !self.findings.is_empty() {
            s += &format!("## Finding\n\n{beside}{}\n\n", self.finding());
        }
        let titles = [
            ("accuracy", "Accuracy: method x setting"),
            ("claims", "The paper's claim: column/column minus the best related work"),
            ("stages", "One-stage vs two-stage training"),
            ("budget", "Fine-tuning budget: accuracy against epochs"),
            ("ptq", "Post-training quantization beside fine-tuning"),
            ("hardware", "Hardware cost per model"),
            ("energy", "Energy per image beside accuracy"),
            ("adc_quality", "ADC quality (cargo xtask inspect)"),
            ("variation", "Memory-cell variation (accuracy in percent over simulated chips)"),
            ("variation_claims", "Robustness to cell variation: column/column against the best baseline"),
        ];
        for (stem, title) in titles.into_iter().filter(|(stem, _)| self.tables.iter().any(|t| t.stem == *stem)) {
            s += &format!("## {title}\n\n{beside}{}\n(CSV: [`{stem}.csv`]({stem}.csv))\n\n", self.markdown(stem));
        }
        if !figures.is_empty() {
            s += "## Figures\n\n";
            for f in figures {
                let stem = &f.stem;
                s += &format!("![{stem}]({stem}.svg)\n\n");
                if let Some(caption) = &f.caption {
                    s += &format!("{caption}\n\n");
                }
                s += &format!("[SVG]({stem}.svg) · [PNG]({stem}.png)\n\n");
            }
        }
        s += &format!("## Claims compared\n\nSource: {}\n\n", claims.provenance.trim());
        s += "## Runs\n\n| key | benchmark | cell | state | final | best | epochs |\n|---|---|---|---|---|---|---|\n";
        for r in results {
            let (fin, best, ep) = match &r.summary {
                Some(x) => (pct(x.final_test_acc), pct(x.best_test_acc), x.epochs.to_string()),
                None => ("—".into(), "—".into(), r.history.len().to_string()),
            };
            let key = r.cell.key();
            let link = if r.summary.is_some() || !r.history.is_empty() {
                format!("[`{key}`](runs/{key}/config.toml)")
            } else {
                format!("`{key}`")
            };
            s += &format!(
                "| {link} | {} | {} | {} | {fin} | {best} | {ep} |\n",
                r.cell.benchmark,
                r.cell.label(),
                r.state
            );
        }
        let failures: Vec<String> = results
            .iter()
            .filter_map(|r| {
                r.failure.as_ref().map(|f| format!("- `{}` {}: {}\n", r.cell.key(), r.cell.label(), f.message))
            })
            .collect();
        if !failures.is_empty() {
            s += "\n### Failed runs\n\n";
            s += &failures.concat();
        }
        s
    }
}

fn benchmark_results<'a>(results: &'a [CellResult], benchmark: &str) -> Vec<&'a CellResult> {
    results.iter().filter(|r| r.cell.benchmark == benchmark).collect()
}

/// The first result of every method and setting among `rs`, in order: the rows of a table that
/// describes settings, not runs.
fn one_per_setting<'a>(rs: &[&'a CellResult]) -> Vec<&'a CellResult> {
    let mut seen = std::collections::HashSet::new();
    rs.iter().filter(|r| seen.insert((r.cell.config.method.clone(), r.cell.config.setting_label()))).copied().collect()
}

fn accuracy_table(study: &Study, results: &[CellResult]) -> Result<Table, ReportError> {
    let (mut b_col, mut m_col, mut s_col, mut seed_col, mut state_col) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut fin_col, mut best_col) = (Vec::new(), Vec::new());
    let mut md = String::new();
    for b in &study.benchmark {
        if !b.is_runnable() {
            let input = b.requires.as_deref().unwrap_or("an input");
            md += &format!(
                "### {}\n\nNot run: this benchmark needs `--{input} DIR` (give it to reproduce and report).\n\n",
                b.name
            );
            continue;
        }
        let rs = benchmark_results(results, &b.name);
        let cols = columns(&rs);
        let mut headers = vec!["method".to_string()];
        headers.extend(cols.iter().map(|c| c.config.setting_label()));
        let mut rows = Vec::new();
        // methods without a P (floating point, the ideal ADC, a converter of the method's own)
        // have one value per setting of their own: listed once each, below the matrix
        let mut single_rows = Vec::new();
        let mut push_cells = |method: &str, setting: String, cells: &[&CellResult]| {
            for r in cells {
                b_col.push(b.name.clone());
                m_col.push(method.to_string());
                s_col.push(setting.clone());
                seed_col.push(r.cell.config.seed);
                state_col.push(r.state.to_string());
                fin_col.push(r.summary.as_ref().map(|s| s.final_test_acc));
                best_col.push(r.summary.as_ref().map(|s| s.best_test_acc));
            }
        };
        // the floating-point pretraining every other cell starts from
        let pretraining: Vec<&CellResult> = rs.iter().copied().filter(|r| r.cell.pretraining).collect();
        if let Some(first) = pretraining.first() {
            let setting = first.cell.config.setting_label();
            single_rows.push(vec![
                "fp (pretraining)".to_string(),
                "the floating-point network every other run starts from".to_string(),
                setting.clone(),
                agg_text(&aggregate(&pretraining)),
            ]);
            push_cells("fp (pretraining)", setting, &pretraining);
        }
        // the best run with an ideal ADC (no partial-sum quantization) at any weight granularity:
        // not a bound of the methods with ADCs, so a method above it is marked, not hidden
        let ideal_best = method_order(study, &b.name)
            .iter()
            .filter(|m| train::Uses::of_method(m).is_some_and(|u| u.crossbar && !u.adc))
            .flat_map(|m| {
                let cells: Vec<&CellResult> =
                    rs.iter().copied().filter(|r| !r.cell.pretraining && &r.cell.config.method == m).collect();
                one_per_setting(&cells)
                    .into_iter()
                    .map(|t| {
                        let label = t.cell.config.setting_label();
                        let same: Vec<&CellResult> =
                            cells.iter().copied().filter(|r| r.cell.config.setting_label() == label).collect();
                        aggregate(&same).finals
                    })
                    .filter(|f| !f.is_empty())
                    .map(|f| mean_std(&f).0)
                    .collect::<Vec<f64>>()
            })
            .fold(None, |best: Option<f64>, m| Some(best.map_or(m, |b| b.max(m))));
        let mut above_ideal = false;
        for method in method_order(study, &b.name) {
            if train::Uses::of_method(&method).is_some_and(|u| u.adc_setting()) {
                let mut row = vec![method.clone()];
                for col in &cols {
                    let cells = method_cells(&rs, &method, col);
                    let agg = aggregate(&cells);
                    let above = ideal_best.is_some_and(|best| !agg.finals.is_empty() && mean_std(&agg.finals).0 > best);
                    above_ideal |= above;
                    row.push(agg_text(&agg) + if above { " ↑" } else { "" });
                    push_cells(&method, col.config.setting_label(), &cells);
                }
                rows.push(row);
                continue;
            }
            let cells: Vec<&CellResult> =
                rs.iter().copied().filter(|r| !r.cell.pretraining && r.cell.config.method == method).collect();
            for template in one_per_setting(&cells) {
                let setting = template.cell.config.setting_label();
                let same: Vec<&CellResult> =
                    cells.iter().copied().filter(|r| r.cell.config.setting_label() == setting).collect();
                let summary = methods::find(&method).map(|m| m.summary()).unwrap_or("not a registered method");
                single_rows.push(vec![
                    method.clone(),
                    summary.to_string(),
                    setting.clone(),
                    agg_text(&aggregate(&same)),
                ]);
                push_cells(&method, setting, &same);
            }
        }
        md += &format!("### {}\n\n", b.name);
        if !rows.is_empty() {
            md += &format!("{}\n", markdown(&headers, &rows));
        }
        if let (true, Some(best)) = (above_ideal, ideal_best) {
            md += &format!(
                "↑: above the best run without partial-sum quantization ({}): an ideal ADC is no upper bound for \
                 methods whose weights have another granularity, or that are trained otherwise.\n\n",
                pct(best)
            );
        }
        if !single_rows.is_empty() {
            md += &format!(
                "Without an ADC resolution P (one value each, whatever P the columns above sweep):\n\n{}\n",
                markdown(&["method", "what it is", "setting", "accuracy"], &single_rows)
            );
        }
    }
    let df = DataFrame::new_infer_height(vec![
        Column::new("benchmark".into(), b_col),
        Column::new("method".into(), m_col),
        Column::new("setting".into(), s_col),
        Column::new("seed".into(), seed_col),
        Column::new("state".into(), state_col),
        opt_series("final_acc", fin_col),
        opt_series("best_acc", best_col),
    ])?;
    // the per-(benchmark, method, setting) statistics, as the Markdown shows them
    let stats = df
        .clone()
        .lazy()
        .group_by_stable([col("benchmark"), col("method"), col("setting")])
        .agg([
            col("final_acc").mean().alias("final_mean"),
            col("final_acc").std(1).alias("final_std"),
            col("best_acc").mean().alias("best_mean"),
            col("final_acc").count().alias("finished"),
            col("seed").count().alias("cells"),
        ])
        .collect()?;
    Ok(Table::new("accuracy", stats, md))
}

/// Final accuracies (in points) of the finished cells of `method` in column `col`, by seed.
fn finals_by_seed(rs: &[&CellResult], method: &str, col: &Cell) -> Vec<(u64, f64)> {
    rs.iter()
        .filter(|r| !r.cell.pretraining && r.cell.config.method == method && in_column(&r.cell, col))
        .filter_map(|r| r.summary.as_ref().map(|s| (r.cell.config.seed, 100.0 * s.final_test_acc)))
        .collect()
}

fn mean_of(values: &[(u64, f64)]) -> f64 {
    values.iter().map(|v| v.1).sum::<f64>() / values.len() as f64
}

/// The related method with the best mean final accuracy over seeds in column `col`: every
/// method of the benchmark other than the proposed one with the built-in ADC at the column's P
/// (a method with its own converter has another resolution; the accuracy table shows it).
fn best_baseline(b: &study::Benchmark, rs: &[&CellResult], col: &Cell) -> Option<(String, Vec<(u64, f64)>)> {
    let proposed = methods::PROPOSED.name();
    b.methods
        .iter()
        .filter(|m| m.as_str() != proposed)
        .filter(|m| train::Uses::of_method(m).is_some_and(|u| u.adc_setting()))
        .map(|m| (m.clone(), finals_by_seed(rs, m, col)))
        .filter(|(_, v)| !v.is_empty())
        .max_by(|a, b| mean_of(&a.1).total_cmp(&mean_of(&b.1)))
}

/// The paired comparison of `a` minus `b` over the seeds both have: the interval's text, its
/// verdict, and the interval itself where there are two pairs or more.
fn compare(a: &[(u64, f64)], b: &[(u64, f64)]) -> (String, String, Option<PairedInterval>) {
    let diffs = paired_differences(a, b);
    match PairedInterval::of(&diffs) {
        Some(i) => (i.text(), i.verdict().text().to_string(), Some(i)),
        None if diffs.len() == 1 => (format!("{:+.2}", diffs[0]), "n/a (one seed)".into(), None),
        None => ("—".into(), "—".into(), None),
    }
}

/// A verdict between cells that still gained more than this many points in their last epoch
/// (mean over seeds) reads "unconverged": it would measure the budget, not the methods.
pub const CONVERGED_GAIN_POINTS: f64 = 0.5;

/// The mean over the finished cells of `cells` of the points each gained in its last epoch
/// ([`train::run::last_epoch_gain`]); `None` where no finished cell has one.
fn mean_last_gain(cells: &[&CellResult]) -> Option<f64> {
    let gains: Vec<f64> = cells
        .iter()
        .filter_map(|r| {
            let summary = r.summary.as_ref()?;
            train::run::last_epoch_gain(&r.history, summary.before_training.as_ref()).map(|g| 100.0 * g)
        })
        .collect();
    (!gains.is_empty()).then(|| gains.iter().sum::<f64>() / gains.len() as f64)
}

/// `+1.40 / +2.73`: the last-epoch gains of two compared cells, `—` where not measured.
fn gains_text(gains: [Option<f64>; 2]) -> String {
    gains.map(|g| g.map_or("—".to_string(), |g| format!("{g:+.2}"))).join(" / ")
}

/// `verdict`, or `unconverged (+1.40 / +2.73)` where either compared cell still gained more than
/// [`CONVERGED_GAIN_POINTS`] in its last epoch (a comparison that was made; `—` stays).
fn converged_verdict(verdict: &str, gains: [Option<f64>; 2]) -> String {
    let unconverged = gains.iter().flatten().any(|g| *g > CONVERGED_GAIN_POINTS);
    if unconverged && verdict != "—" { format!("unconverged ({})", gains_text(gains)) } else { verdict.to_string() }
}

/// A verdict as a finding sentence puts it in brackets: `yes`, or `unconverged, last-epoch gains
/// +1.40 / +2.73`.
fn finding_verdict(verdict: &str) -> String {
    match verdict.strip_prefix("unconverged (").and_then(|g| g.strip_suffix(')')) {
        Some(gains) => format!("unconverged, last-epoch gains {gains}"),
        None => verdict.to_string(),
    }
}

/// The finished and unfinished cells of `method` in column `col`.
fn method_cells<'a>(rs: &[&'a CellResult], method: &str, col: &Cell) -> Vec<&'a CellResult> {
    rs.iter()
        .copied()
        .filter(|r| !r.cell.pretraining && r.cell.config.method == method && in_column(&r.cell, col))
        .collect()
}

/// One comparison of column/column with one related method at one setting of a benchmark.
struct Comparison<'a> {
    benchmark: &'a study::Benchmark,
    col: &'a Cell,
    /// The related method, `None` where there is none to compare with.
    baseline: Option<String>,
    /// Whether it is the related method with the best mean at this setting.
    best: bool,
    ours: Vec<(u64, f64)>,
    theirs: Vec<(u64, f64)>,
    /// Last-epoch gains of column/column and of the baseline (points, mean over seeds).
    gains: [Option<f64>; 2],
    interval: Option<PairedInterval>,
}

impl Comparison<'_> {
    fn pairs(&self) -> usize {
        paired_differences(&self.ours, &self.theirs).len()
    }
}

/// Every comparison the claim table makes: column/column against each related method with the
/// built-in ADC (a method with its own converter has another resolution; the accuracy table shows
/// it) at each one-stage setting of each benchmark, in the benchmarks' method order.
fn claim_comparisons<'a>(study: &'a Study, results: &'a [CellResult]) -> Vec<Comparison<'a>> {
    let proposed = methods::PROPOSED.name();
    let mut out = Vec::new();
    for b in study.benchmark.iter().filter(|b| b.is_runnable()) {
        let rs = benchmark_results(results, &b.name);
        // the claim is about one-stage training at the paper's settings: recipe overrides are
        // compared in the stage table instead
        for col in columns(&rs).into_iter().filter(|c| c.config.recipe.is_none()) {
            let ours = finals_by_seed(&rs, proposed, col);
            let ours_gain = mean_last_gain(&method_cells(&rs, proposed, col));
            let best = best_baseline(b, &rs, col).map(|(name, _)| name);
            let related: Vec<&String> = b
                .methods
                .iter()
                .filter(|m| m.as_str() != proposed && train::Uses::of_method(m).is_some_and(|u| u.adc_setting()))
                .filter(|m| !finals_by_seed(&rs, m, col).is_empty())
                .collect();
            if related.is_empty() || ours.is_empty() {
                out.push(Comparison {
                    benchmark: b,
                    col,
                    baseline: None,
                    best: false,
                    ours,
                    theirs: Vec::new(),
                    gains: [ours_gain, None],
                    interval: None,
                });
                continue;
            }
            for m in related {
                let theirs = finals_by_seed(&rs, m, col);
                let interval = PairedInterval::of(&paired_differences(&ours, &theirs));
                out.push(Comparison {
                    benchmark: b,
                    col,
                    baseline: Some(m.clone()),
                    best: best.as_deref() == Some(m.as_str()),
                    gains: [ours_gain, mean_last_gain(&method_cells(&rs, m, col))],
                    ours: ours.clone(),
                    theirs,
                    interval,
                });
            }
        }
    }
    out
}

/// The claimed gain as a row of benchmark `b` shows it: on the paper's own data set as it is, on
/// another as a stand-in; `—` where the benchmark checks no claim.
fn claimed_text(b: &study::Benchmark, col: &Cell, claims: &Claims) -> Result<(String, Option<f64>), ReportError> {
    let Some(key) = &b.claim else { return Ok(("— (not a benchmark of the paper)".into(), None)) };
    let claim = claims
        .claims
        .get(key)
        .ok_or_else(|| ReportError::Invalid(format!("benchmark `{}`: no claim `{key}` in the claims file", b.name)))?;
    let text = if col.config.dataset == claim.dataset {
        format!("{:+.2} ({key})", claim.gain_points)
    } else {
        format!("{:+.2} on {} (this data set stands in for it)", claim.gain_points, claim.benchmark)
    };
    Ok((text, Some(claim.gain_points)))
}

fn claim_table(
    study: &Study,
    results: &[CellResult],
    claims: &Claims,
    findings: &mut Vec<String>,
) -> Result<Table, ReportError> {
    let headers = [
        "benchmark",
        "setting",
        "column/column",
        "related method",
        "gain [95% CI]",
        "seeds",
        "last-epoch gain (column/column / related)",
        "column/column better",
        "Holm-adjusted",
        "claimed gain (over the best)",
    ];
    let comparisons = claim_comparisons(study, results);
    // the family: every comparison with an interval (two seeds or more)
    let tested: Vec<usize> = (0..comparisons.len()).filter(|&i| comparisons[i].interval.is_some()).collect();
    let p_values: Vec<f64> = tested.iter().map(|&i| comparisons[i].interval.expect("tested").p_value()).collect();
    let adjusted = crate::stats::holm_adjust(&p_values);
    let adjusted_of = |i: usize| tested.iter().position(|&t| t == i).map(|k| adjusted[k]);
    let mut rows = Vec::new();
    let (mut bc, mut sc, mut basec, mut bestc, mut gc, mut lc, mut hc, mut nc, mut vc) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut ogc, mut bgc, mut pc, mut hvc, mut cc) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // finding parts as (benchmark, text): with an interval, and from a single seed
    let (mut parts, mut single) = (Vec::<(String, String)>::new(), Vec::<(String, String)>::new());
    for (i, c) in comparisons.iter().enumerate() {
        let b = c.benchmark;
        let rs = benchmark_results(results, &b.name);
        let ours_cells = method_cells(&rs, methods::PROPOSED.name(), c.col);
        let (gain, verdict) = match (&c.baseline, c.interval) {
            (Some(_), Some(i)) => (i.text(), i.verdict().text().to_string()),
            (Some(_), None) if c.pairs() == 1 => {
                (format!("{:+.2}", paired_differences(&c.ours, &c.theirs)[0]), "n/a (one seed)".to_string())
            }
            _ => ("—".to_string(), "—".to_string()),
        };
        let verdict = converged_verdict(&verdict, c.gains);
        let adjusted = adjusted_of(i);
        let holm = match (c.interval, adjusted) {
            (Some(interval), Some(p)) => {
                let holm =
                    if verdict.starts_with("unconverged") { "unconverged" } else { interval.verdict_at(p).text() };
                format!("{holm} (p = {p:.3})")
            }
            _ => "—".to_string(),
        };
        let (claimed, claimed_points) = if c.best { claimed_text(b, c.col, claims)? } else { ("".into(), None) };
        let baseline = match &c.baseline {
            Some(m) if c.best => format!("**{m}** (best): {:.2}", mean_of(&c.theirs)),
            Some(m) => format!("{m}: {:.2}", mean_of(&c.theirs)),
            None => "missing".to_string(),
        };
        if let (true, Some(m), Some(interval)) = (c.best, &c.baseline, c.interval) {
            let holm_note = match adjusted {
                Some(p) if interval.verdict_at(p) != interval.verdict() && !verdict.starts_with("unconverged") => {
                    format!("; Holm-adjusted: {}", interval.verdict_at(p).text())
                }
                _ => String::new(),
            };
            parts.push((
                b.name.clone(),
                format!(
                    "{:+.2} points [{:+.2}, {:+.2}] over {m} at {} ({}{holm_note})",
                    interval.mean,
                    interval.low,
                    interval.high,
                    short_setting(c.col),
                    finding_verdict(&verdict)
                ),
            ));
        } else if let (true, Some(m), 1) = (c.best, &c.baseline, c.pairs()) {
            let diff = paired_differences(&c.ours, &c.theirs)[0];
            let unconverged = verdict.starts_with("unconverged").then(|| format!(" ({})", finding_verdict(&verdict)));
            single.push((
                b.name.clone(),
                format!("{diff:+.2} points over {m} at {}{}", short_setting(c.col), unconverged.unwrap_or_default()),
            ));
        }
        rows.push(vec![
            b.name.clone(),
            c.col.config.setting_label(),
            agg_text(&aggregate(&ours_cells)),
            baseline,
            gain,
            c.pairs().to_string(),
            gains_text(c.gains),
            verdict.clone(),
            holm.clone(),
            claimed,
        ]);
        bc.push(b.name.clone());
        sc.push(c.col.config.setting_label());
        basec.push(c.baseline.clone());
        bestc.push(c.best);
        gc.push(c.interval.map(|i| i.mean));
        lc.push(c.interval.map(|i| i.low));
        hc.push(c.interval.map(|i| i.high));
        nc.push(c.pairs() as u64);
        ogc.push(c.gains[0]);
        bgc.push(c.gains[1]);
        vc.push(verdict);
        pc.push(adjusted);
        hvc.push(holm);
        cc.push(claimed_points);
    }
    for b in study.benchmark.iter() {
        let of = |list: &[(String, String)]| -> Vec<String> {
            list.iter().filter(|(name, _)| *name == b.name).map(|(_, text)| text.clone()).collect()
        };
        let (with_interval, one_seed) = (of(&parts), of(&single));
        if !with_interval.is_empty() {
            findings.push(format!(
                "{}: against the best related method at each setting, column/column gains {} (mean of per-seed \
                 differences, 95% t-interval; the claim table makes {} such comparisons in all, against every related \
                 method).",
                b.name,
                join_and(&with_interval),
                tested.len()
            ));
        }
        if !one_seed.is_empty() {
            findings.push(format!(
                "{}: column/column gains {} from a single seed: one run per method gives no interval, so these \
                 differences do not say which method is better.",
                b.name,
                join_and(&one_seed)
            ));
        }
    }
    let df = DataFrame::new_infer_height(vec![
        Column::new("benchmark".into(), bc),
        Column::new("setting".into(), sc),
        Column::new("related_method".into(), basec),
        Column::new("best_related".into(), bestc),
        opt_series("gain_points", gc),
        opt_series("gain_ci95_low", lc),
        opt_series("gain_ci95_high", hc),
        Column::new("seeds".into(), nc),
        opt_series("proposed_last_epoch_gain_points", ogc),
        opt_series("related_last_epoch_gain_points", bgc),
        Column::new("verdict".into(), vc),
        opt_series("holm_p", pc),
        Column::new("holm_verdict".into(), hvc),
        opt_series("claimed_gain_points", cc),
    ])?;
    let md = if rows.is_empty() {
        "No benchmark of this profile has column/column and a related method with quantized partial sums.\n".to_string()
    } else {
        markdown(&headers, &rows) + &gain_note(tested.len())
    };
    Ok(Table::new("claims", df, md))
}

/// The note under the claim table, which makes `tested` comparisons with an interval.
fn gain_note(tested: usize) -> String {
    format!(
        "\nColumn/column is compared with every related method that has the built-in ADC, at every setting; the best related method (highest mean over seeds at that setting, in bold) is the one the paper's claim is about. The gain is the mean over seeds of the per-seed difference of final test accuracies (points), with its 95% Student-t interval. Verdict: yes where the whole interval lies above 0, no where it lies below 0, within noise otherwise; n/a with a single seed; unconverged where either compared method still gained more than {CONVERGED_GAIN_POINTS} points in its last epoch (mean over seeds; the gain of the last epoch over the one before it in the same stage, or over the accuracy before training where the run has one epoch; — where neither was recorded). Comparisons with an interval in this table: {tested}; the Holm-adjusted verdict (paired t-test p-values adjusted by Holm's step-down method over all of them) keeps the chance of any false yes or no at 5%.\n"
    )
}

/// `P3` for a setting with the built-in ADC, else the whole setting label.
fn short_setting(cell: &Cell) -> String {
    if cell.config.uses_adc_setting() { format!("P = {}", cell.config.psum_bits) } else { cell.config.setting_label() }
}

/// `a`, `a and b`, `a, b and c`.
fn join_and(parts: &[String]) -> String {
    match parts {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

fn stage_table(study: &Study, results: &[CellResult], findings: &mut Vec<String>) -> Result<Table, ReportError> {
    let headers = [
        "benchmark",
        "method",
        "setting",
        "one-stage",
        "two-stage",
        "one minus two [95% CI]",
        "seeds",
        "last-epoch gain (one / two)",
        "one-stage better",
    ];
    let mut rows = Vec::new();
    let (mut bc, mut mc, mut sc, mut oc, mut tc) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut dc, mut lc, mut hc, mut vc) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut ogc, mut tgc) = (Vec::new(), Vec::new());
    for b in &study.benchmark {
        let rs = benchmark_results(results, &b.name);
        // pair every two-stage cell with the same configuration trained in one stage
        let mut seen = Vec::new();
        for r in rs.iter().filter(|r| r.cell.config.recipe == Some(Recipe::TwoStage)) {
            let mut one = r.cell.config.clone();
            one.recipe = None;
            let label = format!("{} {}", one.method, one.setting_label());
            if seen.contains(&label) {
                continue;
            }
            seen.push(label);
            let matching = |recipe: Option<Recipe>| -> Vec<&CellResult> {
                rs.iter()
                    .copied()
                    .filter(|x| {
                        let mut c = x.cell.config.clone();
                        c.seed = one.seed;
                        c.recipe == recipe && {
                            c.recipe = None;
                            c == one
                        }
                    })
                    .collect()
            };
            let by_seed = |cells: &[&CellResult]| -> Vec<(u64, f64)> {
                cells
                    .iter()
                    .filter_map(|x| x.summary.as_ref().map(|s| (x.cell.config.seed, 100.0 * s.final_test_acc)))
                    .collect()
            };
            let (o, t) = (matching(None), matching(Some(Recipe::TwoStage)));
            let (ov, tv) = (by_seed(&o), by_seed(&t));
            let (diff, verdict, interval) = compare(&ov, &tv);
            let gains = [mean_last_gain(&o), mean_last_gain(&t)];
            let verdict = converged_verdict(&verdict, gains);
            let pairs = paired_differences(&ov, &tv).len();
            if let Some(i) = interval {
                let reading = match i.verdict() {
                    crate::stats::Verdict::Yes => "one-stage better",
                    crate::stats::Verdict::No => "two-stage better",
                    crate::stats::Verdict::WithinNoise => "within noise",
                };
                findings.push(format!(
                    "{}: {} trained in one stage minus two stages at {} is {:+.2} points [{:+.2}, {:+.2}] ({}).",
                    b.name,
                    one.method,
                    short_setting(&r.cell),
                    i.mean,
                    i.low,
                    i.high,
                    if verdict.starts_with("unconverged") { finding_verdict(&verdict) } else { reading.to_string() }
                ));
            }
            rows.push(vec![
                b.name.clone(),
                one.method.clone(),
                one.setting_label(),
                agg_text(&aggregate(&o)),
                agg_text(&aggregate(&t)),
                diff,
                pairs.to_string(),
                gains_text(gains),
                verdict.clone(),
            ]);
            bc.push(b.name.clone());
            mc.push(one.method.clone());
            sc.push(one.setting_label());
            oc.push((!ov.is_empty()).then(|| mean_of(&ov)));
            tc.push((!tv.is_empty()).then(|| mean_of(&tv)));
            dc.push(interval.map(|i| i.mean));
            lc.push(interval.map(|i| i.low));
            hc.push(interval.map(|i| i.high));
            ogc.push(gains[0]);
            tgc.push(gains[1]);
            vc.push(verdict);
        }
    }
    let df = DataFrame::new_infer_height(vec![
        Column::new("benchmark".into(), bc),
        Column::new("method".into(), mc),
        Column::new("setting".into(), sc),
        opt_series("one_stage_final_points", oc),
        opt_series("two_stage_final_points", tc),
        opt_series("one_minus_two_points", dc),
        opt_series("ci95_low", lc),
        opt_series("ci95_high", hc),
        opt_series("one_stage_last_epoch_gain_points", ogc),
        opt_series("two_stage_last_epoch_gain_points", tgc),
        Column::new("verdict".into(), vc),
    ])?;
    let md = if rows.is_empty() {
        "No cell of this profile is trained both ways (add a sweep with `recipe = [\"two-stage\"]`).\n".to_string()
    } else {
        markdown(&headers, &rows)
            + "\nBoth recipes train the same total epochs. The difference is the mean over seeds of the per-seed difference (points) with its 95% Student-t interval; verdict and last-epoch gains as in the claim table (yes: one-stage is better beyond the noise; a two-stage run's single fine-tuning epoch follows its ideal-ADC epoch, so it has no last-epoch gain to show).\n"
    };
    Ok(Table::new("stages", df, md))
}

/// Post-training quantization beside fine-tuning: for every method and setting that starts from
/// its benchmark's pretraining, the test accuracy before the first step (the pretrained weights
/// quantized, ADCs calibrated as the method calibrates them) and after the last epoch, over the
/// seeds that recorded both.
fn ptq_table(study: &Study, results: &[CellResult]) -> Result<Table, ReportError> {
    let headers = [
        "benchmark",
        "method",
        "setting",
        "pretraining",
        "before fine-tuning",
        "after fine-tuning",
        "fine-tuning adds [95% CI]",
        "seeds",
    ];
    let mut rows = Vec::new();
    let (mut bc, mut mc, mut sc, mut nc) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut pc, mut beforec, mut afterc, mut adcc) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for b in study.benchmark.iter().filter(|b| b.is_runnable()) {
        let rs = benchmark_results(results, &b.name);
        let pretraining: Vec<f64> = rs
            .iter()
            .filter(|r| r.cell.pretraining)
            .filter_map(|r| r.summary.as_ref())
            .map(|s| s.final_test_acc)
            .collect();
        let pretraining = (!pretraining.is_empty()).then(|| mean_std(&pretraining).0);
        let started: Vec<&CellResult> =
            rs.iter().copied().filter(|r| !r.cell.pretraining && r.cell.starts_from().is_some()).collect();
        for template in one_per_setting(&started) {
            let (method, label) = (&template.cell.config.method, template.cell.config.setting_label());
            // (seed, before, after, whether the ADCs were on before the first step)
            let pairs: Vec<(u64, f64, f64, bool)> = started
                .iter()
                .filter(|r| &r.cell.config.method == method && r.cell.config.setting_label() == label)
                .filter_map(|r| {
                    let s = r.summary.as_ref()?;
                    let before = s.before_training.as_ref()?;
                    Some((r.cell.config.seed, 100.0 * before.test_acc, 100.0 * s.final_test_acc, before.adc))
                })
                .collect();
            if pairs.is_empty() {
                continue;
            }
            let before: Vec<f64> = pairs.iter().map(|p| p.1).collect();
            let after: Vec<f64> = pairs.iter().map(|p| p.2).collect();
            let adc = pairs.iter().all(|p| p.3);
            let uses_adc = template.cell.config.uses_adc();
            let points = |v: &[f64]| {
                let (m, sd) = mean_std(v);
                if v.len() > 1 { format!("{m:.2} ± {sd:.2}") } else { format!("{m:.2}") }
            };
            let diffs: Vec<f64> = pairs.iter().map(|p| p.2 - p.1).collect();
            let added = match PairedInterval::of(&diffs) {
                Some(i) => i.text(),
                None => format!("{:+.2}", diffs.iter().sum::<f64>() / diffs.len() as f64),
            };
            rows.push(vec![
                b.name.clone(),
                method.clone(),
                label.clone(),
                pretraining.map_or("—".into(), |p| format!("{:.2}", 100.0 * p)),
                points(&before) + if uses_adc && !adc { " (ideal ADC)" } else { "" },
                points(&after),
                added,
                pairs.len().to_string(),
            ]);
            bc.push(b.name.clone());
            mc.push(method.clone());
            sc.push(label);
            pc.push(pretraining.map(|p| 100.0 * p));
            beforec.push(mean_std(&before).0);
            afterc.push(mean_std(&after).0);
            adcc.push(adc);
            nc.push(pairs.len() as u64);
        }
    }
    let df = DataFrame::new_infer_height(vec![
        Column::new("benchmark".into(), bc),
        Column::new("method".into(), mc),
        Column::new("setting".into(), sc),
        opt_series("pretraining_points", pc),
        Column::new("before_fine_tuning_points".into(), beforec),
        Column::new("after_fine_tuning_points".into(), afterc),
        Column::new("adc_on_before".into(), adcc),
        Column::new("seeds".into(), nc),
    ])?;
    let md = if rows.is_empty() {
        "No fine-tuned run of this profile recorded its accuracy before its first step (runs trained before that \
         record existed, or a profile without a pretraining).\n"
            .to_string()
    } else {
        markdown(&headers, &rows)
            + "\nBefore fine-tuning: the pretrained network with the method's quantizers, its ADC windows calibrated as the method calibrates them (post-training quantization), on the run's test images; a two-stage recipe starts with an ideal ADC (marked). After: the final epoch. Mean ± sample standard deviation over seeds; what fine-tuning adds is the mean of per-seed differences with its 95% Student-t interval (points).\n"
    };
    Ok(Table::new("ptq", df, md))
}

fn hardware_table(study: &Study, results: &[CellResult]) -> Result<Table, ReportError> {
    let headers = [
        "benchmark",
        "method",
        "setting",
        "CIM layers",
        "arrays",
        "ADC bits",
        "ADC conversions / image",
        "dequant. multipliers",
        "dequant. multiplies / image",
        "weight scales",
        "psum scales",
        "window adds / image",
    ];
    let mut rows = Vec::new();
    let mut frame: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    let (mut bc, mut mc, mut sc) = (Vec::new(), Vec::new(), Vec::new());
    for b in &study.benchmark {
        for r in one_per_setting(&benchmark_results(results, &b.name)) {
            let c = &r.cell.config;
            let costs = ModelCosts::of(c)?;
            let (counts, adc_bits) = (costs.counts, costs.adc_label);
            let sum = counts.per_layer_sum;
            let values = [
                ("cim_layers", counts.layers as u64),
                ("arrays", sum.arrays as u64),
                ("adc_conversions_per_image", counts.adc_conversions_per_image as u64),
                ("dequant_multipliers", sum.dequant_multipliers as u64),
                ("dequant_multiplies_per_image", counts.dequant_multiplies_per_image as u64),
                ("weight_scales", sum.weight_scales as u64),
                ("psum_scales", sum.psum_scales as u64),
                ("window_adds_per_image", counts.window_adds_per_image as u64),
            ];
            let setting = c.setting_label();
            let mut row = vec![b.name.clone(), c.method.clone(), setting.clone()];
            for (i, (name, v)) in values.iter().enumerate() {
                frame.entry(name).or_default().push(*v);
                row.push(if c.uses_crossbar() { v.to_string() } else { "—".into() });
                if i == 1 {
                    row.push(adc_bits.clone());
                }
            }
            rows.push(row);
            bc.push(b.name.clone());
            mc.push(c.method.clone());
            sc.push(setting);
        }
    }
    let mut cols =
        vec![Column::new("benchmark".into(), bc), Column::new("method".into(), mc), Column::new("setting".into(), sc)];
    for (name, v) in frame {
        cols.push(Column::new(name.into(), v));
    }
    let df = DataFrame::new_infer_height(cols)?;
    let md = markdown(&headers, &rows)
        + "\nArrays, scales and distinct dequantization multipliers are summed over the CIM layers; ADC conversions and dequantization multiplies are per classified image. Column-wise weights add no multiplier over layer-wise weights with column-wise partial sums (one per slice, row tile and column either way). A learned ADC window adds one constant (s_w * z) per multiplier, added digitally: one add per dequantization multiply.\n";
    Ok(Table::new("hardware", df, md))
}

/// Median and worst ADC SQNR per method and setting, over every (layer, polarity, slice) ADC and
/// every seed's run, from the runs' `adc-quality.json` (written by `inspect`, which `reproduce`
/// runs after training).
/// Energy per image of every method and setting, beside its accuracy ([`EnergyModel`]).
fn energy_table(study: &Study, results: &[CellResult], model: &EnergyModel) -> Result<Table, ReportError> {
    let headers = [
        "benchmark",
        "method",
        "setting",
        "accuracy %",
        "seeds",
        "ADC bits",
        "ADC nJ",
        "dequant. nJ",
        "accumulation nJ",
        "window nJ",
        "total nJ / image",
        "scale registers",
    ];
    let mut rows = Vec::new();
    let (mut bc, mut mc, mut sc, mut acc_col, mut seeds_col) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut adc, mut total, mut lossless_bits, mut lossless_adc, mut registers) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut parts: [Vec<f64>; 3] = Default::default();
    let nj = |j: f64| format!("{:.1}", j * 1e9);
    for b in &study.benchmark {
        let rs = benchmark_results(results, &b.name);
        for r in one_per_setting(&rs).into_iter().filter(|r| r.cell.config.uses_crossbar()) {
            let c = &r.cell.config;
            let setting = c.setting_label();
            let finals: Vec<f64> = finals_by_seed(&rs, &c.method, &r.cell).iter().map(|(_, acc)| acc / 100.0).collect();
            let costs = ModelCosts::of(c)?;
            let e = model.per_image(&costs);
            let accuracy = if finals.is_empty() { f64::NAN } else { mean_std(&finals).0 };
            // an ideal ADC is no converter: no energy of its own, beside what the lossless
            // converter it stands for would cost
            let converters = costs.has_converters();
            let lossless = (!converters).then(|| {
                let bits = costs.lossless_adc_bits.iter().copied().max().unwrap_or(0);
                (bits, model.per_image(&costs.with_lossless_adcs()).adc)
            });
            rows.push(vec![
                b.name.clone(),
                c.method.clone(),
                setting.clone(),
                if finals.is_empty() { "—".into() } else { pct(accuracy) },
                finals.len().to_string(),
                match lossless {
                    Some((bits, _)) => format!("{} (lossless: {bits})", costs.adc_label),
                    None => costs.adc_label.clone(),
                },
                match lossless {
                    Some((_, j)) => format!("— (lossless: {})", nj(j)),
                    None => nj(e.adc),
                },
                nj(e.dequant),
                nj(e.accumulate),
                nj(e.window),
                if converters { nj(e.total()) } else { "—".into() },
                costs.scale_registers().to_string(),
            ]);
            bc.push(b.name.clone());
            mc.push(c.method.clone());
            sc.push(setting);
            acc_col.push(accuracy);
            seeds_col.push(finals.len() as u64);
            adc.push(converters.then_some(e.adc * 1e9));
            total.push(converters.then_some(e.total() * 1e9));
            lossless_bits.push(lossless.map(|(bits, _)| bits));
            lossless_adc.push(lossless.map(|(_, j)| j * 1e9));
            registers.push(costs.scale_registers() as u64);
            for (column, value) in parts.iter_mut().zip([e.dequant, e.accumulate, e.window]) {
                column.push(value * 1e9);
            }
        }
    }
    let [dequant, accumulate, window] = parts;
    let df = DataFrame::new_infer_height(vec![
        Column::new("benchmark".into(), bc),
        Column::new("method".into(), mc),
        Column::new("setting".into(), sc),
        Column::new("accuracy".into(), acc_col),
        Column::new("seeds".into(), seeds_col),
        opt_series("adc_nj", adc),
        Column::new("dequant_nj".into(), dequant),
        Column::new("accumulate_nj".into(), accumulate),
        Column::new("window_nj".into(), window),
        opt_series("total_nj", total),
        Column::new("lossless_adc_bits".into(), lossless_bits),
        opt_series("lossless_adc_nj", lossless_adc),
        Column::new("scale_registers".into(), registers),
    ])?;
    let source = model
        .source
        .file_name()
        .map_or_else(|| model.source.display().to_string(), |f| f.to_string_lossy().into_owned());
    let md = markdown(&headers, &rows)
        + &format!(
            "\nEnergy of the digital periphery per classified image, in nJ, from the counts of the hardware table and the energy model `{source}` ({} node; every constant and its source in the file): ADC conversions at adc_floor + adc_fom x 2^bits each ({:.0} fJ + {:.0} fJ x 2^bits), {:.2} pJ per dequantization multiply, {:.2} pJ per accumulating add (one per ADC output) and {:.2} pJ per window add. An ideal ADC is no converter: its row has no ADC energy and no total; beside it, the conversions of the lossless ADC it stands for (the resolution that holds every partial sum of the layer's arrays, the largest over the layers). Scale registers: the weight steps, ADC steps and learned window constants the model stores (their storage is not in the energy). The arrays' read energy, the drivers and the layers off the arrays are not counted. Accuracy: mean final test accuracy over the seeds. How the conclusions depend on the ADC's figure of merit: the energy sensitivity figures.\n",
            model.node,
            model.adc_floor * 1e15,
            model.adc_fom * 1e15,
            model.dequant_multiply * 1e12,
            model.accumulate_add * 1e12,
            model.window_add * 1e12,
        );
    Ok(Table::new("energy", df, md))
}

fn adc_quality_table(study: &Study, results: &[CellResult]) -> Result<Table, ReportError> {
    let headers = [
        "benchmark",
        "method",
        "setting",
        "median SQNR dB",
        "worst SQNR dB",
        "median spread SQNR dB",
        "clipped low %",
        "clipped high %",
        "runs",
    ];
    let mut rows = Vec::new();
    let (mut bc, mut mc, mut sc) = (Vec::new(), Vec::new(), Vec::new());
    let (mut med, mut worst, mut low, mut high) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut spread = Vec::new();
    for b in &study.benchmark {
        let rs = benchmark_results(results, &b.name);
        for r in one_per_setting(&rs).into_iter().filter(|r| r.cell.config.uses_adc()) {
            let c = &r.cell.config;
            let reports: Vec<&train::AdcQualityReport> = rs
                .iter()
                .filter(|x| x.cell.config.method == c.method && x.cell.config.setting_label() == c.setting_label())
                .filter_map(|x| x.adc_quality.as_ref())
                .collect();
            let pooled = train::AdcQualityReport {
                method: c.method.clone(),
                config_hash: String::new(),
                images: reports.iter().map(|q| q.images).sum(),
                rows: reports.iter().flat_map(|q| q.rows.iter().cloned()).collect(),
            };
            let n = pooled.rows.len().max(1) as f64;
            let share = |f: fn(&train::AdcQualityRow) -> f64| {
                (!pooled.rows.is_empty()).then(|| 100.0 * pooled.rows.iter().map(f).sum::<f64>() / n)
            };
            let (m, w, sp) = (pooled.median_sqnr_db(), pooled.worst_sqnr_db(), pooled.median_spread_sqnr_db());
            let (l, h) = (share(|r| r.clipped_low), share(|r| r.clipped_high));
            let text = |v: Option<f64>| v.map(|x| format!("{x:.2}")).unwrap_or_else(|| "—".into());
            rows.push(vec![
                b.name.clone(),
                c.method.clone(),
                c.setting_label(),
                text(m),
                text(w),
                text(sp),
                text(l),
                text(h),
                reports.len().to_string(),
            ]);
            bc.push(b.name.clone());
            mc.push(c.method.clone());
            sc.push(c.setting_label());
            med.push(m.filter(|x| x.is_finite()));
            worst.push(w.filter(|x| x.is_finite()));
            spread.push(sp.filter(|x| x.is_finite()));
            low.push(l);
            high.push(h);
        }
    }
    let df = DataFrame::new_infer_height(vec![
        Column::new("benchmark".into(), bc),
        Column::new("method".into(), mc),
        Column::new("setting".into(), sc),
        opt_series("median_sqnr_db", med),
        opt_series("worst_sqnr_db", worst),
        opt_series("median_spread_sqnr_db", spread),
        opt_series("clipped_low_pct", low),
        opt_series("clipped_high_pct", high),
    ])?;
    let md = if rows.is_empty() {
        "No method of this profile quantizes partial sums.\n".to_string()
    } else {
        markdown(&headers, &rows)
            + "\nSQNR of every ADC (signal p, noise p - p_q) over every CIM layer, polarity and slice, on test batches; the spread SQNR takes as signal p minus its column's mean over the batch (the partial sums of an array share a large common offset, which the plain SQNR counts as signal); clipped shares are means over those ADCs. For scale: a uniform quantizer of Gaussian data reaches at best 14.3 dB with 3 bits, 9.3 dB with 2. Runs archived without a checkpoint (trained before `inspect` existed) show —.\n"
    };
    Ok(Table::new("adc_quality", df, md))
}

/// Image shape and class count of a data-set spec, for counting hardware (the class count only
/// changes the floating-point classifier). Folder trees are counted as 32x32 RGB.
/// The image shape [C, H, W] of a data set: its manifest's, or for a `folder:` tree (which the
/// report does not read: it may be gone by then) 32 x 32 RGB, the CIFAR-10 JPEG tree the
/// profiles use.
pub(crate) fn data_shape(spec: &str) -> [usize; 3] {
    data::find_manifest(spec).map_or([3, 32, 32], |m| m.image_shape)
}

fn variation_table(study: &Study, results: &[CellResult]) -> Result<Table, ReportError> {
    let Some(v) = &study.variation else {
        let df = DataFrame::new_infer_height(vec![Column::new("method".into(), Vec::<String>::new())])?;
        return Ok(Table::new("variation", df, "This profile has no variation study.\n".into()));
    };
    let cells = study.variation_cells()?;
    let mut headers = vec!["method".to_string(), "setting".to_string(), "seed".to_string(), "no variation".to_string()];
    headers.extend(v.sigmas.iter().map(|s| format!("σ = {s}")));
    let mut rows = Vec::new();
    let (mut mc, mut sc, mut seedc, mut sigc, mut meanc, mut stdc, mut minc, mut maxc) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for cell in cells {
        let Some(r) = results.iter().find(|r| r.cell == cell) else { continue };
        let mut row = vec![cell.config.method.clone(), cell.config.setting_label(), cell.config.seed.to_string()];
        match &r.variation {
            None => {
                row.push(format!("missing ({})", r.state));
                row.extend(v.sigmas.iter().map(|_| "—".to_string()));
            }
            Some(rep) => {
                row.push(pct(rep.noiseless));
                for res in &rep.results {
                    row.push(format!("{} ± {} [{}, {}]", pct(res.mean), pct(res.std), pct(res.min), pct(res.max)));
                    mc.push(cell.config.method.clone());
                    sc.push(cell.config.setting_label());
                    seedc.push(cell.config.seed);
                    sigc.push(res.sigma);
                    meanc.push(res.mean);
                    stdc.push(res.std);
                    minc.push(res.min);
                    maxc.push(res.max);
                }
            }
        }
        rows.push(row);
    }
    let df = DataFrame::new_infer_height(vec![
        Column::new("method".into(), mc),
        Column::new("setting".into(), sc),
        Column::new("seed".into(), seedc),
        Column::new("sigma".into(), sigc),
        Column::new("mean_acc".into(), meanc),
        Column::new("std_acc".into(), stdc),
        Column::new("min_acc".into(), minc),
        Column::new("max_acc".into(), maxc),
    ])?;
    let md = markdown(&headers, &rows)
        + &format!(
            "\n{} simulated chips per σ (chip seeds {}..{}); every cell's conductance is multiplied by exp(θ), θ ~ N(0, σ²), fixed per chip. Entries: mean ± standard deviation [min, max] over chips.\n",
            v.chips,
            v.chip_seed,
            v.chip_seed + v.chips as u64 - 1
        );
    Ok(Table::new("variation", df, md))
}

/// One row of the variation claim table: a related method's accuracy drop minus
/// column/column's at one sigma.
struct RobustnessRow {
    setting: String,
    /// The setting as a finding names it (`P = 3`).
    short: String,
    sigma: f64,
    baseline: String,
    best: bool,
    ours: Option<f64>,
    theirs: Option<f64>,
    diffs: Vec<f64>,
    interval: Option<PairedInterval>,
}

/// Per sigma of the variation study and per studied related method: its accuracy drop minus
/// column/column's (positive: column/column loses less), each run's drop averaged over its
/// chips (chip k of every run draws the same cell variations) and paired by seed, the unit of
/// replication; a 95% t-interval over seeds, and the verdict, raw and Holm-adjusted over the
/// table's comparisons.
fn variation_claim_table(
    study: &Study,
    results: &[CellResult],
    findings: &mut Vec<String>,
) -> Result<Table, ReportError> {
    let headers = [
        "benchmark",
        "setting",
        "σ",
        "column/column drop",
        "related method",
        "its drop",
        "drop difference [95% CI]",
        "seeds",
        "column/column more robust",
        "Holm-adjusted",
    ];
    let mut table_rows: Vec<RobustnessRow> = Vec::new();
    let mut benchmark_name = String::new();
    let mut chips = 0;
    if let Some(v) = &study.variation
        && let Some(b) = study.benchmark.iter().find(|b| b.name == v.benchmark && b.is_runnable())
    {
        benchmark_name = b.name.clone();
        chips = v.chips;
        let cells = study.variation_cells()?;
        let studied: Vec<&CellResult> = results.iter().filter(|r| cells.contains(&r.cell)).collect();
        let proposed = methods::PROPOSED.name();
        let rs = benchmark_results(results, &b.name);
        // the studied related methods with the built-in ADC, in the benchmark's order
        let studied_methods = study::Benchmark {
            methods: b.methods.iter().filter(|m| v.methods.contains(m)).cloned().collect(),
            ..b.clone()
        };
        let related: Vec<&String> = studied_methods
            .methods
            .iter()
            .filter(|m| m.as_str() != proposed && train::Uses::of_method(m).is_some_and(|u| u.adc_setting()))
            .collect();
        // one comparison per setting among the studied runs of the proposed method
        let mut done = Vec::new();
        for col in studied.iter().filter(|r| r.cell.config.method == proposed).map(|r| &r.cell) {
            let setting = col.config.setting_label();
            if done.contains(&setting) {
                continue;
            }
            done.push(setting.clone());
            let best = best_baseline(&studied_methods, &rs, col).map(|(name, _)| name);
            // drops (points) per seed at every sigma: the mean over the seed's chips
            let drops = |method: &str| -> Vec<(f64, Vec<(u64, f64)>)> {
                let mut out: Vec<(f64, Vec<(u64, f64)>)> = v.sigmas.iter().map(|&s| (s, Vec::new())).collect();
                for r in studied.iter().filter(|r| r.cell.config.method == method && in_column(&r.cell, col)) {
                    let Some(rep) = &r.variation else { continue };
                    for res in &rep.results {
                        if let Some(slot) = out.iter_mut().find(|(s, _)| *s == res.sigma)
                            && !res.accuracies.is_empty()
                        {
                            let n = res.accuracies.len() as f64;
                            let drop = res.accuracies.iter().map(|acc| rep.noiseless - acc).sum::<f64>() / n;
                            slot.1.push((r.cell.config.seed, 100.0 * drop));
                        }
                    }
                }
                out
            };
            let mean = |d: &[(u64, f64)]| (!d.is_empty()).then(|| d.iter().map(|x| x.1).sum::<f64>() / d.len() as f64);
            let ours = drops(proposed);
            let baselines: Vec<Option<&String>> =
                if related.is_empty() { vec![None] } else { related.iter().map(|m| Some(*m)).collect() };
            for baseline in baselines {
                let theirs = baseline.map(|m| drops(m));
                for (i, (sigma, our_drops)) in ours.iter().enumerate() {
                    let their_drops = theirs.as_ref().map(|t| &t[i].1);
                    let diffs = their_drops.map(|t| paired_differences(t, our_drops)).unwrap_or_default();
                    // without variation every drop is 0: nothing to compare
                    let interval = PairedInterval::of(&diffs).filter(|_| *sigma > 0.0);
                    table_rows.push(RobustnessRow {
                        setting: setting.clone(),
                        short: short_setting(col),
                        sigma: *sigma,
                        baseline: baseline.cloned().unwrap_or_else(|| "missing".into()),
                        best: baseline.is_some() && baseline.map(|m| m.as_str()) == best.as_deref(),
                        ours: mean(our_drops),
                        theirs: their_drops.and_then(|t| mean(t)),
                        diffs,
                        interval,
                    });
                }
            }
        }
    }
    let tested: Vec<usize> = (0..table_rows.len()).filter(|&i| table_rows[i].interval.is_some()).collect();
    let p_values: Vec<f64> = tested.iter().map(|&i| table_rows[i].interval.expect("tested").p_value()).collect();
    let adjusted = crate::stats::holm_adjust(&p_values);
    let robustness = |verdict: crate::stats::Verdict| match verdict {
        crate::stats::Verdict::Yes => "column/column more robust",
        crate::stats::Verdict::No => "column/column less robust",
        crate::stats::Verdict::WithinNoise => "within noise",
    };
    let (mut bc, mut sc, mut sigc, mut basec, mut bestc, mut dc, mut lc, mut hc, mut nc, mut vc) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    let (mut pc, mut hvc) = (Vec::new(), Vec::new());
    let mut rows = Vec::new();
    // finding parts per (setting, related method): intervals, and single-seed differences
    // finding parts keyed by (setting, related method): with an interval, from a single seed
    type Parts = Vec<((String, String), Vec<String>, Vec<String>)>;
    let mut parts: Parts = Vec::new();
    for (i, r) in table_rows.iter().enumerate() {
        let adjusted = tested.iter().position(|&t| t == i).map(|k| adjusted[k]);
        let verdict = match (r.interval, r.diffs.len(), r.sigma > 0.0) {
            (_, 0, _) => "—".to_string(),
            (_, _, false) => "— (no variation)".to_string(),
            (Some(iv), _, _) => iv.verdict().text().to_string(),
            (None, _, _) => "n/a (one seed)".to_string(),
        };
        let holm = match (r.interval, adjusted) {
            (Some(iv), Some(p)) => format!("{} (p = {p:.3})", iv.verdict_at(p).text()),
            _ => "—".to_string(),
        };
        let key = (r.setting.clone(), r.baseline.clone());
        if !parts.iter().any(|(k, _, _)| *k == key) {
            parts.push((key.clone(), Vec::new(), Vec::new()));
        }
        let slot = parts.iter_mut().find(|(k, _, _)| *k == key).expect("pushed");
        if let Some(iv) = r.interval {
            let holm_note = match adjusted {
                Some(p) if iv.verdict_at(p) != iv.verdict() => {
                    format!("; Holm-adjusted: {}", robustness(iv.verdict_at(p)))
                }
                _ => String::new(),
            };
            slot.1.push(format!(
                "{:+.2} [{:+.2}, {:+.2}] at σ = {} ({}{holm_note})",
                iv.mean,
                iv.low,
                iv.high,
                r.sigma,
                robustness(iv.verdict())
            ));
        } else if r.sigma > 0.0 && r.diffs.len() == 1 {
            slot.2.push(format!("{:+.2} at σ = {}", r.diffs[0], r.sigma));
        }
        let show = |x: Option<f64>| x.map(|x| format!("{x:.2}")).unwrap_or_else(|| "—".into());
        let difference = match (r.interval, r.diffs.len()) {
            (Some(iv), _) => iv.text(),
            (None, 1) => format!("{:+.2}", r.diffs[0]),
            _ => "—".into(),
        };
        rows.push(vec![
            benchmark_name.clone(),
            r.setting.clone(),
            r.sigma.to_string(),
            show(r.ours),
            if r.best { format!("**{}** (best)", r.baseline) } else { r.baseline.clone() },
            show(r.theirs),
            difference,
            r.diffs.len().to_string(),
            verdict.clone(),
            holm.clone(),
        ]);
        bc.push(benchmark_name.clone());
        sc.push(r.setting.clone());
        sigc.push(r.sigma);
        basec.push(r.baseline.clone());
        bestc.push(r.best);
        dc.push(r.interval.map(|iv| iv.mean).or_else(|| (r.diffs.len() == 1).then(|| r.diffs[0])));
        lc.push(r.interval.map(|iv| iv.low));
        hc.push(r.interval.map(|iv| iv.high));
        nc.push(r.diffs.len() as u64);
        vc.push(verdict);
        pc.push(adjusted);
        hvc.push(holm);
    }
    for ((setting, baseline), with_interval, one_seed) in parts {
        let short = table_rows.iter().find(|r| r.setting == setting).map(|r| r.short.clone()).unwrap_or_default();
        if !with_interval.is_empty() {
            findings.push(format!(
                "{benchmark_name}: under cell variation at {short}, {baseline}'s accuracy drop minus column/column's \
                 is {} points (chips averaged within each seed, then a 95% t-interval over seeds; the variation \
                 table makes {} such comparisons).",
                join_and(&with_interval),
                tested.len()
            ));
        }
        if !one_seed.is_empty() {
            findings.push(format!(
                "{benchmark_name}: under cell variation at {short}, {baseline}'s accuracy drop minus column/column's \
                 is {} points, from one trained network each ({chips} simulated chips): one seed gives no interval, \
                 so this shows that the variation study runs, not which method is more robust.",
                join_and(&one_seed)
            ));
        }
    }
    let df = DataFrame::new_infer_height(vec![
        Column::new("benchmark".into(), bc),
        Column::new("setting".into(), sc),
        Column::new("sigma".into(), sigc),
        Column::new("related_method".into(), basec),
        Column::new("best_related".into(), bestc),
        opt_series("drop_difference_points", dc),
        opt_series("ci95_low", lc),
        opt_series("ci95_high", hc),
        Column::new("seeds".into(), nc),
        Column::new("verdict".into(), vc),
        opt_series("holm_p", pc),
        Column::new("holm_verdict".into(), hvc),
    ])?;
    let md = if rows.is_empty() {
        "No variation study of column/column and a baseline in this profile.\n".to_string()
    } else {
        markdown(&headers, &rows)
            + &format!(
                "\nA drop is a run's accuracy without variation minus its accuracy on one simulated chip (points). The difference is a related method's drop minus column/column's: each run's drop is averaged over its chips (chip k of every run has the same cell variations), and the per-seed differences give the mean and its 95% Student-t interval over seeds, the seed being the unit of replication (the chips of one seed share one trained network); one seed gives the difference without an interval. Every studied related method with the built-in ADC is compared; in bold, the one with the best accuracy without variation at that setting. Yes: column/column loses less accuracy beyond the noise. Comparisons with an interval in this table: {}; the Holm-adjusted verdict (paired t-test p-values adjusted over all of them) keeps the chance of any false verdict at 5%.\n",
                tested.len()
            )
    };
    Ok(Table::new("variation_claims", df, md))
}
