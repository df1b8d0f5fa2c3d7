//! Energy per inference image of a CIM model's digital periphery, from the counts of each CIM
//! layer ([`models::LayerCountsPerImage`]) and an energy model given as data
//! (`baselines/energy/default.toml`, each constant with its source).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::ReportError;

/// The constants of the energy model, in joules (see `baselines/energy/default.toml`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnergyModel {
    /// The technology node the constants belong to.
    pub node: String,
    /// Walden figure of merit of the ADC: joules per conversion step.
    pub adc_fom: f64,
    /// What every conversion costs whatever its resolution (comparator, logic).
    pub adc_floor: f64,
    /// One dequantization multiply.
    pub dequant_multiply: f64,
    /// One accumulating add of an ADC output.
    pub accumulate_add: f64,
    /// One add of a learned window's constant.
    pub window_add: f64,
    /// The file it was read from.
    #[serde(skip)]
    pub source: PathBuf,
}

/// Energy per image, by part, in joules.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct EnergyPerImage {
    /// ADC conversions.
    pub adc: f64,
    /// Dequantization multiplies.
    pub dequant: f64,
    /// Accumulating adds.
    pub accumulate: f64,
    /// Window adds.
    pub window: f64,
}

impl EnergyPerImage {
    /// All parts together.
    pub fn total(&self) -> f64 {
        self.adc + self.dequant + self.accumulate + self.window
    }
}

impl EnergyModel {
    /// Reads and checks an energy file: every key present, none unknown, every constant finite
    /// and not negative; errors name the file and the key.
    pub fn load(path: &Path) -> Result<Self, ReportError> {
        let text = std::fs::read_to_string(path).map_err(|e| ReportError::io(path, e))?;
        let mut model: EnergyModel =
            toml::from_str(&text).map_err(|e| ReportError::Invalid(format!("{}: {}", path.display(), e.message())))?;
        for (key, value) in model.constants() {
            if !value.is_finite() || value < 0.0 {
                return Err(ReportError::Invalid(format!(
                    "{}: {key} = {value}: expected a finite energy in joules, 0 or more",
                    path.display()
                )));
            }
        }
        if model.constants().iter().all(|(_, value)| *value == 0.0) {
            return Err(ReportError::Invalid(format!(
                "{}: every constant ({}) is 0: such a model gives every method an energy of 0; give the \
                 costs in joules (see baselines/energy/default.toml)",
                path.display(),
                model.constants().map(|(key, _)| key).join(", ")
            )));
        }
        model.source = path.to_path_buf();
        Ok(model)
    }

    fn constants(&self) -> [(&'static str, f64); 5] {
        [
            ("adc_fom", self.adc_fom),
            ("adc_floor", self.adc_floor),
            ("dequant_multiply", self.dequant_multiply),
            ("accumulate_add", self.accumulate_add),
            ("window_add", self.window_add),
        ]
    }

    /// One conversion of an ADC of `bits` bits (fractional for a ternary converter: log2 3).
    pub fn conversion(&self, bits: f64) -> f64 {
        self.adc_floor + self.adc_fom * bits.exp2()
    }

    /// The energy of one image in one CIM layer, its ADCs of `adc_bits` bits (`None`: an ideal
    /// ADC, which is no converter and costs nothing here). Every ADC output is accumulated once.
    pub fn layer(&self, layer: &models::LayerCountsPerImage, adc_bits: Option<f64>) -> EnergyPerImage {
        let conversions = layer.adc_conversions as f64;
        EnergyPerImage {
            adc: adc_bits.map_or(0.0, |bits| conversions * self.conversion(bits)),
            dequant: layer.dequant_multiplies as f64 * self.dequant_multiply,
            accumulate: conversions * self.accumulate_add,
            window: layer.window_adds as f64 * self.window_add,
        }
    }

    /// The energy of one image in each CIM layer of a model, in forward order.
    pub fn per_layer(&self, costs: &ModelCosts) -> Vec<EnergyPerImage> {
        costs.layers.iter().zip(&costs.adc_bits).map(|(l, bits)| self.layer(l, *bits)).collect()
    }

    /// The energy of one image of a whole model: the sum over its CIM layers.
    pub fn per_image(&self, costs: &ModelCosts) -> EnergyPerImage {
        self.per_layer(costs).into_iter().fold(EnergyPerImage::default(), |sum, e| EnergyPerImage {
            adc: sum.adc + e.adc,
            dequant: sum.dequant + e.dequant,
            accumulate: sum.accumulate + e.accumulate,
            window: sum.window + e.window,
        })
    }
}

/// What a run's model costs in hardware: the counts of each CIM layer and its ADCs' resolution.
#[derive(Debug, Clone)]
pub struct ModelCosts {
    /// The counts summed over the CIM layers.
    pub counts: models::ModelCounts,
    /// Each CIM layer's counts, in forward order (none for floating point).
    pub layers: Vec<models::LayerCountsPerImage>,
    /// `—` (floating point), `ideal`, the method's stated resolution, or the setting's P.
    pub adc_label: String,
    /// Each layer's ADC bits (fractional for a ternary converter); `None` for an ideal ADC.
    pub adc_bits: Vec<Option<f64>>,
    /// Each layer's lossless ADC resolution ([`cim_core::CimConvConfig::lossless_adc_bits`]):
    /// what an ideal ADC stands for in hardware.
    pub lossless_adc_bits: Vec<u32>,
}

impl ModelCosts {
    /// The costs of the model of run configuration `c`, for the image size its configuration
    /// gives ([`input_shape`]).
    pub fn of(c: &train::RunConfig) -> Result<Self, ReportError> {
        Self::at(c, input_shape(c))
    }

    /// The costs of the model of run configuration `c` on images of `shape` [C, H, W] (a finished
    /// run's own, where its summary records it).
    pub fn at(c: &train::RunConfig, shape: [usize; 3]) -> Result<Self, ReportError> {
        let run = c.resolve().map_err(|e| ReportError::Invalid(e.to_string()))?;
        let invalid = |e: cim_core::CimConfigError| ReportError::Invalid(format!("{}: {e}", c.method));
        let (layers, lossless_adc_bits) = match &run.conv {
            models::ConvKind::Cim(settings) => (
                settings.layer_counts(c.model, shape[1]).map_err(invalid)?,
                settings
                    .layers(c.model, shape[1])
                    .iter()
                    .map(|(_, layer)| layer.lossless_adc_bits())
                    .collect::<Result<_, _>>()
                    .map_err(invalid)?,
            ),
            models::ConvKind::Float(_) => (Vec::new(), Vec::new()),
        };
        let counts = models::ModelCounts::of_layers(&layers);
        let uses = c.uses().ok_or_else(|| ReportError::Invalid(format!("unknown method `{}`", c.method)))?;
        let (adc_label, own_bits) = match (uses.crossbar, uses.adc, uses.own_adc) {
            (false, _, _) => ("—".to_string(), None),
            (true, false, _) => ("ideal".to_string(), None),
            (true, true, Some(q)) => {
                // the literature's resolution counts levels: "1.5 bits" is a ternary converter,
                // 3 levels, log2(3) bits of conversion energy
                let stated: f64 = q.resolution().parse().map_err(|_| {
                    ReportError::Invalid(format!("{}: ADC resolution `{}` is not a number", c.method, q.resolution()))
                })?;
                (q.resolution().to_string(), Some(stated.exp2().round().log2()))
            }
            (true, true, None) => (c.psum_bits.to_string(), None),
        };
        let adc_bits = layers.iter().map(|l| own_bits.or(l.psum_bits.map(f64::from))).collect();
        Ok(Self { counts, layers, adc_label, adc_bits, lossless_adc_bits })
    }

    /// The same model with lossless ADCs in place of ideal ones (a model with converters stays
    /// as it is): the energy an ideal ADC would cost if it were built.
    pub fn with_lossless_adcs(&self) -> Self {
        let adc_bits = self
            .adc_bits
            .iter()
            .zip(&self.lossless_adc_bits)
            .map(|(bits, lossless)| bits.or(Some(f64::from(*lossless))))
            .collect();
        Self { adc_bits, ..self.clone() }
    }

    /// The scale registers the model stores: every weight step, every ADC step and every
    /// learned window constant (summed over the CIM layers).
    pub fn scale_registers(&self) -> usize {
        let sum = &self.counts.per_layer_sum;
        sum.weight_scales + sum.psum_scales + sum.window_constants
    }

    /// Whether the model has ADCs that are converters (not ideal): what ADC energy is counted for.
    pub fn has_converters(&self) -> bool {
        self.adc_bits.iter().any(Option::is_some)
    }
}

/// The image shape [C, H, W] a run configuration's model sees, as far as the configuration says:
/// its data set's manifest's; for a `folder:` tree (which the report does not read: it may be
/// gone by then) `resolution` x `resolution` RGB where the run resizes, else 32 x 32 RGB, the
/// CIFAR-10 JPEG tree the profiles use. A finished run records its own shape in its summary,
/// which [`crate::results::CellResult::input_shape`] prefers.
pub fn input_shape(c: &train::RunConfig) -> [usize; 3] {
    match (data::find_manifest(&c.dataset), c.resolution) {
        (Ok(m), _) => m.image_shape,
        (Err(_), Some(side)) => [3, side as usize, side as usize],
        (Err(_), None) => [3, 32, 32],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> EnergyModel {
        EnergyModel {
            node: "45 nm".into(),
            adc_fom: 10e-15,
            adc_floor: 20e-15,
            dequant_multiply: 1.1e-12,
            accumulate_add: 0.4e-12,
            window_add: 0.4e-12,
            source: PathBuf::new(),
        }
    }

    /// One layer by hand: a 16 -> 16 channel 3x3 conv on 32x32 outputs in 128 x 128 arrays,
    /// W4 c2 differential: 2 slices x 2 polarities x 1 row tile x 16 columns = 64 ADC reads per
    /// output pixel, 1024 pixels: 65,536 conversions. Column-wise, one multiply and one window
    /// add per conversion. At P = 3: 65,536 x (20 fJ + 10 fJ x 8) = 6.5536 nJ of conversions,
    /// 65,536 x 1.1 pJ = 72.0896 nJ of multiplies, 65,536 x 0.4 pJ = 26.2144 nJ of accumulation
    /// and as much of window adds: 131.072 nJ in all.
    #[test]
    fn the_energy_of_a_hand_computed_layer() {
        let layer = models::LayerCountsPerImage {
            conv: models::BlockConv { in_channels: 16, out_channels: 16, stride: 1, out_pixels: 1024 },
            psum_bits: Some(3),
            counts: Default::default(),
            adc_conversions: 65_536,
            dequant_multiplies: 65_536,
            window_adds: 65_536,
        };
        let e = model().layer(&layer, Some(3.0));
        let close = |a: f64, b: f64| assert!((a - b).abs() <= 1e-9 * b.abs(), "{a} vs {b}");
        close(e.adc, 6.5536e-9);
        close(e.dequant, 72.0896e-9);
        close(e.accumulate, 26.2144e-9);
        close(e.window, 26.2144e-9);
        close(e.total(), 131.072e-9);
        // an ideal ADC converts nothing
        assert_eq!(model().layer(&layer, None).adc, 0.0);
        // a ternary converter: log2(3) bits, three levels
        close(model().conversion(3f64.log2()), 20e-15 + 30e-15);
    }

    #[test]
    fn bad_energy_files_are_named_by_key() {
        let tmp = tempfile::tempdir().unwrap();
        let good =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../baselines/energy/default.toml"))
                .unwrap();
        let path = tmp.path().join("e.toml");
        let fails = |text: &str, expected: &str| {
            std::fs::write(&path, text).unwrap();
            let err = EnergyModel::load(&path).unwrap_err().to_string();
            assert!(err.contains(expected) && err.contains("e.toml"), "{err}");
        };
        fails(&good.replace("window_add = 0.4e-12", ""), "missing field `window_add`");
        fails(&good.replace("adc_fom = 10e-15", "adc_fom = -1e-15"), "adc_fom = -0.000000000000001");
        fails(&good.replace("adc_fom = 10e-15", "adc_fom = nan"), "adc_fom = NaN");
        fails(&(good.clone() + "sram_read = 1e-12\n"), "unknown field `sram_read`");
        let zero = ["adc_fom = 10e-15", "adc_floor", "dequant_multiply", "accumulate_add", "window_add"];
        let all_zero = good
            .lines()
            .map(|l| match zero.iter().any(|k| l.starts_with(k.split(' ').next().unwrap())) {
                true => format!("{} = 0.0", l.split(' ').next().unwrap()),
                false => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        fails(&all_zero, "every constant (adc_fom, adc_floor, dequant_multiply, accumulate_add, window_add) is 0");
        let model = EnergyModel::load(&{
            std::fs::write(&path, &good).unwrap();
            path.clone()
        })
        .unwrap();
        assert_eq!(model.node, "45 nm");
    }

    /// Every energy model the project ships loads, and the fixed-point one differs from the
    /// default only in the digital arithmetic.
    #[test]
    fn the_shipped_energy_models_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../baselines/energy");
        let default = EnergyModel::load(&dir.join("default.toml")).unwrap();
        let fixed = EnergyModel::load(&dir.join("fixed-point.toml")).unwrap();
        assert_eq!((fixed.adc_fom, fixed.adc_floor), (default.adc_fom, default.adc_floor));
        assert!(fixed.dequant_multiply < default.dequant_multiply && fixed.accumulate_add < default.accumulate_add);
    }

    /// A `folder:` tree is counted at the run's `resolution` (ResNet-18 on Imagenette at 64 px
    /// converts 4x as often per image as at 32 px), and at 32 x 32 without one; a manifest's
    /// shape is its own.
    #[test]
    fn a_folder_tree_is_counted_at_the_runs_resolution() {
        let config = |resolution: Option<u32>| train::RunConfig {
            dataset: "folder:/nowhere".into(),
            model: models::Arch::Resnet18,
            resolution,
            method: "columnwise".into(),
            ..Default::default()
        };
        assert_eq!(input_shape(&config(Some(64))), [3, 64, 64]);
        assert_eq!(input_shape(&config(None)), [3, 32, 32]);
        let fmnist = train::RunConfig { dataset: "fashion-mnist".into(), ..Default::default() };
        assert_eq!(input_shape(&fmnist), [1, 28, 28]);
        let conversions = |c: &train::RunConfig| ModelCosts::of(c).unwrap().counts.adc_conversions_per_image as f64;
        let (at_32, at_64) = (conversions(&config(Some(32))), conversions(&config(Some(64))));
        assert_eq!(at_64 / at_32, 4.0);
        let recorded = ModelCosts::at(&config(None), [3, 64, 64]).unwrap().counts.adc_conversions_per_image as f64;
        assert_eq!(recorded, at_64, "a recorded shape counts as the resolution it came from");
    }
}
