//! `cargo xtask train` and `cargo xtask eval`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use train::{RunConfig, TrainOptions};

use crate::flags::{EvalArgs, TrainArgs};

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

impl TrainArgs {
    /// Runs the command.
    pub fn run(self) -> Result<()> {
        let base = match (&self.config, self.resume) {
            (Some(path), _) => read_config(path)?,
            (None, true) => match train::RunDir::new(&self.out).read_config()? {
                Some(stored) => stored,
                None => bail!("--resume: {} has no config.toml (nothing to resume)", self.out.display()),
            },
            (None, false) => RunConfig::default(),
        };
        let mut config = base.with_flags(&self.flags.0)?;
        if let Some(from) = &self.init_from {
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
            data_dir: self.data_dir.resolve()?,
            on_event: crate::progress::observer(self.quiet),
            stop_after: self.stop_after,
            device: self.device.checked()?,
            init_from: self.init_from.clone(),
        };
        match train::train(&config, &self.out, &opts)? {
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
                self.out.join("summary.json").display()
            ),
            None => println!(
                "stopped after --stop-after epochs; continue with: cargo xtask train --resume --out {}",
                self.out.display()
            ),
        }
        Ok(())
    }
}

impl EvalArgs {
    /// Runs the command.
    pub fn run(self) -> Result<()> {
        let data_dir = self.data_dir.resolve()?;
        let device = self.device.checked()?;
        let r = train::evaluate_run(&self.run, self.dataset.as_deref(), self.folder_holdout, &data_dir, device)?;
        println!("accuracy {:.2}% (loss {:.4}) on {} images", 100.0 * r.accuracy, r.loss, r.images);
        // a run still training is scored by its newest checkpoint: said, so that it is not taken
        // for the run's result
        let run = train::RunDir::new(&self.run);
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
}
