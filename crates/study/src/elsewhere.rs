//! Runs found outside the cell's own folder. A cell's folder is named by its configuration's
//! hash, so a run that two profiles share (the `budget` and `real` profiles' pretrainings, say)
//! is the same run in both: `reproduce` copies the finished one into the profile that asks for it
//! instead of training it again. And a run that was still training when its profile's report was
//! committed left its newest whole checkpoint in the report's archive: on a machine without
//! the run folder, `reproduce` copies it and resumes from there instead of starting over. The
//! dry run says where each will come from.

use std::path::{Path, PathBuf};

use data::store::TEMPORARY_MARK;
use train::claim::is_claim_file;

use crate::reproduce::{CellState, cell_state};
use crate::{Cell, StudyError};
use train::run::RunDir;

/// The finished run of `cell` in the folder of a profile other than `profile` under
/// `runs_root` (profiles in name order; the first found), whose configuration is the cell's own.
pub fn finished_elsewhere(cell: &Cell, runs_root: &Path, profile: &str) -> Option<PathBuf> {
    let mut profiles: Vec<PathBuf> = std::fs::read_dir(runs_root)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name() != profile && e.path().is_dir())
        .map(|e| e.path())
        .collect();
    profiles.sort();
    let key = cell.key();
    profiles.into_iter().map(|p| p.join(&key)).find(|dir| cell_state(dir, &cell.config) == CellState::Finished)
}

/// The unfinished run of `cell` that a committed report archived (`<archive>/<hash>`) with a
/// checkpoint of the cell's configuration, and the epochs that checkpoint has done.
pub fn unfinished_committed(cell: &Cell, archive: &Path) -> Option<(PathBuf, usize)> {
    let dir = archive.join(cell.key());
    let CellState::Partial(done) = cell_state(&dir, &cell.config) else { return None };
    let ckpt = RunDir::new(&dir).latest_checkpoint().ok()??;
    (ckpt.state.config_hash == cell.key()).then_some((dir, done))
}

/// Copies the finished run folder `from` into `to` (which may hold this worker's claim and
/// nothing of the run yet): every file but the claims and files half written, each under a
/// temporary name and then renamed, the summary last, so that `to` reads as finished only once
/// the whole run is there.
pub fn copy_finished_run(from: &Path, to: &Path) -> Result<(), StudyError> {
    copy_run(from, to, &RunDir::new(from).summary_path())
}

/// Copies the unfinished run folder `from` (an archived one, [`unfinished_committed`]) into
/// `to` as [`copy_finished_run`] does, the checkpoint pointer last, so that `to` has a
/// checkpoint to resume only once the whole checkpoint is there.
pub fn copy_unfinished_run(from: &Path, to: &Path) -> Result<(), StudyError> {
    copy_run(from, to, &RunDir::new(from).pointer_path())
}

/// Copies `from` into `to`, the file `last` after every other.
fn copy_run(from: &Path, to: &Path, last: &Path) -> Result<(), StudyError> {
    copy_tree(from, to, last)?;
    copy_file(last, &to.join(last.file_name().expect("a file name")))
}

fn copy_tree(from: &Path, to: &Path, skip: &Path) -> Result<(), StudyError> {
    std::fs::create_dir_all(to).map_err(|e| StudyError::io(to, "cannot create: ", e))?;
    let mut entries: Vec<_> =
        std::fs::read_dir(from).map_err(|e| StudyError::io(from, "cannot list: ", e))?.filter_map(|e| e.ok()).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let (path, name) = (entry.path(), entry.file_name().to_string_lossy().to_string());
        if path == skip || is_claim_file(&name) || name.contains(TEMPORARY_MARK) {
            continue;
        }
        if path.is_dir() {
            copy_tree(&path, &to.join(&name), skip)?;
        } else {
            copy_file(&path, &to.join(&name))?;
        }
    }
    Ok(())
}

/// A run's files are small (the largest, a ResNet's weights, a few MiB): read whole, written
/// by the run store's atomic write.
fn copy_file(from: &Path, to: &Path) -> Result<(), StudyError> {
    let bytes = std::fs::read(from).map_err(|e| StudyError::io(from, "cannot copy: ", e))?;
    Ok(train::run::write_atomic(to, &bytes)?)
}
