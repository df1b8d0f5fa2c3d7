//! The claim table (column/column against the best related work, beside the paper's claim) and
//! the stage table (one-stage against two-stage training).

use method_api::Recipe;
use study::{Cell, Study};

use crate::results::CellResult;
use crate::stats::{PairedInterval, paired_differences};
use crate::{Claims, ReportError};

use super::common::*;
use super::compare::*;

/// The claimed gain as a row of benchmark `b` shows it: on the paper's own data set as it is, on
/// another as a stand-in; `—` where the benchmark checks no claim.
pub(super) fn claimed_text(
    b: &study::Benchmark,
    col: &Cell,
    claims: &Claims,
) -> Result<(String, Option<f64>), ReportError> {
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

/// The Markdown columns of the claim table.
const CLAIM_HEADERS: &[&str] = &[
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

/// The CSV columns of the claim table.
const CLAIM_COLUMNS: &[(&str, Kind)] = &[
    ("benchmark", Kind::Text),
    ("setting", Kind::Text),
    ("related_method", Kind::MaybeText),
    ("best_related", Kind::Flag),
    ("gain_points", Kind::MaybeNumber),
    ("gain_ci95_low", Kind::MaybeNumber),
    ("gain_ci95_high", Kind::MaybeNumber),
    ("seeds", Kind::Count),
    ("proposed_last_epoch_gain_points", Kind::MaybeNumber),
    ("related_last_epoch_gain_points", Kind::MaybeNumber),
    ("verdict", Kind::Text),
    ("holm_p", Kind::MaybeNumber),
    ("holm_verdict", Kind::Text),
    ("claimed_gain_points", Kind::MaybeNumber),
];

pub(super) fn claim_table(
    study: &Study,
    results: &[CellResult],
    claims: &Claims,
    findings: &mut Vec<String>,
) -> Result<Table, ReportError> {
    let comparisons = claim_comparisons(study, results);
    // the family: every comparison with an interval (two seeds or more)
    let tested: Vec<usize> = (0..comparisons.len()).filter(|&i| comparisons[i].interval.is_some()).collect();
    let p_values: Vec<f64> = tested.iter().map(|&i| comparisons[i].interval.expect("tested").p_value()).collect();
    let adjusted = crate::stats::holm_adjust(&p_values);
    let adjusted_of = |i: usize| tested.iter().position(|&t| t == i).map(|k| adjusted[k]);
    let mut rows = Vec::new();
    let mut frame = Frame::new(CLAIM_COLUMNS);
    // finding parts as (benchmark, text): with an interval, and from a single seed
    let (mut parts, mut single) = (Vec::<(String, String)>::new(), Vec::<(String, String)>::new());
    for (i, c) in comparisons.iter().enumerate() {
        let b = c.benchmark;
        let rs = benchmark_results(results, &b.name);
        let ours_cells = method_cells(&rs, methods::PROPOSED.name(), c.col);
        let adjusted = adjusted_of(i);
        let (gain, verdict, holm) = claim_verdicts(c, adjusted);
        let (claimed, claimed_points) = if c.best { claimed_text(b, c.col, claims)? } else { ("".into(), None) };
        let baseline = match &c.baseline {
            Some(m) if c.best => format!("**{m}** (best): {:.2}", mean_of(&c.theirs)),
            Some(m) => format!("{m}: {:.2}", mean_of(&c.theirs)),
            None => "missing".to_string(),
        };
        match finding_part(c, &verdict, adjusted) {
            Some(FindingPart::Interval(text)) => parts.push((b.name.clone(), text)),
            Some(FindingPart::OneSeed(text)) => single.push((b.name.clone(), text)),
            None => {}
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
        frame.push([
            b.name.clone().into(),
            c.col.config.setting_label().into(),
            c.baseline.clone().into(),
            c.best.into(),
            c.interval.map(|i| i.mean).into(),
            c.interval.map(|i| i.low).into(),
            c.interval.map(|i| i.high).into(),
            c.pairs().into(),
            c.gains[0].into(),
            c.gains[1].into(),
            verdict.into(),
            adjusted.into(),
            holm.into(),
            claimed_points.into(),
        ]);
    }
    findings.extend(claim_findings(study, &parts, &single, tested.len()));
    let md = if rows.is_empty() {
        "No benchmark of this profile has column/column and a related method with quantized partial sums.\n".to_string()
    } else {
        markdown(CLAIM_HEADERS, &rows) + &gain_note(tested.len())
    };
    Ok(Table::new("claims", frame.finish()?, md))
}

/// What the claim table says of comparison `c`: its gain, its verdict ("unconverged" where a
/// compared cell still learned) and its Holm-adjusted verdict (`adjusted`: its adjusted p-value).
fn claim_verdicts(c: &Comparison, adjusted: Option<f64>) -> (String, String, String) {
    let (gain, verdict) = match (&c.baseline, c.interval) {
        (Some(_), Some(i)) => (i.text(), i.verdict().text().to_string()),
        (Some(_), None) if c.pairs() == 1 => {
            (format!("{:+.2}", paired_differences(&c.ours, &c.theirs)[0]), "n/a (one seed)".to_string())
        }
        _ => ("—".to_string(), "—".to_string()),
    };
    let verdict = converged_verdict(&verdict, c.gains);
    let holm = match (c.interval, adjusted) {
        (Some(interval), Some(p)) => {
            let holm = if verdict.starts_with("unconverged") { "unconverged" } else { interval.verdict_at(p).text() };
            format!("{holm} (p = {p:.3})")
        }
        _ => "—".to_string(),
    };
    (gain, verdict, holm)
}

/// What the finding says of a comparison with the best related method.
enum FindingPart {
    /// The gain with its interval and verdict.
    Interval(String),
    /// The gain of a single seed (no interval).
    OneSeed(String),
}

/// The finding's words on comparison `c` (none unless its baseline is the best related method).
fn finding_part(c: &Comparison, verdict: &str, adjusted: Option<f64>) -> Option<FindingPart> {
    if let (true, Some(m), Some(interval)) = (c.best, &c.baseline, c.interval) {
        let holm_note = match adjusted {
            Some(p) if interval.verdict_at(p) != interval.verdict() && !verdict.starts_with("unconverged") => {
                format!("; Holm-adjusted: {}", interval.verdict_at(p).text())
            }
            _ => String::new(),
        };
        return Some(FindingPart::Interval(format!(
            "{:+.2} points [{:+.2}, {:+.2}] over {m} at {} ({}{holm_note})",
            interval.mean,
            interval.low,
            interval.high,
            short_setting(c.col),
            finding_verdict(verdict)
        )));
    }
    if let (true, Some(m), 1) = (c.best, &c.baseline, c.pairs()) {
        let diff = paired_differences(&c.ours, &c.theirs)[0];
        let unconverged = verdict.starts_with("unconverged").then(|| format!(" ({})", finding_verdict(verdict)));
        return Some(FindingPart::OneSeed(format!(
            "{diff:+.2} points over {m} at {}{}",
            short_setting(c.col),
            unconverged.unwrap_or_default()
        )));
    }
    None
}

/// The claim table's finding sentences, per benchmark: the gains over the best related method
/// with intervals (`parts`), and those from a single seed (`single`), each as (benchmark, text).
fn claim_findings(
    study: &Study,
    parts: &[(String, String)],
    single: &[(String, String)],
    tested: usize,
) -> Vec<String> {
    let mut findings = Vec::new();
    for b in study.benchmark.iter() {
        let of = |list: &[(String, String)]| -> Vec<String> {
            list.iter().filter(|(name, _)| *name == b.name).map(|(_, text)| text.clone()).collect()
        };
        let (with_interval, one_seed) = (of(parts), of(single));
        if !with_interval.is_empty() {
            findings.push(format!(
                "{}: against the best related method at each setting, column/column gains {} (mean of per-seed \
                 differences, 95% t-interval; the claim table makes {} such comparisons in all, against every related \
                 method).",
                b.name,
                join_and(&with_interval),
                tested
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
    findings
}

/// The note under the claim table, which makes `tested` comparisons with an interval.
pub(super) fn gain_note(tested: usize) -> String {
    format!(
        "\nColumn/column is compared with every related method that has the built-in ADC, at every setting; the best related method (highest mean over seeds at that setting, in bold) is the one the paper's claim is about. The gain is the mean over seeds of the per-seed difference of final test accuracies (points), with its 95% Student-t interval. Verdict: yes where the whole interval lies above 0, no where it lies below 0, within noise otherwise; n/a with a single seed; unconverged where either compared method still gained more than {CONVERGED_GAIN_POINTS} points in its last epoch (mean over seeds; the gain of the last epoch over the one before it in the same stage, or over the accuracy before training where the run has one epoch; — where neither was recorded). Comparisons with an interval in this table: {tested}; the Holm-adjusted verdict (paired t-test p-values adjusted by Holm's step-down method over all of them) keeps the chance of any false yes or no at 5%.\n"
    )
}

pub(super) fn stage_table(
    study: &Study,
    results: &[CellResult],
    findings: &mut Vec<String>,
) -> Result<Table, ReportError> {
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
    let mut frame = Frame::new(&[
        ("benchmark", Kind::Text),
        ("method", Kind::Text),
        ("setting", Kind::Text),
        ("one_stage_final_points", Kind::MaybeNumber),
        ("two_stage_final_points", Kind::MaybeNumber),
        ("one_minus_two_points", Kind::MaybeNumber),
        ("ci95_low", Kind::MaybeNumber),
        ("ci95_high", Kind::MaybeNumber),
        ("one_stage_last_epoch_gain_points", Kind::MaybeNumber),
        ("two_stage_last_epoch_gain_points", Kind::MaybeNumber),
        ("verdict", Kind::Text),
    ]);
    for b in &study.benchmark {
        let rs = benchmark_results(results, &b.name);
        for RecipePair { two_stage, one, one_cells: o, two_cells: t } in recipe_pairs(&rs) {
            let (ov, tv) = (finals_of(&o), finals_of(&t));
            let (diff, verdict, interval) = compare(&ov, &tv);
            let gains = [mean_last_gain(&o), mean_last_gain(&t)];
            let verdict = converged_verdict(&verdict, gains);
            let pairs = paired_differences(&ov, &tv).len();
            if let Some(i) = interval {
                findings.push(stage_finding(&b.name, &one.method, &two_stage.cell, i, &verdict));
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
            frame.push([
                b.name.clone().into(),
                one.method.clone().into(),
                one.setting_label().into(),
                (!ov.is_empty()).then(|| mean_of(&ov)).into(),
                (!tv.is_empty()).then(|| mean_of(&tv)).into(),
                interval.map(|i| i.mean).into(),
                interval.map(|i| i.low).into(),
                interval.map(|i| i.high).into(),
                gains[0].into(),
                gains[1].into(),
                verdict.into(),
            ]);
        }
    }
    let md = if rows.is_empty() {
        "No cell of this profile is trained both ways (add a sweep with `recipe = [\"two-stage\"]`).\n".to_string()
    } else {
        markdown(&headers, &rows) + STAGE_NOTE
    };
    Ok(Table::new("stages", frame.finish()?, md))
}

/// What the stage table's columns mean.
const STAGE_NOTE: &str = "\nBoth recipes train the same total epochs. The difference is the mean over seeds of the per-seed difference (points) with its 95% Student-t interval; verdict and last-epoch gains as in the claim table (yes: one-stage is better beyond the noise; a two-stage run's single fine-tuning epoch follows its ideal-ADC epoch, so it has no last-epoch gain to show).\n";

/// The finding's sentence on `method` at the setting of `cell`, one stage minus two stages.
fn stage_finding(benchmark: &str, method: &str, cell: &Cell, i: PairedInterval, verdict: &str) -> String {
    let reading = match i.verdict() {
        crate::stats::Verdict::Yes => "one-stage better",
        crate::stats::Verdict::No => "two-stage better",
        crate::stats::Verdict::WithinNoise => "within noise",
    };
    format!(
        "{benchmark}: {method} trained in one stage minus two stages at {} is {:+.2} points [{:+.2}, {:+.2}] ({}).",
        short_setting(cell),
        i.mean,
        i.low,
        i.high,
        if verdict.starts_with("unconverged") { finding_verdict(verdict) } else { reading.to_string() }
    )
}

/// A configuration trained both ways: its first two-stage cell, the configuration in one stage,
/// and the cells (every seed) of each recipe.
struct RecipePair<'a> {
    two_stage: &'a CellResult,
    one: train::RunConfig,
    one_cells: Vec<&'a CellResult>,
    two_cells: Vec<&'a CellResult>,
}

/// Every two-stage configuration among `rs` paired with the same configuration trained in one
/// stage, in order of first appearance.
fn recipe_pairs<'a>(rs: &[&'a CellResult]) -> Vec<RecipePair<'a>> {
    let mut seen = Vec::new();
    let mut pairs = Vec::new();
    for r in rs.iter().filter(|r| r.cell.config.recipe == Some(Recipe::TwoStage)) {
        let mut one = r.cell.config.clone();
        one.recipe = None;
        let label = format!("{} {}", one.method, one.setting_label());
        if seen.contains(&label) {
            continue;
        }
        seen.push(label);
        let matching = |recipe: Option<Recipe>| -> Vec<&'a CellResult> {
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
        let (one_cells, two_cells) = (matching(None), matching(Some(Recipe::TwoStage)));
        pairs.push(RecipePair { two_stage: r, one, one_cells, two_cells });
    }
    pairs
}

/// The final accuracies (points) of the finished `cells`, by seed.
fn finals_of(cells: &[&CellResult]) -> Vec<(u64, f64)> {
    cells.iter().filter_map(|x| x.summary.as_ref().map(|s| (x.cell.config.seed, 100.0 * s.final_test_acc))).collect()
}
