//! The study profile a command names (`--profile`, `--runs`, the input trees): where the workspace
//! is, how a profile's study is found and given its inputs, and the energy model by default.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use study::Study;

use crate::flags::ProfileArgs;

/// The workspace root, found when the command runs (never where the binary was built: with a
/// shared target folder one binary serves several checkouts): the parent of the
/// `CARGO_MANIFEST_DIR` that `cargo run` / `cargo xtask` sets for the process, else the nearest
/// folder above the current one whose `Cargo.toml` has a `[workspace]` and a `reports/` folder.
pub fn project_root() -> PathBuf {
    static ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ROOT.get_or_init(|| {
        let is_root = |dir: &Path| {
            dir.join("reports").is_dir()
                && std::fs::read_to_string(dir.join("Cargo.toml")).is_ok_and(|t| t.contains("[workspace]"))
        };
        let from_cargo =
            std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from).and_then(|d| d.parent().map(Path::to_path_buf));
        let from_cwd = || {
            let cwd = std::env::current_dir().ok()?;
            cwd.ancestors().find(|d| is_root(d)).map(Path::to_path_buf)
        };
        match from_cargo.filter(|d| is_root(d)).or_else(from_cwd) {
            Some(root) => root,
            None => {
                eprintln!(
                    "error: no cim-quant workspace here: run `cargo xtask ...` inside a checkout (a folder whose \
                     Cargo.toml has [workspace], with reports/ beside it)"
                );
                std::process::exit(2);
            }
        }
    })
    .clone()
}

impl ProfileArgs {
    /// The study of the profile, its runs folder and its report folder, as [`Self::load`], with
    /// every input not given taken from the runs the report archived (said on stderr), and the
    /// benchmarks that cannot run without an input named.
    pub fn load_for_work(&self) -> Result<(Study, PathBuf, PathBuf)> {
        let (mut study, runs_root, report_dir) = self.load()?;
        // a committed result needs no input to be known as finished
        for (input, value) in study.provide_from_archive(&report_dir.join("runs")) {
            eprintln!("{}", archive_input_note(&input, &value, &report_dir));
        }
        for (bench, input) in study.skipped() {
            eprintln!("skipping benchmark `{bench}`: it needs --{input} DIR");
        }
        Ok((study, runs_root, report_dir))
    }

    /// The study inputs given on the command line: (input name, as its flag and its study
    /// placeholder `{name}` say it; the folder).
    pub fn inputs(&self) -> Vec<(&'static str, &PathBuf)> {
        [("cifar10-jpeg", &self.cifar10_jpeg), ("imagenette", &self.imagenette)]
            .into_iter()
            .filter_map(|(name, dir)| dir.as_ref().map(|d| (name, d)))
            .collect()
    }

    pub fn load(&self) -> Result<(Study, PathBuf, PathBuf)> {
        let reports = project_root().join("reports");
        let runs = self.runs.clone().unwrap_or_else(|| project_root().join("runs"));
        let given = Path::new(&self.profile);
        if given.extension().is_some_and(|e| e == "toml") {
            // a study file of the user's own, outside reports/
            if !given.is_file() {
                bail!("--profile {}: no such study file", given.display());
            }
            let study = self.with_inputs(Study::load(given)?)?;
            let out = given.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
            return Ok((study, runs, out));
        }
        let path = study::study_path(&reports, &self.profile);
        if !path.exists() {
            let known: Vec<String> = std::fs::read_dir(&reports)
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .filter(|e| e.path().join("study.toml").exists())
                        .map(|e| e.file_name().to_string_lossy().to_string())
                        .collect()
                })
                .unwrap_or_default();
            bail!("--profile {}: no {} (profiles: {})", self.profile, path.display(), known.join(", "));
        }
        let study = self.with_inputs(Study::load(&path)?)?;
        Ok((study, runs, reports.join(&self.profile)))
    }

    /// Gives the study the input folders named on the command line, after checking what the
    /// study reads could not check alone: every benchmark's `claim` is in the claims file.
    fn with_inputs(&self, mut study: Study) -> Result<Study> {
        let claims_path = project_root().join("baselines/paper-claims.toml");
        let claims = report::Claims::load(&claims_path)?;
        for b in &study.benchmark {
            if let Some(key) = b.claim.as_ref().filter(|k| !claims.claims.contains_key(*k)) {
                let known: Vec<&str> = claims.claims.keys().map(String::as_str).collect();
                bail!(
                    "benchmark `{}`: claim = {key:?} is not in {} (claims: {})",
                    b.name,
                    claims_path.display(),
                    known.join(", ")
                );
            }
        }
        for (input, dir) in self.inputs() {
            if !dir.is_dir() {
                bail!(
                    "--{input} {}: not a folder (expected a tree root/<class>/*.jpg, or root/train/<class>/... \
                     and root/val/<class>/...)",
                    dir.display()
                );
            }
            let dir = dir.canonicalize().with_context(|| format!("--{input} {}", dir.display()))?;
            // the runs are keyed by the tree's content, so that a copy elsewhere finds them
            let id =
                data::source::folder_identity(&dir, input).with_context(|| format!("--{input} {}", dir.display()))?;
            study.provide(input, &dir.display().to_string(), Some(&id));
        }
        Ok(study)
    }
}

/// What stands for an input not given on the command line: the value the runs archived in
/// `report_dir` were trained with (a path, in archives of older versions), or their data's
/// content identity (an archive names its data by the study's placeholder).
fn archive_input_note(input: &str, value: &str, report_dir: &Path) -> String {
    if value.contains('{') {
        format!(
            "--{input} not given: the runs archived in {} are known by their data's content identity; give \
             --{input} DIR to train cells that are not finished",
            report_dir.display()
        )
    } else {
        format!("--{input} not given: using {value}, the input of the runs archived in {}", report_dir.display())
    }
}
/// The energy model used where none is given: `baselines/energy/default.toml`.
pub fn default_energy_model() -> PathBuf {
    project_root().join("baselines/energy/default.toml")
}
