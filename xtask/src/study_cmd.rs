//! `cargo xtask reproduce`, `report`, `variation` and `bench`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Args;
use study::{ReproduceOptions, Study};

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

#[derive(Args)]
pub struct ProfileArgs {
    /// Study profile: smoke (default), real, paper, any folder of reports/ with a study.toml,
    /// or the path of your own study file (its report is written beside it).
    #[arg(long, default_value = "smoke")]
    profile: String,
    /// Where run folders go (default: runs/ in the workspace).
    #[arg(long)]
    runs: Option<PathBuf>,
    /// A CIFAR-10 image-folder tree (root/<class>/*.jpg) for the profiles' cifar10-jpeg benchmark;
    /// give the same to reproduce and report.
    #[arg(long)]
    cifar10_jpeg: Option<PathBuf>,
    /// An Imagenette tree (root/train/<wnid>/*.JPEG and root/val/<wnid>/*.JPEG) for the profiles'
    /// imagenette benchmark; give the same to reproduce and report.
    #[arg(long)]
    imagenette: Option<PathBuf>,
}

impl ProfileArgs {
    /// The study inputs given on the command line: (input name, as its flag and its study
    /// placeholder `{name}` say it; the folder).
    fn inputs(&self) -> Vec<(&'static str, &PathBuf)> {
        [("cifar10-jpeg", &self.cifar10_jpeg), ("imagenette", &self.imagenette)]
            .into_iter()
            .filter_map(|(name, dir)| dir.as_ref().map(|d| (name, d)))
            .collect()
    }

    fn load(&self) -> Result<(Study, PathBuf, PathBuf)> {
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

#[derive(Args)]
pub struct ReproduceArgs {
    #[command(flatten)]
    profile: ProfileArgs,
    /// Only cells whose description or benchmark contains this text (e.g. `columnwise`, `P3`).
    #[arg(long)]
    only: Option<String>,
    /// List the cells, their state and an estimated time; train nothing.
    #[arg(long)]
    dry_run: bool,
    /// Data directory (default: $CIM_DATA_DIR, else ./data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Hide progress bars.
    #[arg(long)]
    quiet: bool,
    /// Train cells that failed earlier (non-finite values) again, from their last good checkpoint.
    #[arg(long)]
    retry_failed: bool,
    /// Train cell K of the profile's fixed order alone (`--dry-run` lists the indices): what a
    /// Slurm array task runs. It fails, naming it, when the cell it starts from is not finished.
    #[arg(long, value_name = "K", conflicts_with_all = ["only", "shard"])]
    cell: Option<usize>,
    /// Train every N-th cell of the fixed order starting at I (0 <= I < N), e.g. one shard per
    /// machine; any number of workers may share a runs folder.
    #[arg(long, value_name = "I/N", value_parser = parse_shard, conflicts_with = "only")]
    shard: Option<(usize, usize)>,
    /// Seconds without a heartbeat after which the claim of a worker on another host counts as
    /// dead and its cell is taken over (on the same host a dead process is seen at once).
    #[arg(long, value_name = "SECONDS", default_value_t = train::claim::DEFAULT_STALE_AFTER.as_secs())]
    claim_timeout: u64,
    /// Write Slurm batch scripts into DIR instead of training: job arrays over the unfinished
    /// cells, each task running `reproduce --cell $SLURM_ARRAY_TASK_ID` on the shared runs folder.
    #[arg(long, value_name = "DIR")]
    slurm: Option<PathBuf>,
    /// Train cells for a committed report (reports/<profile>/) with a binary built from a checkout
    /// with uncommitted changes: their summaries then name a code version nobody can check out.
    #[arg(long)]
    allow_dirty: bool,
    /// With --slurm: submit the arrays with sbatch and print their job ids.
    #[arg(long, requires = "slurm")]
    submit: bool,
    /// With --slurm: the partition (sbatch --partition).
    #[arg(long, requires = "slurm")]
    partition: Option<String>,
    /// With --slurm: the time limit of each task (sbatch --time, e.g. 02:00:00).
    #[arg(long, value_name = "HH:MM:SS", requires = "slurm")]
    time: Option<String>,
    /// With --slurm: GPUs per task (sbatch --gpus-per-task; give --device gpu too).
    #[arg(long, value_name = "N", requires = "slurm")]
    gpus_per_task: Option<u32>,
    /// With --slurm: CPU cores per task (sbatch --cpus-per-task).
    #[arg(long, value_name = "N", requires = "slurm")]
    cpus_per_task: Option<u32>,
    /// With --slurm: at most N tasks of an array at once (--array=...%N).
    #[arg(long, value_name = "N", requires = "slurm")]
    max_parallel: Option<usize>,
    #[command(flatten)]
    device: crate::DeviceArg,
}

/// `I/N` of `--shard`.
fn parse_shard(text: &str) -> Result<(usize, usize), String> {
    let parsed = text.split_once('/').and_then(|(i, n)| Some((i.trim().parse().ok()?, n.trim().parse().ok()?)));
    match parsed {
        Some((i, n)) if n > 0 && i < n => Ok((i, n)),
        _ => Err(format!("`{text}`: expected I/N with N >= 1 and 0 <= I < N (e.g. 0/4)")),
    }
}

pub fn reproduce(args: ReproduceArgs) -> Result<()> {
    let (mut study, runs_root, report_dir) = args.profile.load()?;
    // a committed result needs no input to be known as finished
    for (input, value) in study.provide_from_archive(&report_dir.join("runs")) {
        eprintln!("{}", archive_input_note(&input, &value, &report_dir));
    }
    for (bench, input) in study.skipped() {
        eprintln!("skipping benchmark `{bench}`: it needs --{input} DIR");
    }
    let opts = ReproduceOptions {
        runs_root: runs_root.clone(),
        data_dir: crate::data_dir(args.data_dir.as_deref(), "--data-dir")?,
        filter: args.only.clone(),
        dry_run: args.dry_run,
        progress: !args.quiet,
        on_train_event: crate::progress::observer(args.quiet),
        retry_failed: args.retry_failed,
        device: if args.dry_run || args.slurm.is_some() { args.device.device } else { args.device.checked()? },
        archive: Some(report_dir.join("runs")),
        pick: match (args.cell, args.shard) {
            (Some(k), _) => study::CellPick::One(k),
            (None, Some((index, count))) => study::CellPick::Shard { index, count },
            (None, None) => study::CellPick::All,
        },
        claim_timeout: std::time::Duration::from_secs(args.claim_timeout),
        on_event: show_reproduce_event,
    };
    opts.pick.check(study.cells()?.len())?; // before any work
    if !args.dry_run && !args.allow_dirty {
        let unfinished = study
            .cells()?
            .iter()
            .filter(|c| {
                args.only.as_ref().is_none_or(|t| c.label().contains(t.as_str()) || c.benchmark.contains(t.as_str()))
            })
            .filter(|c| study::finished_dir(c, &runs_root, &study.name, opts.archive.as_deref()).is_none())
            .count();
        let real = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        if let Some(why) = dirty_refusal(train::CODE_VERSION, &real(&report_dir), &real(&project_root()), unfinished) {
            bail!(why);
        }
    }
    if let Some(dir) = &args.slurm {
        return slurm(&args, &study, &opts, dir);
    }
    if !args.dry_run {
        eprintln!("runs go to {}", runs_root.join(&study.name).display());
    }
    let out = study::reproduce(&study, &opts)?;
    if args.dry_run {
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
    let mut hint = format!("cargo xtask report --profile {}", args.profile.profile);
    if let Some(runs) = &args.profile.runs {
        hint += &format!(" --runs {}", runs.display());
    }
    for (input, dir) in args.profile.inputs() {
        hint += &format!(" --{input} {}", dir.display());
    }
    println!("runs in {}; tables: {hint}", runs_root.join(&study.name).display());
    if !out.failed.is_empty() {
        bail!("{} cell(s) failed (re-run to retry; finished cells are kept)", out.failed.len());
    }
    Ok(())
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

#[derive(Args)]
pub struct ReportArgs {
    #[command(flatten)]
    profile: ProfileArgs,
    /// Skip the figures.
    #[arg(long)]
    no_figures: bool,
    /// Take over existing files the report did not write (a report folder from before
    /// report-manifest.json, or files put there by hand): they are replaced.
    #[arg(long)]
    adopt: bool,
    /// Exit 0 even if some cells failed (they are reported as failed either way).
    #[arg(long)]
    allow_failed: bool,
    /// The energy model of the energy table: a TOML file with every constant of
    /// baselines/energy/default.toml (the default), each in joules.
    #[arg(long, value_name = "FILE")]
    energy: Option<PathBuf>,
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

pub fn report(args: ReportArgs) -> Result<()> {
    let (mut study, runs_root, out_dir) = args.profile.load()?;
    for (input, value) in study.provide_from_archive(&out_dir.join("runs")) {
        eprintln!("{}", archive_input_note(&input, &value, &out_dir));
    }
    for (bench, input) in study.skipped() {
        eprintln!("skipping benchmark `{bench}`: it needs --{input} DIR");
    }
    let opts = report::ReportOptions {
        runs_root,
        out_dir: out_dir.clone(),
        claims: project_root().join("baselines/paper-claims.toml"),
        energy: args.energy.clone().unwrap_or_else(default_energy_model),
        figures: !args.no_figures,
        adopt: args.adopt,
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
    if !tables.failed.is_empty() && !args.allow_failed {
        bail!(
            "{} cell(s) failed (listed above and in the report); repair or retrain them (`reproduce \
             --retry-failed`), or pass --allow-failed",
            tables.failed.len()
        );
    }
    Ok(())
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

#[derive(Args)]
pub struct VariationArgs {
    /// A trained run folder.
    #[arg(long)]
    run: PathBuf,
    /// Comma-separated standard deviations of theta.
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true, default_value = "0,0.05,0.1,0.15,0.2,0.3")]
    sigmas: Vec<f64>,
    /// Simulated chips per sigma.
    #[arg(long, default_value_t = 10)]
    chips: usize,
    /// Seed of the first chip.
    #[arg(long, default_value_t = 0)]
    chip_seed: u64,
    /// Evaluate on a seeded, class-balanced subset of N test images.
    #[arg(long)]
    limit_test: Option<usize>,
    /// Data directory (default: $CIM_DATA_DIR, else ./data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    device: crate::DeviceArg,
}

pub fn variation(args: VariationArgs) -> Result<()> {
    let r = train::variation_study(
        &args.run,
        &args.sigmas,
        args.chips,
        args.chip_seed,
        args.limit_test,
        &crate::data_dir(args.data_dir.as_deref(), "--data-dir")?,
        args.device.checked()?,
    )?;
    println!(
        "{} (config {}), {} chips per sigma, {} test images; without variation {:.2}%",
        r.method,
        r.config_hash,
        r.chips,
        r.images,
        100.0 * r.noiseless
    );
    println!("{:>7} {:>8} {:>7} {:>8} {:>8}", "sigma", "mean %", "std", "min %", "max %");
    for s in &r.results {
        println!(
            "{:>7.3} {:>8.2} {:>7.2} {:>8.2} {:>8.2}",
            s.sigma,
            100.0 * s.mean,
            100.0 * s.std,
            100.0 * s.min,
            100.0 * s.max
        );
    }
    println!("written to {}", args.run.join("variation.json").display());
    Ok(())
}

#[derive(Args)]
pub struct InspectArgs {
    /// A trained run folder of a method with ADCs.
    #[arg(long)]
    run: PathBuf,
    /// Test batches (of the run's batch size) to collect statistics on.
    #[arg(long, default_value_t = train::DEFAULT_INSPECT_BATCHES)]
    batches: usize,
    /// Data directory (default: $CIM_DATA_DIR, else ./data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    device: crate::DeviceArg,
}

pub fn inspect(args: InspectArgs) -> Result<()> {
    let data_dir = crate::data_dir(args.data_dir.as_deref(), "--data-dir")?;
    let r = train::inspect_run(&args.run, args.batches, &data_dir, args.device.checked()?)?;
    println!("{} (config {}), {} test images", r.method, r.config_hash, r.images);
    println!(
        "{:>5} {:<14} {:>3} {:>5} {:>9} {:>10} {:>9} {:>9} {:>12} {:>10}  digit shares (lowest level first)",
        "layer", "shape", "pol", "slice", "SQNR dB", "spread dB", "clip lo%", "clip hi%", "code H bits", "codes used"
    );
    for row in &r.rows {
        let shares: Vec<String> = row.digit_shares.iter().map(|s| format!("{:.2}", s)).collect();
        println!(
            "{:>5} {:<14} {:>3} {:>5} {:>9} {:>10} {:>9.2} {:>9.2} {:>12.2} {:>10}  [{}] from {}",
            row.layer,
            row.shape,
            row.polarity,
            row.slice,
            row.sqnr_db.map(|x| format!("{x:.2}")).unwrap_or_else(|| "exact".into()),
            row.spread_sqnr_db.map(|x| format!("{x:.2}")).unwrap_or_else(|| "exact".into()),
            100.0 * row.clipped_low,
            100.0 * row.clipped_high,
            row.code_entropy_bits,
            format!("{}/{}", row.codes_used, row.codes),
            shares.join(" "),
            row.digit_low
        );
    }
    let show = |v: Option<f64>| v.map(|x| format!("{x:.2} dB")).unwrap_or_else(|| "—".into());
    println!(
        "median ADC SQNR {}, worst {}; median SQNR of the spread around each column's mean {}",
        show(r.median_sqnr_db()),
        show(r.worst_sqnr_db()),
        show(r.median_spread_sqnr_db())
    );
    println!("written to {} and adc-quality.json", args.run.join("adc-quality.csv").display());
    Ok(())
}

/// Runs both benchmarks (each prints its ratios).
pub fn bench() -> Result<()> {
    for (package, bench) in [("cim-core", "cim_conv"), ("train", "train_step")] {
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(project_root())
            .args(["bench", "-p", package, "--bench", bench])
            .status()
            .with_context(|| format!("cannot run cargo bench -p {package}"))?;
        if !status.success() {
            bail!("cargo bench -p {package} --bench {bench} failed");
        }
    }
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
