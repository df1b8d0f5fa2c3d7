//! Figures (SVG and PNG): accuracy against ADC bits and against array size per method,
//! accuracy per fine-tuning epoch, accuracy against cell variation with spread bands, and
//! accuracy against energy per image with the Pareto front.

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use study::Study;
use train::RunConfig;

use crate::ReportError;
use crate::energy::EnergyModel;
use crate::energy::ModelCosts;
use crate::results::CellResult;
use crate::writer::ReportWriter;

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

fn register_font() {
    REGISTER.call_once(|| {
        if plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_err() {
            panic!("the embedded DejaVu Sans font does not parse: crates/report/assets/DejaVuSans.ttf is damaged");
        }
    });
}

/// One point of a line: the mean of its runs at `x` with a band from `low` to `high`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Point {
    x: f64,
    mean: f64,
    low: f64,
    high: f64,
    /// Seeds (trained networks) behind the point: a point of one seed is drawn as a hollow
    /// square, so that it cannot be taken for a mean.
    seeds: usize,
    /// Measured with an ideal ADC (the first stage of a two-stage run): drawn as a cross.
    ideal_adc: bool,
}

/// One line of a figure, drawn in its method's colour (or `color`, for lines that are no
/// method's, such as the Pareto fronts of the energy sensitivity figure).
struct Line {
    name: String,
    method: String,
    points: Vec<Point>,
    color: Option<RGBColor>,
}

impl Line {
    fn new(name: String, method: String, points: Vec<Point>) -> Self {
        Line { name, method, points, color: None }
    }
}

/// The `method` of the line that marks a Pareto front (drawn dashed in black, no markers).
const FRONT: &str = "Pareto front";

/// A method's colour: the same in every figure of every report (by its place in the registry;
/// variants of one method, such as its two-stage recipe, are told apart by their marker).
fn color_of(method: &str) -> RGBColor {
    if method == FRONT {
        return RGBColor(0, 0, 0);
    }
    if method == methods::PROPOSED.name() {
        return PROPOSED_COLOR;
    }
    let others = methods::all().iter().filter(|m| m.name() != methods::PROPOSED.name());
    let index = others.clone().position(|m| m.name() == method).unwrap_or(others.count());
    COLORS[index % COLORS.len()]
}

/// Pixels of a figure, and of its legend column.
const FIGURE_WIDTH: u32 = 960;
const LEGEND_WIDTH: u32 = 220;

/// The proposed method's colour (red); the others take [`COLORS`] in registry order.
const PROPOSED_COLOR: RGBColor = RGBColor(214, 39, 40);
const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(0, 0, 128),
];

fn plot<DB: DrawingBackend>(
    area: DrawingArea<DB, Shift>,
    title: &str,
    x_label: &str,
    lines: &[Line],
    bands: bool,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    area.fill(&WHITE).map_err(|e| e.to_string())?;
    // the title over the whole width, the legend in a column of its own right of the chart
    let area = area.titled(title, ("sans-serif", 18)).map_err(|e| e.to_string())?;
    let (chart_area, legend_area) = area.split_horizontally(area.dim_in_pixel().0 - LEGEND_WIDTH);
    let xs: Vec<f64> = lines.iter().flat_map(|l| l.points.iter().map(|p| p.x)).collect();
    let ys: Vec<f64> = lines.iter().flat_map(|l| l.points.iter().flat_map(|p| [p.low, p.high])).collect();
    let (x0, x1) =
        (xs.iter().copied().fold(f64::INFINITY, f64::min), xs.iter().copied().fold(f64::NEG_INFINITY, f64::max));
    let (y0, y1) =
        (ys.iter().copied().fold(f64::INFINITY, f64::min), ys.iter().copied().fold(f64::NEG_INFINITY, f64::max));
    let pad_x = ((x1 - x0) * 0.05).max(0.05);
    let pad_y = ((y1 - y0) * 0.1).max(1.0);
    let mut chart = ChartBuilder::on(&chart_area)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d((x0 - pad_x)..(x1 + pad_x), (y0 - pad_y).max(0.0)..(y1 + pad_y).min(100.0))
        .map_err(|e| e.to_string())?;
    let integer_x = xs.iter().all(|x| x.fract() == 0.0);
    let distinct: std::collections::BTreeSet<i64> = xs.iter().map(|x| (x * 1000.0) as i64).collect();
    let x_format = |x: &f64| if integer_x { format!("{x:.0}") } else { format!("{x:.2}") };
    chart
        .configure_mesh()
        .light_line_style(WHITE)
        .x_labels(if integer_x { distinct.len() } else { 8 })
        .x_label_formatter(&x_format)
        .x_desc(x_label)
        .y_desc("test accuracy (%)")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| e.to_string())?;
    draw_lines(&mut chart, lines, bands)?;
    draw_legend(&legend_area, lines)?;
    area.present().map_err(|e| e.to_string())
}

/// Every line of a figure: a band of its spread (where `bands`), the line of its means, and a
/// marker per point (a cross for an ideal-ADC epoch, a square for one seed, a circle else,
/// hollow for two-stage runs); the Pareto front dashed.
fn draw_lines<DB: DrawingBackend>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    lines: &[Line],
    bands: bool,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    for line in lines {
        let color = line.color.unwrap_or_else(|| color_of(&line.method));
        let hollow = line.name.contains("two-stage");
        if line.method == FRONT {
            let points = line.points.iter().map(|p| (p.x, p.mean));
            chart.draw_series(DashedLineSeries::new(points, 8, 5, color.stroke_width(2))).map_err(|e| e.to_string())?;
            continue;
        }
        if bands {
            let mut poly: Vec<(f64, f64)> = line.points.iter().map(|p| (p.x, p.high)).collect();
            poly.extend(line.points.iter().rev().map(|p| (p.x, p.low)));
            chart.draw_series(std::iter::once(Polygon::new(poly, color.mix(0.15)))).map_err(|e| e.to_string())?;
        }
        chart
            .draw_series(LineSeries::new(line.points.iter().map(|p| (p.x, p.mean)), color.stroke_width(2)))
            .map_err(|e| e.to_string())?;
        for p in &line.points {
            let at = (p.x, p.mean);
            if p.ideal_adc {
                chart
                    .draw_series(std::iter::once(Cross::new(at, 5, color.stroke_width(2))))
                    .map_err(|e| e.to_string())?;
            } else if p.seeds == 1 {
                let square = EmptyElement::at(at) + Rectangle::new([(-5, -5), (5, 5)], color.stroke_width(2));
                chart.draw_series(std::iter::once(square)).map_err(|e| e.to_string())?;
            } else {
                let style = if hollow { color.stroke_width(2) } else { color.filled() };
                chart
                    .draw_series(std::iter::once(Circle::new(at, if hollow { 5 } else { 3 }, style)))
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(())
}

/// The legend in its own column: a line per method, then what the markers mean where a figure
/// has them.
fn draw_legend<DB: DrawingBackend>(legend_area: &DrawingArea<DB, Shift>, lines: &[Line]) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let mut y = 24;
    for line in lines {
        let color = line.color.unwrap_or_else(|| color_of(&line.method));
        legend_area.draw(&PathElement::new(vec![(4, y), (26, y)], color.stroke_width(2))).map_err(|e| e.to_string())?;
        if line.name.contains("two-stage") {
            legend_area.draw(&Circle::new((15, y), 5, color.stroke_width(2))).map_err(|e| e.to_string())?;
        }
        legend_area.draw(&Text::new(line.name.clone(), (32, y - 7), ("sans-serif", 13))).map_err(|e| e.to_string())?;
        y += 20;
    }
    // what the markers mean, where a figure has them
    let points = || lines.iter().filter(|l| l.method != FRONT).flat_map(|l| l.points.iter());
    let grey = RGBColor(80, 80, 80);
    if points().any(|p| p.seeds == 1 && !p.ideal_adc) {
        let square = Rectangle::new([(10, y - 5), (20, y + 5)], grey.stroke_width(2));
        legend_area.draw(&square).map_err(|e| e.to_string())?;
        legend_area
            .draw(&Text::new("one seed (no spread)", (32, y - 7), ("sans-serif", 13)))
            .map_err(|e| e.to_string())?;
        y += 20;
    }
    if points().any(|p| p.ideal_adc) {
        legend_area.draw(&Cross::new((15, y), 5, grey.stroke_width(2))).map_err(|e| e.to_string())?;
        legend_area.draw(&Text::new("ideal-ADC epoch", (32, y - 7), ("sans-serif", 13))).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Draws one figure as SVG and PNG and stages both. Plotters writes files, so they are drawn
/// in a scratch folder and read back.
fn render(
    out: &mut ReportWriter,
    stem: &str,
    title: &str,
    x_label: &str,
    lines: &[Line],
    bands: bool,
) -> Result<(), ReportError> {
    register_font();
    let scratch = tempfile::tempdir().map_err(|e| ReportError::io(std::env::temp_dir(), e))?;
    for ext in ["svg", "png"] {
        let name = format!("{stem}.{ext}");
        let path = scratch.path().join(&name);
        let drawn = if ext == "svg" {
            plot(SVGBackend::new(&path, (FIGURE_WIDTH, 480)).into_drawing_area(), title, x_label, lines, bands)
        } else {
            plot(BitMapBackend::new(&path, (FIGURE_WIDTH, 480)).into_drawing_area(), title, x_label, lines, bands)
        };
        drawn.map_err(|e| ReportError::io(&name, e))?;
        out.add(Path::new(&name), std::fs::read(&path).map_err(|e| ReportError::io(&path, e))?);
    }
    Ok(())
}

fn mean_spread(values: &[f64]) -> (f64, f64, f64) {
    let n = values.len() as f64;
    let m = values.iter().sum::<f64>() / n;
    let s =
        if values.len() > 1 { (values.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt() } else { 0.0 };
    (100.0 * m, 100.0 * (m - s), 100.0 * (m + s))
}

/// A benchmark's base run configuration as a table.
fn base_table(b: &study::Benchmark) -> toml::Table {
    let mut t = toml::Table::try_from(RunConfig::default()).expect("table");
    for (k, v) in &b.base {
        t.insert(k.clone(), v.clone());
    }
    t
}

/// Whether `config` has the benchmark's base settings in everything but `field` (every
/// setting, for a method that does not use the field: `uses_field` false). The base is taken as
/// the method would run it ([`study::canonical`]): an ideal ADC has no window or calibration to
/// differ in.
fn at_base_except(base: &toml::Table, config: &RunConfig, field: &str, uses_field: bool) -> bool {
    const SETTINGS: [&str; 10] = [
        "psum_bits",
        "array_size",
        "cell_bits",
        "weight_bits",
        "act_bits",
        "encoding",
        "recipe",
        "train_variation_sigma",
        "adc_window",
        "adc_init",
    ];
    let mut own_base = base.clone();
    own_base.insert("method".into(), toml::Value::String(config.method.clone()));
    let own_base = match own_base.try_into::<RunConfig>() {
        Ok(c) => toml::Table::try_from(study::canonical(c)).expect("table"),
        Err(_) => base.clone(),
    };
    let t = toml::Table::try_from(config).expect("table");
    SETTINGS.iter().filter(|f| **f != field).all(|f| t.get(*f) == own_base.get(*f) || !uses_field)
}

/// Lines of final accuracy against one swept field, the other settings at the benchmark's base.
fn sweep_lines(study: &Study, bench: &str, results: &[CellResult], field: &str) -> Vec<Line> {
    let Some(b) = study.benchmark.iter().find(|b| b.name == bench) else { return Vec::new() };
    let base = base_table(b);
    let mut lines = Vec::new();
    for method in &b.methods {
        let uses_field = match train::Uses::of_method(method) {
            Some(u) if u.crossbar => field != "psum_bits" || u.adc_setting(),
            _ => false,
        };
        let mut by_x: std::collections::BTreeMap<i64, Vec<f64>> = std::collections::BTreeMap::new();
        for r in results
            .iter()
            .filter(|r| r.cell.benchmark == bench && !r.cell.pretraining && &r.cell.config.method == method)
        {
            let Some(s) = &r.summary else { continue };
            if !at_base_except(&base, &r.cell.config, field, uses_field) {
                continue;
            }
            let t = toml::Table::try_from(&r.cell.config).expect("table");
            // a per-layer list of ADC bits is no point on this axis
            let Some(x) = t.get(field).and_then(|v| v.as_integer()) else { continue };
            by_x.entry(x).or_default().push(s.final_test_acc);
        }
        if by_x.is_empty() {
            continue;
        }
        let points: Vec<Point> = by_x
            .iter()
            .map(|(x, v)| {
                let (mean, low, high) = mean_spread(v);
                Point { x: *x as f64, mean, low, high, seeds: v.len(), ideal_adc: false }
            })
            .collect();
        lines.push(Line::new(method.clone(), method.clone(), points));
    }
    // methods that do not depend on the field (fp, ideal-adc for ADC bits) are drawn flat
    // across the range of the others
    let xs: Vec<f64> = lines.iter().flat_map(|l| l.points.iter().map(|p| p.x)).collect();
    let (lo, hi) =
        (xs.iter().copied().fold(f64::INFINITY, f64::min), xs.iter().copied().fold(f64::NEG_INFINITY, f64::max));
    for l in &mut lines {
        if l.points.len() == 1 && lo < hi {
            let p = l.points[0];
            l.points = vec![Point { x: lo, ..p }, Point { x: hi, ..p }];
            l.name += " (independent)";
        }
    }
    lines
}

/// One point of the accuracy-energy plane: a method at one ADC resolution.
struct EnergyPoint {
    method: String,
    /// The ADC resolution as the energy table names it.
    adc: String,
    point: Point,
}

/// Every method with converters at every setting at the benchmark's base but P (the ADC
/// resolutions): its mean final accuracy over seeds (with their range) against its energy per
/// image (nJ, [`EnergyModel`]), in the benchmark's method order and then by energy.
fn energy_points(study: &Study, bench: &str, results: &[CellResult], model: &EnergyModel) -> Vec<EnergyPoint> {
    let Some(b) = study.benchmark.iter().find(|b| b.name == bench) else { return Vec::new() };
    let base = base_table(b);
    let mut out = Vec::new();
    for method in &b.methods {
        // a method with an ADC of its own has no P, window or calibration to hold at the base
        let adc_setting = train::Uses::of_method(method).is_some_and(|u| u.adc_setting());
        let mut by_setting: std::collections::BTreeMap<String, (f64, String, Vec<f64>)> =
            std::collections::BTreeMap::new();
        for r in results
            .iter()
            .filter(|r| r.cell.benchmark == bench && !r.cell.pretraining && &r.cell.config.method == method)
        {
            let Some(s) = &r.summary else { continue };
            let recipe = toml::Table::try_from(&r.cell.config).expect("table").get("recipe").cloned();
            if !at_base_except(&base, &r.cell.config, "psum_bits", adc_setting) || recipe != base.get("recipe").cloned()
            {
                continue;
            }
            let Ok(costs) = ModelCosts::at(&r.cell.config, r.input_shape()) else { continue };
            if !costs.has_converters() {
                continue; // no converter: no ADC energy to weigh
            }
            let energy = model.per_image(&costs).total() * 1e9;
            let entry =
                by_setting.entry(r.cell.config.setting_label()).or_insert((energy, costs.adc_label, Vec::new()));
            entry.2.push(s.final_test_acc);
        }
        let mut points: Vec<EnergyPoint> = by_setting
            .into_values()
            .filter_map(|(energy, adc, accs)| {
                let point = range_point(energy, &accs.iter().map(|a| 100.0 * a).collect::<Vec<_>>())?;
                Some(EnergyPoint { method: method.clone(), adc, point })
            })
            .collect();
        points.sort_by(|a, b| a.point.x.total_cmp(&b.point.x));
        out.extend(points);
    }
    out
}

/// Accuracy against energy per image of every method with an ADC (one line per method, a point
/// per ADC resolution, the band the seeds' range) and the Pareto front over all points (no
/// other point costs less and is more accurate); the caption says how many seeds each point has.
fn energy_lines(study: &Study, bench: &str, results: &[CellResult], model: &EnergyModel) -> (Vec<Line>, String) {
    let points = energy_points(study, bench, results, model);
    let mut lines: Vec<Line> = Vec::new();
    for p in &points {
        match lines.iter_mut().find(|l| l.method == p.method) {
            Some(line) => line.points.push(p.point),
            None => lines.push(Line::new(p.method.clone(), p.method.clone(), vec![p.point])),
        }
    }
    let front = pareto_front(points.iter().map(|p| p.point).collect());
    if front.len() > 1 {
        lines.push(Line::new(FRONT.into(), FRONT.into(), front));
    }
    // the ADC resolutions by how many seeds their points have
    let mut seeds: std::collections::BTreeMap<usize, std::collections::BTreeSet<String>> = Default::default();
    for p in &points {
        seeds.entry(p.point.seeds).or_default().insert(p.adc.clone());
    }
    let counts: Vec<String> = seeds
        .iter()
        .rev()
        .map(|(n, adcs)| {
            let adcs: Vec<&str> = adcs.iter().map(String::as_str).collect();
            format!("{}: {n} seed{}", adcs.join(", "), if *n == 1 { " (no range; hollow squares)" } else { "s" })
        })
        .collect();
    let caption = format!(
        "One point per method and ADC resolution: the mean final test accuracy over its seeds, the band \
         the seeds' range, against the periphery energy per image of the energy table. Seeds per point, \
         by ADC bits: {}. Dashed: the Pareto front (each of its points is more accurate than every cheaper point).",
        counts.join("; ")
    );
    (lines, caption)
}

/// ADC figures of merit of the energy sensitivity figures, joules per conversion step: a decade
/// each side of 10 fJ (B. Murmann's ADC survey: the best SAR designs reach about 1 fJ/conv-step,
/// typical ones 5-50).
const FOM_SWEEP: [f64; 5] = [1e-15, 3e-15, 10e-15, 30e-15, 100e-15];

/// The Pareto front of accuracy against energy per image for each ADC figure of merit of
/// [`FOM_SWEEP`] (the other constants as `model` has them), one dashed line each, and a caption
/// that names the methods and resolutions on each front: which conclusions of the energy figure
/// hold whatever the converter, and which depend on it.
fn energy_sensitivity_lines(
    study: &Study,
    bench: &str,
    results: &[CellResult],
    model: &EnergyModel,
) -> (Vec<Line>, String) {
    let mut lines = Vec::new();
    let mut fronts = Vec::new();
    for (i, fom) in FOM_SWEEP.iter().enumerate() {
        let swept = EnergyModel { adc_fom: *fom, ..model.clone() };
        let points = energy_points(study, bench, results, &swept);
        let front = pareto_front(points.iter().map(|p| p.point).collect());
        if front.is_empty() {
            continue;
        }
        let members: Vec<String> = front
            .iter()
            .filter_map(|f| points.iter().find(|p| p.point.x == f.x && p.point.mean == f.mean))
            .map(|p| format!("{} P{}", p.method, p.adc))
            .collect();
        let name = format!("{:.0} fJ/conv-step", fom * 1e15);
        fronts.push(format!("{name}: {}", members.join(", ")));
        let mut line = Line::new(name, FRONT.into(), front);
        line.color = Some(COLORS[i % COLORS.len()]);
        lines.push(line);
    }
    let caption = format!(
        "The Pareto front of the energy figure redrawn for ADC figures of merit from 1 to 100 fJ per conversion \
         step (every other constant as in the energy model), from the cheapest point up: {}.",
        fronts.join("; ")
    );
    (lines, caption)
}

/// A figure drawn: its file stem and what the README says under it.
pub struct Figure {
    /// File name without extension (`.svg` and `.png` are written).
    pub stem: String,
    /// What the points are, where the title cannot say it all.
    pub caption: Option<String>,
}

impl From<String> for Figure {
    fn from(stem: String) -> Self {
        Figure { stem, caption: None }
    }
}

/// Draws every figure the results support.
pub fn draw(
    study: &Study,
    results: &[CellResult],
    energy: &EnergyModel,
    out: &mut ReportWriter,
) -> Result<Vec<Figure>, ReportError> {
    let mut figures: Vec<Figure> = Vec::new();
    for (i, b) in study.benchmark.iter().enumerate() {
        let (lines, caption) = energy_lines(study, &b.name, results, energy);
        if lines.iter().map(|l| l.points.len()).sum::<usize>() >= 2 {
            let stem = format!("acc_vs_energy_{i}");
            let title = format!("{}: accuracy vs energy per image (mean, range over seeds)", b.name);
            render(out, &stem, &title, "energy per image (nJ, digital periphery)", &lines, true)?;
            figures.push(Figure { stem, caption: Some(caption) });
            let (lines, caption) = energy_sensitivity_lines(study, &b.name, results, energy);
            let stem = format!("acc_vs_energy_fom_{i}");
            let title = format!("{}: Pareto fronts by ADC figure of merit", b.name);
            render(out, &stem, &title, "energy per image (nJ, digital periphery)", &lines, false)?;
            figures.push(Figure { stem, caption: Some(caption) });
        }
    }
    for (i, b) in study.benchmark.iter().enumerate() {
        for (field, x_label, stem) in [
            ("psum_bits", "ADC bits (P)", "acc_vs_adc_bits"),
            ("array_size", "array size (N)", "acc_vs_array_size"),
            ("epochs", "fine-tuning budget (epochs, each its own schedule)", "acc_vs_budget"),
        ] {
            let lines = sweep_lines(study, &b.name, results, field);
            let distinct: std::collections::BTreeSet<i64> =
                lines.iter().flat_map(|l| l.points.iter().map(|p| p.x as i64)).collect();
            if distinct.len() < 2 {
                continue;
            }
            let stem = if study.benchmark.len() > 1 { format!("{stem}_{i}") } else { stem.to_string() };
            render(out, &stem, &format!("{}: accuracy vs {x_label}", b.name), x_label, &lines, false)?;
            figures.push(stem.into());
        }
    }
    for (i, b) in study.benchmark.iter().enumerate() {
        let lines = epoch_lines(study, &b.name, results);
        for (j, (setting, lines)) in lines.iter().enumerate() {
            let stem = format!("acc_vs_epoch_{i}_{j}");
            let title = format!("{}: test accuracy per fine-tuning epoch, {setting}", b.name);
            render(out, &stem, &title, "epoch", lines, true)?;
            figures.push(stem.into());
        }
    }
    if let Some(v) = &study.variation {
        let lines = variation_lines(results);
        if !lines.is_empty() {
            let title = format!("{}: accuracy vs cell variation", v.benchmark);
            render(out, "acc_vs_sigma", &title, "σ of log-normal cell variation", &lines, true)?;
            figures.push(String::from("acc_vs_sigma").into());
        }
    }
    Ok(figures)
}

/// A cell's name in a figure: its method, with its recipe where it overrides the method's.
fn line_name(cell: &study::Cell) -> String {
    match cell.config.recipe {
        Some(recipe) => format!("{} {}", cell.config.method, recipe.name()),
        None => cell.config.method.clone(),
    }
}

/// Per one-stage setting of the benchmark (the columns of its accuracy table): test accuracy
/// after every epoch for each method (recipe overrides as lines of their own), mean over seeds
/// with the range of the seeds as the band. Methods without the setting's ADC (ideal ADC, an
/// ADC of their own) are drawn in every setting.
fn epoch_lines(study: &Study, bench: &str, results: &[CellResult]) -> Vec<(String, Vec<Line>)> {
    let rs: Vec<&CellResult> =
        results.iter().filter(|r| r.cell.benchmark == bench && !r.cell.pretraining && !r.history.is_empty()).collect();
    // one figure per setting and fine-tuning budget (a budget study trains several)
    let mut settings: Vec<&study::Cell> = Vec::new();
    for r in &rs {
        let c = &r.cell.config;
        if c.uses_adc_setting()
            && c.recipe.is_none()
            && !settings.iter().any(|s| s.config.setting_label() == c.setting_label() && s.config.epochs == c.epochs)
        {
            settings.push(&r.cell);
        }
    }
    let budgets: std::collections::BTreeSet<usize> = rs.iter().map(|r| r.cell.config.epochs).collect();
    let mut out = Vec::new();
    for setting in settings {
        let mut groups: Vec<(String, String, Vec<&CellResult>)> = Vec::new();
        for r in &rs {
            let c = &r.cell.config;
            let mut same = setting.config.clone();
            same.method = c.method.clone();
            same.seed = c.seed;
            same.recipe = c.recipe;
            let belongs = (!c.uses_adc_setting() || study::canonical(same) == *c) && c.epochs == setting.config.epochs;
            if !belongs {
                continue;
            }
            let name = line_name(&r.cell);
            match groups.iter_mut().find(|g| g.0 == name) {
                Some(g) => g.2.push(r),
                None => groups.push((name, c.method.clone(), vec![r])),
            }
        }
        let order = |m: &str| {
            study.benchmark.iter().find(|b| b.name == bench).and_then(|b| b.methods.iter().position(|x| x == m))
        };
        groups.sort_by_key(|g| (order(&g.1), g.0.clone()));
        let lines: Vec<Line> = groups
            .into_iter()
            .map(|(name, method, runs)| {
                let epochs = runs.iter().map(|r| r.history.len()).max().unwrap_or(0);
                let points = (0..epochs)
                    .filter_map(|e| {
                        let accs: Vec<f64> =
                            runs.iter().filter_map(|r| r.history.get(e)).map(|h| 100.0 * h.test_acc).collect();
                        // a two-stage run's first stage tests with an ideal ADC
                        let ideal_adc = runs.iter().any(|r| {
                            let c = &r.cell.config;
                            c.uses_adc() && c.resolve().is_ok_and(|run| !run.adc_enabled(e))
                        });
                        range_point((e + 1) as f64, &accs).map(|p| Point { ideal_adc, ..p })
                    })
                    .collect();
                Line::new(name, method, points)
            })
            .collect();
        let label = match budgets.len() {
            1 => setting.config.setting_label(),
            _ => format!("{}, {} epochs", setting.config.setting_label(), setting.config.epochs),
        };
        out.push((label, lines));
    }
    out
}

/// Accuracy against sigma for each studied method (recipe overrides apart): the mean over every
/// seed's chips, with the range of the chips as the band; the point at 0 is the runs' accuracy
/// without variation.
fn variation_lines(results: &[CellResult]) -> Vec<Line> {
    let mut groups: Vec<(String, String, Vec<&train::VariationReport>)> = Vec::new();
    for r in results {
        let Some(v) = &r.variation else { continue };
        let name = line_name(&r.cell);
        match groups.iter_mut().find(|g| g.0 == name) {
            Some(g) => g.2.push(v),
            None => groups.push((name, r.cell.config.method.clone(), vec![v])),
        }
    }
    groups
        .into_iter()
        .map(|(name, method, reports)| {
            let noiseless: Vec<f64> = reports.iter().map(|v| 100.0 * v.noiseless).collect();
            let mut points: Vec<Point> = range_point(0.0, &noiseless).into_iter().collect();
            let mut sigmas: Vec<f64> = reports.iter().flat_map(|v| v.results.iter().map(|s| s.sigma)).collect();
            sigmas.sort_by(f64::total_cmp);
            sigmas.dedup();
            for sigma in sigmas.into_iter().filter(|s| *s > 0.0) {
                let accs: Vec<f64> = reports
                    .iter()
                    .flat_map(|v| v.results.iter().filter(|s| s.sigma == sigma).flat_map(|s| s.accuracies.iter()))
                    .map(|a| 100.0 * a)
                    .collect();
                // the chips of one seed share one trained network: the seeds are the runs
                points.extend(range_point(sigma, &accs).map(|p| Point { seeds: reports.len(), ..p }));
            }
            Line::new(name, method, points)
        })
        .collect()
}

/// (x, mean, min, max) of values; `None` for none.
fn range_point(x: f64, values: &[f64]) -> Option<Point> {
    if values.is_empty() {
        return None;
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let low = values.iter().copied().fold(f64::INFINITY, f64::min);
    let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some(Point { x, mean, low, high, seeds: values.len(), ideal_adc: false })
}

/// The Pareto front of `points` (energy on x, accuracy on y): every point more accurate than
/// every cheaper one, in order of energy.
fn pareto_front(mut points: Vec<Point>) -> Vec<Point> {
    points.sort_by(|a, b| a.x.total_cmp(&b.x).then(b.mean.total_cmp(&a.mean)));
    let mut front: Vec<Point> = Vec::new();
    for p in points {
        if front.last().is_none_or(|last| p.mean > last.mean) {
            front.push(Point { low: p.mean, high: p.mean, ..p });
        }
    }
    front
}
