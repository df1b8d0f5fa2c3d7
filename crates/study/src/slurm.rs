//! A study on a Slurm cluster: job arrays over the study's fixed cell order, each array task
//! running `reproduce --cell $SLURM_ARRAY_TASK_ID` on a runs folder that every node shares.
//!
//! Only unfinished cells are submitted, so submitting again after failures or cancellations
//! submits what is left. Cells that others start from (pretrainings) form a first array; the
//! rest a second one that waits for the first (`--dependency=afterok`). The run claims
//! ([`train::claim`]) keep two tasks from ever training one cell, whatever Slurm does.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::reproduce::finished_dir;
use crate::{Study, StudyError};

/// What the batch scripts ask of Slurm.
#[derive(Debug, Clone, Default)]
pub struct SlurmOptions {
    /// `--partition`.
    pub partition: Option<String>,
    /// `--time` (HH:MM:SS or anything sbatch takes).
    pub time: Option<String>,
    /// `--gpus-per-task`.
    pub gpus_per_task: Option<u32>,
    /// `--cpus-per-task`.
    pub cpus_per_task: Option<u32>,
    /// At most this many tasks of an array at once (`--array=...%N`).
    pub max_parallel: Option<usize>,
}

/// One job array: a batch script over some of the study's cell indices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArrayJob {
    /// `starts` (cells others start from) or `cells`.
    pub name: String,
    /// Indices of the cells in the study's fixed order.
    pub cells: Vec<usize>,
    /// The array (by name) that must finish first.
    pub after: Option<String>,
}

/// What `--slurm DIR` writes and submits; kept as `DIR/slurm-plan.json`, which also marks the
/// folder as this tool's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlurmPlan {
    /// The study's name.
    pub study: String,
    /// The arrays, in submission order.
    pub arrays: Vec<ArrayJob>,
}

/// The file that marks a folder as written by [`write_scripts`].
pub const PLAN_FILE: &str = "slurm-plan.json";

/// The unfinished cells of `study` as arrays: those that other cells start from first, the
/// rest after them.
pub fn plan(study: &Study, runs_root: &Path, archive: Option<&Path>) -> Result<SlurmPlan, StudyError> {
    let cells = study.cells()?;
    let starts: std::collections::BTreeSet<String> =
        cells.iter().filter_map(|c| c.starts_from().map(str::to_owned)).collect();
    let unfinished = |c: &crate::Cell| finished_dir(c, runs_root, &study.name, archive).is_none();
    let first: Vec<usize> =
        (0..cells.len()).filter(|&i| unfinished(&cells[i]) && starts.contains(&cells[i].key())).collect();
    let rest: Vec<usize> =
        (0..cells.len()).filter(|&i| unfinished(&cells[i]) && !starts.contains(&cells[i].key())).collect();
    let mut arrays = Vec::new();
    if !first.is_empty() {
        arrays.push(ArrayJob { name: "starts".into(), cells: first.clone(), after: None });
    }
    if !rest.is_empty() {
        // only cells whose start is itself still to train need to wait
        let waits = rest.iter().any(|&i| cells[i].starts_from().is_some()) && !first.is_empty();
        arrays.push(ArrayJob { name: "cells".into(), cells: rest, after: waits.then(|| "starts".into()) });
    }
    Ok(SlurmPlan { study: study.name.clone(), arrays })
}

/// Cell indices as sbatch's `--array` wants them: `0-3,7,9-12`.
pub fn array_ranges(indices: &[usize]) -> String {
    let mut text = String::new();
    let mut i = 0;
    while i < indices.len() {
        let mut j = i;
        while j + 1 < indices.len() && indices[j + 1] == indices[j] + 1 {
            j += 1;
        }
        if !text.is_empty() {
            text.push(',');
        }
        if j > i {
            let _ = write!(text, "{}-{}", indices[i], indices[j]);
        } else {
            let _ = write!(text, "{}", indices[i]);
        }
        i = j + 1;
    }
    text
}

/// Refuses a folder that holds files this tool did not write there (an empty or new folder, or
/// one with a [`PLAN_FILE`], is fine).
pub fn check_folder(dir: &Path) -> Result<(), StudyError> {
    if !dir.exists() {
        return Ok(());
    }
    if !dir.is_dir() {
        return Err(StudyError::Invalid(format!("--slurm {}: is a file, expected a folder", dir.display())));
    }
    let mut entries =
        std::fs::read_dir(dir).map_err(|e| StudyError::Invalid(format!("--slurm {}: {e}", dir.display())))?;
    if entries.next().is_some() && !dir.join(PLAN_FILE).is_file() {
        return Err(StudyError::Invalid(format!(
            "--slurm {}: the folder holds files this tool did not write (no {PLAN_FILE}); give an empty or new folder",
            dir.display()
        )));
    }
    Ok(())
}

/// Writes one batch script per array into `dir` (and `dir/logs/`, one log per task), and the
/// plan; returns the scripts in submission order. `command` is the `reproduce` command line
/// that every task runs, without `--cell`.
pub fn write_scripts(
    dir: &Path,
    plan: &SlurmPlan,
    opts: &SlurmOptions,
    workdir: &Path,
    command: &[String],
) -> Result<Vec<PathBuf>, StudyError> {
    check_folder(dir)?;
    // every value is checked before a file is written: a directive line ends at its newline, and
    // sbatch splits an unquoted value at whitespace
    for (flag, value) in [("--partition", &opts.partition), ("--time", &opts.time)] {
        if let Some(v) = value.as_deref().filter(|v| v.is_empty() || v.chars().any(|c| c.is_whitespace() || c == '"')) {
            return Err(StudyError::Invalid(format!(
                "{flag} {v:?}: expected one word (no spaces, newlines or quotes): it becomes an #SBATCH directive"
            )));
        }
    }
    let logs = dir.join("logs");
    let (logs_value, workdir_value) = (directive_path(&logs.join("%A_%a.out"))?, directive_path(workdir)?);
    let io = |p: &Path, e: std::io::Error| StudyError::io(p, "", e);
    std::fs::create_dir_all(&logs).map_err(|e| io(&logs, e))?;
    let mut scripts = Vec::new();
    for array in &plan.arrays {
        let mut s = String::from("#!/bin/bash\n");
        let _ = writeln!(s, "#SBATCH --job-name=cim-{}-{}", plan.study, array.name);
        let throttle = opts.max_parallel.map(|n| format!("%{n}")).unwrap_or_default();
        let _ = writeln!(s, "#SBATCH --array={}{throttle}", array_ranges(&array.cells));
        let _ = writeln!(s, "#SBATCH --output={logs_value}");
        let _ = writeln!(s, "#SBATCH --chdir={workdir_value}");
        if let Some(p) = &opts.partition {
            let _ = writeln!(s, "#SBATCH --partition={p}");
        }
        if let Some(t) = &opts.time {
            let _ = writeln!(s, "#SBATCH --time={t}");
        }
        if let Some(n) = opts.cpus_per_task {
            let _ = writeln!(s, "#SBATCH --cpus-per-task={n}");
        }
        if let Some(n) = opts.gpus_per_task {
            let _ = writeln!(s, "#SBATCH --gpus-per-task={n}");
        }
        s += "# Written by `cargo xtask reproduce --slurm`: each task trains one cell of the study's fixed\n";
        s += "# order. Running that command again rewrites this file with what is still unfinished.\n";
        s += "set -euo pipefail\n";
        let quoted: Vec<String> = command.iter().map(|a| shell_quote(a)).collect();
        let _ = writeln!(s, "exec {} --cell \"$SLURM_ARRAY_TASK_ID\"", quoted.join(" "));
        let path = dir.join(format!("{}.sbatch", array.name));
        data::store::write_atomic(&path, s.as_bytes()).map_err(|e| StudyError::Invalid(e.to_string()))?;
        scripts.push(path);
    }
    let text = serde_json::to_string_pretty(plan).expect("serializable") + "\n";
    data::store::write_atomic(&dir.join(PLAN_FILE), text.as_bytes()).map_err(|e| StudyError::Invalid(e.to_string()))?;
    Ok(scripts)
}

/// Submits the plan's scripts with `sbatch --parsable`, each array after the one it waits for
/// (`--dependency=afterok`), once `sbatch --test-only` accepted them all; returns (array name,
/// job id). sbatch's own message is the error of a refused script.
pub fn submit(plan: &SlurmPlan, scripts: &[PathBuf]) -> Result<Vec<(String, String)>, StudyError> {
    // every script is checked by sbatch itself first (partition, time, resources), so that a
    // refused one leaves nothing submitted
    for script in scripts {
        let out = Command::new("sbatch")
            .arg("--test-only")
            .arg(script)
            .output()
            .map_err(|e| StudyError::Invalid(format!("sbatch: {e}")))?;
        if !out.status.success() {
            return Err(StudyError::Invalid(format!(
                "sbatch {}: {} (nothing submitted)",
                script.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
    }
    let mut ids: Vec<(String, String)> = Vec::new();
    for (array, script) in plan.arrays.iter().zip(scripts) {
        let mut cmd = Command::new("sbatch");
        cmd.arg("--parsable");
        if let Some(after) = &array.after
            && let Some((_, id)) = ids.iter().find(|(name, _)| name == after)
        {
            cmd.arg(format!("--dependency=afterok:{id}"));
        }
        let out = cmd.arg(script).output().map_err(|e| StudyError::Invalid(format!("sbatch: {e}")))?;
        if !out.status.success() {
            let submitted: Vec<String> = ids.iter().map(|(n, id)| format!("{n} = job {id}")).collect();
            return Err(StudyError::Invalid(format!(
                "sbatch {}: {}{}",
                script.display(),
                String::from_utf8_lossy(&out.stderr).trim(),
                if submitted.is_empty() {
                    String::new()
                } else {
                    format!(" (already submitted: {})", submitted.join(", "))
                }
            )));
        }
        // --parsable prints "jobid" or "jobid;cluster"
        let text = String::from_utf8_lossy(&out.stdout);
        let id = text.trim().split(';').next().unwrap_or("").to_string();
        ids.push((array.name.clone(), id));
    }
    Ok(ids)
}

/// Whether `sbatch` can be run (on PATH).
pub fn sbatch_available() -> bool {
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join("sbatch").is_file()))
}

/// A path as the value of an `#SBATCH` directive: in double quotes (which sbatch removes), so
/// that a path with spaces stays one value; a path with a newline or a double quote cannot be one.
fn directive_path(path: &Path) -> Result<String, StudyError> {
    let text = path.display().to_string();
    if text.contains(['\n', '\r', '"']) {
        return Err(StudyError::Invalid(format!(
            "{text:?}: a path with a newline or a double quote cannot be written into an #SBATCH directive; use \
             another folder"
        )));
    }
    Ok(format!("\"{text}\""))
}

/// `arg` quoted for a POSIX shell where it needs it (a path with spaces, ...).
pub fn shell_quote(arg: &str) -> String {
    if !arg.is_empty() && arg.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:@%+,".contains(c)) {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_ranges_compress_runs_of_indices() {
        assert_eq!(array_ranges(&[0, 1, 2, 3, 7, 9, 10, 11, 12]), "0-3,7,9-12");
        assert_eq!(array_ranges(&[5]), "5");
        assert_eq!(array_ranges(&[]), "");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("/x/y"), "/x/y");
    }

    /// Paths with spaces are quoted in the directives, option values that would break a
    /// directive are refused before any file is written.
    #[test]
    fn paths_with_spaces_and_bad_option_values() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("jobs with spaces");
        let workdir = tmp.path().join("my checkout");
        let plan = SlurmPlan {
            study: "s".into(),
            arrays: vec![ArrayJob { name: "cells".into(), cells: vec![0, 1], after: None }],
        };
        let options = SlurmOptions {
            partition: None,
            time: Some("01:00:00".into()),
            gpus_per_task: None,
            cpus_per_task: None,
            max_parallel: None,
        };
        let command = vec!["/path with space/xtask".to_string(), "reproduce".to_string()];
        let scripts = write_scripts(&dir, &plan, &options, &workdir, &command).unwrap();
        let text = std::fs::read_to_string(&scripts[0]).unwrap();
        assert!(text.contains(&format!("#SBATCH --output=\"{}/logs/%A_%a.out\"", dir.display())), "{text}");
        assert!(text.contains(&format!("#SBATCH --chdir=\"{}\"", workdir.display())), "{text}");
        assert!(text.contains("exec '/path with space/xtask' reproduce"), "{text}");
        let other = tmp.path().join("other");
        for time in ["01:00:00 --wrap=x", "01:00:00\n#SBATCH --x", ""] {
            let bad = SlurmOptions { time: Some(time.into()), ..options.clone() };
            let e = write_scripts(&other, &plan, &bad, &workdir, &command).unwrap_err().to_string();
            assert!(e.contains("--time") && e.contains("expected one word"), "{e}");
        }
        assert!(!other.exists(), "nothing written");
        let quote = tmp.path().join("a\"b");
        let e = write_scripts(&other, &plan, &options, &quote, &command).unwrap_err().to_string();
        assert!(e.contains("cannot be written into an #SBATCH directive"), "{e}");
    }
}
