//! `cargo xtask report`: a profile's tables, figures and README from its finished runs.

use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::flags::ReportArgs;
use crate::profile::{default_energy_model, project_root};

impl ReportArgs {
    /// Runs the command.
    pub fn run(self) -> Result<()> {
        let (study, runs_root, out_dir) = self.profile.load_for_work()?;
        let opts = report::ReportOptions {
            runs_root,
            out_dir: out_dir.clone(),
            claims: project_root().join("baselines/paper-claims.toml"),
            energy: self.energy.clone().unwrap_or_else(default_energy_model),
            figures: !self.no_figures,
            adopt: self.adopt,
        };
        eprintln!("energy model: {}", opts.energy.display());
        let tables = report::generate(&study, &opts)?;
        let readme = project_root().join("README.md");
        if out_dir == project_root().join("reports/smoke") {
            update_readme(&readme, "smoke-accuracy", tables.markdown("accuracy").trim_start_matches(|c| c != '|'))?;
        }
        if out_dir == project_root().join("reports/real") {
            update_readme(&readme, "real-finding", &format!("{}\n", tables.finding()))?;
        }
        println!("{}", tables.markdown("accuracy"));
        println!("{}", tables.markdown("claims"));
        println!("report written to {}", out_dir.join("README.md").display());
        for (label, why) in &tables.failed {
            eprintln!("FAILED {label}: {why}");
        }
        if !tables.failed.is_empty() && !self.allow_failed {
            bail!(
                "{} cell(s) failed (listed above and in the report); repair or retrain them (`reproduce \
                 --retry-failed`), or pass --allow-failed",
                tables.failed.len()
            );
        }
        Ok(())
    }
}
/// Puts `content` (a committed report's table or finding) into the workspace README, between
/// the markers `<!-- NAME:start -->` and `<!-- NAME:end -->`.
fn update_readme(path: &Path, name: &str, content: &str) -> Result<()> {
    let (start, end) = (format!("<!-- {name}:start -->"), format!("<!-- {name}:end -->"));
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let (Some(a), Some(b)) = (text.find(&start), text.find(&end)) else {
        bail!("{}: the markers {start} and {end} are missing", path.display());
    };
    let updated = format!("{}{start}\n{content}{}", &text[..a], &text[b..]);
    let tmp = path.with_extension("md.tmp");
    std::fs::write(&tmp, updated).with_context(|| format!("{}: cannot write", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("{}: cannot replace", path.display()))?;
    Ok(())
}
