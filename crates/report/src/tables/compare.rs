//! Comparing two methods cell by cell: the best baseline of a column, paired differences over
//! seeds with their interval and verdict, and whether the compared cells had finished learning
//! (their last epoch's gain).

use study::{Cell, Study};

use crate::results::CellResult;
use crate::stats::{PairedInterval, paired_differences};

use super::common::*;

/// The related method with the best mean final accuracy over seeds in column `col`: every
/// method of the benchmark other than the proposed one with the built-in ADC at the column's P
/// (a method with its own converter has another resolution; the accuracy table shows it).
pub(super) fn best_baseline(b: &study::Benchmark, rs: &[&CellResult], col: &Cell) -> Option<(String, Vec<(u64, f64)>)> {
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
pub(super) fn compare(a: &[(u64, f64)], b: &[(u64, f64)]) -> (String, String, Option<PairedInterval>) {
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
pub(super) fn mean_last_gain(cells: &[&CellResult]) -> Option<f64> {
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
pub(super) fn gains_text(gains: [Option<f64>; 2]) -> String {
    gains.map(|g| g.map_or("—".to_string(), |g| format!("{g:+.2}"))).join(" / ")
}

/// `verdict`, or `unconverged (+1.40 / +2.73)` where either compared cell still gained more than
/// [`CONVERGED_GAIN_POINTS`] in its last epoch (a comparison that was made; `—` stays).
pub(super) fn converged_verdict(verdict: &str, gains: [Option<f64>; 2]) -> String {
    let unconverged = gains.iter().flatten().any(|g| *g > CONVERGED_GAIN_POINTS);
    if unconverged && verdict != "—" { format!("unconverged ({})", gains_text(gains)) } else { verdict.to_string() }
}

/// A verdict as a finding sentence puts it in brackets: `yes`, or `unconverged, last-epoch gains
/// +1.40 / +2.73`.
pub(super) fn finding_verdict(verdict: &str) -> String {
    match verdict.strip_prefix("unconverged (").and_then(|g| g.strip_suffix(')')) {
        Some(gains) => format!("unconverged, last-epoch gains {gains}"),
        None => verdict.to_string(),
    }
}

/// One comparison of column/column with one related method at one setting of a benchmark.
pub(super) struct Comparison<'a> {
    pub(super) benchmark: &'a study::Benchmark,
    pub(super) col: &'a Cell,
    /// The related method, `None` where there is none to compare with.
    pub(super) baseline: Option<String>,
    /// Whether it is the related method with the best mean at this setting.
    pub(super) best: bool,
    pub(super) ours: Vec<(u64, f64)>,
    pub(super) theirs: Vec<(u64, f64)>,
    /// Last-epoch gains of column/column and of the baseline (points, mean over seeds).
    pub(super) gains: [Option<f64>; 2],
    pub(super) interval: Option<PairedInterval>,
}

impl Comparison<'_> {
    pub(super) fn pairs(&self) -> usize {
        paired_differences(&self.ours, &self.theirs).len()
    }
}

/// Every comparison the claim table makes: column/column against each related method with the
/// built-in ADC (a method with its own converter has another resolution; the accuracy table shows
/// it) at each one-stage setting of each benchmark, in the benchmarks' method order.
pub(super) fn claim_comparisons<'a>(study: &'a Study, results: &'a [CellResult]) -> Vec<Comparison<'a>> {
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
