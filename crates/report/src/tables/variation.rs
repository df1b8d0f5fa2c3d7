//! Memory-cell variation: accuracy over simulated chips per sigma, and robustness of
//! column/column against the best baseline.

use study::{Cell, Study};

use crate::ReportError;
use crate::results::CellResult;
use crate::stats::{PairedInterval, paired_differences};

use super::common::*;
use super::compare::*;

pub(super) fn variation_table(study: &Study, results: &[CellResult]) -> Result<Table, ReportError> {
    let Some(v) = &study.variation else {
        let df = Frame::new(&[("method", Kind::Text)]).finish()?;
        return Ok(Table::new("variation", df, "This profile has no variation study.\n".into()));
    };
    let cells = study.variation_cells()?;
    let mut headers = vec!["method".to_string(), "setting".to_string(), "seed".to_string(), "no variation".to_string()];
    headers.extend(v.sigmas.iter().map(|s| format!("σ = {s}")));
    let mut rows = Vec::new();
    let mut frame = Frame::new(&[
        ("method", Kind::Text),
        ("setting", Kind::Text),
        ("seed", Kind::Count),
        ("sigma", Kind::Number),
        ("mean_acc", Kind::Number),
        ("std_acc", Kind::Number),
        ("min_acc", Kind::Number),
        ("max_acc", Kind::Number),
    ]);
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
                    frame.push([
                        cell.config.method.clone().into(),
                        cell.config.setting_label().into(),
                        cell.config.seed.into(),
                        res.sigma.into(),
                        res.mean.into(),
                        res.std.into(),
                        res.min.into(),
                        res.max.into(),
                    ]);
                }
            }
        }
        rows.push(row);
    }
    let df = frame.finish()?;
    let md = markdown(&headers, &rows)
        + &format!(
            "\n{} simulated chips per σ (chip seeds {}..{}); every cell's conductance is multiplied by exp(θ), θ ~ N(0, σ²), fixed per chip. Entries: mean ± standard deviation [min, max] over chips.\n",
            v.chips,
            v.chip_seed,
            v.chip_seed + v.chips as u64 - 1
        );
    Ok(Table::new("variation", df, md))
}

/// The variation study's comparisons: its benchmark, chips per sigma, and one row per setting
/// of column/column, related method and sigma.
struct Robustness {
    benchmark_name: String,
    chips: usize,
    rows: Vec<RobustnessRow>,
}

/// The [`Robustness`] rows of the study's variation study (none without one).
fn robustness(study: &Study, results: &[CellResult]) -> Result<Robustness, ReportError> {
    let mut out = Robustness { benchmark_name: String::new(), chips: 0, rows: Vec::new() };
    let Some(v) = &study.variation else { return Ok(out) };
    let Some(b) = study.benchmark.iter().find(|b| b.name == v.benchmark && b.is_runnable()) else { return Ok(out) };
    out.benchmark_name = b.name.clone();
    out.chips = v.chips;
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
        let mean = |d: &[(u64, f64)]| (!d.is_empty()).then(|| d.iter().map(|x| x.1).sum::<f64>() / d.len() as f64);
        let ours = drops(&studied, proposed, col, &v.sigmas);
        let baselines: Vec<Option<&String>> =
            if related.is_empty() { vec![None] } else { related.iter().map(|m| Some(*m)).collect() };
        for baseline in baselines {
            let theirs = baseline.map(|m| drops(&studied, m, col, &v.sigmas));
            for (i, (sigma, our_drops)) in ours.iter().enumerate() {
                let their_drops = theirs.as_ref().map(|t| &t[i].1);
                let diffs = their_drops.map(|t| paired_differences(t, our_drops)).unwrap_or_default();
                // without variation every drop is 0: nothing to compare
                let interval = PairedInterval::of(&diffs).filter(|_| *sigma > 0.0);
                out.rows.push(RobustnessRow {
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
    Ok(out)
}

/// The accuracy drops (points) of `method`'s studied runs in column `col`, per sigma and seed:
/// each run's drop is the mean over its chips.
fn drops(studied: &[&CellResult], method: &str, col: &Cell, sigmas: &[f64]) -> Vec<(f64, Vec<(u64, f64)>)> {
    let mut out: Vec<(f64, Vec<(u64, f64)>)> = sigmas.iter().map(|&s| (s, Vec::new())).collect();
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
}

/// The variation finding's parts, keyed by (setting, related method): the differences with an
/// interval, and those from a single seed.
type Parts = Vec<((String, String), Vec<String>, Vec<String>)>;

/// What a difference in accuracy drop means, in the finding's words.
fn robustness_words(verdict: crate::stats::Verdict) -> &'static str {
    match verdict {
        crate::stats::Verdict::Yes => "column/column more robust",
        crate::stats::Verdict::No => "column/column less robust",
        crate::stats::Verdict::WithinNoise => "within noise",
    }
}

/// Adds row `r`'s words (`adjusted`: its Holm-adjusted p-value) to the finding's parts.
fn add_finding_part(parts: &mut Parts, r: &RobustnessRow, adjusted: Option<f64>) {
    let key = (r.setting.clone(), r.baseline.clone());
    if !parts.iter().any(|(k, _, _)| *k == key) {
        parts.push((key.clone(), Vec::new(), Vec::new()));
    }
    let slot = parts.iter_mut().find(|(k, _, _)| *k == key).expect("pushed");
    if let Some(iv) = r.interval {
        let holm_note = match adjusted {
            Some(p) if iv.verdict_at(p) != iv.verdict() => {
                format!("; Holm-adjusted: {}", robustness_words(iv.verdict_at(p)))
            }
            _ => String::new(),
        };
        slot.1.push(format!(
            "{:+.2} [{:+.2}, {:+.2}] at σ = {} ({}{holm_note})",
            iv.mean,
            iv.low,
            iv.high,
            r.sigma,
            robustness_words(iv.verdict())
        ));
    } else if r.sigma > 0.0 && r.diffs.len() == 1 {
        slot.2.push(format!("{:+.2} at σ = {}", r.diffs[0], r.sigma));
    }
}

/// The variation finding's sentences, per (setting, related method) of `parts`: the differences
/// with intervals (`tested` comparisons in the table), and those from a single seed.
fn variation_findings(
    parts: Parts,
    table_rows: &[RobustnessRow],
    benchmark_name: &str,
    chips: usize,
    tested: usize,
) -> Vec<String> {
    let mut out = Vec::new();
    for ((setting, baseline), with_interval, one_seed) in parts {
        let short = table_rows.iter().find(|r| r.setting == setting).map(|r| r.short.clone()).unwrap_or_default();
        if !with_interval.is_empty() {
            out.push(format!(
                "{benchmark_name}: under cell variation at {short}, {baseline}'s accuracy drop minus column/column's \
                 is {} points (chips averaged within each seed, then a 95% t-interval over seeds; the variation \
                 table makes {} such comparisons).",
                join_and(&with_interval),
                tested
            ));
        }
        if !one_seed.is_empty() {
            out.push(format!(
                "{benchmark_name}: under cell variation at {short}, {baseline}'s accuracy drop minus column/column's \
                 is {} points, from one trained network each ({chips} simulated chips): one seed gives no interval, \
                 so this shows that the variation study runs, not which method is more robust.",
                join_and(&one_seed)
            ));
        }
    }
    out
}

/// One row of the variation claim table: a related method's accuracy drop minus
/// column/column's at one sigma.
pub(super) struct RobustnessRow {
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

/// The Markdown columns of the variation claim table.
const VARIATION_CLAIM_HEADERS: &[&str] = &[
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

/// The CSV columns of the variation claim table.
const VARIATION_CLAIM_COLUMNS: &[(&str, Kind)] = &[
    ("benchmark", Kind::Text),
    ("setting", Kind::Text),
    ("sigma", Kind::Number),
    ("related_method", Kind::Text),
    ("best_related", Kind::Flag),
    ("drop_difference_points", Kind::MaybeNumber),
    ("ci95_low", Kind::MaybeNumber),
    ("ci95_high", Kind::MaybeNumber),
    ("seeds", Kind::Count),
    ("verdict", Kind::Text),
    ("holm_p", Kind::MaybeNumber),
    ("holm_verdict", Kind::Text),
];

/// Per sigma of the variation study and per studied related method: its accuracy drop minus
/// column/column's (positive: column/column loses less), each run's drop averaged over its
/// chips (chip k of every run draws the same cell variations) and paired by seed, the unit of
/// replication; a 95% t-interval over seeds, and the verdict, raw and Holm-adjusted over the
/// table's comparisons.
pub(super) fn variation_claim_table(
    study: &Study,
    results: &[CellResult],
    findings: &mut Vec<String>,
) -> Result<Table, ReportError> {
    let Robustness { benchmark_name, chips, rows: table_rows } = robustness(study, results)?;
    let tested: Vec<usize> = (0..table_rows.len()).filter(|&i| table_rows[i].interval.is_some()).collect();
    let p_values: Vec<f64> = tested.iter().map(|&i| table_rows[i].interval.expect("tested").p_value()).collect();
    let adjusted = crate::stats::holm_adjust(&p_values);
    let mut frame = Frame::new(VARIATION_CLAIM_COLUMNS);
    let mut rows = Vec::new();
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
        add_finding_part(&mut parts, r, adjusted);
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
        frame.push([
            benchmark_name.clone().into(),
            r.setting.clone().into(),
            r.sigma.into(),
            r.baseline.clone().into(),
            r.best.into(),
            r.interval.map(|iv| iv.mean).or_else(|| (r.diffs.len() == 1).then(|| r.diffs[0])).into(),
            r.interval.map(|iv| iv.low).into(),
            r.interval.map(|iv| iv.high).into(),
            r.diffs.len().into(),
            verdict.into(),
            adjusted.into(),
            holm.into(),
        ]);
    }
    findings.extend(variation_findings(parts, &table_rows, &benchmark_name, chips, tested.len()));
    let df = frame.finish()?;
    let md = if rows.is_empty() {
        "No variation study of column/column and a baseline in this profile.\n".to_string()
    } else {
        markdown(VARIATION_CLAIM_HEADERS, &rows)
            + &format!(
                "\nA drop is a run's accuracy without variation minus its accuracy on one simulated chip (points). The difference is a related method's drop minus column/column's: each run's drop is averaged over its chips (chip k of every run has the same cell variations), and the per-seed differences give the mean and its 95% Student-t interval over seeds, the seed being the unit of replication (the chips of one seed share one trained network); one seed gives the difference without an interval. Every studied related method with the built-in ADC is compared; in bold, the one with the best accuracy without variation at that setting. Yes: column/column loses less accuracy beyond the noise. Comparisons with an interval in this table: {}; the Holm-adjusted verdict (paired t-test p-values adjusted over all of them) keeps the chance of any false verdict at 5%.\n",
                tested.len()
            )
    };
    Ok(Table::new("variation_claims", df, md))
}
