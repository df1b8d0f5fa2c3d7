//! `cargo xtask`: the command line of the harness, a thin layer over the library crates.

mod adc_bits_cmd;
mod data_cmd;
mod progress;
mod speed_cmd;
mod study_cmd;
mod train_cmd;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Column-wise CIM quantization harness", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Data sets: list, fetch, verify, import, load.
    #[command(subcommand)]
    Data(data_cmd::DataCommand),
    /// Train one run (flags or a TOML run config).
    Train(train_cmd::TrainArgs),
    /// Evaluate a trained run on its own or another data set: a finished run's final model, or the
    /// newest checkpoint of a run still training (said so); a failed run is refused.
    Eval(train_cmd::EvalArgs),
    /// Train every cell of a study profile that has no finished result (resumable).
    Reproduce(study_cmd::ReproduceArgs),
    /// Tables, figures and README of a profile from its finished runs.
    Report(study_cmd::ReportArgs),
    /// Monte-Carlo accuracy of a trained run under memory-cell variation.
    Variation(study_cmd::VariationArgs),
    /// The fewest ADC bits per CIM layer of a trained run within a tolerance of its accuracy,
    /// and the energy that saves.
    AdcBits(adc_bits_cmd::AdcBitsArgs),
    /// ADC quality of a trained run: SQNR, clipping, codes used, digit levels per layer and slice.
    Inspect(study_cmd::InspectArgs),
    /// Run the benchmarks (CIM layer vs conv2d, CIM vs FP training step).
    Bench,
    /// Train-step speed (ResNet-20, fp and CIM) on the CPU and/or the GPU.
    Speed(speed_cmd::SpeedArgs),
}

/// The data directory of a command: the flag's folder (checked), else $CIM_DATA_DIR or ./data.
/// A folder that does not exist yet is announced, since it will be created.
pub fn data_dir(explicit: Option<&std::path::Path>, flag: &str) -> anyhow::Result<data::DataDir> {
    let dir = data::DataDir::resolve_checked(explicit, flag)?;
    if explicit.is_some() && !dir.root().exists() {
        eprintln!("{flag} {}: does not exist yet; it is created on first use", dir.root().display());
    }
    Ok(dir)
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

/// Ctrl-C (SIGINT) and SIGTERM (`kill`, `scancel`, a shutdown): says what is kept before ending
/// the process with the status the default disposition gives (130, 143). Every result and
/// checkpoint is written through a temporary file and a rename, so stopping at any instant loses
/// at most the epoch in progress; a run's claim is taken over by the next worker on this host
/// at once (its holder is gone). Only async-signal-safe calls.
#[cfg(unix)]
extern "C" fn on_interrupt(signal: libc::c_int) {
    const MESSAGE: &[u8] = b"\ninterrupted: finished epochs, cells and reports are kept; run the same command again \
to resume (at most the epoch in progress is lost)\n";
    // SAFETY: write(2) and _exit(2) are async-signal-safe; MESSAGE is a static buffer.
    unsafe {
        libc::write(2, MESSAGE.as_ptr().cast(), MESSAGE.len());
        libc::_exit(128 + signal);
    }
}

fn main() {
    // Output piped into a reader that stops early (`data list | head -1`) ends the process
    // quietly, as for any Unix tool, instead of panicking in println!.
    #[cfg(unix)]
    // SAFETY: resetting a signal to its default disposition before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::signal(libc::SIGINT, on_interrupt as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_interrupt as *const () as libc::sighandler_t);
    }
    flex_kernels::memory::reuse_freed_memory();
    let cli = Cli::parse();
    // a forced partial-sum path this CPU cannot run is refused before any work (no SIGILL later)
    #[cfg(target_arch = "x86_64")]
    if let Err(e) = cim_core::psums::PsumPath::from_env() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
    let result = match cli.command {
        Command::Data(cmd) => data_cmd::run(cmd),
        Command::Train(args) => train_cmd::train(args),
        Command::Eval(args) => train_cmd::eval(args),
        Command::Reproduce(args) => study_cmd::reproduce(args),
        Command::Report(args) => study_cmd::report(args),
        Command::Variation(args) => study_cmd::variation(args),
        Command::Inspect(args) => study_cmd::inspect(args),
        Command::AdcBits(args) => adc_bits_cmd::adc_bits(args),
        Command::Bench => study_cmd::bench(),
        Command::Speed(args) => speed_cmd::speed(args),
    };
    if let Err(e) = result {
        eprintln!("error: {}", error_text(&e));
        std::process::exit(1);
    }
}

/// The error and its causes in one line, each cause once: most of the project's errors already
/// name their cause (a path's error says the path and the OS error), so a cause whose text is
/// already there is not said again.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if !text.contains(&part) {
            if !text.is_empty() {
                text += ": ";
            }
            text += &part;
        }
    }
    text
}
