//! `cargo xtask speed`: ResNet-20 training steps per second on each device asked for, the
//! numbers `scripts/gpu-check.sh` prints for a GPU against the CPU path; and `cargo xtask bench`.

use std::process::Command;

use anyhow::{Context, Result, bail};
use train::speed::{StepCase, time_steps};

use crate::flags::SpeedArgs;
use crate::profile::project_root;

impl SpeedArgs {
    /// Runs the command.
    pub fn run(self) -> Result<()> {
        if self.devices.is_empty() {
            bail!("--devices: expected at least one of `cpu`, `gpu`");
        }
        for &d in &self.devices {
            crate::flags::DeviceArg { device: d }.checked()?;
        }
        let cases = [
            StepCase::cim("floating point", "fp", cim_core::Encoding::Twos),
            StepCase::cim("CIM col/col P3 differential", "columnwise", cim_core::Encoding::Differential),
        ];
        println!("ResNet-20 train step, batch {}, median of {} steps after 1 warm-up:", self.batch, self.steps);
        let mut first: Option<Vec<f64>> = None;
        for &d in &self.devices {
            let device = train::setup::training_device(d)?;
            let medians: Vec<f64> =
                time_steps(&cases, self.batch, 1, self.steps, &device)?.iter().map(|t| t.median()).collect();
            for (i, (case, m)) in cases.iter().zip(&medians).enumerate() {
                // the first device's step over this one's: how many times faster this device is
                let against = first.as_ref().map(|base| format!("  {:.2}x {}", base[i] / m, self.devices[0]));
                println!(
                    "  {:<4} {:<30} {:8.3} s/step {:8.1} img/s{}",
                    d,
                    case.name,
                    m,
                    self.batch as f64 / m,
                    against.unwrap_or_default()
                );
            }
            first.get_or_insert(medians);
        }
        Ok(())
    }
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
