//! Data sets for the CIM harness: manifests (`datasets/*.toml`), verified and resumable
//! downloads, loaders for CIFAR-10/100 binaries, Fashion-MNIST idx files and image-folder trees
//! (ImageNet layout), the embedded synthetic default, and the training-time input pipeline.

pub mod cifar;
pub mod download;
pub mod folder;
pub mod idx;
pub mod imageset;
pub mod manifest;
pub mod pipeline;
pub mod source;
pub mod store;
pub mod synthetic;

use std::path::PathBuf;

pub use imageset::ImageSet;
pub use manifest::{Manifest, builtin, find_manifest};
pub use pipeline::{Augment, Batch, BatchLoader, EpochBatches, Normalize};
pub use source::{LoadedData, load_dataset};
pub use store::{DataDir, FileStatus};

/// Everything that can go wrong with data, each naming the file or value at fault.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file's content is not what its format requires.
    #[error("{path}: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the value found and the value expected.
        message: String,
    },
    /// A downloaded or imported file has the wrong digest or size; it was moved aside.
    #[error(
        "{path}: SHA-256 mismatch: expected {expected}, got {actual} ({size} bytes); the file was moved to {moved_to} and not installed"
    )]
    DigestMismatch {
        /// Where the file would have been installed.
        path: PathBuf,
        /// The manifest's digest.
        expected: String,
        /// The digest of what arrived.
        actual: String,
        /// Bytes received.
        size: u64,
        /// Where the bad file now is.
        moved_to: PathBuf,
    },
    /// The server answered with an error status.
    #[error("{url}: HTTP {status} (while fetching {file})")]
    Http {
        /// The requested URL.
        url: String,
        /// The status code.
        status: u16,
        /// The manifest file name.
        file: String,
    },
    /// The connection failed or broke, after every retry.
    #[error("{url}: download failed after {attempts} attempts: {message}")]
    Network {
        /// The requested URL.
        url: String,
        /// How many attempts were made.
        attempts: u32,
        /// The last error.
        message: String,
    },
    /// A manifest is invalid or a name is unknown.
    #[error("{0}")]
    Invalid(String),
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io { path: path.into(), source }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        DataError::Corrupt { path: path.into(), message: message.into() }
    }
}

/// Result with [`DataError`].
pub type Result<T> = std::result::Result<T, DataError>;

/// A split of a data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// Training images.
    Train,
    /// Test (or validation) images.
    Test,
}

impl Split {
    /// `train` or `test`.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

/// Loads one split of a data set from the data directory (generating the synthetic set on first
/// use). Downloaded files must be there: `cargo xtask data fetch NAME` (or `import`) first.
pub fn load_split(dir: &DataDir, manifest: &Manifest, split: Split) -> Result<ImageSet> {
    use manifest::Layout;
    // every read is checked: files changed since their last verification are hashed again
    for spec in &manifest.files {
        dir.ensure_verified(manifest, spec)?;
    }
    let folder = dir.dataset(&manifest.name);
    let missing = |what: &std::path::Path| {
        DataError::Invalid(format!(
            "{}: missing; run `cargo xtask data fetch {}` (or `data import`) or pass --data-dir",
            what.display(),
            manifest.name
        ))
    };
    let set = match &manifest.layout {
        Layout::CifarBinary { archive, label_bytes, label_index, train, test } => {
            let files = if split == Split::Train { train } else { test };
            // the archive, or the folder it was extracted into
            let archive_path = folder.join(archive);
            let source = if archive_path.exists() {
                archive_path
            } else if folder.is_dir() {
                folder.clone()
            } else {
                return Err(missing(&archive_path));
            };
            cifar::read_cifar(&source, files, *label_bytes, *label_index, &manifest.classes)?
        }
        Layout::Idx { train_images, train_labels, test_images, test_labels } => {
            let (i, l) = if split == Split::Train { (train_images, train_labels) } else { (test_images, test_labels) };
            let (i, l) = (folder.join(i), folder.join(l));
            for p in [&i, &l] {
                if !p.exists() {
                    return Err(missing(p));
                }
            }
            idx::read_idx(&i, &l, &manifest.classes)?
        }
        Layout::ImageFolder { train, test, resize, crop } => {
            let root = folder.join(if split == Split::Train { train } else { test });
            if !root.exists() {
                return Err(missing(&root));
            }
            let index = folder::index_folder(&root)?;
            let prep = folder::Preprocess { shape: manifest.image_shape, resize_short: *resize, center_crop: *crop };
            folder::load_folder(&index, &prep)?
        }
        Layout::Synthetic { seed, label_noise } => {
            let [train, test] =
                synthetic::ensure_written(&folder, *seed, manifest.splits.train, manifest.splits.test, *label_noise)?;
            let file = if split == Split::Train { train } else { test };
            cifar::read_cifar(
                &folder,
                &[file.file_name().unwrap().to_string_lossy().to_string()],
                1,
                0,
                &manifest.classes,
            )?
        }
    };
    if set.shape != manifest.image_shape {
        return Err(DataError::Invalid(format!(
            "{}: images are {:?}, the manifest says {:?}",
            manifest.name, set.shape, manifest.image_shape
        )));
    }
    Ok(set)
}
