//! `cargo xtask variation` and `cargo xtask inspect`: what a trained run does under memory-cell
//! variation, and how its ADCs quantize.

use anyhow::Result;

use crate::flags::{InspectArgs, VariationArgs};

impl VariationArgs {
    /// Runs the command.
    pub fn run(self) -> Result<()> {
        let r = train::variation_study(
            &self.run,
            &self.sigmas,
            self.chips,
            self.chip_seed,
            self.limit_test,
            &self.data_dir.resolve()?,
            self.device.checked()?,
        )?;
        println!(
            "{} (config {}), {} chips per sigma, {} test images; without variation {:.2}%",
            r.method,
            r.config_hash,
            r.chips,
            r.images,
            100.0 * r.noiseless
        );
        println!("{:>7} {:>8} {:>7} {:>8} {:>8}", "sigma", "mean %", "std", "min %", "max %");
        for s in &r.results {
            println!(
                "{:>7.3} {:>8.2} {:>7.2} {:>8.2} {:>8.2}",
                s.sigma,
                100.0 * s.mean,
                100.0 * s.std,
                100.0 * s.min,
                100.0 * s.max
            );
        }
        println!("written to {}", self.run.join("variation.json").display());
        Ok(())
    }
}
impl InspectArgs {
    /// Runs the command.
    pub fn run(self) -> Result<()> {
        let data_dir = self.data_dir.resolve()?;
        let r = train::inspect_run(&self.run, self.batches, &data_dir, self.device.checked()?)?;
        println!("{} (config {}), {} test images", r.method, r.config_hash, r.images);
        println!(
            "{:>5} {:<14} {:>3} {:>5} {:>9} {:>10} {:>9} {:>9} {:>12} {:>10}  digit shares (lowest level first)",
            "layer",
            "shape",
            "pol",
            "slice",
            "SQNR dB",
            "spread dB",
            "clip lo%",
            "clip hi%",
            "code H bits",
            "codes used"
        );
        for row in &r.rows {
            let shares: Vec<String> = row.digit_shares.iter().map(|s| format!("{:.2}", s)).collect();
            println!(
                "{:>5} {:<14} {:>3} {:>5} {:>9} {:>10} {:>9.2} {:>9.2} {:>12.2} {:>10}  [{}] from {}",
                row.layer,
                row.shape,
                row.polarity,
                row.slice,
                row.sqnr_db.map(|x| format!("{x:.2}")).unwrap_or_else(|| "exact".into()),
                row.spread_sqnr_db.map(|x| format!("{x:.2}")).unwrap_or_else(|| "exact".into()),
                100.0 * row.clipped_low,
                100.0 * row.clipped_high,
                row.code_entropy_bits,
                format!("{}/{}", row.codes_used, row.codes),
                shares.join(" "),
                row.digit_low
            );
        }
        let show = |v: Option<f64>| v.map(|x| format!("{x:.2} dB")).unwrap_or_else(|| "—".into());
        println!(
            "median ADC SQNR {}, worst {}; median SQNR of the spread around each column's mean {}",
            show(r.median_sqnr_db()),
            show(r.worst_sqnr_db()),
            show(r.median_spread_sqnr_db())
        );
        println!("written to {} and adc-quality.json", self.run.join("adc-quality.csv").display());
        Ok(())
    }
}
