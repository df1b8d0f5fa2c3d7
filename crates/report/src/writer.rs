//! Tool-owned output. A report folder also holds the user's `study.toml` (and may sit beside
//! their own files), so every file of a report is first staged in memory, then checked against
//! the folder's manifest (`report-manifest.json`: each file the report wrote, with its SHA-256),
//! and only when every check passes is anything written. A file the report did not write, or
//! one changed since it wrote it, is never replaced; a file with exactly the content the report
//! would write is taken over as the report's own.
//!
//! The manifest is also what the archived runs are checked against before a report uses them
//! ([`crate::results`]). So that an interrupted report leaves it true, a commit first records
//! the hashes its files are about to get (`pending`), then writes the files, then the manifest
//! without `pending`: at every instant each file is the old or the new content the manifest
//! names.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use train::run::sha256_hex;

use crate::ReportError;

/// The manifest's file name, in the report folder.
pub const MANIFEST: &str = "report-manifest.json";

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Manifest {
    /// What wrote the files.
    tool: String,
    /// The study whose report the folder holds (absent in manifests written before it was
    /// recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    study: Option<String>,
    /// SHA-256 of every file the report wrote, by path relative to the report folder.
    files: BTreeMap<String, String>,
    /// SHA-256 of the files a report was writing when it stopped (present only while a commit
    /// runs, or after one was interrupted): either content is the report's own.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pending: BTreeMap<String, String>,
}

impl Manifest {
    /// The manifest of the report folder `root`; an empty one where there is none.
    pub(crate) fn read(root: &Path) -> Result<Self, ReportError> {
        let path = root.join(MANIFEST);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                serde_json::from_str(&text).map_err(|e| ReportError::io(&path, format!("not a report manifest: {e}")))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Manifest::default()),
            Err(e) => Err(ReportError::io(&path, e)),
        }
    }

    /// Whether `bytes` at `rel` (a key relative to the report folder) are what a report wrote
    /// there: the content it recorded, or the content it was writing when it stopped.
    pub(crate) fn owns(&self, rel: &str, bytes: &[u8]) -> bool {
        let sha = sha256_hex(bytes);
        self.files.get(rel) == Some(&sha) || self.pending.get(rel) == Some(&sha)
    }

    /// Whether the manifest records a file at `rel`.
    pub(crate) fn records(&self, rel: &str) -> bool {
        self.files.contains_key(rel) || self.pending.contains_key(rel)
    }

    fn write(&self, root: &Path) -> Result<(), ReportError> {
        let text = serde_json::to_string_pretty(self).expect("json") + "\n";
        crate::write_atomic(&root.join(MANIFEST), text.as_bytes())
    }
}

/// The files of one report, staged until [`ReportWriter::commit`].
#[derive(Debug)]
pub struct ReportWriter {
    root: PathBuf,
    files: BTreeMap<String, Vec<u8>>,
    adopt: bool,
    study: Option<String>,
}

impl ReportWriter {
    /// A report into `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into(), files: BTreeMap::new(), adopt: false, study: None }
    }

    /// The report of the study named `name`: a folder that holds another study's report is
    /// refused (two study files in one folder would overwrite each other's report).
    pub fn for_study(mut self, name: &str) -> Self {
        self.study = Some(name.to_string());
        self
    }

    /// With `true`, existing files the report does not own are taken over (replaced) instead of
    /// refused: for report folders written before the manifest existed.
    pub fn adopting(mut self, adopt: bool) -> Self {
        self.adopt = adopt;
        self
    }

    /// Stages a file (`rel` is relative to the report folder).
    pub fn add(&mut self, rel: &Path, bytes: impl Into<Vec<u8>>) {
        self.files.insert(key(rel), bytes.into());
    }

    /// Why each staged file may not be written, if any: it exists, differs from what would be
    /// written, and is either not in the manifest or changed since the report wrote it.
    fn refusals(&self, manifest: &Manifest) -> Result<Vec<String>, ReportError> {
        let mut refused = Vec::new();
        for (rel, bytes) in &self.files {
            let path = self.root.join(rel);
            let existing = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(ReportError::io(&path, e)),
            };
            if existing == *bytes || manifest.owns(rel, &existing) {
                continue;
            }
            if manifest.records(rel) {
                refused.push(format!("{} (changed since the report wrote it)", path.display()));
            } else {
                refused.push(format!("{} (not written by the report)", path.display()));
            }
        }
        Ok(refused)
    }

    /// Whether `rel`, a file this report does not write, is part of an archived checkpoint
    /// (`runs/<hash>/checkpoint.json`, `runs/<hash>/ckpt-NNNN/...`) of a run that this report
    /// archives anew with a newer checkpoint or as finished: a checkpoint the run has replaced
    /// (a finished run keeps only what this report writes of it).
    fn supersedes(&self, rel: &str) -> bool {
        let parts: Vec<&str> = rel.split('/').collect();
        let run = match parts[..] {
            ["runs", run, "checkpoint.json"] => run,
            ["runs", run, ckpt, _] if ckpt.starts_with("ckpt-") => run,
            _ => return false,
        };
        ["checkpoint.json", "summary.json"].iter().any(|f| self.files.contains_key(&format!("runs/{run}/{f}")))
    }

    /// Checks every staged file, then writes them all (each atomically) and the manifest, the
    /// manifest first naming what is about to change (see the module's notes). Returns the paths
    /// written.
    pub fn commit(self) -> Result<Vec<PathBuf>, ReportError> {
        self.commit_with(crate::write_atomic)
    }

    /// [`Self::commit`], each file written by `write_file` (tests stop a commit half-way).
    fn commit_with(
        self,
        mut write_file: impl FnMut(&Path, &[u8]) -> Result<(), ReportError>,
    ) -> Result<Vec<PathBuf>, ReportError> {
        let mut manifest = Manifest::read(&self.root)?;
        if let (Some(theirs), Some(ours)) = (&manifest.study, &self.study)
            && theirs != ours
        {
            return Err(ReportError::Invalid(format!(
                "{} holds the report of study `{theirs}`; nothing was written: put the file of study `{ours}` in \
                 a folder of its own (a report is written beside its study file)",
                self.root.display()
            )));
        }
        let refused = self.refusals(&manifest)?;
        if !refused.is_empty() && !self.adopt {
            return Err(ReportError::Invalid(format!(
                "the report would replace {} file(s) in {} that it does not own:\n  {}\nnothing was written; \
                 move them away, put your study file in a folder of its own, or pass --adopt to take \
                 them over (a report folder written before report-manifest.json existed)",
                refused.len(),
                self.root.display(),
                refused.join("\n  ")
            )));
        }
        // what is about to change, recorded before any of it does
        let changing: BTreeMap<String, String> = self
            .files
            .iter()
            .filter(|(rel, bytes)| std::fs::read(self.root.join(rel)).map_or(true, |b| b != **bytes))
            .map(|(rel, bytes)| (rel.clone(), sha256_hex(bytes)))
            .collect();
        if !changing.is_empty() {
            manifest.pending.extend(changing);
            std::fs::create_dir_all(&self.root).map_err(|e| ReportError::io(&self.root, e))?;
            manifest.write(&self.root)?;
        }
        let mut written = Vec::new();
        for (rel, bytes) in &self.files {
            let path = self.root.join(rel);
            write_file(&path, bytes)?;
            manifest.files.insert(rel.clone(), sha256_hex(bytes));
            written.push(path);
        }
        // a failure record an earlier report archived for a run this one finds good (the user
        // repaired a file), and a checkpoint of a run whose newer one this report archived, are
        // removed, if nobody edited them since; archived results are never removed (a report
        // without one of the inputs must not lose the committed runs)
        let root = self.root.clone();
        for (rel, sha) in &manifest.files {
            let path = root.join(rel);
            let stale = !self.files.contains_key(rel) && (rel.ends_with("/failed.json") || self.supersedes(rel));
            if stale && std::fs::read(&path).is_ok_and(|b| sha256_hex(&b) == *sha) {
                std::fs::remove_file(&path).map_err(|e| ReportError::io(&path, e))?;
                // the checkpoint's folder goes with its last file
                if let Some(folder) = path.parent().filter(|_| rel.contains("/ckpt-")) {
                    let _ = std::fs::remove_dir(folder);
                }
            }
        }
        // files of earlier reports that are gone, or that someone else now owns, are forgotten;
        // a file an interrupted report was writing counts with the content it has
        let pending = std::mem::take(&mut manifest.pending);
        for (rel, sha) in pending {
            if std::fs::read(root.join(&rel)).is_ok_and(|b| sha256_hex(&b) == sha) {
                manifest.files.insert(rel, sha);
            }
        }
        manifest.files.retain(|rel, sha| std::fs::read(root.join(rel)).is_ok_and(|b| sha256_hex(&b) == *sha));
        manifest.tool = "cargo xtask report".into();
        manifest.study = self.study.clone().or(manifest.study);
        manifest.write(&root)?;
        Ok(written)
    }
}

/// A relative path as a manifest key: `/`-separated on every platform.
pub(crate) fn key(rel: &Path) -> String {
    rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_files_the_report_wrote_are_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::write(root.join("README.md"), "the user's own notes\n").unwrap();
        let mut w = ReportWriter::new(root);
        w.add(Path::new("README.md"), "report\n");
        w.add(Path::new("accuracy.csv"), "a,b\n");
        let e = w.commit().unwrap_err().to_string();
        assert!(e.contains("README.md (not written by the report)") && e.contains("nothing was written"), "{e}");
        assert!(!root.join("accuracy.csv").exists(), "no file is written when one is refused");
        assert_eq!(std::fs::read_to_string(root.join("README.md")).unwrap(), "the user's own notes\n");

        std::fs::remove_file(root.join("README.md")).unwrap();
        let mut w = ReportWriter::new(root);
        w.add(Path::new("README.md"), "report\n");
        w.add(Path::new("runs/abc/summary.json"), "{}\n");
        w.commit().unwrap();
        // the report's own files are replaced by the next report
        let mut w = ReportWriter::new(root);
        w.add(Path::new("README.md"), "report 2\n");
        w.commit().unwrap();
        assert_eq!(std::fs::read_to_string(root.join("README.md")).unwrap(), "report 2\n");
        // unless someone edited them since
        std::fs::write(root.join("README.md"), "edited by hand\n").unwrap();
        let mut w = ReportWriter::new(root);
        w.add(Path::new("README.md"), "report 3\n");
        let e = w.commit().unwrap_err().to_string();
        assert!(e.contains("changed since the report wrote it"), "{e}");
        let manifest: Manifest = serde_json::from_str(&std::fs::read_to_string(root.join(MANIFEST)).unwrap()).unwrap();
        assert!(manifest.files.contains_key("runs/abc/summary.json"));
    }

    /// An archived checkpoint goes when a later report archives a newer one of the same run, or
    /// the run as finished, and only then: a run this report does not archive anew keeps its
    /// checkpoint, and a file edited by hand stays.
    #[test]
    fn a_superseded_checkpoint_is_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let mut w = ReportWriter::new(root);
        for run in ["a", "b"] {
            w.add(Path::new(&format!("runs/{run}/checkpoint.json")), "ckpt-0001\n");
            w.add(Path::new(&format!("runs/{run}/ckpt-0001/state.json")), "{}\n");
            w.add(Path::new(&format!("runs/{run}/ckpt-0001/optim.bpk")), "optimizer\n");
        }
        w.add(Path::new("runs/c/ckpt-0001/state.json"), "{}\n");
        w.add(Path::new("runs/d/checkpoint.json"), "ckpt-0001\n");
        w.add(Path::new("runs/d/ckpt-0001/optim.bpk"), "optimizer\n");
        w.commit().unwrap();
        std::fs::write(root.join("runs/b/ckpt-0001/optim.bpk"), "edited by hand\n").unwrap();
        let mut w = ReportWriter::new(root).adopting(true);
        for run in ["a", "b"] {
            w.add(Path::new(&format!("runs/{run}/checkpoint.json")), "ckpt-0002\n");
            w.add(Path::new(&format!("runs/{run}/ckpt-0002/state.json")), "{}\n");
        }
        // d finished, archived without weights
        w.add(Path::new("runs/d/summary.json"), "{}\n");
        w.commit().unwrap();
        assert!(!root.join("runs/a/ckpt-0001").exists(), "a's old checkpoint is gone, folder and all");
        assert!(!root.join("runs/d/checkpoint.json").exists() && !root.join("runs/d/ckpt-0001").exists());
        assert!(root.join("runs/a/ckpt-0002/state.json").exists());
        assert!(root.join("runs/b/ckpt-0001/optim.bpk").exists(), "a file edited by hand stays");
        assert!(!root.join("runs/b/ckpt-0001/state.json").exists());
        assert!(root.join("runs/c/ckpt-0001/state.json").exists(), "a run not archived anew keeps its checkpoint");
    }

    /// A report stopped between its files (here by a file it cannot write) leaves the folder in
    /// step with its manifest: the next report, with other contents, replaces every file,
    /// whichever content each one has.
    #[test]
    fn an_interrupted_report_leaves_the_folder_consistent() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let report = |text: &str| {
            let mut w = ReportWriter::new(root);
            for name in ["a.md", "b.md", "c/d.md"] {
                w.add(Path::new(name), format!("{name}: {text}\n"));
            }
            w
        };
        report("first").commit().unwrap();
        // stopped after a.md and b.md: c/d.md keeps its first content
        let stop_at_c = |path: &Path, bytes: &[u8]| match path.ends_with("c/d.md") {
            true => Err(ReportError::Invalid("stopped".into())),
            false => crate::write_atomic(path, bytes),
        };
        assert!(report("second").commit_with(stop_at_c).is_err());
        assert_eq!(std::fs::read_to_string(root.join("a.md")).unwrap(), "a.md: second\n");
        assert_eq!(std::fs::read_to_string(root.join("c/d.md")).unwrap(), "c/d.md: first\n");
        let manifest = Manifest::read(root).unwrap();
        assert!(!manifest.pending.is_empty(), "the manifest named what was changing");
        // every file is the report's own, old or new
        report("third").commit().unwrap();
        assert_eq!(std::fs::read_to_string(root.join("c/d.md")).unwrap(), "c/d.md: third\n");
        let manifest = Manifest::read(root).unwrap();
        assert!(manifest.pending.is_empty() && manifest.files.len() == 3);
    }
}
