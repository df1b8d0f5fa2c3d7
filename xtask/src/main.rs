//! `cargo xtask`: the command line of the harness, a thin layer over the library crates.

mod adc_bits_cmd;
mod data_cmd;
mod flags;
mod inspect_cmd;
mod profile;
mod progress;
mod report_cmd;
mod reproduce_cmd;
mod speed_cmd;
mod train_cmd;

use clap::Parser;
use flags::{Cli, Command};

/// The data directory of a command: the flag's folder (checked), else $CIM_DATA_DIR or ./data.
/// A folder that does not exist yet is announced, since it will be created.
pub fn data_dir(explicit: Option<&std::path::Path>, flag: &str) -> anyhow::Result<data::DataDir> {
    let dir = data::DataDir::resolve_checked(explicit, flag)?;
    if explicit.is_some() && !dir.root().exists() {
        eprintln!("{flag} {}: does not exist yet; it is created on first use", dir.root().display());
    }
    Ok(dir)
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
        Command::Train(args) => args.run(),
        Command::Eval(args) => args.run(),
        Command::Reproduce(args) => args.run(),
        Command::Report(args) => args.run(),
        Command::Variation(args) => args.run(),
        Command::Inspect(args) => args.run(),
        Command::AdcBits(args) => args.run(),
        Command::Bench => speed_cmd::bench(),
        Command::Speed(args) => args.run(),
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
