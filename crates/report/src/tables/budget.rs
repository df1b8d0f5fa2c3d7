//! The fine-tuning budget table: where a benchmark trains the same method and setting for several
//! numbers of epochs (each its own schedule), the accuracy at each budget, what doubling it
//! changed, and the smallest budget that doubling no longer moves by more than
//! [`CONVERGED_GAIN_POINTS`] for any method.

use study::Study;

use super::common::{Frame, Kind, Table, benchmark_results, markdown, mean_std};
use super::compare::{CONVERGED_GAIN_POINTS, mean_last_gain};
use crate::ReportError;
use crate::results::CellResult;

/// One method and setting trained at several budgets: (epochs, final accuracies in points of its
/// finished seeds, and their cells), by budget.
struct Budgets<'a> {
    method: String,
    setting: String,
    by_epochs: Vec<(usize, Vec<f64>, Vec<&'a CellResult>)>,
}

impl Budgets<'_> {
    fn mean(&self, epochs: usize) -> Option<f64> {
        let (_, accs, _) = self.by_epochs.iter().find(|(e, a, _)| *e == epochs && !a.is_empty())?;
        Some(mean_std(accs).0)
    }

    /// The smallest budget whose doubling moved the accuracy by at most the threshold, with that
    /// change; `None` where no measured doubling did.
    fn converged_at(&self) -> Option<(usize, f64)> {
        self.by_epochs.iter().find_map(|(e, _, _)| {
            let change = self.mean(2 * e)? - self.mean(*e)?;
            (change.abs() <= CONVERGED_GAIN_POINTS).then_some((*e, change))
        })
    }
}

/// The methods and settings of a benchmark's fine-tuned cells that were trained at two budgets
/// or more.
fn budget_groups<'a>(rs: &[&'a CellResult]) -> Vec<Budgets<'a>> {
    let mut groups: Vec<Budgets> = Vec::new();
    for r in rs.iter().filter(|r| !r.cell.pretraining) {
        let c = &r.cell.config;
        let setting = match c.recipe {
            Some(recipe) => format!("{} {}", c.setting_label(), recipe.name()),
            None => c.setting_label(),
        };
        let g = match groups.iter_mut().position(|g| g.method == c.method && g.setting == setting) {
            Some(i) => &mut groups[i],
            None => {
                groups.push(Budgets { method: c.method.clone(), setting, by_epochs: Vec::new() });
                groups.last_mut().expect("pushed")
            }
        };
        let acc = r.summary.as_ref().map(|s| 100.0 * s.final_test_acc);
        match g.by_epochs.iter_mut().find(|(e, _, _)| *e == c.epochs) {
            Some((_, accs, cells)) => {
                accs.extend(acc);
                cells.push(r);
            }
            None => g.by_epochs.push((c.epochs, acc.into_iter().collect(), vec![r])),
        }
    }
    for g in &mut groups {
        g.by_epochs.sort_by_key(|(e, _, _)| *e);
    }
    groups.retain(|g| g.by_epochs.len() >= 2);
    groups
}

/// The budget table of every benchmark that trains some method at several budgets, and one
/// finding per such benchmark: the budget found, or that none of those tried converged.
pub(super) fn budget_table(
    study: &Study,
    results: &[CellResult],
    findings: &mut Vec<String>,
) -> Result<Table, ReportError> {
    let headers = [
        "benchmark",
        "method",
        "setting",
        "epochs",
        "images per epoch",
        "accuracy",
        "change from half the budget",
        "last-epoch gain",
    ];
    let mut rows = Vec::new();
    let mut frame = Frame::new(&[
        ("benchmark", Kind::Text),
        ("method", Kind::Text),
        ("setting", Kind::Text),
        ("epochs", Kind::Count),
        ("images_per_epoch", Kind::MaybeCount),
        ("accuracy_points", Kind::MaybeNumber),
        ("change_from_half_points", Kind::MaybeNumber),
        ("last_epoch_gain_points", Kind::MaybeNumber),
    ]);
    for b in study.benchmark.iter().filter(|b| b.is_runnable()) {
        let rs = benchmark_results(results, &b.name);
        let groups = budget_groups(&rs);
        if groups.is_empty() {
            continue;
        }
        for g in &groups {
            for (epochs, accs, cells) in &g.by_epochs {
                let mean = (!accs.is_empty()).then(|| mean_std(accs).0);
                let change = g.mean(epochs / 2).filter(|_| epochs % 2 == 0).zip(mean).map(|(half, m)| m - half);
                let gain = mean_last_gain(cells);
                let images = cells[0].cell.config.limit_train;
                let shown = match (mean, accs.len()) {
                    (None, _) => "missing".to_string(),
                    (Some(m), 1) => format!("{m:.2}"),
                    (Some(m), n) => format!("{m:.2} ± {:.2} n={n}", mean_std(accs).1),
                };
                rows.push(vec![
                    b.name.clone(),
                    g.method.clone(),
                    g.setting.clone(),
                    epochs.to_string(),
                    images.map_or("all".into(), |n| n.to_string()),
                    shown,
                    change.map_or("—".into(), |d| format!("{d:+.2}")),
                    gain.map_or("—".into(), |d| format!("{d:+.2}")),
                ]);
                frame.push([
                    b.name.clone().into(),
                    g.method.clone().into(),
                    g.setting.clone().into(),
                    (*epochs).into(),
                    images.map(|n| n as u64).into(),
                    mean.into(),
                    change.into(),
                    gain.into(),
                ]);
            }
        }
        findings.push(budget_finding(&b.name, &groups));
    }
    let df = frame.finish()?;
    let md = if rows.is_empty() {
        "No method of this profile was fine-tuned at more than one budget.\n".to_string()
    } else {
        markdown(&headers, &rows) + &budget_note()
    };
    Ok(Table::new("budget", df, md))
}

/// What the budget table's columns mean.
fn budget_note() -> String {
    format!(
        "\nEach budget is a run of its own (its own cosine schedule), not an epoch of a longer one. Accuracy: \
         final test accuracy (points; mean ± sample standard deviation where several seeds). Change from half \
         the budget: this budget's accuracy minus that of the run with half as many epochs. A budget has \
         converged for a method when doubling it moves the accuracy by at most {CONVERGED_GAIN_POINTS} \
         points; a benchmark's budget is the smallest that has converged for every method.\n"
    )
}

/// `ResNet-20 / X: the smallest budget whose doubling moves no method by more than 0.5 points is
/// 2 epochs (ideal-adc +0.12 at 2 -> 4, ...)`, or which methods had not converged.
fn budget_finding(benchmark: &str, groups: &[Budgets]) -> String {
    // a method with no doubling measured yet (runs missing) has no verdict either way
    let measured = |g: &Budgets| g.by_epochs.iter().any(|(e, _, _)| g.mean(*e).is_some() && g.mean(2 * e).is_some());
    let waiting: Vec<&str> = groups.iter().filter(|g| !measured(g)).map(|g| g.method.as_str()).collect();
    if !waiting.is_empty() {
        return format!(
            "{benchmark}: the fine-tuning budget is not measured yet: no budget and its double have both finished \
             for {}.",
            waiting.join(", ")
        );
    }
    let found: Vec<(String, Option<(usize, f64)>)> =
        groups.iter().map(|g| (format!("{} {}", g.method, g.setting), g.converged_at())).collect();
    let open: Vec<String> = groups
        .iter()
        .filter(|g| g.converged_at().is_none())
        .map(|g| {
            let last: Vec<String> = g
                .by_epochs
                .iter()
                .filter_map(|(e, _, _)| Some(format!("{e} -> {}: {:+.2}", 2 * e, g.mean(2 * e)? - g.mean(*e)?)))
                .collect();
            let measured = if last.is_empty() { "no doubling measured".to_string() } else { last.join(", ") };
            format!("{} ({measured})", g.method)
        })
        .collect();
    if !open.is_empty() {
        return format!(
            "{benchmark}: no budget tried has converged for {} (a budget converges when doubling it moves the \
             accuracy by at most {CONVERGED_GAIN_POINTS} points).",
            open.join("; ")
        );
    }
    let budget = found.iter().filter_map(|(_, c)| c.map(|c| c.0)).max().unwrap_or_default();
    let each: Vec<String> =
        found.iter().filter_map(|(name, c)| c.map(|(e, d)| format!("{name}: {d:+.2} from {e} to {}", 2 * e))).collect();
    format!(
        "{benchmark}: the smallest fine-tuning budget that doubling moves by at most {CONVERGED_GAIN_POINTS} points \
         for every method is {budget} epoch{} ({}).",
        if budget == 1 { "" } else { "s" },
        each.join("; ")
    )
}
