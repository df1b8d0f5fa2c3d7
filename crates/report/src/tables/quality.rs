//! ADC quality of the trained runs (`cargo xtask inspect`): SQNR, clipping, codes used.

use study::Study;

use crate::ReportError;
use crate::results::CellResult;

use super::common::*;

pub(super) fn adc_quality_table(study: &Study, results: &[CellResult]) -> Result<Table, ReportError> {
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
    let mut frame = Frame::new(&[
        ("benchmark", Kind::Text),
        ("method", Kind::Text),
        ("setting", Kind::Text),
        ("median_sqnr_db", Kind::MaybeNumber),
        ("worst_sqnr_db", Kind::MaybeNumber),
        ("median_spread_sqnr_db", Kind::MaybeNumber),
        ("clipped_low_pct", Kind::MaybeNumber),
        ("clipped_high_pct", Kind::MaybeNumber),
    ]);
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
            frame.push([
                b.name.clone().into(),
                c.method.clone().into(),
                c.setting_label().into(),
                m.filter(|x| x.is_finite()).into(),
                w.filter(|x| x.is_finite()).into(),
                sp.filter(|x| x.is_finite()).into(),
                l.into(),
                h.into(),
            ]);
        }
    }
    let df = frame.finish()?;
    let md = if rows.is_empty() {
        "No method of this profile quantizes partial sums.\n".to_string()
    } else {
        markdown(&headers, &rows)
            + "\nSQNR of every ADC (signal p, noise p - p_q) over every CIM layer, polarity and slice, on test batches; the spread SQNR takes as signal p minus its column's mean over the batch (the partial sums of an array share a large common offset, which the plain SQNR counts as signal); clipped shares are means over those ADCs. For scale: a uniform quantizer of Gaussian data reaches at best 14.3 dB with 3 bits, 9.3 dB with 2. Runs archived without a checkpoint (trained before `inspect` existed) show —.\n"
    };
    Ok(Table::new("adc_quality", df, md))
}
