//! `cargo xtask train` and `cargo xtask eval`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use train::{RunConfig, TrainOptions};

#[derive(Args)]
pub struct TrainArgs {
    /// A TOML run configuration; flags override its values.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Run folder (config, metrics, checkpoints, summary).
    #[arg(long)]
    out: PathBuf,
    /// Continue the run in --out (its own config.toml is used when no other is given).
    #[arg(long)]
    resume: bool,
    /// Stop after this many epochs in this invocation (the run stays resumable).
    #[arg(long)]
    stop_after: Option<usize>,
    /// Start from the final weights of this finished run (e.g. a floating-point pretraining of
    /// the same architecture and data set); its config hash becomes part of this run's.
    #[arg(long, value_name = "RUN_DIR")]
    init_from: Option<PathBuf>,
    /// Data directory (default: $CIM_DATA_DIR, else ./data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Hide the progress bar.
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    device: crate::DeviceArg,
    #[command(flatten)]
    flags: RunFlags,
}

/// Every field of [`RunConfig`] as an optional flag (`--weight-bits` for `weight_bits`, ...),
/// derived from the struct itself: a flag given overrides the value of the config file (or
/// of the defaults), an absent one leaves it.
pub struct RunFlags(clap::ArgMatches);

impl clap::FromArgMatches for RunFlags {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        Ok(Self(matches.clone()))
    }
    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        self.0 = matches.clone();
        Ok(())
    }
}

impl Args for RunFlags {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        with_defaults(RunConfig::augment_args(cmd))
    }
    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        with_defaults(RunConfig::augment_args_for_update(cmd))
    }
}

/// Appends `[default: ...]` to the help of every run flag, from [`RunConfig::default`] itself:
/// the flags are optional overrides, so clap knows no defaults of its own to show.
fn with_defaults(cmd: clap::Command) -> clap::Command {
    RunConfig::defaults_shown().into_iter().fold(cmd, |cmd, (field, shown)| {
        if cmd.get_arguments().all(|a| a.get_id() != field.as_str()) {
            return cmd;
        }
        cmd.mut_arg(field, |arg| {
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            arg.help(format!("{help} [default: {shown}]"))
        })
    })
}

fn read_config(path: &PathBuf) -> Result<RunConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("{}: cannot read the run config", path.display()))?;
    if text.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with('#')) {
        bail!(
            "--config {}: the file sets nothing; expected at least one setting (e.g. method = \"columnwise\"), \
             or leave --config out to train the defaults",
            path.display()
        );
    }
    Ok(RunConfig::from_toml(&text, &path.display().to_string())?)
}

pub fn train(args: TrainArgs) -> Result<()> {
    let base = match (&args.config, args.resume) {
        (Some(path), _) => read_config(path)?,
        (None, true) => match train::RunDir::new(&args.out).read_config()? {
            Some(stored) => stored,
            None => bail!("--resume: {} has no config.toml (nothing to resume)", args.out.display()),
        },
        (None, false) => RunConfig::default(),
    };
    let mut config = base.with_flags(&args.flags.0)?;
    if let Some(from) = &args.init_from {
        let source = match train::RunDir::new(from).read_config() {
            Ok(Some(c)) => c,
            Ok(None) => bail!("--init-from {}: not a run folder (no config.toml)", from.display()),
            Err(e) => bail!("--init-from {}: not a run folder this tool can read ({e})", from.display()),
        };
        config.init_from = Some(source.hash());
    }
    config.resolve()?; // every check before any work
    if config.dataset_id.is_none() {
        // a folder's run is keyed by the folder's content, not by where it lies or is called
        if let Some(path) = config.dataset.strip_prefix(data::source::FOLDER_PREFIX) {
            config.dataset_id = Some(
                data::source::folder_identity(std::path::Path::new(path), "folder")
                    .with_context(|| format!("--dataset {}", config.dataset))?,
            );
        }
    }
    let opts = TrainOptions {
        data_dir: crate::data_dir(args.data_dir.as_deref(), "--data-dir")?,
        on_event: crate::progress::observer(args.quiet),
        stop_after: args.stop_after,
        device: args.device.checked()?,
        init_from: args.init_from.clone(),
    };
    match train::train(&config, &args.out, &opts)? {
        Some(s) => println!(
            "{} on {}: best test accuracy {:.2}% (epoch {}), final {:.2}%, {} epochs, {:.0} s, {:.0} img/s -> {}",
            s.method,
            s.dataset,
            100.0 * s.best_test_acc,
            s.best_epoch,
            100.0 * s.final_test_acc,
            s.epochs,
            s.wall_seconds,
            s.images_per_sec,
            args.out.join("summary.json").display()
        ),
        None => println!(
            "stopped after --stop-after epochs; continue with: cargo xtask train --resume --out {}",
            args.out.display()
        ),
    }
    Ok(())
}

#[derive(Args)]
pub struct EvalArgs {
    /// A run folder written by `train`.
    #[arg(long)]
    run: PathBuf,
    /// Evaluate on this data set's test split instead of the run's own.
    #[arg(long)]
    dataset: Option<String>,
    /// Images per class held out as the test split of a `--dataset folder:PATH` without its own
    /// (`train/` + `val/`), or `all` for a tree of test images only (default: the run's own
    /// folder_holdout).
    #[arg(long, value_parser = parse_holdout, value_name = "N|all")]
    folder_holdout: Option<data::source::Holdout>,
    /// Data directory (default: $CIM_DATA_DIR, else ./data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    device: crate::DeviceArg,
}

/// `--folder-holdout N|all`.
fn parse_holdout(text: &str) -> Result<data::source::Holdout, String> {
    match text {
        "all" => Ok(data::source::Holdout::All),
        n => n
            .parse()
            .map(data::source::Holdout::PerClass)
            .map_err(|_| format!("`{n}`: expected a number of images per class, or `all`")),
    }
}

pub fn eval(args: EvalArgs) -> Result<()> {
    let data_dir = crate::data_dir(args.data_dir.as_deref(), "--data-dir")?;
    let device = args.device.checked()?;
    let r = train::evaluate_run(&args.run, args.dataset.as_deref(), args.folder_holdout, &data_dir, device)?;
    println!("accuracy {:.2}% (loss {:.4}) on {} images", 100.0 * r.accuracy, r.loss, r.images);
    // a run still training is scored by its newest checkpoint: said, so that it is not taken
    // for the run's result
    let run = train::RunDir::new(&args.run);
    if !run.summary_path().exists()
        && let Some(ckpt) = run.latest_checkpoint()?
    {
        let epochs = run.read_config()?.map_or(0, |c| c.epochs);
        println!(
            "note: the run has not finished: this is its checkpoint after epoch {} of {epochs}",
            ckpt.state.epochs_done
        );
    }
    Ok(())
}
