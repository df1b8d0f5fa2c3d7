//! `cargo xtask reproduce`: train a profile's cells here, or write (and submit) Slurm job arrays.

use std::path::Path;

use anyhow::{Context, Result, bail};
use study::{ReproduceOptions, Study};

use crate::flags::ReproduceArgs;
use crate::profile::project_root;

impl ReproduceArgs {
    /// Runs the command.
    pub fn run(self) -> Result<()> {
        let (study, runs_root, report_dir) = self.profile.load_for_work()?;
        let opts = ReproduceOptions {
            runs_root: runs_root.clone(),
            data_dir: self.data_dir.resolve()?,
            filter: self.only.clone(),
            dry_run: self.dry_run,
            progress: !self.quiet,
            on_train_event: crate::progress::observer(self.quiet),
            retry_failed: self.retry_failed,
            device: if self.dry_run || self.slurm.is_some() { self.device.device } else { self.device.checked()? },
            archive: Some(report_dir.join("runs")),
            pick: match (self.cell, self.shard) {
                (Some(k), _) => study::CellPick::One(k),
                (None, Some((index, count))) => study::CellPick::Shard { index, count },
                (None, None) => study::CellPick::All,
            },
            claim_timeout: std::time::Duration::from_secs(self.claim_timeout),
            on_event: show_reproduce_event,
        };
        opts.pick.check(study.cells()?.len())?; // before any work
        if !self.dry_run && !self.allow_dirty {
            let unfinished = study
                .cells()?
                .iter()
                .filter(|c| {
                    self.only
                        .as_ref()
                        .is_none_or(|t| c.label().contains(t.as_str()) || c.benchmark.contains(t.as_str()))
                })
                .filter(|c| study::finished_dir(c, &runs_root, &study.name, opts.archive.as_deref()).is_none())
                .count();
            let real = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
            if let Some(why) =
                dirty_refusal(train::CODE_VERSION, &real(&report_dir), &real(&project_root()), unfinished)
            {
                bail!(why);
            }
        }
        if let Some(dir) = &self.slurm {
            return slurm(&self, &study, &opts, dir);
        }
        if !self.dry_run {
            eprintln!("runs go to {}", runs_root.join(&study.name).display());
        }
        let out = study::reproduce(&study, &opts)?;
        if self.dry_run {
            return Ok(());
        }
        println!(
            "\nprofile `{}`: {} cells selected, {} already finished, {} trained now ({} taken over from workers that died), {} failed, {} held by other workers; {} ADC inspections; {} variation studies; {:.0} s",
            study.name,
            out.selected,
            out.cached,
            out.trained,
            out.taken_over,
            out.failed.len(),
            out.busy.len(),
            out.inspected,
            out.variation,
            out.seconds
        );
        println!("{:<70} {:>8} {:>8}", "cell", "final %", "best %");
        for (label, s) in &out.summaries {
            println!("{label:<70} {:>8.2} {:>8.2}", 100.0 * s.final_test_acc, 100.0 * s.best_test_acc);
        }
        for (label, e) in &out.failed {
            println!("FAILED {label}: {e}");
        }
        let mut hint = format!("cargo xtask report --profile {}", self.profile.profile);
        if let Some(runs) = &self.profile.runs {
            hint += &format!(" --runs {}", runs.display());
        }
        for (input, dir) in self.profile.inputs() {
            hint += &format!(" --{input} {}", dir.display());
        }
        println!("runs in {}; tables: {hint}", runs_root.join(&study.name).display());
        if !out.failed.is_empty() {
            bail!("{} cell(s) failed (re-run to retry; finished cells are kept)", out.failed.len());
        }
        Ok(())
    }
}
/// Shows what `reproduce` reports: a dry run's listing on stdout, notes about cells on stderr.
fn show_reproduce_event(event: &study::ReproduceEvent) {
    use study::{EstimateBasis, ReproduceEvent as E};
    match event {
        E::Listing { selected, cells, profile } => println!("{selected} of the {cells} cells of profile `{profile}`:"),
        E::Listed { index, state, estimate, finished, label, epochs, key } => {
            let estimate = match (finished, estimate) {
                (true, _) => "-".to_string(),
                (false, Some((s, basis))) => {
                    format!("~{:.0} min{}", s / 60.0, if *basis == EstimateBasis::Reference { "*" } else { "" })
                }
                (false, None) => "unknown".to_string(),
            };
            // the epochs too: a budget study's cells differ by nothing else
            println!("  {index:>4}  {state:<20} {estimate:>10}  {label} ({epochs} ep)  [{key}]");
        }
        E::ListingTotal { seconds, measured, reference } => println!(
            "estimated training time of what is left: ~{:.0} min ({measured} cell(s) from the median speed of this \
             profile's finished runs of their kind (model, method, activation, batch size, device) as they \
             recorded it, {reference} marked * from the reference machine's constants (2 cores))",
            seconds / 60.0
        ),
        E::Cell { tag, label, note } => eprintln!("{tag} {label}{note}"),
        E::Variation { label, sigmas, chips } => eprintln!("variation: {label} ({sigmas} sigmas x {chips} chips)"),
    }
}
/// Why `reproduce` must not train `unfinished` cells for the report in `report_dir` with a binary
/// of `code_version`: a committed report (under `root/reports/`) keeps only results of code
/// that was committed, so that its code versions can be checked out.
fn dirty_refusal(code_version: &str, report_dir: &Path, root: &Path, unfinished: usize) -> Option<String> {
    let committed = report_dir.starts_with(root.join("reports"));
    (committed && unfinished > 0 && code_version.ends_with("-dirty")).then(|| {
        format!(
            "this binary was built from a checkout with uncommitted changes ({code_version}); the {unfinished} \
             unfinished cell(s) of the committed report {} would record a code version nobody can check out: \
             commit first, or give --allow-dirty",
            report_dir.display()
        )
    })
}
/// `reproduce --slurm DIR`: batch scripts for the unfinished cells, submitted with `--submit`.
fn slurm(args: &ReproduceArgs, study: &Study, opts: &ReproduceOptions, dir: &Path) -> Result<()> {
    use study::slurm;
    if args.dry_run || args.cell.is_some() || args.shard.is_some() || args.only.is_some() {
        bail!("--slurm: submits every unfinished cell; leave out --dry-run, --cell, --shard and --only");
    }
    if args.submit && !slurm::sbatch_available() {
        bail!("--submit: no `sbatch` on PATH (write the scripts without --submit, and submit them where Slurm is)");
    }
    slurm::check_folder(dir)?;
    let plan = slurm::plan(study, &opts.runs_root, opts.archive.as_deref())?;
    if plan.arrays.is_empty() {
        println!("every cell of profile `{}` is finished: nothing to submit", study.name);
        return Ok(());
    }
    // every task runs this binary from the workspace, on the same runs folder and data
    let exe = std::env::current_exe().context("the path of this program")?;
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut command = vec![exe.display().to_string(), "reproduce".into(), "--quiet".into()];
    let profile = Path::new(&args.profile.profile);
    let profile = if profile.extension().is_some_and(|e| e == "toml") {
        absolute(profile).display().to_string()
    } else {
        args.profile.profile.clone()
    };
    command.extend(["--profile".into(), profile]);
    command.extend(["--runs".into(), absolute(&opts.runs_root).display().to_string()]);
    command.extend(["--data-dir".into(), absolute(opts.data_dir.root()).display().to_string()]);
    for (input, d) in args.profile.inputs() {
        command.extend([format!("--{input}"), absolute(d).display().to_string()]);
    }
    command.extend(["--device".into(), args.device.device.to_string()]);
    command.extend(["--claim-timeout".into(), args.claim_timeout.to_string()]);
    let options = slurm::SlurmOptions {
        partition: args.partition.clone(),
        time: args.time.clone(),
        gpus_per_task: args.gpus_per_task,
        cpus_per_task: args.cpus_per_task,
        max_parallel: args.max_parallel,
    };
    let dir = absolute(dir);
    let created = !dir.exists();
    let scripts = slurm::write_scripts(&dir, &plan, &options, &project_root(), &command)?;
    for (array, script) in plan.arrays.iter().zip(&scripts) {
        let after = array.after.as_ref().map(|a| format!(", after `{a}`")).unwrap_or_default();
        println!("{}: {} cells ({}){after}", script.display(), array.cells.len(), slurm::array_ranges(&array.cells));
    }
    if !args.submit {
        println!(
            "submit with --submit, or by hand: sbatch --parsable {} (then the next with --dependency=afterok:ID)",
            slurm::shell_quote(&scripts[0].display().to_string())
        );
        return Ok(());
    }
    let submitted = match slurm::submit(&plan, &scripts) {
        Ok(ids) => ids,
        Err(e) => {
            // refused before anything was submitted: what was written for it goes too
            if created {
                let _ = std::fs::remove_dir_all(&dir);
            }
            return Err(e.into());
        }
    };
    for (name, id) in submitted {
        println!("submitted `{name}`: job {id}");
    }
    println!(
        "logs: {}/logs/JOB_TASK.out; `cargo xtask reproduce --profile {} --dry-run` shows the cells",
        dir.display(),
        args.profile.profile
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cells for a committed report are trained only by a binary of committed code (or with
    /// --allow-dirty); a study file elsewhere, or nothing left to train, is never refused.
    #[test]
    fn a_dirty_binary_trains_no_cell_of_a_committed_report() {
        let root = Path::new("/repo");
        let committed = root.join("reports/real");
        let e = dirty_refusal("695cb0e99b86-dirty", &committed, root, 3).unwrap();
        assert!(e.contains("695cb0e99b86-dirty") && e.contains("3 unfinished") && e.contains("--allow-dirty"), "{e}");
        assert!(dirty_refusal("695cb0e99b86", &committed, root, 3).is_none());
        assert!(dirty_refusal("695cb0e99b86-dirty", &committed, root, 0).is_none());
        assert!(dirty_refusal("695cb0e99b86-dirty", Path::new("/home/me/my"), root, 3).is_none());
    }
}
