//! Timing of whole ResNet training steps (forward, loss, backward, SGD update) on one fixed
//! random batch, shared by the `train_step` bench (CPU, against PyTorch) and `cargo xtask
//! speed` (GPU against CPU, run by `scripts/gpu-check.sh`). Steps of all cases run interleaved, round by round, so that the
//! machine's drift hits every case alike.

use std::time::Instant;

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use cim_core::Encoding;
use cim_core::psums::{PsumPath, with_psum_path};
use flex_kernels::memory::{live_bytes, peak_bytes, reset_peak};

use crate::TrainError;
use crate::config::RunConfig;
use crate::hooks::calibrate_adcs_on;
use crate::setup::{build_model, optimizer};

/// One network to time.
#[derive(Debug, Clone)]
pub struct StepCase {
    /// How the timing is printed.
    pub name: String,
    /// The run it is built from (model, method, setting, optimizer).
    pub config: RunConfig,
    /// The partial-sum path its steps take (the fastest this CPU runs where `None`).
    pub psum_path: Option<PsumPath>,
}

impl StepCase {
    /// A case named `name` that times the steps of `config` on the fastest partial-sum path.
    pub fn new(name: impl Into<String>, config: RunConfig) -> Self {
        Self { name: name.into(), config, psum_path: None }
    }

    /// The same case on partial-sum path `path`.
    pub fn on_path(self, path: PsumPath) -> Self {
        Self { psum_path: Some(path), ..self }
    }

    /// The default CIM setting (W4 A4, cell bits 2, P 3, N 128) of `method` with `encoding`, on the
    /// run's default model (ResNet-20).
    pub fn cim(name: impl Into<String>, method: &str, encoding: Encoding) -> Self {
        let config = RunConfig {
            method: method.into(),
            weight_bits: 4,
            act_bits: 4,
            cell_bits: 2,
            psum_bits: 3.into(),
            array_size: 128,
            encoding,
            ..RunConfig::default()
        };
        Self::new(name, config)
    }
}

/// The measured steps of one case.
#[derive(Debug, Clone)]
pub struct StepTiming {
    /// The case's name.
    pub name: String,
    /// Seconds of every measured step, in order.
    pub seconds: Vec<f64>,
    /// Largest growth of the heap during a step (0 unless the process installs
    /// [`flex_kernels::memory::TrackingAllocator`]); device memory is not counted.
    pub heap_peak: usize,
}

impl StepTiming {
    /// The median step time in seconds.
    pub fn median(&self) -> f64 {
        let mut s = self.seconds.clone();
        s.sort_by(f64::total_cmp);
        s[s.len() / 2]
    }
}

/// Builds every case's model for 32 x 32 RGB images of 10 classes on `device` (an autodiff
/// device; CIM layers get their ADC steps from the batch first, as in training), then runs
/// `warmup + measured` rounds of one step of each case and keeps the last `measured` times.
/// Each step ends with a device sync, so a GPU's queued work is inside its time.
pub fn time_steps(
    cases: &[StepCase],
    batch: usize,
    warmup: usize,
    measured: usize,
    device: &Device,
) -> Result<Vec<StepTiming>, TrainError> {
    if batch == 0 || measured == 0 {
        return Err(TrainError::Config(format!(
            "step timing: batch {batch} and {measured} measured steps; expected at least 1 of each"
        )));
    }
    if let Some(case) = cases.iter().find(|c| c.psum_path.is_some_and(|p| !p.supported())) {
        let path = case.psum_path.expect("checked");
        return Err(TrainError::Config(format!(
            "step timing, {}: this CPU cannot run the {} partial-sum path (it has: {})",
            case.name,
            path.name(),
            cim_core::psums::cpu_features()
        )));
    }
    let x = Tensor::<4>::random([batch, 3, 32, 32], Distribution::Normal(0.0, 1.0), device);
    let labels: Vec<i64> = (0..batch as i64).map(|i| i % 10).collect();
    let y = Tensor::<1, Int>::from_data(TensorData::new(labels, [batch]), device);
    let loss_fn = CrossEntropyLossConfig::new().init(device);
    let mut nets = Vec::new();
    for case in cases {
        let run = case.config.resolve()?;
        let mut model = build_model(&run, [3, 32, 32], 10, device)?;
        calibrate_adcs_on(&mut model, std::iter::once(x.clone()));
        let timing = StepTiming { name: case.name.clone(), seconds: Vec::new(), heap_peak: 0 };
        nets.push((Some(model), optimizer(&case.config), timing));
    }
    let sync = |what: &str| device.sync().map_err(|e| TrainError::Config(format!("step timing, {what}: {e:?}")));
    sync("setup")?;
    for round in 0..warmup + measured {
        for ((model, optim, timing), case) in nets.iter_mut().zip(cases) {
            reset_peak();
            let base = live_bytes();
            let start = Instant::now();
            let m = model.take().expect("a model between steps");
            let step = || {
                let loss = loss_fn.forward(m.forward(x.clone()), y.clone());
                let grads = GradientsParams::from_grads(loss.backward(), &m);
                optim.step(0.01, m, grads)
            };
            let path = case.psum_path.unwrap_or_else(PsumPath::current);
            *model = Some(with_psum_path(path, step).map_err(TrainError::Config)?);
            sync(&timing.name)?;
            let seconds = start.elapsed().as_secs_f64();
            if round >= warmup {
                timing.seconds.push(seconds);
                timing.heap_peak = timing.heap_peak.max(peak_bytes().saturating_sub(base));
            }
        }
    }
    Ok(nets.into_iter().map(|(_, _, t)| t).collect())
}
