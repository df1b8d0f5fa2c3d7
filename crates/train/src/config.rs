//! The run configuration: a TOML file or command-line flags, validated before any work.

use cim_core::{AdcInit, AdcWindow, Encoding, Granularity, PsumQuantizer};
use method_api::{Adc, Method, Recipe};
use models::{Activation, Arch, CimSettings, ConvKind, PsumBits};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::TrainError;

/// Everything that defines a training run. Defaults are the short-run CIM setting of the paper
/// (W4 A4, 2-bit cells, 3-bit ADCs, 128 x 128 arrays) with the authors' differential weight
/// encoding, and ADCs with learned windows calibrated for minimum squared error. (With the
/// zero-anchored LSQ-initialised ADC of before, `twos` stayed at chance at P = 3 because every
/// slice carries the large offset of the two's complement code: Fashion-MNIST, 2 epochs of 4000
/// images, 10.3%; with learned windows the same run reaches 47.8%.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// The data set: a built-in name (`synthetic`, `fashion-mnist`, `cifar10`, `cifar100`,
    /// `imagenet`), a manifest `.toml`, or `folder:PATH` for an image-folder tree.
    #[cfg_attr(feature = "cli", arg(long, required = false, value_name = "NAME|FILE.toml|folder:PATH"))]
    pub dataset: String,
    /// The content identity (`NAME@DIGEST`, [`data::source::folder_identity`]) of a `folder:`
    /// data set: where it is given, the run's hash keys the data by it instead of by the
    /// folder's path, and the folder is checked against it before training or testing. Not a
    /// flag: `train` and `reproduce` work it out from the folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "cli", arg(skip))]
    pub dataset_id: Option<String>,
    /// Images per class held out (the last ones of each class) as the test split of a
    /// `folder:` data set.
    #[cfg_attr(feature = "cli", arg(long, required = false))]
    pub folder_holdout: usize,
    /// Input resolution of a `folder:` data set: every image resized so that its short side has
    /// this many pixels, then center-cropped to a square of that side (e.g. 64 to train
    /// ResNet-18 on ImageNet images on 2 cores). Without it every image keeps its size, which must
    /// be the same for all. Part of a run's identity only when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "cli", arg(long, value_name = "PIXELS"))]
    pub resolution: Option<u32>,
    /// The network: `resnet20` (pre-activation, CIFAR-sized) or `resnet18` (ImageNet-sized).
    #[cfg_attr(feature = "cli", arg(long, required = false, value_name = "resnet20|resnet18"))]
    pub model: Arch,
    /// The input of the floating-point 3x3 convs (methods without arrays, such as `fp` and every
    /// pretraining): `relu` or `clamp`. Absent in stored configs written before it existed
    /// (they trained with `relu`), and `relu` is not written, so such runs keep their hash.
    #[serde(default, skip_serializing_if = "is_relu")]
    #[cfg_attr(
        feature = "cli",
        arg(
            long,
            required = false,
            value_name = "relu|clamp",
            help = "Input of the floating-point 3x3 convs (fp and pretrainings): relu (the ReLU output as it is) or clamp \
                (clamped to [0, 1], the CIM network with its quantizers off). Methods on arrays always clamp, as \
                their activation codes require, and take no value. A run that starts from another (--init-from) must \
                name the same value as that run"
        )
    )]
    pub activation: Activation,
    /// The quantization method, by its registered name (`fp`, `ideal-adc`, `layerwise`,
    /// `layercol-2stage`, `arraywise`, `columnwise`, `saxena-roy-ternary`, ...).
    #[cfg_attr(feature = "cli", arg(long, required = false, value_name = "NAME"))]
    pub method: String,
    /// Weight bits B_w: each weight is quantized to this many bits before it is sliced into
    /// cells.
    #[cfg_attr(feature = "cli", arg(long, required = false))]
    pub weight_bits: u32,
    /// Activation bits A: the inputs of every array are codes of this many bits.
    #[cfg_attr(feature = "cli", arg(long, required = false))]
    pub act_bits: u32,
    /// ADC bits P: the resolution at which every column's partial sum is read out (methods
    /// with the built-in ADC), one value for every CIM layer or one per CIM layer in forward
    /// order (3,4,2,...).
    #[cfg_attr(feature = "cli", arg(long, required = false, value_name = "P|P,P,..."))]
    pub psum_bits: PsumBits,
    /// Bits per memory cell b_c: a weight occupies B_w / b_c cells (b_c must divide B_w).
    #[cfg_attr(feature = "cli", arg(long, required = false))]
    pub cell_bits: u32,
    /// Array size N: each array has N word lines (rows) and N bit lines (columns).
    #[cfg_attr(feature = "cli", arg(long, required = false))]
    pub array_size: usize,
    /// How a signed weight is stored: `differential` (w+ and w- on separate arrays, as in the
    /// authors' code) or `twos` (two's complement, the top slice signed).
    #[cfg_attr(feature = "cli", arg(long, required = false, value_name = "twos|differential"))]
    pub encoding: Encoding,
    /// The ADC's reference window (methods with ADCs only). A stored run config without it was
    /// written before windows existed and trained with `zero`: absent means `zero`, and `zero`
    /// is not written, so such runs keep their hash.
    #[serde(default = "window_before_calibration", skip_serializing_if = "is_window_before_calibration")]
    #[cfg_attr(
        feature = "cli",
        arg(
            long,
            required = false,
            value_name = "learned|zero",
            help = "The ADC's reference window: learned (offset calibrated, then trained with the step, LSQ+) or zero (a zero-anchored reference)"
        )
    )]
    pub adc_window: AdcWindow,
    /// How ADC windows are calibrated (methods with ADCs only); absent means `lsq`, as for
    /// `adc_window`.
    #[serde(default = "init_before_calibration", skip_serializing_if = "is_init_before_calibration")]
    #[cfg_attr(
        feature = "cli",
        arg(
            long,
            required = false,
            value_name = "mse|lsq",
            help = "How ADC windows are calibrated on the first training batches: mse (per group, the least squared error) or lsq (LSQ's step rule)"
        )
    )]
    pub adc_init: AdcInit,
    /// The training recipe, overriding the method's own: `one-stage` (ADCs on from the first
    /// step) or `two-stage` (ideal ADC first, then the ADCs calibrated and switched on).
    #[cfg_attr(feature = "cli", arg(long, required = false, value_name = "one-stage|two-stage"))]
    pub recipe: Option<Recipe>,
    /// Training epochs in all (both stages of a two-stage recipe).
    #[cfg_attr(feature = "cli", arg(long, required = false))]
    pub epochs: usize,
    /// Images per training step.
    #[cfg_attr(feature = "cli", arg(long, required = false))]
    pub batch_size: usize,
    /// Peak learning rate of SGD (after the warm-up; cosine decay to 0 over the epochs).
    #[cfg_attr(feature = "cli", arg(long, required = false))]
    pub lr: f64,
    /// SGD momentum (no dampening, as in PyTorch).
    #[cfg_attr(feature = "cli", arg(long, required = false))]
    pub momentum: f64,
    /// L2 weight decay added to every parameter's gradient.
    #[cfg_attr(feature = "cli", arg(long, required = false))]
    pub weight_decay: f64,
    /// Epochs of linear warm-up before the cosine decay.
    #[cfg_attr(feature = "cli", arg(long, required = false))]
    pub warmup_epochs: usize,
    /// Two-stage: share of the epochs spent fine-tuning with partial-sum quantization on.
    #[cfg_attr(feature = "cli", arg(long, required = false))]
    pub finetune_fraction: f64,
    /// Two-stage: learning rate of the fine-tuning stage relative to `lr`.
    #[cfg_attr(feature = "cli", arg(long, required = false))]
    pub finetune_lr_scale: f64,
    /// Train on a seeded, class-balanced subset of this many images (all when absent).
    #[cfg_attr(feature = "cli", arg(long, required = false))]
    pub limit_train: Option<usize>,
    /// Test on a seeded, class-balanced subset of this many images (all when absent).
    #[cfg_attr(feature = "cli", arg(long, required = false))]
    pub limit_test: Option<usize>,
    /// Seed of the initialization, data order, augmentation, subsets and calibration batches.
    #[cfg_attr(feature = "cli", arg(long, required = false))]
    pub seed: u64,
    /// Variation-aware training: log-normal cell noise of this sigma in every training
    /// forward pass (0 trains without noise).
    #[cfg_attr(feature = "cli", arg(long, required = false))]
    pub train_variation_sigma: f64,
    /// The config hash of the finished run whose final weights this run starts from (a
    /// floating-point pretraining): part of the run's identity. Not a flag: `train
    /// --init-from RUN_DIR` sets it from the folder, a study from its benchmark's `pretrain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "cli", arg(skip))]
    pub init_from: Option<String>,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            dataset: "synthetic".into(),
            dataset_id: None,
            folder_holdout: 500,
            resolution: None,
            model: Arch::Resnet20,
            activation: Activation::Relu,
            method: "columnwise".into(),
            weight_bits: 4,
            act_bits: 4,
            psum_bits: PsumBits::All(3),
            cell_bits: 2,
            array_size: 128,
            encoding: Encoding::Differential,
            adc_window: AdcWindow::Learned,
            adc_init: AdcInit::Mse,
            recipe: None,
            epochs: 2,
            batch_size: 128,
            lr: 0.05,
            momentum: 0.9,
            weight_decay: 5e-4,
            warmup_epochs: 0,
            finetune_fraction: 0.25,
            finetune_lr_scale: 0.1,
            limit_train: None,
            limit_test: None,
            seed: 0,
            train_variation_sigma: 0.0,
            init_from: None,
        }
    }
}

/// What of the quantization setting a method uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uses {
    /// Simulated arrays: bits, cells, N, encoding (false: floating point).
    pub crossbar: bool,
    /// Quantized partial sums (false: ideal ADC or floating point).
    pub adc: bool,
    /// The method's own ADC, which fixes its levels, window and calibration (`None`: the
    /// built-in ADC, or none).
    pub own_adc: Option<&'static dyn PsumQuantizer>,
}

impl Uses {
    /// What the registered method `name` uses; `None` if it is not registered.
    pub fn of_method(name: &str) -> Option<Self> {
        let scheme = methods::find(name).ok()?.scheme();
        Some(Self {
            crossbar: scheme.is_some(),
            adc: scheme.is_some_and(|s| s.psum.uses_adc()),
            own_adc: scheme.and_then(|s| s.psum.own()),
        })
    }

    /// Whether the setting's ADC fields (P, window, calibration) matter: the built-in ADC.
    pub fn adc_setting(&self) -> bool {
        self.adc && self.own_adc.is_none()
    }

    /// What any method may use (for a method that is not registered).
    fn everything() -> Self {
        Self { crossbar: true, adc: true, own_adc: None }
    }
}

/// A validated configuration with its method looked up.
#[derive(Clone)]
pub struct ResolvedRun {
    /// The configuration.
    pub config: RunConfig,
    /// The method.
    pub method: &'static Method,
    /// The recipe in effect.
    pub recipe: Recipe,
    /// What the block convs are.
    pub conv: ConvKind,
    /// Epochs of stage 1 (all of them for a one-stage recipe).
    pub stage1_epochs: usize,
}

fn invalid(field: &str, value: impl std::fmt::Display, expected: &str) -> TrainError {
    TrainError::Config(format!("{field} = {value}: expected {expected}"))
}

/// The ADC of runs written before ADC windows and calibration existed (and what an absent field
/// of a stored run config means).
fn window_before_calibration() -> AdcWindow {
    AdcWindow::Zero
}

fn is_window_before_calibration(w: &AdcWindow) -> bool {
    *w == window_before_calibration()
}

fn is_relu(a: &Activation) -> bool {
    *a == Activation::Relu
}

fn init_before_calibration() -> AdcInit {
    AdcInit::Lsq
}

fn is_init_before_calibration(i: &AdcInit) -> bool {
    *i == init_before_calibration()
}

/// The run-config fields that only mean something for a method with the built-in ADC.
pub const ADC_FIELDS: [&str; 2] = ["adc_window", "adc_init"];

impl RunConfig {
    /// The default of every setting as the command line shows it, by field name; a setting
    /// without a value by default (`limit_train`, `recipe`, ...) says what its absence means.
    pub fn defaults_shown() -> Vec<(String, String)> {
        let defaults = toml::Table::try_from(RunConfig::default()).expect("a run config is a table");
        let mut shown: Vec<(String, String)> = defaults
            .iter()
            .map(|(field, value)| (field.clone(), value.as_str().map_or_else(|| value.to_string(), str::to_owned)))
            .collect();
        for (field, absent) in [
            ("limit_train", "all images"),
            ("limit_test", "all images"),
            ("recipe", "the method's own"),
            ("activation", Activation::Relu.name()),
        ] {
            shown.push((field.to_owned(), absent.to_owned()));
        }
        shown
    }

    /// Parses a user's TOML run configuration (`origin` names it in errors): fields it leaves
    /// out take the defaults of [`RunConfig::default`], and ADC settings are rejected for a
    /// method without ADCs.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, TrainError> {
        let given: toml::Table = toml::from_str(text).map_err(|e| TrainError::Config(format!("{origin}: {e}")))?;
        let mut merged = toml::Table::try_from(RunConfig::default()).expect("a run config is a table");
        merged.extend(given.clone());
        let config: RunConfig = merged.try_into().map_err(|e| TrainError::Config(format!("{origin}: {e}")))?;
        let adc_given: Vec<(String, String)> = ADC_FIELDS
            .iter()
            .filter_map(|&f| given.get(f).map(|v| (format!("{origin}: {f}"), v.to_string())))
            .collect();
        config.check_adc_settings_apply(&adc_given)?;
        if let Some(value) = given.get("activation") {
            config.check_activation_applies(&format!("{origin}: activation = {value}"))?;
        }
        Ok(config)
    }

    /// The configuration with every flag of `matches` given on the command line (the flags
    /// [`clap::Args`] derives from this struct, `--weight-bits` for `weight_bits`) put over its
    /// values; ADC settings are rejected for a method without the built-in ADC.
    #[cfg(feature = "cli")]
    pub fn with_flags(mut self, matches: &clap::ArgMatches) -> Result<Self, TrainError> {
        use clap::FromArgMatches;
        self.update_from_arg_matches(matches).map_err(|e| TrainError::Config(e.to_string()))?;
        let adc_given: Vec<(String, String)> = ADC_FIELDS
            .iter()
            .filter_map(|&f| {
                let raw = matches.get_raw(f)?.next()?;
                Some((format!("--{}", f.replace('_', "-")), raw.to_string_lossy().into_owned()))
            })
            .collect();
        self.check_adc_settings_apply(&adc_given)?;
        if let Some(raw) = matches.get_raw("activation").and_then(|mut v| v.next()) {
            self.check_activation_applies(&format!("--activation {}", raw.to_string_lossy()))?;
        }
        Ok(self)
    }

    /// Rejects an activation given explicitly (`given` names where, e.g. `--activation clamp`)
    /// for a method whose 3x3 convs run on arrays: their input is always clamped to [0, 1].
    pub fn check_activation_applies(&self, given: &str) -> Result<(), TrainError> {
        if self.uses_crossbar() {
            return Err(TrainError::Config(format!(
                "{given}: method {} runs its 3x3 convs on arrays, whose inputs are always clamped to [0, 1]; \
                 activation applies only to methods in floating point (e.g. fp)",
                self.method
            )));
        }
        Ok(())
    }

    /// Parses the configuration a run folder stores (written by [`Self::to_toml`], possibly by
    /// an older version: fields it lacks take the values runs had before they existed).
    pub fn from_stored_toml(text: &str, origin: &str) -> Result<Self, TrainError> {
        toml::from_str(text).map_err(|e| TrainError::Config(format!("{origin}: {e}")))
    }

    /// What of the quantization setting the run's method uses; `None` for a method that is not
    /// registered (`resolve` reports it). The one place that decides whether, say, P matters.
    pub fn uses(&self) -> Option<Uses> {
        Uses::of_method(&self.method)
    }

    /// Whether the method quantizes partial sums (has ADCs). Unknown methods: false (`resolve`
    /// reports them).
    pub fn uses_adc(&self) -> bool {
        self.uses().is_some_and(|u| u.adc)
    }

    /// Whether the setting's P, ADC window and calibration apply: the method has the built-in
    /// ADC (not an ideal one, not one of its own). Unknown methods: false.
    pub fn uses_adc_setting(&self) -> bool {
        self.uses().is_some_and(|u| u.adc_setting())
    }

    /// Whether the method runs on simulated arrays (everything but floating point). Unknown
    /// methods: false.
    pub fn uses_crossbar(&self) -> bool {
        self.uses().is_some_and(|u| u.crossbar)
    }

    /// The quantization setting the method uses, as one label: `P3 N128 c2 W4A4 differential`,
    /// then what differs from the defaults (`adc zero/lsq`, a recipe, `vat0.1`); no P for an
    /// ideal ADC, the quantizer's name for a method's own ADC (`ternary N128 ...`), `—` for
    /// floating point. A method that is not registered shows every field.
    pub fn setting_label(&self) -> String {
        let uses = self.uses().unwrap_or(Uses::everything());
        if !uses.crossbar {
            return "—".into();
        }
        let adc = match (uses.adc, uses.own_adc) {
            (true, Some(q)) => format!("{} ", q.name()),
            (true, None) => format!("P{} ", self.psum_bits),
            (false, _) => String::new(),
        };
        let mut s = format!(
            "{adc}N{} c{} W{}A{} {}",
            self.array_size, self.cell_bits, self.weight_bits, self.act_bits, self.encoding
        );
        if uses.adc_setting() && !self.adc_is_default() {
            s += &format!(" adc {}", self.adc_label());
        }
        if let Some(r) = self.recipe {
            s += &format!(" {}", r.name());
        }
        if self.train_variation_sigma > 0.0 {
            s += &format!(" vat{}", self.train_variation_sigma);
        }
        s
    }

    /// Resets the ADC settings to the values that are not written (those of runs before ADC
    /// windows existed): what a method without the built-in ADC carries, so that its runs keep
    /// one hash however windows are swept.
    pub fn clear_adc_settings(&mut self) {
        self.adc_window = window_before_calibration();
        self.adc_init = init_before_calibration();
    }

    /// The ADC's window and init as one label (`learned/mse`), for methods with ADCs.
    pub fn adc_label(&self) -> String {
        format!("{}/{}", self.adc_window, self.adc_init)
    }

    /// Whether the ADC settings are today's defaults.
    pub fn adc_is_default(&self) -> bool {
        let d = RunConfig::default();
        (self.adc_window, self.adc_init) == (d.adc_window, d.adc_init)
    }

    /// Rejects ADC settings given explicitly - `(where, value)` pairs such as
    /// `("--adc-window", "zero")` - for a method without the built-in ADC.
    pub fn check_adc_settings_apply(&self, given: &[(String, String)]) -> Result<(), TrainError> {
        let (Some((flag, value)), Some(uses)) = (given.first(), self.uses()) else { return Ok(()) };
        if uses.adc_setting() {
            return Ok(());
        }
        let why = match uses.own_adc {
            Some(q) => {
                format!("method {} has its own ADC (`{}`, which sets its levels and window)", self.method, q.name())
            }
            None => format!("method {} has no ADC (an ideal ADC or floating point)", self.method),
        };
        Err(TrainError::Config(format!(
            "{flag} {value}: {why}; ADC settings apply only to methods with the built-in ADC (e.g. layerwise, \
             arraywise, columnwise)"
        )))
    }

    /// The configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a run config serializes")
    }

    /// A short hash of everything that determines the results: the key of a run in a study. A
    /// `folder:` data set with a [`dataset_id`](Self::dataset_id) is keyed by that identity, not
    /// by where the folder lies, so a checkout elsewhere finds the same runs.
    pub fn hash(&self) -> String {
        let mut keyed = self.clone();
        if let Some(id) = keyed.dataset_id.take() {
            keyed.dataset = format!("{}{id}", data::source::FOLDER_PREFIX);
        }
        let digest = Sha256::digest(keyed.to_toml().as_bytes());
        hex::encode(&digest[..6])
    }

    /// What identifies the run's data: the content identity of a `folder:` tree where known,
    /// else the data-set spec.
    pub fn data_key(&self) -> &str {
        self.dataset_id.as_deref().unwrap_or(&self.dataset)
    }

    /// Checks every field and resolves the method; nothing is loaded or built yet.
    pub fn resolve(&self) -> Result<ResolvedRun, TrainError> {
        let method = methods::find(&self.method).map_err(TrainError::Config)?;
        self.check_fields()?;
        if method.scheme().is_some() && self.activation != Activation::Relu {
            self.check_activation_applies(&format!("activation = {}", self.activation))?;
        }
        let recipe = self.recipe.unwrap_or(method.recipe());
        let conv = self.conv_kind(method)?;
        let stage1_epochs = self.stage1_epochs(method, recipe)?;
        if !(self.finetune_lr_scale > 0.0 && self.finetune_lr_scale.is_finite()) {
            return Err(invalid("finetune_lr_scale", self.finetune_lr_scale, "a positive number"));
        }
        Ok(ResolvedRun { config: self.clone(), method, recipe, conv, stage1_epochs })
    }

    /// The checks of single fields (and of fields that only make sense together).
    fn check_fields(&self) -> Result<(), TrainError> {
        if let Some(side) = self.resolution {
            if !self.dataset.starts_with(data::source::FOLDER_PREFIX) {
                return Err(invalid(
                    "resolution",
                    side,
                    &format!(
                        "no value: {} brings its own preprocessing (resolution is for folder: trees)",
                        self.dataset
                    ),
                ));
            }
            if !(16..=1024).contains(&side) {
                return Err(invalid("resolution", side, "16 to 1024 pixels"));
            }
        }
        if self.epochs == 0 {
            return Err(invalid("epochs", self.epochs, "at least 1"));
        }
        if self.batch_size == 0 {
            return Err(invalid("batch_size", self.batch_size, "at least 1"));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(invalid("lr", self.lr, "a positive number"));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(invalid("momentum", self.momentum, "a number in [0, 1)"));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(invalid("weight_decay", self.weight_decay, "a non-negative number"));
        }
        if self.warmup_epochs >= self.epochs {
            return Err(invalid("warmup_epochs", self.warmup_epochs, "fewer than epochs"));
        }
        if !(self.train_variation_sigma.is_finite() && self.train_variation_sigma >= 0.0) {
            return Err(invalid("train_variation_sigma", self.train_variation_sigma, "a non-negative number"));
        }
        if let Some(id) = &self.dataset_id
            && !self.dataset.starts_with(data::source::FOLDER_PREFIX)
        {
            return Err(invalid("dataset_id", id, "no dataset_id: it identifies `folder:` data sets only"));
        }
        if let Some(hash) = &self.init_from
            && (hash.len() != 12 || !hash.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(invalid("init_from", hash, "the 12-hex-digit config hash of a finished run"));
        }
        for (field, limit) in [("limit_train", self.limit_train), ("limit_test", self.limit_test)] {
            if limit == Some(0) {
                return Err(invalid(field, 0, "at least 1 (or no limit)"));
            }
        }
        Ok(())
    }

    /// The 3x3 convolutions `method` makes of the settings: floating point, or CIM layers with
    /// the method's granularities and quantizers (validated against the model).
    fn conv_kind(&self, method: &Method) -> Result<ConvKind, TrainError> {
        Ok(match method.scheme() {
            None => ConvKind::Float(self.activation),
            Some(scheme) => {
                let (psum_bits, psum_granularity) = match scheme.psum {
                    Adc::Uniform(g) => (Some(self.psum_bits.clone()), g),
                    Adc::Ideal | Adc::Own(_) => (None, Granularity::Layer),
                };
                let settings = CimSettings {
                    array_size: self.array_size,
                    weight_bits: self.weight_bits,
                    cell_bits: self.cell_bits,
                    act_bits: self.act_bits,
                    psum_bits,
                    encoding: self.encoding,
                    weight_granularity: scheme.weight_granularity(),
                    psum_granularity,
                    adc_window: self.adc_window,
                    adc_init: self.adc_init,
                    own: scheme.own(),
                };
                settings
                    .validate(self.model)
                    .map_err(|e| TrainError::Config(format!("method {}: {e}", method.name())))?;
                ConvKind::Cim(settings)
            }
        })
    }

    /// The epochs of the first stage: all of them for a one-stage recipe; before the fine-tuning
    /// share for a two-stage one.
    fn stage1_epochs(&self, method: &Method, recipe: Recipe) -> Result<usize, TrainError> {
        Ok(match recipe {
            Recipe::OneStage => self.epochs,
            Recipe::TwoStage => {
                if !self.uses_adc() {
                    return Err(TrainError::Config(format!(
                        "recipe = two-stage: method {} has no partial-sum quantizer to switch on",
                        method.name()
                    )));
                }
                if !(self.finetune_fraction > 0.0 && self.finetune_fraction < 1.0) {
                    return Err(invalid("finetune_fraction", self.finetune_fraction, "a number in (0, 1)"));
                }
                if self.epochs < 2 {
                    return Err(invalid("epochs", self.epochs, "at least 2 for a two-stage recipe"));
                }
                let finetune =
                    ((self.epochs as f64 * self.finetune_fraction).round() as usize).clamp(1, self.epochs - 1);
                self.epochs - finetune
            }
        })
    }
}

impl ResolvedRun {
    /// Learning rate at `step` of `epoch` (0-based), `steps` per epoch: linear warm-up, then a
    /// cosine decay to 0 over the stage; the fine-tuning stage restarts at `lr * finetune_lr_scale`.
    pub fn learning_rate(&self, epoch: usize, step: usize, steps: usize) -> f64 {
        let c = &self.config;
        let (base, start, len, warmup) = if epoch < self.stage1_epochs {
            (c.lr, 0, self.stage1_epochs, c.warmup_epochs)
        } else {
            (c.lr * c.finetune_lr_scale, self.stage1_epochs, c.epochs - self.stage1_epochs, 0)
        };
        let t = ((epoch - start) * steps + step) as f64;
        let warm = (warmup * steps) as f64;
        if t < warm {
            return base * (t + 1.0) / warm;
        }
        let total = (len * steps) as f64 - warm;
        base * 0.5 * (1.0 + (std::f64::consts::PI * (t - warm) / total.max(1.0)).cos())
    }

    /// Whether partial sums are quantized during `epoch`.
    pub fn adc_enabled(&self, epoch: usize) -> bool {
        self.has_adc() && epoch >= self.adc_start()
    }

    /// Whether `epoch` begins with initializing the ADC steps from data.
    pub fn calibrates_at(&self, epoch: usize) -> bool {
        self.has_adc() && epoch == self.adc_start()
    }

    fn has_adc(&self) -> bool {
        self.config.uses_adc()
    }

    /// First epoch with partial-sum quantization.
    fn adc_start(&self) -> usize {
        match self.recipe {
            Recipe::OneStage => 0,
            Recipe::TwoStage => self.stage1_epochs,
        }
    }

    /// 1 or 2.
    pub fn stage(&self, epoch: usize) -> usize {
        if epoch < self.stage1_epochs { 1 } else { 2 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_resolve_and_round_trip() {
        let c = RunConfig::default();
        let r = c.resolve().unwrap();
        assert_eq!(r.stage1_epochs, 2);
        assert!(r.calibrates_at(0) && r.adc_enabled(0));
        assert_eq!(RunConfig::from_toml(&c.to_toml(), "x").unwrap(), c);
        assert_eq!(RunConfig::from_stored_toml(&c.to_toml(), "x").unwrap(), c);
        assert_eq!(c.hash(), RunConfig::default().hash());
        assert_eq!((c.adc_window, c.adc_init), (AdcWindow::Learned, AdcInit::Mse));
        assert_ne!(c.hash(), RunConfig { adc_init: AdcInit::Lsq, ..RunConfig::default() }.hash());
        assert_ne!(c.hash(), RunConfig { seed: 1, ..RunConfig::default() }.hash());
    }

    #[test]
    fn two_stage_splits_the_epochs() {
        let c = RunConfig { method: "layercol-2stage".into(), epochs: 8, ..RunConfig::default() };
        let r = c.resolve().unwrap();
        assert_eq!(r.stage1_epochs, 6);
        assert!(!r.adc_enabled(5) && r.adc_enabled(6));
        assert!(!r.calibrates_at(0) && r.calibrates_at(6));
        assert!((r.learning_rate(6, 0, 10) - 0.005).abs() < 1e-12);
        assert!((r.learning_rate(0, 0, 10) - 0.05).abs() < 1e-12);
        assert!(r.learning_rate(5, 9, 10) < 0.001);
    }

    #[test]
    fn bad_configs_name_the_field() {
        let check = |c: RunConfig, needle: &str| {
            let e = c.resolve().err().unwrap().to_string();
            assert!(e.contains(needle), "{e}");
        };
        check(RunConfig { method: "nope".into(), ..Default::default() }, "unknown method `nope`");
        check(RunConfig { epochs: 0, ..Default::default() }, "epochs = 0");
        check(RunConfig { lr: -1.0, ..Default::default() }, "lr = -1");
        check(RunConfig { cell_bits: 3, ..Default::default() }, "cell_bits = 3");
        check(RunConfig { array_size: 4, ..Default::default() }, "array_size = 4");
        check(RunConfig { method: "fp".into(), recipe: Some(Recipe::TwoStage), ..Default::default() }, "two-stage");
        check(RunConfig { limit_train: Some(0), ..Default::default() }, "limit_train = 0");
        let e = RunConfig::from_toml("epochs = \"many\"", "run.toml").unwrap_err().to_string();
        assert!(e.contains("run.toml"), "{e}");
        let e = RunConfig::from_toml("epoch = 3", "run.toml").unwrap_err().to_string();
        assert!(e.contains("epoch"), "{e}");
    }

    /// A run folder written before ADC windows existed: its config has no ADC fields, it was
    /// trained with a zero window and LSQ's init, and it keeps its hash (the name of its folder).
    #[test]
    fn stored_configs_without_adc_fields_keep_their_meaning_and_hash() {
        let old = RunConfig { adc_window: AdcWindow::Zero, adc_init: AdcInit::Lsq, ..RunConfig::default() };
        let text = old.to_toml();
        assert!(!text.contains("adc_"), "{text}");
        let stored = RunConfig::from_stored_toml(&text, "config.toml").unwrap();
        assert_eq!(stored, old);
        assert_eq!(stored.hash(), old.hash());
        // a user's file that leaves them out gets today's defaults instead
        let user = RunConfig::from_toml(&text, "run.toml").unwrap();
        assert_eq!((user.adc_window, user.adc_init), (AdcWindow::Learned, AdcInit::Mse));
        // a committed real-small run (layerwise, P3, seed 0), written before windows existed
        let committed = "dataset = \"fashion-mnist\"\nfolder_holdout = 500\nmodel = \"resnet20\"\n\
            method = \"layerwise\"\nweight_bits = 4\nact_bits = 4\npsum_bits = 3\ncell_bits = 2\n\
            array_size = 128\nencoding = \"differential\"\nepochs = 3\nbatch_size = 64\nlr = 0.05\n\
            momentum = 0.9\nweight_decay = 0.0005\nwarmup_epochs = 0\nfinetune_fraction = 0.25\n\
            finetune_lr_scale = 0.1\nlimit_train = 5000\nlimit_test = 2000\nseed = 0\n\
            train_variation_sigma = 0.0\n";
        let c = RunConfig::from_stored_toml(committed, "config.toml").unwrap();
        assert_eq!(c.to_toml(), committed);
        assert_eq!((c.adc_window, c.adc_init), (AdcWindow::Zero, AdcInit::Lsq));
    }

    /// A method with its own ADC: quantized partial sums, but the setting's P and window do not
    /// apply; its label names the converter, and its layers get the plug-in.
    #[test]
    fn a_method_with_its_own_adc() {
        let c = RunConfig { method: "saxena-roy-ternary".into(), ..RunConfig::default() };
        let uses = c.uses().unwrap();
        assert!(uses.crossbar && uses.adc && !uses.adc_setting());
        assert_eq!(uses.own_adc.map(|q| q.name()), Some("ternary"));
        assert_eq!(c.setting_label(), "ternary N128 c2 W4A4 differential");
        let r = c.resolve().unwrap();
        let ConvKind::Cim(s) = &r.conv else { panic!("CIM layers expected") };
        assert_eq!((s.psum_bits.clone(), s.own.psum.map(|q| q.name())), (None, Some("ternary")));
        assert!(r.calibrates_at(0) && r.adc_enabled(0));
        let e = RunConfig::from_toml("method = \"saxena-roy-binary\"\nadc_window = \"zero\"", "run.toml").unwrap_err();
        assert!(e.to_string().contains("has its own ADC (`binary`"), "{e}");
    }

    /// ADC bits per CIM layer: from a file or a flag, a hash of their own (a single value keeps
    /// the hash it always had), a list of the wrong length refused naming both numbers.
    #[test]
    fn adc_bits_per_layer() {
        let list = (0..18).map(|i| if i < 6 { "4" } else { "3" }).collect::<Vec<_>>().join(", ");
        let c = RunConfig::from_toml(&format!("psum_bits = [{list}]"), "run.toml").unwrap();
        assert_eq!(c.psum_bits.of_layer(0), 4);
        assert_eq!(c.psum_bits.of_layer(17), 3);
        let r = c.resolve().unwrap();
        let ConvKind::Cim(s) = &r.conv else { panic!("CIM layers expected") };
        assert_eq!(s.psum_bits.as_ref(), Some(&c.psum_bits));
        assert_ne!(c.hash(), RunConfig::default().hash());
        assert_eq!(RunConfig::from_stored_toml(&c.to_toml(), "config.toml").unwrap(), c);
        assert!(c.setting_label().starts_with("P[4,4,4,4,4,4,3,"), "{}", c.setting_label());
        // the default's stored form is the one of every run before lists existed
        assert!(RunConfig::default().to_toml().contains("\npsum_bits = 3\n"));
        let e = RunConfig::from_toml("psum_bits = [3, 4]", "run.toml").unwrap().resolve().err().unwrap().to_string();
        assert!(e.contains("a list of 2 values") && e.contains("resnet20 has 18 CIM layers"), "{e}");
        let e = RunConfig::from_toml("psum_bits = \"x\"", "run.toml").unwrap_err().to_string();
        assert!(e.contains("run.toml"), "{e}");
    }

    #[test]
    fn adc_settings_on_a_method_without_adc_are_rejected() {
        let e = RunConfig::from_toml("method = \"fp\"\nadc_window = \"zero\"", "run.toml").unwrap_err().to_string();
        assert!(e.contains("run.toml: adc_window \"zero\"") && e.contains("method fp has no ADC"), "{e}");
        let e = RunConfig::from_toml("method = \"ideal-adc\"\nadc_init = \"lsq\"", "r.toml").unwrap_err().to_string();
        assert!(e.contains("adc_init"), "{e}");
        assert!(RunConfig::from_toml("method = \"fp\"", "run.toml").is_ok());
        let e = RunConfig::from_toml("adc_window = \"offset\"", "run.toml").unwrap_err().to_string();
        assert!(e.contains("run.toml") && e.contains("offset"), "{e}");
        let c = RunConfig { method: "columnwise".into(), ..RunConfig::default() };
        assert!(c.check_adc_settings_apply(&[("--adc-window".into(), "zero".into())]).is_ok());
    }

    /// The input of the float convs: `relu` by default and not written (every stored config
    /// keeps its hash), `clamp` a run of its own; refused for a method on arrays and for values
    /// it cannot take, naming the key and the values.
    #[test]
    fn activation_setting() {
        let relu = RunConfig { method: "fp".into(), ..RunConfig::default() };
        assert!(!relu.to_toml().contains("activation"), "{}", relu.to_toml());
        let clamp = RunConfig::from_toml("method = \"fp\"\nactivation = \"clamp\"", "run.toml").unwrap();
        assert_eq!(clamp.activation, Activation::Clamp);
        assert!(clamp.to_toml().contains("activation = \"clamp\""));
        assert_ne!(clamp.hash(), relu.hash());
        assert_eq!(RunConfig::from_stored_toml(&clamp.to_toml(), "config.toml").unwrap(), clamp);
        assert_eq!(clamp.resolve().unwrap().conv, ConvKind::Float(Activation::Clamp));
        assert_eq!(relu.resolve().unwrap().conv, ConvKind::Float(Activation::Relu));
        // a stored config written before the setting existed reads as relu, with its hash
        let stored = RunConfig::from_stored_toml(&relu.to_toml(), "config.toml").unwrap();
        assert_eq!((stored.activation, stored.hash()), (Activation::Relu, relu.hash()));
        // the default is shown with the other settings' defaults
        assert!(RunConfig::defaults_shown().contains(&("activation".to_string(), "relu".to_string())));
        // an unknown value names the key and the values it takes
        let e = RunConfig::from_toml("method = \"fp\"\nactivation = \"gelu\"", "run.toml").unwrap_err().to_string();
        assert!(e.contains("run.toml") && e.contains("activation = \"gelu\": expected \"relu\" or \"clamp\""), "{e}");
        // a method on arrays always clamps: an explicit value is refused
        let e = RunConfig::from_toml("method = \"columnwise\"\nactivation = \"clamp\"", "run.toml").unwrap_err();
        assert!(e.to_string().contains("run.toml: activation = \"clamp\": method columnwise runs"), "{e}");
        let e = RunConfig { activation: Activation::Clamp, ..RunConfig::default() }.resolve().err().unwrap();
        assert!(e.to_string().contains("always clamped to [0, 1]"), "{e}");
    }
    /// The input resolution of a folder tree: part of the identity only when given, checked
    /// against the data set kind and its range.
    #[test]
    fn resolution_setting() {
        let tree = RunConfig { dataset: "folder:/data/imagenette".into(), ..RunConfig::default() };
        assert!(!tree.to_toml().contains("resolution"));
        let small = RunConfig { resolution: Some(64), ..tree.clone() };
        assert!(small.to_toml().contains("resolution = 64"));
        assert_ne!(small.hash(), tree.hash());
        assert_eq!(RunConfig::from_stored_toml(&small.to_toml(), "config.toml").unwrap(), small);
        small.resolve().unwrap();
        let e = RunConfig { resolution: Some(8), ..tree.clone() }.resolve().err().unwrap().to_string();
        assert!(e.contains("resolution = 8: expected 16 to 1024 pixels"), "{e}");
        let e = RunConfig { resolution: Some(64), ..RunConfig::default() }.resolve().err().unwrap().to_string();
        assert!(e.contains("resolution = 64") && e.contains("synthetic brings its own preprocessing"), "{e}");
    }
}
