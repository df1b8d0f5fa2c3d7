//! Studies: the experiment matrix of a profile as data (`reports/<profile>/study.toml`), its
//! cells keyed by the hash of their resolved run configuration, and `reproduce`, which trains
//! every cell that has no finished result (resuming interrupted ones) and runs the variation
//! study where the profile asks for it.
//!
//! ```toml
//! name = "smoke"
//! description = "..."
//!
//! [[benchmark]]
//! name = "ResNet-20 / synthetic"
//! claim = "resnet20-cifar10"          # optional: a claim of baselines/paper-claims.toml
//! methods = ["fp", "layerwise", "columnwise"]
//! seeds = [0]
//! base = { dataset = "synthetic", epochs = 2, limit_train = 1500 }   # RunConfig fields
//! sweep = [{ psum_bits = [3, 4] }]    # each entry: the cartesian product of its lists
//! pretrain = { epochs = 30, lr = 0.1 } # optional: every cell starts from this fp run
//!
//! [variation]                          # optional
//! benchmark = "ResNet-20 / synthetic"
//! methods = ["layerwise", "arraywise", "columnwise"]
//! at = { psum_bits = 3 }
//! sigmas = [0.0, 0.1, 0.2]
//! chips = 10
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use train::RunConfig;

mod elsewhere;
mod reproduce;
pub mod slurm;

pub use reproduce::{
    CellPick, CellState, EstimateBasis, Estimator, ReproduceEvent, ReproduceOptions, ReproduceOutcome, cell_state,
    cell_status, finished_dir, reproduce,
};

/// Why a study could not be read or run.
#[derive(Debug, thiserror::Error)]
pub enum StudyError {
    /// The study file is invalid.
    #[error("{0}")]
    Invalid(String),
    /// A file or folder could not be read or written: the operating system's error.
    #[error("{}: {what}{source}", .path.display())]
    Io {
        /// The file or folder.
        path: std::path::PathBuf,
        /// What was being done, with a separator (`cannot move aside: `), or empty.
        what: &'static str,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A run failed.
    #[error(transparent)]
    Train(#[from] train::TrainError),
}

impl StudyError {
    pub(crate) fn io(path: &std::path::Path, what: &'static str, source: std::io::Error) -> Self {
        StudyError::Io { path: path.to_path_buf(), what, source }
    }
}

/// One benchmark of a study: a data set and model, the methods, seeds and settings to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Benchmark {
    /// Display name, e.g. "ResNet-20 / CIFAR-10".
    pub name: String,
    /// Key of the paper claim this benchmark checks (in `baselines/paper-claims.toml`).
    #[serde(default)]
    pub claim: Option<String>,
    /// Methods, in report order.
    pub methods: Vec<String>,
    /// Seeds.
    #[serde(default = "default_seeds")]
    pub seeds: Vec<u64>,
    /// Run-config fields shared by every cell.
    #[serde(default)]
    pub base: toml::Table,
    /// Settings swept: each entry maps fields to lists of values (cartesian product); the cells
    /// of all entries are pooled (duplicates dropped). An entry's optional `methods` list limits
    /// it to those methods, and its optional `seeds` list replaces the benchmark's seeds for it.
    #[serde(default)]
    pub sweep: Vec<toml::Table>,
    /// A named input the benchmark needs (e.g. `cifar10-jpeg`): its `{name}` placeholder in
    /// `base.dataset` is replaced by the path given on the command line, and without one the
    /// benchmark is skipped.
    #[serde(default)]
    pub requires: Option<String>,
    /// A floating-point pretraining that every cell of the benchmark starts from: run-config
    /// fields put over `base` (its data, epochs, recipe, seed, ...), the method always `fp`. It
    /// is a cell of its own, trained first and once (shared by the seeds of the benchmark), and
    /// its hash is part of the hash of every cell that starts from it.
    #[serde(default)]
    pub pretrain: Option<toml::Table>,
    /// The value given for `requires` ([`Study::provide`]), where one was.
    #[serde(skip)]
    pub given: Option<String>,
}

fn default_seeds() -> Vec<u64> {
    vec![0]
}

/// The variation study of a profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariationSpec {
    /// Which benchmark's runs.
    pub benchmark: String,
    /// Methods studied.
    pub methods: Vec<String>,
    /// Setting of the runs studied (fields that must match), e.g. `{ psum_bits = 3 }`. Runs
    /// with a recipe override are studied only when `at` names the recipe.
    #[serde(default)]
    pub at: toml::Table,
    /// Standard deviations of theta.
    pub sigmas: Vec<f64>,
    /// Simulated chips per sigma.
    pub chips: usize,
    /// Seed of the first chip.
    #[serde(default)]
    pub chip_seed: u64,
    /// Evaluate every chip on a seeded, class-balanced subset of this many test images.
    #[serde(default)]
    pub limit_test: Option<usize>,
}

/// A profile's experiment matrix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Study {
    /// Profile name.
    pub name: String,
    /// What the profile is for.
    pub description: String,
    /// Benchmarks.
    pub benchmark: Vec<Benchmark>,
    /// Variation study.
    #[serde(default)]
    pub variation: Option<VariationSpec>,
    /// The report archives the final model weights (weights and quantizer state, no optimizer)
    /// of every pretraining and every seed-0 cell beside their results, so that a committed
    /// model can be evaluated (`eval --run reports/<profile>/runs/<cell>`) and fine-tuned from;
    /// and the newest whole checkpoint of every cell still training, which `reproduce` resumes
    /// on a machine without its run folder.
    #[serde(default)]
    pub archive_weights: bool,
}

/// One run of the matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// The benchmark it belongs to.
    pub benchmark: String,
    /// Its resolved configuration.
    pub config: RunConfig,
    /// Whether it is its benchmark's floating-point pretraining (the start of the others).
    pub pretraining: bool,
}

impl Cell {
    /// The key of the cell: the hash of its configuration.
    pub fn key(&self) -> String {
        self.config.hash()
    }

    /// The cell's run folder under `runs_root/<profile>/`.
    pub fn dir(&self, runs_root: &Path, profile: &str) -> PathBuf {
        runs_root.join(profile).join(self.key())
    }

    /// A one-line description: data set, model, method, setting, seed.
    pub fn label(&self) -> String {
        let c = &self.config;
        // a folder keyed by its content is named by its input's name, not by where it lay
        let data = match &c.dataset_id {
            Some(id) => format!("folder:{}", id.split('@').next().unwrap_or(id)),
            None => c.dataset.clone(),
        };
        let mut s = format!("{data} {} {}", c.model.name(), c.method);
        if c.uses_crossbar() || c.uses().is_none() {
            s += &format!(" W{}A{} c{} N{} {}", c.weight_bits, c.act_bits, c.cell_bits, c.array_size, c.encoding);
            if let Some(q) = c.uses().and_then(|u| u.own_adc) {
                s += &format!(" {}", q.name());
            } else if c.uses_adc() {
                s += &format!(" P{}", c.psum_bits);
                if !c.adc_is_default() {
                    s += &format!(" adc {}", c.adc_label());
                }
            }
        }
        if let Some(r) = c.recipe {
            s += &format!(" {}", r.name());
        }
        s += &format!(" seed{}", c.seed);
        if self.pretraining {
            s += " pretraining";
        }
        s
    }

    /// The key of the cell whose final weights this cell starts from.
    pub fn starts_from(&self) -> Option<&str> {
        self.config.init_from.as_deref()
    }
}

/// The study file of a profile.
pub fn study_path(reports_root: &Path, profile: &str) -> PathBuf {
    reports_root.join(profile).join("study.toml")
}

/// The pretraining cell of benchmark `b` (floating point, from scratch), if it has one.
fn pretraining_cell(
    b: &Benchmark,
    base: &RunConfig,
    origin: &str,
    sizes: &mut SplitSizes,
) -> Result<Option<Cell>, StudyError> {
    let Some(table) = &b.pretrain else { return Ok(None) };
    let origin = format!("{origin}, pretrain");
    if table.contains_key("method") || table.contains_key("init_from") {
        return Err(StudyError::Invalid(format!(
            "{origin}: a pretraining is floating point and starts from scratch; leave out `method` and `init_from`"
        )));
    }
    let mut config = overlay(base, table, &origin)?;
    config.method = methods::FLOAT.name().into();
    let config = canonical(config);
    config.resolve().map_err(|e| StudyError::Invalid(format!("{origin}: {e}")))?;
    check_dataset(&config, &origin, sizes)?;
    Ok(Some(Cell { benchmark: b.name.clone(), config, pretraining: true }))
}

/// The cells of one sweep entry of benchmark `b`, in order (assignment, method, seed), each
/// resolved.
fn sweep_cells(
    b: &Benchmark,
    base: &RunConfig,
    entry: &toml::Table,
    origin: &str,
    sizes: &mut SplitSizes,
) -> Result<Vec<Cell>, StudyError> {
    let mut entry = entry.clone();
    let only: Option<Vec<String>> = match entry.remove("methods") {
        None => None,
        Some(v) => Some(v.try_into().map_err(|e| StudyError::Invalid(format!("{origin}: sweep `methods`: {e}")))?),
    };
    let seeds: Vec<u64> = match entry.remove("seeds") {
        None => b.seeds.clone(),
        Some(v) => v.try_into().map_err(|e| StudyError::Invalid(format!("{origin}: sweep `seeds`: {e}")))?,
    };
    let mut cells = Vec::new();
    for assignment in assignments(&entry, origin)? {
        for method in b.methods.iter().filter(|m| only.as_ref().is_none_or(|o| o.contains(m))) {
            for &seed in &seeds {
                let mut config = overlay(base, &assignment, origin)?;
                config.method = method.clone();
                config.seed = seed;
                let config = canonical(config);
                config.resolve().map_err(|e| StudyError::Invalid(format!("{origin}, method {method}: {e}")))?;
                check_dataset(&config, origin, sizes)?;
                cells.push(Cell { benchmark: b.name.clone(), config, pretraining: false });
            }
        }
    }
    Ok(cells)
}

fn overlay(config: &RunConfig, table: &toml::Table, origin: &str) -> Result<RunConfig, StudyError> {
    let mut merged = toml::Table::try_from(config).expect("a run config is a table");
    for (k, v) in table {
        merged.insert(k.clone(), v.clone());
    }
    merged.try_into().map_err(|e| StudyError::Invalid(format!("{origin}: {e}")))
}

/// Every assignment of one sweep entry (cartesian product, keys in order).
fn assignments(entry: &toml::Table, origin: &str) -> Result<Vec<toml::Table>, StudyError> {
    let mut out = vec![toml::Table::new()];
    for (key, values) in entry {
        let list = values
            .as_array()
            .ok_or_else(|| StudyError::Invalid(format!("{origin}: sweep field `{key}` must be a list of values")))?;
        if list.is_empty() {
            return Err(StudyError::Invalid(format!("{origin}: sweep field `{key}` is an empty list")));
        }
        out = out
            .into_iter()
            .flat_map(|a| {
                list.iter().map(move |v| {
                    let mut a = a.clone();
                    a.insert(key.clone(), v.clone());
                    a
                })
            })
            .collect();
    }
    Ok(out)
}

/// Resets the fields a method does not use to their defaults, so that e.g. `fp` is one cell
/// however many ADC resolutions are swept.
pub fn canonical(mut c: RunConfig) -> RunConfig {
    let d = RunConfig::default();
    match c.uses() {
        Some(u) if !u.crossbar => {
            c.weight_bits = d.weight_bits;
            c.act_bits = d.act_bits;
            c.psum_bits = d.psum_bits.clone();
            c.cell_bits = d.cell_bits;
            c.array_size = d.array_size;
            c.encoding = d.encoding;
            c.train_variation_sigma = d.train_variation_sigma;
            c.clear_adc_settings();
        }
        Some(u) if !u.adc_setting() => {
            c.psum_bits = d.psum_bits;
            c.clear_adc_settings();
            c.activation = d.activation;
        }
        Some(_) => c.activation = d.activation,
        None => {}
    }
    c
}

/// The cells of `cells` that the variation study `v` covers.
fn variation_filter(v: &VariationSpec, cells: &[Cell]) -> Vec<Cell> {
    cells
        .iter()
        .filter(|c| c.benchmark == v.benchmark && !c.pretraining && v.methods.contains(&c.config.method))
        .filter(|c| {
            let table = toml::Table::try_from(&c.config).expect("a table");
            let recipe_ok = c.config.recipe.is_none() || v.at.contains_key("recipe");
            recipe_ok && v.at.iter().all(|(k, want)| table.get(k) == Some(want))
        })
        .cloned()
        .collect()
}

/// Fails unless the data set of `config` is a known one or a `folder:` tree (whose folder is
/// read when a cell trains): an unknown name is found when the study is read, not after hours
/// of training the cells before it.
/// The longest study name: it names a folder (file systems take 255 bytes), and reports and
/// logs add to it.
const MAX_NAME: usize = 100;

/// Images per split of a cell's data set, known before any image is read: a manifest's counts,
/// or a folder tree's files less (and as) the held-out images per class. Memoized per data set and
/// holdout, so that a tree is listed once per study.
type SplitSizes = std::collections::HashMap<(String, usize), Option<(usize, usize)>>;

/// Checks a cell's data set before any work: a known manifest, and limits its splits can meet
/// (a `limit_train` larger than the training split would fail every cell only when it trains).
fn check_dataset(config: &RunConfig, origin: &str, sizes: &mut SplitSizes) -> Result<(), StudyError> {
    let key = (config.dataset.clone(), config.folder_holdout);
    let split = match sizes.get(&key) {
        Some(known) => *known,
        None => {
            let known = match config.dataset.strip_prefix(data::source::FOLDER_PREFIX) {
                // a tree that cannot be listed here is the concern of the run that reads it
                Some(root) => data::folder::index_folder(Path::new(root)).ok().map(|index| {
                    // a tree with its own test split (train/ and val/) takes it whole
                    if let Some(t) = index.test_from {
                        return (t, index.items.len() - t);
                    }
                    let counts = index.items.iter().fold(vec![0usize; index.classes.len()], |mut c, (_, l)| {
                        c[*l as usize] += 1;
                        c
                    });
                    let held: usize = counts.iter().map(|&n| n.min(config.folder_holdout)).sum();
                    (index.items.len() - held, held)
                }),
                None => {
                    let manifest = data::find_manifest(&config.dataset)
                        .map_err(|e| StudyError::Invalid(format!("{origin}: dataset = {:?}: {e}", config.dataset)))?;
                    Some((manifest.splits.train, manifest.splits.test))
                }
            };
            sizes.insert(key, known);
            known
        }
    };
    if let Some((train, test)) = split {
        for (field, limit, available, which) in
            [("limit_train", config.limit_train, train, "training"), ("limit_test", config.limit_test, test, "test")]
        {
            if let Some(n) = limit.filter(|&n| n > available) {
                return Err(StudyError::Invalid(format!(
                    "{origin}: {field} = {n}: the {which} split of {} has only {available} images",
                    config.dataset
                )));
            }
        }
    }
    Ok(())
}

impl Benchmark {
    /// Whether every input the benchmark needs was given (see [`Study::provide`]).
    pub fn is_runnable(&self) -> bool {
        // a placeholder with the content identity of its data (the portable form in which a
        // report archives a run) names its runs as well as a path does
        self.base.contains_key("dataset_id")
            || self.base.get("dataset").and_then(|d| d.as_str()).is_none_or(|d| !d.contains('{'))
    }
}

impl Study {
    /// Gives a named input: replaces `{name}` in the data-set spec of the benchmarks that
    /// require it, and keys their runs by the input's content identity `id` (see
    /// [`train::RunConfig::dataset_id`]) where given.
    pub fn provide(&mut self, name: &str, value: &str, id: Option<&str>) {
        for b in &mut self.benchmark {
            let Some(toml::Value::String(d)) = b.base.get_mut("dataset") else { continue };
            let placeholder = format!("{{{name}}}");
            if !d.contains(&placeholder) {
                continue;
            }
            *d = d.replace(&placeholder, value);
            b.given = Some(value.to_string());
            if let Some(id) = id {
                b.base.insert("dataset_id".into(), toml::Value::String(id.to_string()));
            }
        }
    }

    /// The configuration of `cell` as a report archives it: the value given for its
    /// benchmark's input (a path on this machine) put back as the study's placeholder, so that
    /// a committed configuration names its data by the input's name and content identity
    /// (`dataset_id`), never by where it lay. The hash is the same.
    pub fn portable_config(&self, cell: &Cell) -> RunConfig {
        let mut config = cell.config.clone();
        let bench = self.benchmark.iter().find(|b| b.name == cell.benchmark);
        if let Some((input, value)) = bench.and_then(|b| Some((b.requires.as_ref()?, b.given.as_ref()?)))
            && config.dataset_id.is_some()
        {
            config.dataset = config.dataset.replace(value.as_str(), &format!("{{{input}}}"));
        }
        config
    }

    /// Gives each input still missing the value that the archived runs in `archive` (a report's
    /// `runs/` folder) were trained with, where some cell of the benchmark then matches an
    /// archived run: a report regenerated without the input keeps those results instead of
    /// dropping them. Returns the (input, value) pairs given.
    pub fn provide_from_archive(&mut self, archive: &Path) -> Vec<(String, String)> {
        let datasets: std::collections::BTreeSet<(String, Option<String>)> = std::fs::read_dir(archive)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter_map(|e| std::fs::read_to_string(e.path().join("config.toml")).ok())
            .filter_map(|text| RunConfig::from_stored_toml(&text, "").ok())
            .map(|c| (c.dataset, c.dataset_id))
            .collect();
        let archived: std::collections::BTreeSet<String> = std::fs::read_dir(archive)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        let mut given = Vec::new();
        for i in 0..self.benchmark.len() {
            let (Some(input), Some(template)) = (
                self.benchmark[i].requires.clone(),
                self.benchmark[i].base.get("dataset").and_then(|d| d.as_str()).map(str::to_string),
            ) else {
                continue;
            };
            let Some((prefix, suffix)) = template.split_once(&format!("{{{input}}}")) else {
                continue;
            };
            for (d, id) in &datasets {
                let Some(value) = d.strip_prefix(prefix).and_then(|v| v.strip_suffix(suffix)) else {
                    continue;
                };
                let mut trial = self.clone();
                trial.provide(&input, value, id.as_deref());
                let name = self.benchmark[i].name.clone();
                let matches = trial
                    .cells()
                    .is_ok_and(|cells| cells.iter().any(|c| c.benchmark == name && archived.contains(&c.key())));
                if matches {
                    *self = trial;
                    given.push((input.clone(), value.to_string()));
                    break;
                }
            }
        }
        given
    }

    /// Benchmarks skipped for want of an input, with the input's name.
    pub fn skipped(&self) -> Vec<(String, String)> {
        self.benchmark
            .iter()
            .filter(|b| !b.is_runnable())
            .map(|b| (b.name.clone(), b.requires.clone().unwrap_or_else(|| "an input".into())))
            .collect()
    }

    /// Reads and checks a study file.
    pub fn load(path: &Path) -> Result<Self, StudyError> {
        let text = std::fs::read_to_string(path).map_err(|e| StudyError::io(path, "", e))?;
        let study: Study =
            toml::from_str(&text).map_err(|e| StudyError::Invalid(format!("{}: {e}", path.display())))?;
        study.cells().map_err(|e| StudyError::Invalid(format!("{}: {e}", path.display())))?;
        Ok(study)
    }

    /// The cells of every benchmark, in order (benchmark, sweep, method, seed), each resolved.
    pub fn cells(&self) -> Result<Vec<Cell>, StudyError> {
        self.check_names()?;
        let mut cells: Vec<Cell> = Vec::new();
        let mut sizes = SplitSizes::new();
        for b in self.benchmark.iter().filter(|b| b.is_runnable()) {
            let origin = format!("benchmark `{}`", b.name);
            let before = cells.len();
            let mut base = overlay(&RunConfig::default(), &b.base, &origin)?;
            if let Some(cell) = pretraining_cell(b, &base, &origin, &mut sizes)? {
                base.init_from = Some(cell.key());
                cells.push(cell);
            }
            let sweeps = if b.sweep.is_empty() { vec![toml::Table::new()] } else { b.sweep.clone() };
            for entry in &sweeps {
                for cell in sweep_cells(b, &base, entry, &origin, &mut sizes)? {
                    if let Some(pre) = cells[before..].iter().find(|c| c.pretraining)
                        && let Some(why) = train::init::activation_mismatch(&pre.config, &cell.config)
                    {
                        return Err(StudyError::Invalid(format!(
                            "{origin}, method {}: it starts from the benchmark's pretraining, but {why}",
                            cell.config.method
                        )));
                    }
                    if !cells.iter().any(|c| c.key() == cell.key()) {
                        cells.push(cell);
                    }
                }
            }
            if !cells[before..].iter().any(|c| !c.pretraining) {
                return Err(StudyError::Invalid(format!(
                    "{origin}: its sweep yields no cells (each entry's `methods` must name some of the benchmark's methods)"
                )));
            }
        }
        self.check_variation(&cells)?;
        Ok(cells)
    }

    /// The study's name and its benchmarks' names, methods and seeds.
    fn check_names(&self) -> Result<(), StudyError> {
        if self.benchmark.is_empty() {
            return Err(StudyError::Invalid("no [[benchmark]]".into()));
        }
        let plain = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
        if self.name.is_empty()
            || self.name.starts_with('.')
            || !self.name.chars().all(plain)
            || self.name.len() > MAX_NAME
        {
            return Err(StudyError::Invalid(format!(
                "name = {:?}: expected a plain name of at most {MAX_NAME} characters (letters, digits, '-', '_', \
                 '.'; it names the profile's run folder)",
                self.name
            )));
        }
        for (i, b) in self.benchmark.iter().enumerate() {
            if self.benchmark[..i].iter().any(|other| other.name == b.name) {
                return Err(StudyError::Invalid(format!(
                    "two benchmarks are named `{}`: names must differ (the report groups cells by them)",
                    b.name
                )));
            }
            if b.methods.is_empty() {
                return Err(StudyError::Invalid(format!(
                    "benchmark `{}`: methods = []: expected at least one method",
                    b.name
                )));
            }
            if b.seeds.is_empty() {
                return Err(StudyError::Invalid(format!(
                    "benchmark `{}`: seeds = []: expected at least one seed",
                    b.name
                )));
            }
        }
        Ok(())
    }

    /// The `[variation]` table against the study's `cells`.
    fn check_variation(&self, cells: &[Cell]) -> Result<(), StudyError> {
        let Some(v) = &self.variation else { return Ok(()) };
        let Some(b) = self.benchmark.iter().find(|b| b.name == v.benchmark) else {
            let names: Vec<&str> = self.benchmark.iter().map(|b| b.name.as_str()).collect();
            return Err(StudyError::Invalid(format!(
                "[variation]: no benchmark named `{}` (the study's: {})",
                v.benchmark,
                names.join(", ")
            )));
        };
        if v.chips == 0 || v.sigmas.is_empty() {
            return Err(StudyError::Invalid("[variation]: expected chips >= 1 and at least one sigma".into()));
        }
        if let Some(sigma) = v.sigmas.iter().find(|s| !(s.is_finite() && **s >= 0.0)) {
            return Err(StudyError::Invalid(format!(
                "[variation]: sigma {sigma}: expected a non-negative number (the standard deviation of theta)"
            )));
        }
        if let Some(m) = v.methods.iter().find(|m| !b.methods.contains(m)) {
            return Err(StudyError::Invalid(format!(
                "[variation]: method `{m}` is not one of benchmark `{}`'s methods ({})",
                b.name,
                b.methods.join(", ")
            )));
        }
        // a benchmark waiting for its input (`requires`) has no cells yet: what it varies is
        // checked once the input is given
        if b.is_runnable() && variation_filter(v, cells).is_empty() {
            return Err(StudyError::Invalid(format!(
                "[variation]: no cell of benchmark `{}` is one of methods [{}] at {}: the study would vary nothing",
                b.name,
                v.methods.join(", "),
                v.at
            )));
        }
        Ok(())
    }

    /// The cells the variation study covers.
    pub fn variation_cells(&self) -> Result<Vec<Cell>, StudyError> {
        let Some(v) = &self.variation else { return Ok(Vec::new()) };
        Ok(variation_filter(v, &self.cells()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STUDY: &str = r#"
name = "t"
description = "test"
[[benchmark]]
name = "B"
methods = ["fp", "ideal-adc", "columnwise"]
seeds = [0, 1]
base = { dataset = "synthetic", epochs = 2 }
sweep = [{ psum_bits = [3, 4] }, { array_size = [64], psum_bits = [3] }, { methods = ["columnwise"], recipe = ["two-stage"] }]
[variation]
benchmark = "B"
methods = ["columnwise"]
at = { psum_bits = 3, array_size = 128 }
sigmas = [0.0, 0.1]
chips = 2
"#;

    #[test]
    fn cells_are_the_deduplicated_product() {
        let s: Study = toml::from_str(STUDY).unwrap();
        let cells = s.cells().unwrap();
        // fp and ideal-adc ignore P (and fp ignores N): 2 + 2*2 (ideal N128, N64) ... per seed
        let count = |m: &str| cells.iter().filter(|c| c.config.method == m).count();
        assert_eq!(count("fp"), 2);
        assert_eq!(count("ideal-adc"), 4);
        assert_eq!(count("columnwise"), 8); // 3 settings + the two-stage one, per seed
        assert!(cells.iter().any(|c| c.config.recipe.is_some() && c.config.method == "columnwise"));
        assert!(!cells.iter().any(|c| c.config.recipe.is_some() && c.config.method != "columnwise"));
        assert!(cells.iter().all(|c| c.config.epochs == 2));
        let v = s.variation_cells().unwrap();
        assert_eq!(v.len(), 2); // one-stage columnwise, two seeds (recipe overrides only when named)
        assert!(v.iter().all(|c| c.config.psum_bits == 3.into() && c.config.array_size == 128));
        assert!(cells[0].label().starts_with("synthetic resnet20 fp seed0"));
        // a method with its own ADC ignores P and the ADC window: one cell per seed and N
        let own =
            STUDY.replace("methods = [\"fp\", \"ideal-adc\", \"columnwise\"]", "methods = [\"saxena-roy-binary\"]");
        let own: Study = toml::from_str(&own[..own.find("[variation]").unwrap()]).unwrap();
        let cells = own.cells().unwrap();
        assert_eq!(cells.len(), 4, "{:?}", cells.iter().map(Cell::label).collect::<Vec<_>>());
        assert!(cells.iter().all(|c| c.label().contains(" binary seed") && !c.label().contains(" P")));
    }

    /// ADC windows are swept like any field; methods without ADCs stay one cell, with the hash
    /// of runs from before windows existed.
    #[test]
    fn adc_settings_sweep_only_methods_with_adcs() {
        let text = STUDY.replace(
            "sweep = [{ psum_bits = [3, 4] }, { array_size = [64], psum_bits = [3] }, { methods = [\"columnwise\"], recipe = [\"two-stage\"] }]",
            "sweep = [{ psum_bits = [3] }, { psum_bits = [3], adc_window = [\"zero\"], adc_init = [\"lsq\"] }, \
             { methods = [\"columnwise\"], psum_bits = [3], seeds = [7] }]",
        );
        let s: Study = toml::from_str(&text).unwrap();
        let cells = s.cells().unwrap();
        let count = |m: &str| cells.iter().filter(|c| c.config.method == m).count();
        assert_eq!((count("fp"), count("ideal-adc"), count("columnwise")), (2, 2, 5));
        assert!(cells.iter().any(|c| c.config.seed == 7 && c.config.method == "columnwise"));
        assert!(!cells.iter().any(|c| c.config.seed == 7 && c.config.method != "columnwise"));
        let ablation: Vec<&Cell> = cells.iter().filter(|c| c.label().contains("adc zero/lsq")).collect();
        assert_eq!(ablation.len(), 2);
        assert!(ablation.iter().all(|c| c.config.method == "columnwise"));
        let fp = cells.iter().find(|c| c.config.method == "fp").unwrap();
        assert!(!fp.config.to_toml().contains("adc_"), "fp keeps the hash of before windows");
        let default = cells.iter().find(|c| c.config.method == "columnwise").unwrap();
        assert!(default.config.to_toml().contains("adc_window = \"learned\""));
    }

    #[test]
    fn a_pretraining_is_a_cell_that_every_other_cell_starts_from() {
        let with = |pretrain: &str| {
            STUDY.replace(
                "base = { dataset = \"synthetic\", epochs = 2 }\n",
                &format!("base = {{ dataset = \"synthetic\", epochs = 2 }}\npretrain = {pretrain}\n"),
            )
        };
        let s: Study = toml::from_str(&with("{ epochs = 5, lr = 0.1 }")).unwrap();
        let cells = s.cells().unwrap();
        let pre = &cells[0];
        assert!(pre.pretraining && pre.config.method == "fp" && pre.config.epochs == 5 && pre.config.lr == 0.1);
        assert!(pre.config.init_from.is_none() && pre.label().ends_with(" seed0 pretraining"), "{}", pre.label());
        assert_eq!(cells.iter().filter(|c| c.pretraining).count(), 1, "one pretraining, shared by the seeds");
        assert!(cells[1..].iter().all(|c| c.starts_from() == Some(pre.key().as_str()) && c.config.epochs == 2));
        assert_eq!(cells.len(), 1 + 14, "the matrix itself is unchanged");
        // the pretraining is part of every cell's identity
        let longer: Study = toml::from_str(&with("{ epochs = 6, lr = 0.1 }")).unwrap();
        let longer = longer.cells().unwrap();
        assert!(cells.iter().zip(&longer).all(|(a, b)| a.key() != b.key()));
        let plain: Study = toml::from_str(STUDY).unwrap();
        assert!(plain.cells().unwrap().iter().all(|c| c.starts_from().is_none() && !c.pretraining));
        // refused when the study is read
        let e = toml::from_str::<Study>(&with("{ method = \"columnwise\" }")).unwrap().cells().unwrap_err().to_string();
        assert!(e.contains("pretrain") && e.contains("method"), "{e}");
        let e = toml::from_str::<Study>(&with("{ dataset = \"cifar11\" }")).unwrap().cells().unwrap_err().to_string();
        assert!(e.contains("pretrain") && e.contains("cifar11"), "{e}");
        let e = toml::from_str::<Study>(&with("{ epochs = 0 }")).unwrap().cells().unwrap_err().to_string();
        assert!(e.contains("pretrain") && e.contains("epochs = 0"), "{e}");

        // a pretraining in the clamp form: fp cells must keep it, methods on arrays carry no value
        let clamp = with("{ epochs = 5, activation = \"clamp\" }");
        let e = toml::from_str::<Study>(&clamp).unwrap().cells().unwrap_err().to_string();
        assert!(e.contains("method fp") && e.contains("activation = clamp, this run has activation = relu"), "{e}");
        let both = clamp
            .replace("base = { dataset = \"synthetic\"", "base = { dataset = \"synthetic\", activation = \"clamp\"");
        let cells = toml::from_str::<Study>(&both).unwrap().cells().unwrap();
        assert_eq!(cells[0].config.activation, models::Activation::Clamp);
        for c in &cells {
            let clamped = c.config.to_toml().contains("activation = \"clamp\"");
            assert_eq!(clamped, c.config.method == "fp", "{}", c.label());
        }
        let e = toml::from_str::<Study>(&with("{ activation = \"tanh\" }")).unwrap().cells().unwrap_err().to_string();
        assert!(e.contains("pretrain") && e.contains("activation = \"tanh\": expected \"relu\" or \"clamp\""), "{e}");
    }

    /// A variation study of a benchmark that needs an input loads without it (the benchmark is
    /// skipped, and so are its chips); given the input, it varies that benchmark's cells. A
    /// benchmark name the study lacks is refused, naming the study's.
    #[test]
    fn a_variation_study_waits_for_its_benchmarks_input() {
        let text = r#"
name = "t"
description = "test"
[[benchmark]]
name = "B"
requires = "tree"
methods = ["fp", "columnwise"]
base = { dataset = "folder:{tree}", epochs = 1 }
sweep = [{ psum_bits = [3] }]
[variation]
benchmark = "B"
methods = ["columnwise"]
at = { psum_bits = 3 }
sigmas = [0.1]
chips = 2
"#;
        let study: Study = toml::from_str(text).unwrap();
        assert!(study.cells().unwrap().is_empty() && study.variation_cells().unwrap().is_empty());
        let mut given = study.clone();
        given.provide("tree", "/a/tree", Some("tree@0123456789abcdef"));
        let varied = given.variation_cells().unwrap();
        assert_eq!(varied.len(), 1, "{varied:?}");
        assert_eq!(varied[0].config.method, "columnwise");

        let unknown: Study =
            toml::from_str(&text.replace(
                "benchmark = \"B\"\nmethods = [\"columnwise\"]",
                "benchmark = \"C\"\nmethods = [\"columnwise\"]",
            ))
            .unwrap();
        let e = unknown.cells().unwrap_err().to_string();
        assert!(e.contains("no benchmark named `C` (the study's: B)"), "{e}");
    }

    /// A `folder:` input is keyed by its content identity, not its path: the same tree given at
    /// two places gives the same cells.
    #[test]
    fn a_folder_input_is_keyed_by_its_identity() {
        let text = r#"
name = "t"
description = "test"
[[benchmark]]
name = "B"
requires = "tree"
methods = ["fp"]
base = { dataset = "folder:{tree}" }
"#;
        let study: Study = toml::from_str(text).unwrap();
        let keys = |path: &str, id: Option<&str>| {
            let mut s = study.clone();
            s.provide("tree", path, id);
            s.cells().unwrap().iter().map(Cell::key).collect::<Vec<_>>()
        };
        assert_eq!(keys("/a/tree", Some("tree@0123456789abcdef")), keys("/b/elsewhere", Some("tree@0123456789abcdef")));
        assert_ne!(keys("/a/tree", Some("tree@0123456789abcdef")), keys("/a/tree", Some("tree@fedcba9876543210")));
        assert_ne!(keys("/a/tree", None), keys("/b/elsewhere", None), "without an identity, the path");

        // archived in the portable form: the placeholder, not the path; the same key; and a study
        // given the placeholder back (a fresh clone without the input) finds the same cells
        let mut given = study.clone();
        given.provide("tree", "/a/tree", Some("tree@0123456789abcdef"));
        let cell = given.cells().unwrap().remove(0);
        let portable = given.portable_config(&cell);
        assert_eq!(portable.dataset, "folder:{tree}");
        assert_eq!(portable.hash(), cell.key());
        assert!(!portable.to_toml().contains("/a/tree"));
        let mut fresh = study.clone();
        fresh.provide("tree", "{tree}", Some("tree@0123456789abcdef"));
        assert!(fresh.benchmark[0].is_runnable());
        assert_eq!(fresh.cells().unwrap()[0].key(), cell.key());
    }

    /// Every part of a study file is checked when it is read, not after hours of training.
    #[test]
    fn a_study_is_checked_whole_before_any_training() {
        let check = |from: &str, to: &str, needle: &str| {
            let text = STUDY.replacen(from, to, 1);
            assert_ne!(text, STUDY, "{from}");
            let e = match toml::from_str::<Study>(&text) {
                Ok(s) => s.cells().unwrap_err().to_string(),
                Err(e) => e.to_string(),
            };
            assert!(e.contains(needle), "{needle}: {e}");
        };
        check("name = \"t\"", "name = \"../../escape\"", "expected a plain name");
        check("name = \"t\"", "name = \"a/b\"", "\"a/b\"");
        check("methods = [\"fp\", \"ideal-adc\", \"columnwise\"]", "methods = []", "methods = []");
        check("seeds = [0, 1]", "seeds = []", "seeds = []");
        check(
            "sweep = [{ psum_bits = [3, 4] }, { array_size = [64], psum_bits = [3] }, { methods = [\"columnwise\"], recipe = [\"two-stage\"] }]",
            "sweep = [{ methods = [\"rowwise\"], psum_bits = [3] }]",
            "yields no cells",
        );
        check(
            "base = { dataset = \"synthetic\", epochs = 2 }",
            "base = { dataset = \"cifar11\", epochs = 2 }",
            "cifar11",
        );
        // limits the data set cannot meet, and names that cannot name a folder, fail here, not
        // after a dry run that estimated them
        check(
            "base = { dataset = \"synthetic\", epochs = 2 }",
            "base = { dataset = \"synthetic\", epochs = 2, limit_train = 20000 }",
            "limit_train = 20000: the training split of synthetic has only 10000 images",
        );
        check(
            "base = { dataset = \"synthetic\", epochs = 2 }",
            "base = { dataset = \"synthetic\", epochs = 2, limit_test = 2001 }",
            "limit_test = 2001: the test split of synthetic has only 2000 images",
        );
        check("name = \"t\"", &format!("name = \"{}\"", "n".repeat(300)), "at most 100 characters");
        check("sigmas = [0.0, 0.1]", "sigmas = [0.0, -0.1]", "sigma -0.1");
        check("sigmas = [0.0, 0.1]", "sigmas = [0.0, nan]", "sigma NaN");
        check("methods = [\"columnwise\"]\nat", "methods = [\"layerwise\"]\nat", "`layerwise` is not one of");
        check("at = { psum_bits = 3, array_size = 128 }", "at = { psum_bits = 7 }", "would vary nothing");
        let twice = STUDY.replace(
            "[variation]",
            &format!(
                "{}\n[variation]",
                &STUDY[STUDY.find("[[benchmark]]").unwrap()..STUDY.find("[variation]").unwrap()]
            ),
        );
        let e = toml::from_str::<Study>(&twice).unwrap().cells().unwrap_err().to_string();
        assert!(e.contains("two benchmarks are named `B`"), "{e}");
    }

    #[test]
    fn bad_studies_are_named() {
        let bad = STUDY.replace("psum_bits = [3, 4]", "psum_bits = 3");
        let e = toml::from_str::<Study>(&bad).unwrap().cells().unwrap_err().to_string();
        assert!(e.contains("`psum_bits` must be a list"), "{e}");
        let bad = STUDY.replace("\"columnwise\"]\nseeds", "\"rowwise\"]\nseeds");
        let e = toml::from_str::<Study>(&bad).unwrap().cells().unwrap_err().to_string();
        assert!(e.contains("rowwise"), "{e}");
        let bad = STUDY.replace("epochs = 2", "epochz = 2");
        let e = toml::from_str::<Study>(&bad).unwrap().cells().unwrap_err().to_string();
        assert!(e.contains("epochz"), "{e}");
    }

    /// ADC bits per CIM layer in a study file: a sweep value that is itself a list; a list of
    /// the wrong length fails when the study is read, naming both numbers.
    #[test]
    fn adc_bits_per_layer_in_a_study() {
        let per_layer =
            format!("[{}]", ["4"; 6].iter().chain(["3"; 12].iter()).copied().collect::<Vec<_>>().join(", "));
        let text = STUDY.replace("psum_bits = [3, 4] }", &format!("psum_bits = [3, {per_layer}] }}"));
        let s: Study = toml::from_str(&text).unwrap();
        let cells = s.cells().unwrap();
        let listed: Vec<&Cell> = cells.iter().filter(|c| c.config.psum_bits.uniform().is_none()).collect();
        assert_eq!(listed.len(), 2, "columnwise, two seeds");
        assert_eq!(listed[0].config.psum_bits.of_layer(0), 4);
        assert!(listed[0].label().contains(" P[4,4,4,4,4,4,3,"), "{}", listed[0].label());
        assert_ne!(listed[0].key(), cells.iter().find(|c| c.config.method == "columnwise").unwrap().key());
        let short = STUDY.replace("psum_bits = [3, 4] }", "psum_bits = [3, [4, 3]] }");
        let e = toml::from_str::<Study>(&short).unwrap().cells().unwrap_err().to_string();
        assert!(e.contains("a list of 2 values") && e.contains("resnet20 has 18 CIM layers"), "{e}");
    }
}
