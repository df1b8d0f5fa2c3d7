//! Tool-owned output. A report folder also holds the user's `study.toml` (and may sit beside
//! their own files), so every file of a report is first staged in memory, then checked against
//! the folder's manifest (`report-manifest.json`: each file the report wrote, with its SHA-256),
//! and only when every check passes is anything written. A file the report did not write, or
//! one changed since it wrote it, is never replaced; a file with exactly the content the report
//! would write is taken over as the report's own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use train::run::sha256_hex;

use crate::ReportError;

/// The manifest's file name, in the report folder.
pub const MANIFEST: &str = "report-manifest.json";

#[derive(Debug, Default, Serialize, Deserialize)]
struct Manifest {
    /// What wrote the files.
    tool: String,
    /// The study whose report the folder holds (absent in manifests written before it was
    /// recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    study: Option<String>,
    /// SHA-256 of every file the report wrote, by path relative to the report folder.
    files: BTreeMap<String, String>,
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
            if existing == *bytes {
                continue;
            }
            match manifest.files.get(rel) {
                Some(sha) if *sha == sha256_hex(&existing) => {}
                Some(_) => refused.push(format!("{} (changed since the report wrote it)", path.display())),
                None => refused.push(format!("{} (not written by the report)", path.display())),
            }
        }
        Ok(refused)
    }

    /// Checks every staged file, then writes them all (each atomically) and the manifest.
    /// Returns the paths written.
    pub fn commit(self) -> Result<Vec<PathBuf>, ReportError> {
        let manifest_path = self.root.join(MANIFEST);
        let mut manifest: Manifest = match std::fs::read_to_string(&manifest_path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| ReportError::io(&manifest_path, format!("not a report manifest: {e}")))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Manifest::default(),
            Err(e) => return Err(ReportError::io(&manifest_path, e)),
        };
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
        let mut written = Vec::new();
        for (rel, bytes) in &self.files {
            let path = self.root.join(rel);
            crate::write_atomic(&path, bytes)?;
            manifest.files.insert(rel.clone(), sha256_hex(bytes));
            written.push(path);
        }
        // a failure record an earlier report archived for a run this one finds good (the user
        // repaired a file) is removed, if nobody edited it since; archived results are never
        // removed (a report without one of the inputs must not lose the committed runs)
        let root = self.root.clone();
        for (rel, sha) in &manifest.files {
            let path = root.join(rel);
            let stale_failure = rel.ends_with("/failed.json") && !self.files.contains_key(rel);
            if stale_failure && std::fs::read(&path).is_ok_and(|b| sha256_hex(&b) == *sha) {
                std::fs::remove_file(&path).map_err(|e| ReportError::io(&path, e))?;
            }
        }
        // files of earlier reports that are gone, or that someone else now owns, are forgotten
        manifest.files.retain(|rel, sha| std::fs::read(root.join(rel)).is_ok_and(|b| sha256_hex(&b) == *sha));
        manifest.tool = "cargo xtask report".into();
        manifest.study = self.study.clone().or(manifest.study);
        let text = serde_json::to_string_pretty(&manifest).expect("json") + "\n";
        crate::write_atomic(&manifest_path, text.as_bytes())?;
        Ok(written)
    }
}

/// A relative path as a manifest key: `/`-separated on every platform.
fn key(rel: &Path) -> String {
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
}
