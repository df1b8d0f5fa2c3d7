//! Every command of `cargo xtask` and its flags, in one place; each command's code is in the
//! file of its family (`train_cmd`, `reproduce_cmd`, ...), which declares no flags of its own.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use train::{ComputeDevice, RunConfig};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Column-wise CIM quantization harness", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Data sets: list, fetch, verify, import, load.
    #[command(subcommand)]
    Data(DataCommand),
    /// Train one run (flags or a TOML run config).
    Train(TrainArgs),
    /// Evaluate a trained run on its own or another data set: a finished run's final model, or the
    /// newest checkpoint of a run still training (said so); a failed run is refused.
    Eval(EvalArgs),
    /// Train every cell of a study profile that has no finished result (resumable).
    Reproduce(ReproduceArgs),
    /// Tables, figures and README of a profile from its finished runs.
    Report(ReportArgs),
    /// Monte-Carlo accuracy of a trained run under memory-cell variation.
    Variation(VariationArgs),
    /// The fewest ADC bits per CIM layer of a trained run within a tolerance of its accuracy,
    /// and the energy that saves.
    AdcBits(AdcBitsArgs),
    /// ADC quality of a trained run: SQNR, clipping, codes used, digit levels per layer and slice.
    Inspect(InspectArgs),
    /// Run the benchmarks (CIM layer vs conv2d, CIM vs FP training step).
    Bench,
    /// Train-step speed (ResNet-20, fp and CIM) on the CPU and/or the GPU.
    Speed(SpeedArgs),
}

/// `--device cpu|gpu`, shared by every command that computes.
#[derive(clap::Args, Clone, Copy)]
pub struct DeviceArg {
    /// Where to compute: `cpu` (burn's Flex backend with the hand-written kernels) or `gpu`
    /// (burn's wgpu backend: Vulkan, else OpenGL; needs a build with `--features gpu`). Not part
    /// of a run's identity: the same run on either device is the same experiment.
    #[arg(long, default_value_t = cim_core::ComputeDevice::Cpu)]
    pub device: cim_core::ComputeDevice,
}

impl DeviceArg {
    /// Opens the device before any work (a binary without the `gpu` feature, or a machine
    /// without an adapter, fails here with what to do) and says which hardware runs.
    pub fn checked(self) -> anyhow::Result<cim_core::ComputeDevice> {
        self.device.open()?;
        if self.device == cim_core::ComputeDevice::Gpu {
            eprintln!("device: {}", self.device.describe()?);
        }
        Ok(self.device)
    }
}

/// `--data-dir`, shared by every command that reads data.
#[derive(Args, Clone)]
pub struct DataDirArg {
    /// Data directory (default: $CIM_DATA_DIR, else ./data).
    #[arg(long = "data-dir", value_name = "DATA_DIR")]
    pub dir: Option<PathBuf>,
}

impl DataDirArg {
    /// The data directory (checked; a folder that does not exist yet is announced).
    pub fn resolve(&self) -> Result<data::DataDir> {
        crate::data_dir(self.dir.as_deref(), "--data-dir")
    }
}

#[derive(Args)]
pub struct ProfileArgs {
    /// Study profile: smoke (default), real, paper, any folder of reports/ with a study.toml,
    /// or the path of your own study file (its report is written beside it).
    #[arg(long, default_value = "smoke")]
    pub profile: String,
    /// Where run folders go (default: runs/ in the workspace).
    #[arg(long)]
    pub runs: Option<PathBuf>,
    /// A CIFAR-10 image-folder tree (root/<class>/*.jpg) for the profiles' cifar10-jpeg benchmark;
    /// give the same to reproduce and report.
    #[arg(long)]
    pub cifar10_jpeg: Option<PathBuf>,
    /// An Imagenette tree (root/train/<wnid>/*.JPEG and root/val/<wnid>/*.JPEG) for the profiles'
    /// imagenette benchmark; give the same to reproduce and report.
    #[arg(long)]
    pub imagenette: Option<PathBuf>,
}

#[derive(Args)]
pub struct TrainArgs {
    /// A TOML run configuration; flags override its values.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Run folder (config, metrics, checkpoints, summary).
    #[arg(long)]
    pub out: PathBuf,
    /// Continue the run in --out (its own config.toml is used when no other is given).
    #[arg(long)]
    pub resume: bool,
    /// Stop after this many epochs in this invocation (the run stays resumable).
    #[arg(long)]
    pub stop_after: Option<usize>,
    /// Start from the final weights of this finished run (e.g. a floating-point pretraining of
    /// the same architecture and data set); its config hash becomes part of this run's.
    #[arg(long, value_name = "RUN_DIR")]
    pub init_from: Option<PathBuf>,
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub device: DeviceArg,
    #[command(flatten)]
    pub flags: RunFlags,
}

/// Every field of [`RunConfig`] as an optional flag (`--weight-bits` for `weight_bits`, ...),
/// derived from the struct itself: a flag given overrides the value of the config file (or
/// of the defaults), an absent one leaves it.
pub struct RunFlags(pub clap::ArgMatches);

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

#[derive(Args)]
pub struct EvalArgs {
    /// A run folder written by `train`.
    #[arg(long)]
    pub run: PathBuf,
    /// Evaluate on this data set's test split instead of the run's own.
    #[arg(long)]
    pub dataset: Option<String>,
    /// Images per class held out as the test split of a `--dataset folder:PATH` without its own
    /// (`train/` + `val/`), or `all` for a tree of test images only (default: the run's own
    /// folder_holdout).
    #[arg(long, value_parser = parse_holdout, value_name = "N|all")]
    pub folder_holdout: Option<data::source::Holdout>,
    #[command(flatten)]
    pub data_dir: DataDirArg,
    #[command(flatten)]
    pub device: DeviceArg,
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

#[derive(Args)]
pub struct ReproduceArgs {
    #[command(flatten)]
    pub profile: ProfileArgs,
    /// Only cells whose description or benchmark contains this text (e.g. `columnwise`, `P3`).
    #[arg(long)]
    pub only: Option<String>,
    /// List the cells, their state and an estimated time; train nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// Hide progress bars.
    #[arg(long)]
    pub quiet: bool,
    /// Train cells that failed earlier (non-finite values) again, from their last good checkpoint.
    #[arg(long)]
    pub retry_failed: bool,
    /// Train cell K of the profile's fixed order alone (`--dry-run` lists the indices): what a
    /// Slurm array task runs. It fails, naming it, when the cell it starts from is not finished.
    #[arg(long, value_name = "K", conflicts_with_all = ["only", "shard"])]
    pub cell: Option<usize>,
    /// Train every N-th cell of the fixed order starting at I (0 <= I < N), e.g. one shard per
    /// machine; any number of workers may share a runs folder.
    #[arg(long, value_name = "I/N", value_parser = parse_shard, conflicts_with = "only")]
    pub shard: Option<(usize, usize)>,
    /// Seconds without a heartbeat after which the claim of a worker on another host counts as
    /// dead and its cell is taken over (on the same host a dead process is seen at once).
    #[arg(long, value_name = "SECONDS", default_value_t = train::claim::DEFAULT_STALE_AFTER.as_secs())]
    pub claim_timeout: u64,
    /// Write Slurm batch scripts into DIR instead of training: job arrays over the unfinished
    /// cells, each task running `reproduce --cell $SLURM_ARRAY_TASK_ID` on the shared runs folder.
    #[arg(long, value_name = "DIR")]
    pub slurm: Option<PathBuf>,
    /// Train cells for a committed report (reports/<profile>/) with a binary built from a checkout
    /// with uncommitted changes: their summaries then name a code version nobody can check out.
    #[arg(long)]
    pub allow_dirty: bool,
    /// With --slurm: submit the arrays with sbatch and print their job ids.
    #[arg(long, requires = "slurm")]
    pub submit: bool,
    /// With --slurm: the partition (sbatch --partition).
    #[arg(long, requires = "slurm")]
    pub partition: Option<String>,
    /// With --slurm: the time limit of each task (sbatch --time, e.g. 02:00:00).
    #[arg(long, value_name = "HH:MM:SS", requires = "slurm")]
    pub time: Option<String>,
    /// With --slurm: GPUs per task (sbatch --gpus-per-task; give --device gpu too).
    #[arg(long, value_name = "N", requires = "slurm")]
    pub gpus_per_task: Option<u32>,
    /// With --slurm: CPU cores per task (sbatch --cpus-per-task).
    #[arg(long, value_name = "N", requires = "slurm")]
    pub cpus_per_task: Option<u32>,
    /// With --slurm: at most N tasks of an array at once (--array=...%N).
    #[arg(long, value_name = "N", requires = "slurm")]
    pub max_parallel: Option<usize>,
    #[command(flatten)]
    pub device: DeviceArg,
}

/// `I/N` of `--shard`.
fn parse_shard(text: &str) -> Result<(usize, usize), String> {
    let parsed = text.split_once('/').and_then(|(i, n)| Some((i.trim().parse().ok()?, n.trim().parse().ok()?)));
    match parsed {
        Some((i, n)) if n > 0 && i < n => Ok((i, n)),
        _ => Err(format!("`{text}`: expected I/N with N >= 1 and 0 <= I < N (e.g. 0/4)")),
    }
}

#[derive(Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub profile: ProfileArgs,
    /// Skip the figures.
    #[arg(long)]
    pub no_figures: bool,
    /// Take over existing files the report did not write (a report folder from before
    /// report-manifest.json, or files put there by hand): they are replaced.
    #[arg(long)]
    pub adopt: bool,
    /// Exit 0 even if some cells failed (they are reported as failed either way).
    #[arg(long)]
    pub allow_failed: bool,
    /// The energy model of the energy table: a TOML file with every constant of
    /// baselines/energy/default.toml (the default), each in joules.
    #[arg(long, value_name = "FILE")]
    pub energy: Option<PathBuf>,
}

#[derive(Args)]
pub struct VariationArgs {
    /// A trained run folder.
    #[arg(long)]
    pub run: PathBuf,
    /// Comma-separated standard deviations of theta.
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true, default_value = "0,0.05,0.1,0.15,0.2,0.3")]
    pub sigmas: Vec<f64>,
    /// Simulated chips per sigma.
    #[arg(long, default_value_t = 10)]
    pub chips: usize,
    /// Seed of the first chip.
    #[arg(long, default_value_t = 0)]
    pub chip_seed: u64,
    /// Evaluate on a seeded, class-balanced subset of N test images.
    #[arg(long)]
    pub limit_test: Option<usize>,
    #[command(flatten)]
    pub data_dir: DataDirArg,
    #[command(flatten)]
    pub device: DeviceArg,
}

#[derive(Args)]
pub struct InspectArgs {
    /// A trained run folder of a method with ADCs.
    #[arg(long)]
    pub run: PathBuf,
    /// Test batches (of the run's batch size) to collect statistics on.
    #[arg(long, default_value_t = train::DEFAULT_INSPECT_BATCHES)]
    pub batches: usize,
    #[command(flatten)]
    pub data_dir: DataDirArg,
    #[command(flatten)]
    pub device: DeviceArg,
}

#[derive(Args)]
pub struct AdcBitsArgs {
    /// A trained run folder of a method with the built-in ADC.
    #[arg(long)]
    pub run: PathBuf,
    /// The tolerance: accuracy points the network may lose against the run's own test
    /// accuracy (e.g. 1.0).
    #[arg(long, allow_negative_numbers = true)]
    pub within: f64,
    /// The order the greedy search visits the layers in, by their sensitivity (the accuracy a
    /// layer alone loses with one bit fewer).
    #[arg(long, value_enum, default_value_t = train::SearchOrder::MostSensitive)]
    pub order: train::SearchOrder,
    /// The energy model (default: baselines/energy/default.toml).
    #[arg(long, value_name = "FILE")]
    pub energy: Option<PathBuf>,
    /// Also write the result (bits, accuracies, energies) as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// No progress display.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub data_dir: DataDirArg,
    #[command(flatten)]
    pub device: DeviceArg,
}

#[derive(Args)]
pub struct SpeedArgs {
    /// Devices to time, comma-separated (`cpu`, `gpu`); ratios are against the first.
    #[arg(long, value_delimiter = ',', default_value = "cpu")]
    pub devices: Vec<ComputeDevice>,
    /// Images per step.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Measured steps per network and device (after one warm-up step, which on a GPU also
    /// compiles the shaders).
    #[arg(long, default_value_t = 3)]
    pub steps: usize,
}

#[derive(Args, Clone)]
pub struct DirArg {
    /// Data directory (default: $CIM_DATA_DIR, else ./data).
    #[arg(long, visible_alias = "data-dir")]
    pub dir: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum DataCommand {
    /// Status of every data set: missing, downloaded or verified, with sizes.
    List(DirArg),
    /// Download a data set's files (resumable, SHA-256 checked).
    Fetch {
        /// Data-set name (or manifest .toml).
        name: String,
        #[command(flatten)]
        dir: DirArg,
        /// Replace scheme and host of every URL, e.g. http://127.0.0.1:8000.
        #[arg(long)]
        mirror: Option<String>,
    },
    /// Re-check the SHA-256 of installed files.
    Verify {
        /// Data-set name.
        name: String,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Install verified copies from a local folder (e.g. the Debian package's).
    Import {
        /// Data-set name.
        name: String,
        /// Folder holding the files (default: the manifest's import_from).
        #[arg(long)]
        from: Option<PathBuf>,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Load a data set (a name, or folder:PATH) and print its images per class and the time taken.
    Load {
        /// Data-set name, manifest .toml or folder:PATH.
        spec: String,
        #[command(flatten)]
        dir: DirArg,
        /// Images per class held out as the test split of a folder tree.
        #[arg(long, default_value_t = 500)]
        holdout: usize,
    },
}
