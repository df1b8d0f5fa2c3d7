//! `adc-bits`: the fewest ADC bits per CIM layer of a trained run within a tolerance of its
//! accuracy ([`train::adc_bits`]), and the energy that saves ([`report::energy`]).

use std::path::Path;

use anyhow::{Result, bail};

use crate::flags::AdcBitsArgs;

/// What `--out` writes.
#[derive(serde::Serialize)]
struct Written<'a> {
    search: &'a train::AdcBitsSearch,
    energy_model: String,
    trained_nj_per_image: Energy,
    found_nj_per_image: Energy,
}

#[derive(serde::Serialize)]
struct Energy {
    adc: f64,
    total: f64,
}

/// Refuses an `--out` target the result could not be written to, or that holds something else
/// than an earlier `adc-bits` result (which it replaces): before the search, not after it.
fn check_out(out: &Path) -> Result<()> {
    if out.is_dir() {
        bail!("--out {}: a folder; give the path of a file to write", out.display());
    }
    if out.exists() {
        let ours = std::fs::read_to_string(out)
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .is_some_and(|v| v.get("search").is_some() && v.get("energy_model").is_some());
        if !ours {
            bail!(
                "--out {}: the file exists and is not an adc-bits result; it is not replaced (remove it or give \
                 another path)",
                out.display()
            );
        }
    }
    let folder = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !folder.is_dir() {
        bail!("--out {}: its folder {} does not exist", out.display(), folder.display());
    }
    Ok(())
}

impl AdcBitsArgs {
    /// Runs the command.
    pub fn run(self) -> Result<()> {
        // every check before any work: the tolerance, the output file, the energy file, the run
        train::adc_bits::check_within(self.within)?;
        if let Some(out) = &self.out {
            check_out(out)?;
        }
        let energy_path = self.energy.clone().unwrap_or_else(crate::profile::default_energy_model);
        let model = report::EnergyModel::load(&energy_path)?;
        let trained = train::RunDir::new(&self.run)
            .read_config()?
            .ok_or_else(|| anyhow::anyhow!("{}: no config.toml: not a run folder", self.run.display()))?;
        // the images the run trained on: as it recorded them, else as its configuration says
        let summary = train::RunDir::new(&self.run).read_summary()?;
        let shape = summary.and_then(|s| s.input_shape).unwrap_or_else(|| report::energy::input_shape(&trained));
        let before_costs = report::ModelCosts::at(&trained, shape)?;
        let data_dir = self.data_dir.resolve()?;
        let r = train::search_adc_bits(
            &self.run,
            self.within,
            self.order,
            &data_dir,
            self.device.checked()?,
            &crate::progress::observer(self.quiet),
        )?;
        let after_costs = report::ModelCosts::at(&r.config(&trained), shape)?;
        let (before, after) = (model.per_image(&before_costs), model.per_image(&after_costs));

        println!(
            "{} (config {}), {} test images, within {:.2} points ({} images), {}: trained P{} {:.2}%, found {:.2}% ({} configurations evaluated)",
            r.method,
            r.config_hash,
            r.images,
            r.within_points,
            r.tolerance_images,
            r.order.label(),
            trained.psum_bits,
            100.0 * r.trained_accuracy,
            100.0 * r.accuracy,
            r.evaluations
        );
        println!(
            "{:>5} {:>10} {:>14} {:>13} {:>7} {:>5} {:>14} {:>12}",
            "layer", "shape", "conversions", "sensitivity", "trained", "found", "ADC nJ trained", "ADC nJ found"
        );
        let (before_layers, after_layers) = (model.per_layer(&before_costs), model.per_layer(&after_costs));
        for (((row, counts), b), a) in r.layers.iter().zip(&before_costs.layers).zip(before_layers).zip(after_layers) {
            println!(
                "{:>5} {:>10} {:>14} {:>13} {:>7} {:>5} {:>14.2} {:>12.2}",
                row.layer,
                row.shape,
                counts.adc_conversions,
                row.sensitivity_points.map_or("-".into(), |p| format!("{p:.2} pt")),
                row.trained_bits,
                row.bits,
                b.adc * 1e9,
                a.adc * 1e9,
            );
        }
        let saved = |b: f64, a: f64| if b > 0.0 { format!("{:.1}%", 100.0 * (b - a) / b) } else { "-".into() };
        println!(
            "energy per image ({}): ADC {:.1} -> {:.1} nJ (saves {}); periphery total {:.1} -> {:.1} nJ (saves {})",
            energy_path.display(),
            before.adc * 1e9,
            after.adc * 1e9,
            saved(before.adc, after.adc),
            before.total() * 1e9,
            after.total() * 1e9,
            saved(before.total(), after.total())
        );
        println!("the setting found: psum_bits = {}", toml::Value::try_from(&r.psum_bits)?);
        match &r.unseen {
            Some(u) => println!(
                "on the {} test images the search has not seen: trained {:.2}%, found {:.2}% ({:+.2} points; the \
                 search chose on the run's {} test images, so {:.2}% there is the accuracy of the selection)",
                u.images,
                100.0 * u.trained_accuracy,
                100.0 * u.accuracy,
                100.0 * (u.accuracy - u.trained_accuracy),
                r.images,
                100.0 * r.accuracy
            ),
            None => println!(
                "note: the bits are chosen on the run's whole test split, so {:.2}% is the accuracy of the \
                 selection; expect somewhat less on images it has not seen",
                100.0 * r.accuracy
            ),
        }
        if let Some(out) = &self.out {
            let written = Written {
                search: &r,
                energy_model: energy_path.display().to_string(),
                trained_nj_per_image: Energy { adc: before.adc * 1e9, total: before.total() * 1e9 },
                found_nj_per_image: Energy { adc: after.adc * 1e9, total: after.total() * 1e9 },
            };
            train::run::write_json(out, &written)?;
            println!("written to {}", out.display());
        }
        Ok(())
    }
}
