//! ResNet-20 training step at batch 128: floating point against CIM (W4 A4, cell bits 2, P 3,
//! N 128, column/column, differential and twos), measured interleaved in one run, with the ratio
//! and the heap peak of each step, and the same floating-point step in PyTorch
//! (`baselines/pytorch/resnet20_step.py`, run before and after the burn steps; skipped with a
//! message where `torch` is not importable). Targets: floating point <= 2x PyTorch, CIM
//! (either encoding) <= 2x floating point, CIM heap peak <= 2 GiB. The differential CIM step is
//! also timed on the AVX2 and generic partial-sum paths (`CIM_PSUM_PATH` forces one for a whole
//! process). A CPU without AVX2 stops the bench, naming the features it has.
//!
//! `cargo bench -p train --bench train_step`

use cim_core::psums::PsumPath;
use cim_core::{AdcWindow, Encoding};
use flex_kernels::memory::{TrackingAllocator, mib, peak_rss_bytes};
use train::RunConfig;
use train::speed::{StepCase, time_steps};

#[global_allocator]
static ALLOC: TrackingAllocator = TrackingAllocator;

const BATCH: usize = 128;

/// The PyTorch step's median over `steps` steps, and its version; or why there is none.
fn pytorch_step(steps: usize) -> Result<(f64, String, Vec<f64>), String> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../baselines/pytorch/resnet20_step.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .args(["--steps", &steps.to_string(), "--warmup", "2"])
        .output()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("{}: {e}", script.display()))?;
    let times: Vec<f64> = v["step_seconds"].as_array().into_iter().flatten().filter_map(|t| t.as_f64()).collect();
    Ok((v["median"].as_f64().unwrap_or(f64::NAN), v["torch"].as_str().unwrap_or("?").to_string(), times))
}

fn main() {
    flex_kernels::memory::reuse_freed_memory();
    let all_nets = std::env::var("TRAIN_STEP_NETS").is_err();
    let torch_before = if all_nets { pytorch_step(5) } else { Err("TRAIN_STEP_NETS is set".into()) };
    let device = train::setup::training_device(train::ComputeDevice::Cpu).expect("the CPU device");
    // the setting (twos), and the run default (differential: twice the arrays) for scale
    let diff = StepCase::cim("CIM col/col P3 diff.", "columnwise", Encoding::Differential);
    let cases: Vec<StepCase> = [
        StepCase::cim("floating point", "fp", Encoding::Twos),
        StepCase::cim("CIM col/col P3 twos", "columnwise", Encoding::Twos),
        diff.clone(),
        // the ADC of before windows existed, to measure what the learned window costs
        StepCase::new(
            "CIM col/col P3 diff. zero window",
            RunConfig { adc_window: AdcWindow::Zero, ..diff.config.clone() },
        ),
        // the pretraining in the CIM network's activation form (every 3x3 conv's input clamped)
        StepCase::new(
            "floating point, clamp",
            RunConfig { activation: models::Activation::Clamp, ..StepCase::cim("", "fp", Encoding::Twos).config },
        ),
        // what a CPU without AVX-512 VNNI runs: the AVX2 integer path, and the generic f32 one
        StepCase { name: "CIM col/col P3 diff. AVX2".into(), ..diff.clone() }.on_path(PsumPath::Avx2),
        StepCase { name: "CIM col/col P3 diff. generic".into(), ..diff.clone() }.on_path(PsumPath::Generic),
    ]
    .into_iter()
    // TRAIN_STEP_NETS=diff (say) keeps only the matching nets, for a profiler; the ratios need all
    .filter(|c| std::env::var("TRAIN_STEP_NETS").map_or(true, |only| c.name.contains(only.as_str())))
    .collect();
    let nets = time_steps(&cases, BATCH, 2, 5, &device).expect("the step timing");
    let torch_after = if all_nets { pytorch_step(5) } else { Err("TRAIN_STEP_NETS is set".into()) };
    println!("ResNet-20 train step, batch {BATCH}, burn-flex, medians of 5 interleaved steps:");
    let medians: Vec<f64> = nets.iter().map(|n| n.median()).collect();
    for (net, m) in nets.iter().zip(&medians) {
        println!(
            "  {:<22} {:7.3} s/step  {:6.0} img/s  heap peak during a step {:8.1} MiB",
            net.name,
            m,
            BATCH as f64 / m,
            mib(net.heap_peak)
        );
    }
    if !all_nets {
        return;
    }
    match (&torch_before, &torch_after) {
        (Ok((_, version, a)), Ok((_, _, b))) => {
            let mut all: Vec<f64> = a.iter().chain(b).copied().collect();
            all.sort_by(f64::total_cmp);
            let torch = all[all.len() / 2];
            println!(
                "  PyTorch {version} floating point (same step, run before and after): {torch:.3} s/step, {:.0} img/s",
                BATCH as f64 / torch
            );
            println!("  ratio burn floating point / PyTorch: {:.2} (target <= 2)", medians[0] / torch);
        }
        (Err(e), _) | (_, Err(e)) => {
            println!("  PyTorch reference skipped ({e}); on the reference machine it took 0.285 s/step (BURN-NOTES.md)")
        }
    }
    println!("  ratio CIM (twos) / floating point: {:.2} (target <= 2)", medians[1] / medians[0]);
    println!("  ratio CIM (differential) / floating point: {:.2} (target <= 2)", medians[2] / medians[0]);
    println!("  ratio CIM (differential, zero window) / floating point: {:.2}", medians[3] / medians[0]);
    println!("  learned / zero window (differential): {:.3}", medians[2] / medians[3]);
    println!("  floating point, clamp form / ReLU form: {:.2}", medians[4] / medians[0]);
    println!(
        "  CIM (differential) / floating point by partial-sum path: {} {:.2}, avx2 {:.2} (target <= 2), generic {:.2}",
        PsumPath::current().name(),
        medians[2] / medians[0],
        medians[5] / medians[0],
        medians[6] / medians[0]
    );
    let gib = |b: usize| b as f64 / (1u64 << 30) as f64;
    println!(
        "  CIM heap peak: twos {:.2} GiB, differential {:.2} GiB (target <= 2 GiB)",
        gib(nets[1].heap_peak),
        gib(nets[2].heap_peak)
    );
    if let Some(rss) = peak_rss_bytes() {
        println!("  process peak RSS {:.1} MiB", mib(rss));
    }
}
