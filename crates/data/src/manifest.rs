//! Data-set manifests: what a data set is, where its files come from, how to check them.
//! The built-in manifests are the files of `datasets/` at the workspace root, embedded here so
//! that the binaries work from any directory.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{DataError, Result};

/// One data set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Short name (`cifar10`, `fashion-mnist`, ...).
    pub name: String,
    /// One line for listings.
    pub description: String,
    /// Class names in label order (empty: read from the data, as for image folders).
    pub classes: Vec<String>,
    /// [channels, height, width] of a model input.
    pub image_shape: [usize; 3],
    /// Training-time augmentation.
    #[serde(default)]
    pub augment: AugmentKind,
    /// Nothing to download: the user supplies the files.
    #[serde(default)]
    pub local_only: bool,
    /// A local folder whose copies `data import` installs (e.g. a Debian package's).
    #[serde(default)]
    pub import_from: Option<String>,
    /// Images per split.
    pub splits: Splits,
    /// Per-channel normalization of [0, 1] pixels.
    pub normalization: Normalization,
    /// Files to fetch and verify.
    #[serde(default)]
    pub files: Vec<FileSpec>,
    /// How the files hold the images.
    pub layout: Layout,
}

/// Augmentation of training images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum AugmentKind {
    /// None.
    #[default]
    None,
    /// Random crop after 4-pixel zero padding, random horizontal flip (CIFAR recipe).
    CropFlip,
}

/// Images per split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Splits {
    /// Training images.
    pub train: usize,
    /// Test images.
    pub test: usize,
}

/// Per-channel mean and standard deviation of pixels in [0, 1].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalization {
    /// Means.
    pub mean: Vec<f32>,
    /// Standard deviations.
    pub std: Vec<f32>,
}

/// What a digest covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DigestOf {
    /// The file as stored.
    #[default]
    File,
    /// The gunzipped content (copies with different gzip headers are the same data).
    Decompressed,
}

/// One file of a data set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// File name in the data set's folder.
    pub name: String,
    /// Official URL.
    pub url: String,
    /// Size in bytes of the official file.
    pub size: u64,
    /// SHA-256, lowercase hex.
    pub sha256: String,
    /// What the digest covers.
    #[serde(default)]
    pub digest_of: DigestOf,
    /// Size of the decompressed content, for `digest_of = "decompressed"`.
    #[serde(default)]
    pub decompressed_size: Option<u64>,
}

/// Where the images are inside the files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "format", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Layout {
    /// CIFAR binary records: label byte(s) then 3072 pixel bytes (R, G, B planes).
    CifarBinary {
        /// The archive holding the batch files (read directly, or from its extracted folder).
        archive: String,
        /// Label bytes per record (1 for CIFAR-10, 2 for CIFAR-100).
        label_bytes: usize,
        /// Which label byte is the class.
        label_index: usize,
        /// Training batch files inside the archive.
        train: Vec<String>,
        /// Test batch files.
        test: Vec<String>,
    },
    /// idx files (gzipped or raw).
    Idx {
        /// Training images.
        train_images: String,
        /// Training labels.
        train_labels: String,
        /// Test images.
        test_images: String,
        /// Test labels.
        test_labels: String,
    },
    /// `root/<class>/*.{jpg,png}` trees.
    ImageFolder {
        /// Training tree, relative to the data set's folder.
        train: String,
        /// Test tree.
        test: String,
        /// Short side after resizing (before the crop).
        #[serde(default)]
        resize: Option<u32>,
        /// Center crop size.
        #[serde(default)]
        crop: Option<u32>,
    },
    /// Generated in code.
    Synthetic {
        /// Generator seed.
        seed: u64,
        /// Fraction of labels replaced by a random other class.
        label_noise: f64,
    },
}

const BUILTIN: &[(&str, &str)] = &[
    ("cifar10", include_str!("../../../datasets/cifar10.toml")),
    ("cifar100", include_str!("../../../datasets/cifar100.toml")),
    ("fashion-mnist", include_str!("../../../datasets/fashion-mnist.toml")),
    ("imagenet", include_str!("../../../datasets/imagenet.toml")),
    ("synthetic", include_str!("../../../datasets/synthetic.toml")),
];

impl Manifest {
    /// Parses and checks a manifest; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let m: Manifest = toml::from_str(text).map_err(|e| DataError::Invalid(format!("{origin}: {e}")))?;
        m.check().map_err(|e| DataError::Invalid(format!("{origin}: {e}")))?;
        Ok(m)
    }

    /// Reads a manifest file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
        Self::parse(&text, &path.display().to_string())
    }

    fn check(&self) -> std::result::Result<(), String> {
        let channels = self.image_shape[0];
        if self.normalization.mean.len() != channels || self.normalization.std.len() != channels {
            return Err(format!(
                "normalization has {} means and {} stds, expected {channels} (one per channel)",
                self.normalization.mean.len(),
                self.normalization.std.len()
            ));
        }
        if let Some(s) = self.normalization.std.iter().find(|s| **s <= 0.0) {
            return Err(format!("normalization std {s} must be positive"));
        }
        for f in &self.files {
            if f.sha256.len() != 64 || !f.sha256.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()) {
                return Err(format!("file {}: sha256 `{}` is not 64 lowercase hex digits", f.name, f.sha256));
            }
            if f.digest_of == DigestOf::Decompressed && f.decompressed_size.is_none() {
                return Err(format!("file {}: digest_of = \"decompressed\" needs decompressed_size", f.name));
            }
        }
        if let Layout::CifarBinary { label_bytes, label_index, .. } = &self.layout
            && label_index >= label_bytes
        {
            return Err(format!("label_index {label_index} must be below label_bytes {label_bytes}"));
        }
        Ok(())
    }

    /// The file spec called `name`.
    pub fn file(&self, name: &str) -> Option<&FileSpec> {
        self.files.iter().find(|f| f.name == name)
    }
}

/// The built-in manifests, in a fixed order.
pub fn builtin() -> Vec<Manifest> {
    BUILTIN
        .iter()
        .map(|(name, text)| Manifest::parse(text, &format!("datasets/{name}.toml")).expect("built-in manifest"))
        .collect()
}

/// A built-in manifest by name, or a manifest file given by path.
pub fn find_manifest(name: &str) -> Result<Manifest> {
    if name.ends_with(".toml") {
        return Manifest::load(Path::new(name));
    }
    builtin().into_iter().find(|m| m.name == name).ok_or_else(|| {
        let known: Vec<String> = builtin().into_iter().map(|m| m.name).collect();
        DataError::Invalid(format!(
            "unknown data set `{name}`: expected one of {} or a manifest .toml path",
            known.join(", ")
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_manifests_parse() {
        let all = builtin();
        assert_eq!(all.len(), 5);
        let c10 = find_manifest("cifar10").unwrap();
        assert_eq!(c10.files[0].size, 170052171);
        assert_eq!(c10.classes.len(), 10);
        assert_eq!(find_manifest("cifar100").unwrap().classes.len(), 100);
        assert!(find_manifest("mnist").unwrap_err().to_string().contains("fashion-mnist"));
    }

    #[test]
    fn bad_manifests_are_named() {
        let text = include_str!("../../../datasets/cifar10.toml").replace("c4a38c50", "C4A38C50");
        let e = Manifest::parse(&text, "x.toml").unwrap_err().to_string();
        assert!(e.contains("x.toml") && e.contains("sha256"), "{e}");
        let text =
            include_str!("../../../datasets/cifar10.toml").replace("mean = [0.4914, 0.4822, 0.4465]", "mean = [0.5]");
        let e = Manifest::parse(&text, "y.toml").unwrap_err().to_string();
        assert!(e.contains("1 means"), "{e}");
    }
}
