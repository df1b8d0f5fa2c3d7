//! The pieces of a run that training, evaluation and inspection share: its data after the
//! configured limits, its model, its optimizer and device, and the check that a model holds only
//! finite values.

use std::sync::Arc;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{ModuleOptimizer, SgdConfig};
use burn::tensor::{Device, Tensor};
use cim_core::ComputeDevice;
use data::{DataDir, ImageSet, LoadedData};
use models::Model;

use crate::TrainError;
use crate::config::{ResolvedRun, RunConfig};

/// The training data of a run: both splits after the configured limits.
pub struct RunData {
    /// Loaded data set.
    pub data: LoadedData,
    /// Training images.
    pub train: Arc<ImageSet>,
    /// Test images.
    pub test: Arc<ImageSet>,
    /// Where `test` lies in the data set's test split, when `limit_test` took a subset.
    pub test_indices: Option<Vec<usize>>,
}

impl RunData {
    /// The test images of the data set that the run's test subset left out (`None` when the
    /// run tests on all of them): images no choice made on the run's own test images has seen.
    pub fn unseen_test(&self) -> Option<ImageSet> {
        let taken: std::collections::HashSet<usize> = self.test_indices.as_ref()?.iter().copied().collect();
        let rest: Vec<usize> = (0..self.data.test.len()).filter(|i| !taken.contains(i)).collect();
        (!rest.is_empty()).then(|| self.data.test.select(&rest))
    }
}

/// Loads the data of a configuration, applying `limit_train` and `limit_test` as seeded,
/// class-balanced subsets.
pub fn load_run_data(config: &RunConfig, dir: &DataDir) -> Result<RunData, TrainError> {
    if let Some(id) = &config.dataset_id {
        data::source::check_folder_identity(&config.dataset, id)?;
    }
    let folder = data::source::FolderOptions {
        holdout: data::source::Holdout::PerClass(config.folder_holdout),
        resolution: config.resolution,
    };
    let data = data::load_dataset(&config.dataset, dir, folder)?;
    let subset =
        |set: &ImageSet, limit: Option<usize>, seed: u64, field: &str| -> Result<Option<Vec<usize>>, TrainError> {
            match limit {
                Some(n) if n > set.len() => Err(TrainError::Config(format!(
                    "{field} = {n} (--{}): the {} split of {} has only {} images",
                    field.replace('_', "-"),
                    if field == "limit_train" { "training" } else { "test" },
                    data.name,
                    set.len()
                ))),
                Some(n) => Ok(Some(set.balanced_subset(n, seed)?)),
                None => Ok(None),
            }
        };
    let select = |set: &ImageSet, indices: &Option<Vec<usize>>| match indices {
        Some(i) => set.select(i),
        None => set.clone(),
    };
    let train = Arc::new(select(&data.train, &subset(&data.train, config.limit_train, config.seed, "limit_train")?));
    let test_indices = subset(&data.test, config.limit_test, config.seed.wrapping_add(1), "limit_test")?;
    let test = Arc::new(select(&data.test, &test_indices));
    Ok(RunData { data, train, test, test_indices })
}

/// The device runs train on, with autodiff.
pub fn training_device(device: ComputeDevice) -> Result<Device, TrainError> {
    Ok(device.open()?.autodiff())
}

/// Builds the model of a resolved run for a data set's images.
pub fn build_model(run: &ResolvedRun, shape: [usize; 3], classes: usize, device: &Device) -> Result<Model, TrainError> {
    let [c, h, w] = shape;
    if h < 8 || w < 8 {
        return Err(TrainError::Config(format!(
            "images of {h}x{w} pixels are too small for {}: at least 8x8",
            run.config.model.name()
        )));
    }
    Model::new(run.config.model, c, classes, &run.conv, run.config.seed, device)
        .map_err(|e| TrainError::Config(e.to_string()))
}

/// SGD with momentum (no dampening, as PyTorch) and weight decay, as the run configures it.
pub fn optimizer(config: &RunConfig) -> ModuleOptimizer {
    SgdConfig::new()
        .with_momentum(Some(MomentumConfig::new().with_momentum(config.momentum).with_dampening(0.0)))
        .with_weight_decay((config.weight_decay > 0.0).then(|| WeightDecayConfig::new(config.weight_decay as f32)))
        .init()
}

/// The first parameter or running statistic of `model` (by module path) holding a value that
/// is not finite, with one such value.
pub fn non_finite_parameter(model: &Model) -> Option<(String, f64)> {
    struct Finder {
        path: Vec<String>,
        found: Option<(String, f64)>,
    }
    impl ModuleVisitor for Finder {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if self.found.is_some() {
                return;
            }
            let values = param.val().into_data().convert::<f32>().try_to_vec::<f32>().unwrap_or_default();
            if let Some(v) = values.iter().find(|v| !v.is_finite()) {
                let path = self.path.iter().filter(|p| !p.is_empty()).cloned().collect::<Vec<_>>().join(".");
                self.found = Some((format!("{path} ({:?})", param.id), *v as f64));
            }
        }
    }
    let mut finder = Finder { path: Vec::new(), found: None };
    model.visit(&mut finder);
    finder.found
}
