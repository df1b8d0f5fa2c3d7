//! Hardware cost per model (arrays, ADC conversions, dequantization multiplies) and energy per
//! image beside accuracy.

use study::Study;

use crate::ReportError;
use crate::energy::{EnergyModel, ModelCosts};
use crate::results::CellResult;

use super::common::*;

pub(super) fn hardware_table(study: &Study, results: &[CellResult]) -> Result<Table, ReportError> {
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
    let mut frame = Frame::new(&[
        ("benchmark", Kind::Text),
        ("method", Kind::Text),
        ("setting", Kind::Text),
        ("adc_conversions_per_image", Kind::Count),
        ("arrays", Kind::Count),
        ("cim_layers", Kind::Count),
        ("dequant_multipliers", Kind::Count),
        ("dequant_multiplies_per_image", Kind::Count),
        ("psum_scales", Kind::Count),
        ("weight_scales", Kind::Count),
        ("window_adds_per_image", Kind::Count),
    ]);
    for b in &study.benchmark {
        for r in one_per_setting(&benchmark_results(results, &b.name)) {
            let c = &r.cell.config;
            let costs = ModelCosts::at(c, r.input_shape())?;
            let (counts, adc_bits) = (costs.counts, costs.adc_label);
            let sum = counts.per_layer_sum;
            // in the Markdown's order
            let values = [
                counts.layers,
                sum.arrays,
                counts.adc_conversions_per_image,
                sum.dequant_multipliers,
                counts.dequant_multiplies_per_image,
                sum.weight_scales,
                sum.psum_scales,
                counts.window_adds_per_image,
            ];
            let setting = c.setting_label();
            let mut row = vec![b.name.clone(), c.method.clone(), setting.clone()];
            for (i, v) in values.iter().enumerate() {
                row.push(if c.uses_crossbar() { v.to_string() } else { "—".into() });
                if i == 1 {
                    row.push(adc_bits.clone());
                }
            }
            rows.push(row);
            // in the CSV's (alphabetical) order
            frame.push([
                b.name.clone().into(),
                c.method.clone().into(),
                setting.into(),
                counts.adc_conversions_per_image.into(),
                sum.arrays.into(),
                counts.layers.into(),
                sum.dequant_multipliers.into(),
                counts.dequant_multiplies_per_image.into(),
                sum.psum_scales.into(),
                sum.weight_scales.into(),
                counts.window_adds_per_image.into(),
            ]);
        }
    }
    let df = frame.finish()?;
    let md = markdown(&headers, &rows)
        + "\nArrays, scales and distinct dequantization multipliers are summed over the CIM layers; ADC conversions and dequantization multiplies are per classified image. Column-wise weights add no multiplier over layer-wise weights with column-wise partial sums (one per slice, row tile and column either way). A learned ADC window adds one constant (s_w * z) per multiplier, added digitally: one add per dequantization multiply.\n";
    Ok(Table::new("hardware", df, md))
}

/// The Markdown columns of the energy table.
const ENERGY_HEADERS: &[&str] = &[
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

/// The CSV columns of the energy table.
const ENERGY_COLUMNS: &[(&str, Kind)] = &[
    ("benchmark", Kind::Text),
    ("method", Kind::Text),
    ("setting", Kind::Text),
    ("accuracy", Kind::Number),
    ("seeds", Kind::Count),
    ("adc_nj", Kind::MaybeNumber),
    ("dequant_nj", Kind::Number),
    ("accumulate_nj", Kind::Number),
    ("window_nj", Kind::Number),
    ("total_nj", Kind::MaybeNumber),
    ("lossless_adc_bits", Kind::MaybeCount),
    ("lossless_adc_nj", Kind::MaybeNumber),
    ("scale_registers", Kind::Count),
];

/// Median and worst ADC SQNR per method and setting, over every (layer, polarity, slice) ADC and
/// every seed's run, from the runs' `adc-quality.json` (written by `inspect`, which `reproduce`
/// runs after training).
/// Energy per image of every method and setting, beside its accuracy ([`EnergyModel`]).
pub(super) fn energy_table(study: &Study, results: &[CellResult], model: &EnergyModel) -> Result<Table, ReportError> {
    let mut rows = Vec::new();
    let mut frame = Frame::new(ENERGY_COLUMNS);
    let nj = |j: f64| format!("{:.1}", j * 1e9);
    for b in &study.benchmark {
        let rs = benchmark_results(results, &b.name);
        for r in one_per_setting(&rs).into_iter().filter(|r| r.cell.config.uses_crossbar()) {
            let c = &r.cell.config;
            let setting = c.setting_label();
            let finals: Vec<f64> = finals_by_seed(&rs, &c.method, &r.cell).iter().map(|(_, acc)| acc / 100.0).collect();
            let costs = ModelCosts::at(c, r.input_shape())?;
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
            frame.push([
                b.name.clone().into(),
                c.method.clone().into(),
                setting.into(),
                accuracy.into(),
                finals.len().into(),
                converters.then_some(e.adc * 1e9).into(),
                (e.dequant * 1e9).into(),
                (e.accumulate * 1e9).into(),
                (e.window * 1e9).into(),
                converters.then_some(e.total() * 1e9).into(),
                lossless.map(|(bits, _)| u64::from(bits)).into(),
                lossless.map(|(_, j)| j * 1e9).into(),
                costs.scale_registers().into(),
            ]);
        }
    }
    let df = frame.finish()?;
    let md = markdown(ENERGY_HEADERS, &rows) + &energy_note(model);
    Ok(Table::new("energy", df, md))
}

/// What the energy table counts and from which model: the constants, what an ideal ADC shows,
/// and what is left out.
fn energy_note(model: &EnergyModel) -> String {
    let source = model
        .source
        .file_name()
        .map_or_else(|| model.source.display().to_string(), |f| f.to_string_lossy().into_owned());
    format!(
        "\nEnergy of the digital periphery per classified image, in nJ, from the counts of the hardware table and the energy model `{source}` ({} node; every constant and its source in the file): ADC conversions at adc_floor + adc_fom x 2^bits each ({:.0} fJ + {:.0} fJ x 2^bits), {:.2} pJ per dequantization multiply, {:.2} pJ per accumulating add (one per ADC output) and {:.2} pJ per window add. An ideal ADC is no converter: its row has no ADC energy and no total; beside it, the conversions of the lossless ADC it stands for (the resolution that holds every partial sum of the layer's arrays, the largest over the layers). Scale registers: the weight steps, ADC steps and learned window constants the model stores (their storage is not in the energy). The arrays' read energy, the drivers and the layers off the arrays are not counted. Accuracy: mean final test accuracy over the seeds. How the conclusions depend on the ADC's figure of merit: the energy sensitivity figures.\n",
        model.node,
        model.adc_floor * 1e15,
        model.adc_fom * 1e15,
        model.dequant_multiply * 1e12,
        model.accumulate_add * 1e12,
        model.window_add * 1e12,
    )
}
