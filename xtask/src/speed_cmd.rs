//! `cargo xtask speed`: ResNet-20 training steps per second on each device asked for, the
//! numbers `scripts/gpu-check.sh` prints for a GPU against the CPU path.

use anyhow::{Result, bail};
use clap::Args;
use train::ComputeDevice;
use train::speed::{StepCase, time_steps};

#[derive(Args)]
pub struct SpeedArgs {
    /// Devices to time, comma-separated (`cpu`, `gpu`); ratios are against the first.
    #[arg(long, value_delimiter = ',', default_value = "cpu")]
    devices: Vec<ComputeDevice>,
    /// Images per step.
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Measured steps per network and device (after one warm-up step, which on a GPU also
    /// compiles the shaders).
    #[arg(long, default_value_t = 3)]
    steps: usize,
}

pub fn speed(args: SpeedArgs) -> Result<()> {
    if args.devices.is_empty() {
        bail!("--devices: expected at least one of `cpu`, `gpu`");
    }
    for &d in &args.devices {
        crate::DeviceArg { device: d }.checked()?;
    }
    let cases = [
        StepCase::cim("floating point", "fp", cim_core::Encoding::Twos),
        StepCase::cim("CIM col/col P3 differential", "columnwise", cim_core::Encoding::Differential),
    ];
    println!("ResNet-20 train step, batch {}, median of {} steps after 1 warm-up:", args.batch, args.steps);
    let mut first: Option<Vec<f64>> = None;
    for &d in &args.devices {
        let device = train::setup::training_device(d)?;
        let medians: Vec<f64> =
            time_steps(&cases, args.batch, 1, args.steps, &device)?.iter().map(|t| t.median()).collect();
        for (i, (case, m)) in cases.iter().zip(&medians).enumerate() {
            // the first device's step over this one's: how many times faster this device is
            let against = first.as_ref().map(|base| format!("  {:.2}x {}", base[i] / m, args.devices[0]));
            println!(
                "  {:<4} {:<30} {:8.3} s/step {:8.1} img/s{}",
                d,
                case.name,
                m,
                args.batch as f64 / m,
                against.unwrap_or_default()
            );
        }
        first.get_or_insert(medians);
    }
    Ok(())
}
