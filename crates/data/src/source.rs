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

/// The test split of a `folder:` tree without one of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holdout {
    /// The last this-many images of every class (in file order).
    PerClass(usize),
    /// Every image (a tree of test images only, for `eval`): no training split.
    All,
}

/// How a `folder:` tree becomes a data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FolderOptions {
    /// The test split of a tree without its own (`train/` and `val/`); a tree with its own test
    /// split takes it whatever this says, unless [`Holdout::All`].
    pub holdout: Holdout,
    /// Each image resized so that its short side has this many pixels, then center-cropped to a
    /// square of that side; `None`: every image must have the size of the first.
    pub resolution: Option<u32>,
}

impl FolderOptions {
    /// The last `n` images of every class held out, at the images' own size.
    pub fn holdout(n: usize) -> Self {
        Self { holdout: Holdout::PerClass(n), resolution: None }
    }
}

/// Loads `spec`: a built-in name, a manifest `.toml` path, or `folder:PATH` for a
/// `PATH/<class>/*.jpg|png` tree (its test split as `folder` says) or a tree of
/// `PATH/train/<class>/...` and `PATH/val/<class>/...` (its own test split), normalized with
/// statistics measured on its training images (on its test images where it has no training
/// split).
pub fn load_dataset(spec: &str, dir: &DataDir, folder: FolderOptions) -> Result<LoadedData> {
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
        let color =
            image::open(first).map_err(|e| DataError::corrupt(first, format!("cannot decode image: {e}")))?.color();
        let channels = if color.has_color() { 3 } else { 1 };
        let prep = match folder.resolution {
            Some(side) => Preprocess {
                shape: [channels, side as usize, side as usize],
                resize_short: Some(side),
                center_crop: Some(side),
            },
            None => {
                let probe = image::image_dimensions(first)
                    .map_err(|e| DataError::corrupt(first, format!("cannot read image size: {e}")))?;
                Preprocess {
                    shape: [channels, probe.1 as usize, probe.0 as usize],
                    resize_short: None,
                    center_crop: None,
                }
            }
        };
        let all = load_folder(&index, &prep)?;
        let (keep, held): (Vec<usize>, Vec<usize>) = match (folder.holdout, index.test_from) {
            (Holdout::All, _) => (Vec::new(), (0..all.len()).collect()),
            (Holdout::PerClass(_), Some(t)) => ((0..t).collect(), (t..all.len()).collect()),
            (Holdout::PerClass(n), None) => all.holdout_tail(n),
        };
        if held.is_empty() || (keep.is_empty() && folder.holdout != Holdout::All) {
            let what = match folder.holdout {
                Holdout::PerClass(n) => format!("holding out {n} images per class"),
                Holdout::All => "holding out every image".into(),
            };
            return Err(DataError::Invalid(format!("{}: {what} leaves an empty split", root.display())));
        }
        let train = all.select(&keep);
        let test = all.select(&held);
        let normalize = measure_normalization(if train.is_empty() { &test } else { &train });
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

/// The shape [C, H, W] in which `spec`'s images reach a model: a manifest's, or a folder tree's
/// first image's (at `resolution` where given, which its images must reach without enlarging:
/// an image smaller than the resolution is refused, named). Reads one image at most.
pub fn input_shape(spec: &str, resolution: Option<u32>) -> Result<[usize; 3]> {
    let Some(path) = spec.strip_prefix(FOLDER_PREFIX) else {
        return Ok(find_manifest(spec)?.image_shape);
    };
    let index = index_folder(Path::new(path))?;
    let first = &index.items[0].0;
    let img = image::open(first).map_err(|e| DataError::corrupt(first, format!("cannot decode image: {e}")))?;
    let channels = if img.color().has_color() { 3 } else { 1 };
    let (w, h) = (img.width(), img.height());
    match resolution {
        Some(side) if w.min(h) < side => Err(DataError::Invalid(format!(
            "{}: {w}x{h} images, smaller than the resolution {side}: they would be enlarged, not resized",
            first.display()
        ))),
        Some(side) => Ok([channels, side as usize, side as usize]),
        None => Ok([channels, h as usize, w as usize]),
    }
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
