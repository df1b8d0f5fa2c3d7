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
    /// Stop after this many epochs in this session (the run stays resumable).
    #[arg(long)]
    stop_after: Option<usize>,
    /// Data directory (default: $CIM_DATA_DIR, else ./data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Hide the progress bar.
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    overrides: Overrides,
}

/// Every run setting as an optional flag.
#[derive(Args, Default)]
pub struct Overrides {
    /// synthetic | fashion-mnist | cifar10 | cifar100 | imagenet | a manifest .toml | folder:PATH
    #[arg(long)]
    dataset: Option<String>,
    /// Images per class held out as the test split of a folder: data set.
    #[arg(long)]
    folder_holdout: Option<usize>,
    /// resnet20 | resnet18
    #[arg(long)]
    model: Option<String>,
    /// fp | ideal-adc | layerwise | layercol-2stage | arraywise | columnwise | any registered method
    #[arg(long)]
    method: Option<String>,
    #[arg(long)]
    weight_bits: Option<u32>,
    #[arg(long)]
    act_bits: Option<u32>,
    #[arg(long)]
    psum_bits: Option<u32>,
    #[arg(long)]
    cell_bits: Option<u32>,
    #[arg(long)]
    array_size: Option<usize>,
    /// twos | differential
    #[arg(long)]
    encoding: Option<String>,
    /// ADC reference window: learned (default: offset calibrated, then trained) | zero
    #[arg(long)]
    adc_window: Option<String>,
    /// ADC calibration: mse (default: per-group MSE-optimal window) | lsq (LSQ's step rule)
    #[arg(long)]
    adc_init: Option<String>,
    /// one-stage | two-stage (default: the method's)
    #[arg(long)]
    recipe: Option<String>,
    #[arg(long)]
    epochs: Option<usize>,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long)]
    momentum: Option<f64>,
    #[arg(long)]
    weight_decay: Option<f64>,
    #[arg(long)]
    warmup_epochs: Option<usize>,
    /// Train on a seeded, class-balanced subset of N images.
    #[arg(long)]
    limit_train: Option<usize>,
    /// Test on a seeded, class-balanced subset of N images.
    #[arg(long)]
    limit_test: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    /// Variation-aware training: log-normal cell noise of this sigma in training forwards.
    #[arg(long)]
    train_variation_sigma: Option<f64>,
}

impl Overrides {
    fn apply(self, mut c: RunConfig) -> Result<RunConfig> {
        let parse = |flag: &str, v: &str, e: String| anyhow::anyhow!("--{flag} {v}: {e}");
        if let Some(v) = self.dataset {
            c.dataset = v;
        }
        if let Some(v) = self.folder_holdout {
            c.folder_holdout = v;
        }
        if let Some(v) = self.model {
            c.model = v.parse().map_err(|e| parse("model", &v, e))?;
        }
        if let Some(v) = self.method {
            c.method = v;
        }
        if let Some(v) = self.weight_bits {
            c.weight_bits = v;
        }
        if let Some(v) = self.act_bits {
            c.act_bits = v;
        }
        if let Some(v) = self.psum_bits {
            c.psum_bits = v;
        }
        if let Some(v) = self.cell_bits {
            c.cell_bits = v;
        }
        if let Some(v) = self.array_size {
            c.array_size = v;
        }
        if let Some(v) = self.encoding {
            c.encoding = v.parse().map_err(|e| parse("encoding", &v, e))?;
        }
        let mut adc_given = Vec::new();
        if let Some(v) = self.adc_window {
            c.adc_window = v.parse().map_err(|e| parse("adc-window", &v, e))?;
            adc_given.push(("--adc-window".to_string(), v));
        }
        if let Some(v) = self.adc_init {
            c.adc_init = v.parse().map_err(|e| parse("adc-init", &v, e))?;
            adc_given.push(("--adc-init".to_string(), v));
        }
        c.check_adc_settings_apply(&adc_given)?;
        if let Some(v) = self.recipe {
            c.recipe = Some(v.parse().map_err(|e| parse("recipe", &v, e))?);
        }
        if let Some(v) = self.epochs {
            c.epochs = v;
        }
        if let Some(v) = self.batch_size {
            c.batch_size = v;
        }
        if let Some(v) = self.lr {
            c.lr = v;
        }
        if let Some(v) = self.momentum {
            c.momentum = v;
        }
        if let Some(v) = self.weight_decay {
            c.weight_decay = v;
        }
        if let Some(v) = self.warmup_epochs {
            c.warmup_epochs = v;
        }
        if let Some(v) = self.limit_train {
            c.limit_train = Some(v);
        }
        if let Some(v) = self.limit_test {
            c.limit_test = Some(v);
        }
        if let Some(v) = self.seed {
            c.seed = v;
        }
        if let Some(v) = self.train_variation_sigma {
            c.train_variation_sigma = v;
        }
        Ok(c)
    }
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
    let config = args.overrides.apply(base)?;
    config.resolve()?; // every check before any work
    let opts = TrainOptions {
        data_dir: crate::data_dir(args.data_dir.as_deref(), "--data-dir")?,
        progress: !args.quiet,
        stop_after: args.stop_after,
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
    /// Images per class held out as the test split of a `--dataset folder:PATH` (default: the
    /// run's own folder_holdout).
    #[arg(long)]
    folder_holdout: Option<usize>,
    /// Data directory (default: $CIM_DATA_DIR, else ./data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

pub fn eval(args: EvalArgs) -> Result<()> {
    let data_dir = crate::data_dir(args.data_dir.as_deref(), "--data-dir")?;
    let r = train::evaluate_run(&args.run, args.dataset.as_deref(), args.folder_holdout, &data_dir)?;
    println!("accuracy {:.2}% (loss {:.4}) on {} images", 100.0 * r.accuracy, r.loss, r.images);
    Ok(())
}
