//! The results of a study's cells, as found in their run folders.

use std::path::Path;

use study::{Cell, CellState, Study, cell_state};
use train::run::{EpochRecord, FailureRecord, RunDir, read_json};
use train::{AdcQualityReport, Summary, VariationReport};

use crate::ReportError;
use crate::writer::{Manifest, ReportWriter, key};

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
    /// Why the run failed, if it did.
    pub failure: Option<FailureRecord>,
    /// The folder the results were read from: the run folder, or the report's archived copy.
    pub dir: std::path::PathBuf,
    /// The archived copy is not one the report can vouch for (its configuration is missing or
    /// not the cell's): the cell is failed, and the report writes nothing into the copy.
    pub archive_damaged: bool,
}

impl CellResult {
    /// The shape [C, H, W] of the images its model sees: as its run recorded it, else as its
    /// configuration says ([`crate::energy::input_shape`]).
    pub fn input_shape(&self) -> [usize; 3] {
        self.summary
            .as_ref()
            .and_then(|s| s.input_shape)
            .unwrap_or_else(|| crate::energy::input_shape(&self.cell.config))
    }
}

/// Reads the run folder of every cell of `study`: `<runs_root>/<profile>/<hash>/`, or, where that
/// has no finished run, the copy an earlier report archived in `<archive>/runs/<hash>/` (a fresh
/// clone has no run folders but the committed report's archive: its results are still
/// finished, never "missing").
///
/// An archived copy is used only as the report wrote it: every file must have the SHA-256 that
/// `report-manifest.json` records for it, or the report is refused naming the files (unless
/// `adopt`, which takes them as they are now); a copy whose `config.toml` is missing or not the
/// cell's makes the cell failed, with that reason.
pub fn load_results(
    study: &Study,
    runs_root: &Path,
    archive: &Path,
    adopt: bool,
) -> Result<Vec<CellResult>, ReportError> {
    let manifest = Manifest::read(archive)?;
    let mut changed = Vec::new();
    let results = study
        .cells()?
        .into_iter()
        .map(|cell| load_result(study, cell, runs_root, archive, &manifest, &mut changed))
        .collect::<Result<Vec<_>, ReportError>>()?;
    if !changed.is_empty() && !adopt {
        return Err(ReportError::Invalid(format!(
            "{} file(s) of the runs archived in {} are not as the report wrote them \
             ({}):\n  {}\nnothing was written: restore them (e.g. `git checkout -- {}`), or pass --adopt to \
             report them as they are now",
            changed.len(),
            archive.join("runs").display(),
            crate::writer::MANIFEST,
            changed.join("\n  "),
            archive.join("runs").display(),
        )));
    }
    Ok(results)
}

/// The result of one `cell`: its live run folder, else its archived copy (whose files not as the
/// report wrote them go into `changed`); a damaged file makes the cell failed, with the reason.
fn load_result(
    study: &Study,
    cell: Cell,
    runs_root: &Path,
    archive: &Path,
    manifest: &Manifest,
    changed: &mut Vec<String>,
) -> Result<CellResult, ReportError> {
    let live = cell.dir(runs_root, &study.name);
    let archived = archive.join("runs").join(cell.key());
    // a run still training counts where it has come furthest: the archive's copy of it (with its
    // checkpoint) stands while this machine's run folder has fewer epochs, or none
    let (live_run, archived_run) = (RunDir::new(&live), RunDir::new(&archived));
    let epochs = |run: &RunDir| std::fs::read_to_string(run.metrics_path()).map_or(0, |t| t.lines().count());
    let from_archive = !live_run.summary_path().exists()
        && (archived_run.summary_path().exists() || epochs(&archived_run) > epochs(&live_run));
    let dir = if from_archive { archived } else { live };
    let run = RunDir::new(&dir);
    // a damaged file marks its cell failed, with the reason, and never fails the report;
    // the record names files relative to the run folder (it is archived with the report)
    let prefix = format!("{}/", dir.display());
    let record = |message: String| FailureRecord {
        config_hash: cell.key(),
        epoch: 0,
        what: FailureRecord::FILE_CHECK.into(),
        value: String::new(),
        last_good_checkpoint: None,
        message: message.replace(&prefix, ""),
    };
    let damaged = |e: String| record(format!("unreadable: {e}"));
    let mut failure = match run.read_failure() {
        Ok(f) => f,
        Err(e) => Some(damaged(e.to_string())),
    };
    let mut archive_damaged = false;
    if from_archive {
        changed.extend(unowned_files(archive, manifest, &dir)?);
        if let Some(why) = config_problem(study, &dir, &cell) {
            failure = Some(record(why));
            archive_damaged = true;
        }
    }
    let summary = run.read_summary().unwrap_or_else(|e| {
        failure.get_or_insert_with(|| damaged(e.to_string()));
        None
    });
    let history = match std::fs::read_to_string(run.metrics_path()) {
        Ok(text) => text.lines().map(serde_json::from_str).collect::<Result<_, _>>().unwrap_or_else(|e| {
            failure.get_or_insert_with(|| damaged(format!("metrics.jsonl: {e}")));
            Vec::new()
        }),
        Err(_) => Vec::new(),
    };
    // a summary is a result only if it is the cell's own and agrees with its epochs
    if let (Some(s), None) = (&summary, &failure)
        && let Err(why) = s.check_against(&cell.config, &history)
    {
        failure = Some(record(format!("not a result of this cell: {why}")));
    }
    let summary = summary.filter(|_| failure.is_none());
    let variation: Option<VariationReport> = read_json(&dir.join("variation.json")).ok().flatten();
    let variation = variation.filter(|v| v.config_hash == cell.key() && summary.is_some());
    let adc_quality: Option<AdcQualityReport> = read_json(&dir.join("adc-quality.json")).ok().flatten();
    let adc_quality = adc_quality.filter(|q| q.config_hash == cell.key() && summary.is_some());
    let state = match (&failure, &summary) {
        (Some(_), _) => CellState::Failed,
        (None, Some(_)) => CellState::Finished,
        (None, None) => cell_state(&dir, &cell.config),
    };
    Ok(CellResult { state, summary, history, variation, adc_quality, failure, cell, dir, archive_damaged })
}

/// The configuration file a report archives for `cell`: its data named by the study's input, not
/// by a path of this machine ([`Study::portable_config`]).
fn archived_config(study: &Study, cell: &Cell) -> String {
    study.portable_config(cell).to_toml()
}

/// Why the archived copy `dir` cannot stand for `cell`: its `config.toml` is missing or is not
/// the cell's configuration (as archived now, or as older reports archived it, with the path).
fn config_problem(study: &Study, dir: &Path, cell: &Cell) -> Option<String> {
    match std::fs::read_to_string(dir.join("config.toml")) {
        Ok(text) if text == archived_config(study, cell) || text == cell.config.to_toml() => None,
        Ok(_) => Some(format!(
            "the archived config.toml is not this cell's configuration (changed since the report archived it; \
             restore it, e.g. `git checkout -- {}`)",
            dir.join("config.toml").display()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(
            "the archived config.toml is missing: the results beside it cannot be checked against this cell".into(),
        ),
        Err(e) => Some(format!("the archived config.toml cannot be read: {e}")),
    }
}

/// The files of the archived copy `dir` (under `archive`) that the manifest does not record with
/// their present content, each with why; `config.toml` is left to [`config_problem`].
fn unowned_files(archive: &Path, manifest: &Manifest, dir: &Path) -> Result<Vec<String>, ReportError> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        let entries = std::fs::read_dir(&folder).map_err(|e| ReportError::io(&folder, e))?;
        let mut paths: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        paths.sort();
        for path in paths {
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            // config.toml is checked against the cell; eval's records are the user's, not the report's
            let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
            if path.parent() == Some(dir)
                && (name == "config.toml" || name.starts_with(train::eval::EVAL_RECORD_PREFIX))
            {
                continue;
            }
            let rel = key(path.strip_prefix(archive).expect("under the archive"));
            let bytes = std::fs::read(&path).map_err(|e| ReportError::io(&path, e))?;
            if !manifest.owns(&rel, &bytes) {
                let why = if manifest.records(&rel) {
                    "changed since the report wrote it"
                } else {
                    "not written by the report"
                };
                out.push(format!("{} ({why})", path.display()));
            }
        }
    }
    Ok(out)
}

/// Copies every cell's configuration and results into `<out>/runs/<hash>/`, so that the
/// committed report carries the runs behind its numbers; where the study keeps weights
/// ([`Study::archive_weights`]), the final model of every finished pretraining and seed-0 cell
/// as well (no optimizer state), and the newest whole checkpoint of every cell still training
/// (which `reproduce` resumes on a machine without its run folder).
pub fn archive(study: &Study, results: &[CellResult], out: &mut ReportWriter) -> Result<(), ReportError> {
    for r in results {
        let dir = Path::new("runs").join(r.cell.key());
        if r.archive_damaged || (r.summary.is_none() && r.history.is_empty() && r.failure.is_none()) {
            continue;
        }
        out.add(&dir.join("config.toml"), archived_config(study, &r.cell));
        out.add(&dir.join("metrics.jsonl"), train::run::metrics_lines(&r.history));
        if let Some(f) = &r.failure {
            out.add(&dir.join("failed.json"), serde_json::to_string_pretty(f).expect("json") + "\n");
        }
        match &r.summary {
            Some(s) => out.add(&dir.join("summary.json"), serde_json::to_string_pretty(s).expect("json") + "\n"),
            // a summary that failed its checks is archived as it is, so that the archive fails
            // the cell for the same reason wherever it is read (the failure record is derived
            // again from it, never read back)
            None => {
                let summary = RunDir::new(&r.dir).summary_path();
                if r.failure.is_some()
                    && let Ok(bytes) = std::fs::read(&summary)
                {
                    out.add(&dir.join("summary.json"), bytes);
                }
            }
        }
        if let Some(v) = &r.variation {
            out.add(&dir.join("variation.json"), serde_json::to_string_pretty(v).expect("json") + "\n");
        }
        if let Some(q) = &r.adc_quality {
            out.add(&dir.join("adc-quality.json"), serde_json::to_string_pretty(q).expect("json") + "\n");
            out.add(&dir.join("adc-quality.csv"), q.csv());
        }
        // a finished pretraining or seed-0 run keeps its final model; any run still training
        // its newest checkpoint whole, so that `reproduce` resumes it from there on a machine
        // without its run folder (the next report removes it: see `ReportWriter::supersedes`)
        let keeps_final = r.cell.pretraining || r.cell.config.seed == 0;
        let run = RunDir::new(&r.dir);
        let files = match (&r.summary, &r.failure) {
            _ if !study.archive_weights => Ok(None),
            (Some(_), _) if keeps_final => run.model_only_checkpoint(),
            (None, None) => run.resumable_checkpoint(),
            _ => Ok(None),
        };
        for (rel, bytes) in files.map_err(|e| ReportError::io(&r.dir, e))?.into_iter().flatten() {
            out.add(&dir.join(rel), bytes);
        }
    }
    Ok(())
}
