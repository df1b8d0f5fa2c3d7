//! The accuracy table (method x setting) and post-training quantization beside fine-tuning.

use polars::prelude::*;
use study::Study;

use crate::ReportError;
use crate::results::CellResult;
use crate::stats::PairedInterval;

use super::common::*;

pub(super) fn accuracy_table(study: &Study, results: &[CellResult]) -> Result<Table, ReportError> {
    let mut frame = Frame::new(&[
        ("benchmark", Kind::Text),
        ("method", Kind::Text),
        ("setting", Kind::Text),
        ("seed", Kind::Count),
        ("state", Kind::Text),
        ("final_acc", Kind::MaybeNumber),
        ("best_acc", Kind::MaybeNumber),
    ]);
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
        md += &accuracy_section(study, b, &benchmark_results(results, &b.name), &mut frame);
    }
    // the per-(benchmark, method, setting) statistics, as the Markdown shows them
    let stats = frame
        .finish()?
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

/// One benchmark's part of the accuracy table: the method x setting matrix of the methods with an
/// ADC resolution, then the methods without one (one row per setting of their own). Every cell
/// shown goes into `frame`.
fn accuracy_section(study: &Study, b: &study::Benchmark, rs: &[&CellResult], frame: &mut Frame) -> String {
    let cols = columns(rs);
    let mut headers = vec!["method".to_string()];
    headers.extend(cols.iter().map(|c| c.config.setting_label()));
    let mut rows = Vec::new();
    // methods without a P (floating point, the ideal ADC, a converter of the method's own)
    // have one value per setting of their own: listed once each, below the matrix
    let mut single_rows = Vec::new();
    let mut push_cells = |method: &str, setting: String, cells: &[&CellResult]| {
        for r in cells {
            frame.push([
                b.name.clone().into(),
                method.into(),
                setting.clone().into(),
                r.cell.config.seed.into(),
                r.state.to_string().into(),
                r.summary.as_ref().map(|s| s.final_test_acc).into(),
                r.summary.as_ref().map(|s| s.best_test_acc).into(),
            ]);
        }
    };
    // the floating-point pretraining every other cell starts from
    let pretraining: Vec<&CellResult> = rs.iter().copied().filter(|r| r.cell.pretraining).collect();
    if let Some(first) = pretraining.first() {
        let setting = first.cell.config.setting_label();
        let label = format!("{} (pretraining)", methods::FLOAT.name());
        single_rows.push(vec![
            label.clone(),
            "the floating-point network every other run starts from".to_string(),
            setting.clone(),
            agg_text(&aggregate(&pretraining)),
        ]);
        push_cells(&label, setting, &pretraining);
    }
    let ideal_best = best_ideal_adc(study, b, rs);
    let mut above_ideal = false;
    for method in method_order(study, &b.name) {
        if train::Uses::of_method(&method).is_some_and(|u| u.adc_setting()) {
            let mut row = vec![method.clone()];
            for col in &cols {
                let cells = method_cells(rs, &method, col);
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
            single_rows.push(vec![method.clone(), summary.to_string(), setting.clone(), agg_text(&aggregate(&same))]);
            push_cells(&method, setting, &same);
        }
    }
    let mut md = format!("### {}\n\n", b.name);
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
    md
}

/// The best mean final accuracy of a method with an ideal ADC (no partial-sum quantization) at
/// any weight granularity: not a bound of the methods with ADCs, so a method above it is marked,
/// not hidden.
fn best_ideal_adc(study: &Study, b: &study::Benchmark, rs: &[&CellResult]) -> Option<f64> {
    method_order(study, &b.name)
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
        .fold(None, |best: Option<f64>, m| Some(best.map_or(m, |b| b.max(m))))
}

/// The Markdown columns of the PTQ table.
const PTQ_HEADERS: &[&str] = &[
    "benchmark",
    "method",
    "setting",
    "pretraining",
    "before fine-tuning",
    "after fine-tuning",
    "fine-tuning adds [95% CI]",
    "seeds",
];

/// The CSV columns of the PTQ table.
const PTQ_COLUMNS: &[(&str, Kind)] = &[
    ("benchmark", Kind::Text),
    ("method", Kind::Text),
    ("setting", Kind::Text),
    ("pretraining_points", Kind::MaybeNumber),
    ("before_fine_tuning_points", Kind::Number),
    ("after_fine_tuning_points", Kind::Number),
    ("adc_on_before", Kind::Flag),
    ("seeds", Kind::Count),
];

/// Post-training quantization beside fine-tuning: for every method and setting that starts from
/// its benchmark's pretraining, the test accuracy before the first step (the pretrained weights
/// quantized, ADCs calibrated as the method calibrates them) and after the last epoch, over the
/// seeds that recorded both.
pub(super) fn ptq_table(study: &Study, results: &[CellResult]) -> Result<Table, ReportError> {
    let mut rows = Vec::new();
    let mut frame = Frame::new(PTQ_COLUMNS);
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
            let pairs = before_and_after(&started, method, &label);
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
            frame.push([
                b.name.clone().into(),
                method.clone().into(),
                label.into(),
                pretraining.map(|p| 100.0 * p).into(),
                mean_std(&before).0.into(),
                mean_std(&after).0.into(),
                adc.into(),
                pairs.len().into(),
            ]);
        }
    }
    let df = frame.finish()?;
    let md = if rows.is_empty() {
        "No fine-tuned run of this profile recorded its accuracy before its first step (runs trained before that \
         record existed, or a profile without a pretraining).\n"
            .to_string()
    } else {
        markdown(PTQ_HEADERS, &rows) + PTQ_NOTE
    };
    Ok(Table::new("ptq", df, md))
}

/// What the PTQ table's columns mean.
const PTQ_NOTE: &str = "\nBefore fine-tuning: the pretrained network with the method's quantizers, its ADC windows calibrated as the method calibrates them (post-training quantization), on the run's test images; a two-stage recipe starts with an ideal ADC (marked). After: the final epoch. Mean ± sample standard deviation over seeds; what fine-tuning adds is the mean of per-seed differences with its 95% Student-t interval (points).\n";

/// The finished cells of `method` at setting `label` among `started` that recorded their accuracy
/// before the first step: (seed, before, after, whether the ADCs were on before), in points.
fn before_and_after(started: &[&CellResult], method: &str, label: &str) -> Vec<(u64, f64, f64, bool)> {
    started
        .iter()
        .filter(|r| r.cell.config.method == method && r.cell.config.setting_label() == label)
        .filter_map(|r| {
            let s = r.summary.as_ref()?;
            let before = s.before_training.as_ref()?;
            Some((r.cell.config.seed, 100.0 * before.test_acc, 100.0 * s.final_test_acc, before.adc))
        })
        .collect()
}
