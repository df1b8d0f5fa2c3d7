//! The results of a study's cells, as found in their run folders.

use std::path::Path;

use study::{Cell, CellState, Study, cell_state};
use train::run::{EpochRecord, RunDir, read_json};
use train::{AdcQualityReport, Summary, VariationReport};

use crate::{ReportError, write_atomic};

/// One cell and what its run folder holds.
#[derive(Debug, Clone)]
pub struct CellResult {
    /// The cell.
    pub cell: Cell,
    /// Finished, partial or pending.
    pub state: CellState,
    /// The summary of a finished run.
    pub summary: Option<Summary>,
    /// Completed epochs.
    pub history: Vec<EpochRecord>,
    /// The variation study, if run.
    pub variation: Option<VariationReport>,
    /// The ADC inspection (`inspect`), if run.
    pub adc_quality: Option<AdcQualityReport>,
}

fn io(path: &Path, e: impl std::fmt::Display) -> ReportError {
    ReportError::io(path, e)
}

/// Reads the run folder of every cell of `study`.
pub fn load_results(study: &Study, runs_root: &Path) -> Result<Vec<CellResult>, ReportError> {
    study
        .cells()?
        .into_iter()
        .map(|cell| {
            let dir = cell.dir(runs_root, &study.name);
            let run = RunDir::new(&dir);
            let summary = run.read_summary().map_err(|e| io(&dir, e))?;
            let history = match std::fs::read_to_string(run.metrics_path()) {
                Ok(text) => text
                    .lines()
                    .map(|l| serde_json::from_str(l).map_err(|e| io(&run.metrics_path(), e)))
                    .collect::<Result<_, _>>()?,
                Err(_) => Vec::new(),
            };
            let variation: Option<VariationReport> = read_json(&dir.join("variation.json")).map_err(|e| io(&dir, e))?;
            let variation = variation.filter(|v| v.config_hash == cell.key());
            let adc_quality: Option<AdcQualityReport> =
                read_json(&dir.join("adc-quality.json")).map_err(|e| io(&dir, e))?;
            let adc_quality = adc_quality.filter(|q| q.config_hash == cell.key());
            Ok(CellResult { state: cell_state(&dir), summary, history, variation, adc_quality, cell })
        })
        .collect()
}

/// Copies every cell's configuration and results (not its checkpoints) into
/// `<out>/runs/<hash>/`, so that the committed report carries the runs behind its numbers.
pub fn archive(results: &[CellResult], out: &Path) -> Result<(), ReportError> {
    for r in results {
        let dir = out.join("runs").join(r.cell.key());
        if r.summary.is_none() && r.history.is_empty() {
            continue;
        }
        write_atomic(&dir.join("config.toml"), r.cell.config.to_toml().as_bytes())?;
        write_atomic(&dir.join("metrics.jsonl"), train::run::metrics_lines(&r.history).as_bytes())?;
        if let Some(s) = &r.summary {
            write_atomic(
                &dir.join("summary.json"),
                (serde_json::to_string_pretty(s).expect("json") + "\n").as_bytes(),
            )?;
        }
        if let Some(v) = &r.variation {
            write_atomic(
                &dir.join("variation.json"),
                (serde_json::to_string_pretty(v).expect("json") + "\n").as_bytes(),
            )?;
        }
        if let Some(q) = &r.adc_quality {
            write_atomic(
                &dir.join("adc-quality.json"),
                (serde_json::to_string_pretty(q).expect("json") + "\n").as_bytes(),
            )?;
            write_atomic(&dir.join("adc-quality.csv"), q.csv().as_bytes())?;
        }
    }
    Ok(())
}
