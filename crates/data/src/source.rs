//! What a run trains on: a named data set (a manifest) or an image-folder tree given by path.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::folder::{Preprocess, index_folder, load_folder};
use crate::imageset::ImageSet;
use crate::manifest::find_manifest;
use crate::pipeline::{Augment, Normalize};
use crate::{DataDir, DataError, Result, Split, load_split};

/// Prefix of a folder data-set spec: `folder:PATH`.
pub const FOLDER_PREFIX: &str = "folder:";

/// Both splits of a data set, decoded, with their input transforms.
#[derive(Debug, Clone)]
pub struct LoadedData {
    /// Data-set name (a manifest name, or `folder:PATH`).
    pub name: String,
    /// Training images.
    pub train: ImageSet,
    /// Test images.
    pub test: ImageSet,
    /// Input normalization.
    pub normalize: Normalize,
    /// Training augmentation.
    pub augment: Option<Augment>,
    /// Seconds spent reading and decoding.
    pub load_seconds: f64,
}

/// Loads `spec`: a built-in name, a manifest `.toml` path, or `folder:PATH` for a
/// `PATH/<class>/*.jpg|png` tree whose last `holdout_per_class` images of every class (in file
/// order) form the test split, normalized with statistics measured on its training images.
pub fn load_dataset(spec: &str, dir: &DataDir, holdout_per_class: usize) -> Result<LoadedData> {
    let start = Instant::now();
    if let Some(path) = spec.strip_prefix(FOLDER_PREFIX) {
        let root = PathBuf::from(path);
        let index = index_folder(&root)?;
        if index.classes.len() < 2 {
            return Err(DataError::Invalid(format!(
                "{}: {} class folder(s) ({}); a classification data set needs at least 2 (root/<class>/*.jpg)",
                root.display(),
                index.classes.len(),
                index.classes.join(", ")
            )));
        }
        let first = &index.items[0].0;
        let probe = image::image_dimensions(first)
            .map_err(|e| DataError::corrupt(first, format!("cannot read image size: {e}")))?;
        let color =
            image::open(first).map_err(|e| DataError::corrupt(first, format!("cannot decode image: {e}")))?.color();
        let channels = if color.has_color() { 3 } else { 1 };
        let prep =
            Preprocess { shape: [channels, probe.1 as usize, probe.0 as usize], resize_short: None, center_crop: None };
        let all = load_folder(&index, &prep)?;
        let (keep, held) = all.holdout_tail(holdout_per_class);
        if keep.is_empty() || held.is_empty() {
            return Err(DataError::Invalid(format!(
                "{}: holding out {holdout_per_class} images per class leaves an empty split",
                root.display()
            )));
        }
        let train = all.select(&keep);
        let test = all.select(&held);
        let normalize = measure_normalization(&train);
        return Ok(LoadedData {
            name: spec.to_string(),
            train,
            test,
            normalize,
            augment: Some(Augment { pad: 4, flip: true }),
            load_seconds: start.elapsed().as_secs_f64(),
        });
    }
    let manifest = find_manifest(spec)?;
    let train = load_split(dir, &manifest, Split::Train)?;
    let test = load_split(dir, &manifest, Split::Test)?;
    Ok(LoadedData {
        name: manifest.name.clone(),
        train,
        test,
        normalize: Normalize::of(&manifest),
        augment: Augment::of(&manifest),
        load_seconds: start.elapsed().as_secs_f64(),
    })
}

/// The class names of `spec` in label order, without decoding any image: a folder tree's class
/// folders (sorted), or a manifest's list.
pub fn class_names(spec: &str) -> Result<Vec<String>> {
    match spec.strip_prefix(FOLDER_PREFIX) {
        Some(path) => Ok(index_folder(Path::new(path))?.classes),
        None => Ok(find_manifest(spec)?.classes),
    }
}

/// How a class is named as a folder of an image tree: its name, with `/` (not allowed in a
/// folder name; Fashion-MNIST's `t-shirt/top`) written `_`.
pub fn class_folder_name(class: &str) -> String {
    class.replace('/', "_")
}

/// The identity of a `folder:` tree as a run's hash keys it: `NAME@` and the first 16 hex digits
/// of its [`content_digest`](crate::folder::content_digest), so that the same images give the
/// same runs wherever the tree lies.
pub fn folder_identity(root: &Path, name: &str) -> Result<String> {
    let index = index_folder(root)?;
    let digest = crate::folder::content_digest(&index)?;
    Ok(format!("{name}@{}", &digest[..16]))
}

/// Fails unless the `folder:` tree `spec` has the content of `identity` (from
/// [`folder_identity`]): a run keyed by its data's content never trains or tests on other images.
pub fn check_folder_identity(spec: &str, identity: &str) -> Result<()> {
    let Some(path) = spec.strip_prefix(FOLDER_PREFIX) else {
        return Err(DataError::Invalid(format!(
            "dataset_id = {identity:?} is for `folder:` data sets, but the dataset is `{spec}`"
        )));
    };
    let (name, _) = identity.split_once('@').ok_or_else(|| {
        DataError::Invalid(format!("dataset_id = {identity:?}: expected NAME@DIGEST (16 hex digits)"))
    })?;
    let actual = folder_identity(Path::new(path), name)?;
    if actual != identity {
        return Err(DataError::Invalid(format!(
            "{path}: the images there have the identity {actual}, the run was keyed by {identity}: it is \
             another tree, or its files were changed, added or removed"
        )));
    }
    Ok(())
}

/// Per-channel mean and standard deviation of a set's pixels in [0, 1].
pub fn measure_normalization(set: &ImageSet) -> Normalize {
    let [c, h, w] = set.shape;
    let plane = h * w;
    let (mut mean, mut std) = (Vec::new(), Vec::new());
    for ch in 0..c {
        let (mut s, mut ss, mut n) = (0f64, 0f64, 0f64);
        for i in 0..set.len() {
            for &p in &set.image(i)[ch * plane..(ch + 1) * plane] {
                let v = p as f64 / 255.0;
                s += v;
                ss += v * v;
                n += 1.0;
            }
        }
        let m = s / n;
        mean.push(m as f32);
        std.push(((ss / n - m * m).max(1e-12)).sqrt() as f32);
    }
    Normalize { mean, std }
}
