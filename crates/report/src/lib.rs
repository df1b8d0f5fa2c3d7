//! `cargo xtask report`: reads the finished runs of a study profile and writes, into
//! `reports/<profile>/`, the accuracy table (method x setting, mean and spread over seeds, best
//! and final epoch), the paper-claim table, the one-stage vs two-stage table, the hardware-cost
//! table, the variation table, figures (SVG and PNG), every table as CSV, a copy of every run's
//! configuration and results, and a README that stitches them together. Missing and partial
//! results are shown as such.

pub mod energy;
mod figures;
mod results;
pub mod stats;
mod tables;
pub mod writer;

use std::path::{Path, PathBuf};

use serde::Deserialize;
use study::Study;

pub use energy::{EnergyModel, ModelCosts};
pub use figures::Figure;
pub use results::{CellResult, load_results};
pub use tables::{Table, Tables};

/// Why a report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A file could not be read or written.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// Input is invalid.
    #[error("{0}")]
    Invalid(String),
    /// A table operation failed.
    #[error("table: {0}")]
    Polars(#[from] polars::error::PolarsError),
    /// A study error.
    #[error(transparent)]
    Study(#[from] study::StudyError),
}

impl ReportError {
    pub(crate) fn io(path: impl Into<PathBuf>, e: impl std::fmt::Display) -> Self {
        ReportError::Io { path: path.into(), message: e.to_string() }
    }
}

/// A claim of the paper, with its source.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claim {
    /// What the claim is about.
    pub benchmark: String,
    /// The data set the paper measured it on, as a run's `dataset` names it (`cifar10`, ...): a
    /// benchmark on another data set is a stand-in, and its rows say so.
    pub dataset: String,
    /// Claimed accuracy gain of column/column over the best related work, in points.
    pub gain_points: f64,
    /// Where it is stated.
    pub source: String,
}

/// `baselines/paper-claims.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// Provenance of the file.
    pub provenance: String,
    /// Claims by key.
    pub claims: std::collections::BTreeMap<String, Claim>,
}

impl Claims {
    /// Reads the claims file.
    pub fn load(path: &Path) -> Result<Self, ReportError> {
        let text = std::fs::read_to_string(path).map_err(|e| ReportError::io(path, e))?;
        toml::from_str(&text).map_err(|e| ReportError::io(path, e))
    }
}

/// Where a report reads from and writes to.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    /// Run folders: `<runs_root>/<profile>/<hash>/`.
    pub runs_root: PathBuf,
    /// The profile's report folder (`reports/<profile>`), which holds `study.toml`.
    pub out_dir: PathBuf,
    /// `baselines/paper-claims.toml`.
    pub claims: PathBuf,
    /// Also draw figures (SVG and PNG).
    pub figures: bool,
    /// The energy model (`baselines/energy/default.toml`, or a user's file).
    pub energy: PathBuf,
    /// Take over files the report did not write (a report folder of a version before
    /// `report-manifest.json`, or files moved in by hand): they are replaced and listed; and
    /// archived run files changed since the report wrote them are reported as they are now.
    pub adopt: bool,
}

/// Writes the whole report of `study`; returns the tables. Results come from the run folders,
/// else from the report's own archive; every file is staged and checked before any is written
/// ([`writer::ReportWriter`]).
pub fn generate(study: &Study, opts: &ReportOptions) -> Result<Tables, ReportError> {
    let results = load_results(study, &opts.runs_root, &opts.out_dir, opts.adopt)?;
    let mut out = writer::ReportWriter::new(&opts.out_dir).adopting(opts.adopt).for_study(&study.name);
    results::archive(study, &results, &mut out)?;
    let claims = Claims::load(&opts.claims)?;
    let energy = EnergyModel::load(&opts.energy)?;
    let tables = Tables::build(study, &results, &claims, &energy)?;
    tables.write(&mut out)?;
    let figures = if opts.figures { figures::draw(study, &results, &energy, &mut out)? } else { Vec::new() };
    let readme = tables.readme(study, &results, &claims, &figures);
    out.add(Path::new("README.md"), readme);
    out.commit()?;
    Ok(tables)
}

pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    train::run::write_atomic(path, bytes).map_err(|e| ReportError::io(path, e))
}
