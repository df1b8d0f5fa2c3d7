//! Image-folder trees, `root/<class>/*.{jpg,jpeg,png}` (the ImageNet / torchvision layout): class
//! order is the sorted folder names, files are sorted within a class. A tree whose only folders
//! are `train/` and `val/` (or `test/`), each of class folders, brings its own test split.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use rayon::prelude::*;

use crate::imageset::ImageSet;
use crate::{DataError, Result};

/// The files of a tree and their labels.
#[derive(Debug, Clone, PartialEq)]
pub struct FolderIndex {
    /// The tree.
    pub root: PathBuf,
    /// Class folder names, sorted.
    pub classes: Vec<String>,
    /// Every image file and its class (a tree with its own test split: the training images,
    /// then the test images).
    pub items: Vec<(PathBuf, u16)>,
    /// Where the test images begin in `items`, for a tree with its own test split (`train/` and
    /// `val/` or `test/`); `None` for a tree of class folders.
    pub test_from: Option<usize>,
}

/// The names a tree's test split may have beside `train/`.
pub const TEST_SPLIT_NAMES: [&str; 2] = ["val", "test"];

/// How decoded images are brought to the model's input size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preprocess {
    /// [channels (1 or 3), height, width] of the result.
    pub shape: [usize; 3],
    /// Resize so that the short side has this many pixels (ImageNet: 256).
    pub resize_short: Option<u32>,
    /// Center-crop to this square size (ImageNet: 224); without resize/crop images must already
    /// have the target size.
    pub center_crop: Option<u32>,
}

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
}

/// Sorted entries of a folder.
fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| DataError::io(dir, e))?
        .map(|e| e.map(|e| e.path()).map_err(|e| DataError::io(dir, e)))
        .collect::<Result<_>>()?;
    v.sort();
    Ok(v)
}

/// The `train/` and test folders of a tree with its own test split: its only folders are `train`
/// and one of [`TEST_SPLIT_NAMES`].
pub fn split_folders(root: &Path) -> Result<Option<(PathBuf, PathBuf)>> {
    let dirs: Vec<PathBuf> = sorted_entries(root)?.into_iter().filter(|p| p.is_dir()).collect();
    let name = |p: &PathBuf| p.file_name().unwrap_or_default().to_string_lossy().to_string();
    if dirs.len() != 2 || !dirs.iter().any(|d| name(d) == "train") {
        return Ok(None);
    }
    Ok(dirs
        .iter()
        .find(|d| TEST_SPLIT_NAMES.contains(&name(d).as_str()))
        .map(|test| (root.join("train"), test.clone())))
}

/// Lists a tree: class folders, or `train/` and `val/` (`test/`) of the same class folders. An
/// empty tree, a class folder without images, or splits whose classes differ (named) are errors.
pub fn index_folder(root: &Path) -> Result<FolderIndex> {
    let Some((train, test)) = split_folders(root)? else {
        let (classes, items) = index_classes(root)?;
        return Ok(FolderIndex { root: root.to_path_buf(), classes, items, test_from: None });
    };
    let (classes, mut items) = index_classes(&train)?;
    let (test_classes, test_items) = index_classes(&test)?;
    if test_classes != classes {
        let missing: Vec<&str> = classes.iter().filter(|c| !test_classes.contains(c)).map(String::as_str).collect();
        let unknown: Vec<&str> = test_classes.iter().filter(|c| !classes.contains(c)).map(String::as_str).collect();
        return Err(DataError::corrupt(
            &test,
            format!(
                "its classes differ from {}'s: missing here {}; not in train {}",
                train.display(),
                if missing.is_empty() { "none".into() } else { missing.join(", ") },
                if unknown.is_empty() { "none".into() } else { unknown.join(", ") }
            ),
        ));
    }
    let test_from = items.len();
    items.extend(test_items);
    Ok(FolderIndex { root: root.to_path_buf(), classes, items, test_from: Some(test_from) })
}

/// Class names, and every image with its label.
type Classes = (Vec<String>, Vec<(PathBuf, u16)>);

/// The class folders of `dir` (sorted) and their images, labelled by folder.
fn index_classes(dir: &Path) -> Result<Classes> {
    let class_dirs: Vec<PathBuf> = sorted_entries(dir)?.into_iter().filter(|p| p.is_dir()).collect();
    if class_dirs.is_empty() {
        return Err(DataError::corrupt(dir, "no class folders: expected root/<class>/*.jpg|png"));
    }
    if class_dirs.len() > u16::MAX as usize {
        return Err(DataError::corrupt(
            dir,
            format!("{} class folders, at most {} supported", class_dirs.len(), u16::MAX),
        ));
    }
    let mut classes = Vec::new();
    let mut items = Vec::new();
    for (label, class_dir) in class_dirs.iter().enumerate() {
        let files: Vec<PathBuf> =
            sorted_entries(class_dir)?.into_iter().filter(|p| p.is_file() && is_image(p)).collect();
        if files.is_empty() {
            return Err(DataError::corrupt(class_dir, "class folder holds no .jpg/.jpeg/.png image"));
        }
        classes.push(class_dir.file_name().unwrap_or_default().to_string_lossy().to_string());
        items.extend(files.into_iter().map(|f| (f, label as u16)));
    }
    Ok((classes, items))
}

/// Decodes one file to CHW bytes of `prep.shape`.
pub fn decode(path: &Path, prep: &Preprocess) -> Result<Vec<u8>> {
    let img = image::ImageReader::open(path)
        .map_err(|e| DataError::io(path, e))?
        .with_guessed_format()
        .map_err(|e| DataError::io(path, e))?
        .decode()
        .map_err(|e| DataError::corrupt(path, format!("cannot decode image: {e}")))?;
    let mut img = img;
    if let Some(short) = prep.resize_short {
        let (w, h) = (img.width(), img.height());
        let scale = short as f64 / w.min(h) as f64;
        let (nw, nh) = (((w as f64 * scale).round() as u32).max(short), ((h as f64 * scale).round() as u32).max(short));
        img = img.resize_exact(nw, nh, FilterType::Triangle);
    }
    if let Some(crop) = prep.center_crop {
        let (w, h) = (img.width(), img.height());
        if w < crop || h < crop {
            return Err(DataError::corrupt(path, format!("{w}x{h} image is smaller than the {crop}x{crop} crop")));
        }
        img = img.crop_imm((w - crop) / 2, (h - crop) / 2, crop, crop);
    }
    let [c, th, tw] = prep.shape;
    if img.width() as usize != tw || img.height() as usize != th {
        return Err(DataError::corrupt(
            path,
            format!(
                "{}x{} image, expected {tw}x{th} (set resize/crop for trees of other sizes)",
                img.width(),
                img.height()
            ),
        ));
    }
    let hw = th * tw;
    let mut out = vec![0u8; c * hw];
    match c {
        1 => out.copy_from_slice(img.to_luma8().as_raw()),
        3 => {
            let rgb = img.to_rgb8();
            for (i, px) in rgb.as_raw().chunks_exact(3).enumerate() {
                for ch in 0..3 {
                    out[ch * hw + i] = px[ch];
                }
            }
        }
        _ => return Err(DataError::Invalid(format!("image folders give 1 or 3 channels, {c} were asked"))),
    }
    Ok(out)
}

/// Decodes a whole tree into memory, in parallel; the first unreadable file stops it, named.
pub fn load_folder(index: &FolderIndex, prep: &Preprocess) -> Result<ImageSet> {
    let decoded: Vec<Vec<u8>> = index.items.par_iter().map(|(p, _)| decode(p, prep)).collect::<Result<_>>()?;
    Ok(ImageSet {
        shape: prep.shape,
        classes: index.classes.clone(),
        pixels: decoded.concat(),
        labels: index.items.iter().map(|(_, l)| *l).collect(),
    })
}

/// SHA-256 over the tree's content: for every file in index order, its path relative to the
/// root, its class and the SHA-256 of its bytes. Two copies of a tree at different places have
/// the same digest; any renamed, moved, added, removed or changed image changes it.
pub fn content_digest(index: &FolderIndex) -> Result<String> {
    use sha2::{Digest, Sha256};
    let file_digests: Vec<[u8; 32]> = index
        .items
        .par_iter()
        .map(|(p, _)| std::fs::read(p).map(|b| Sha256::digest(&b).into()).map_err(|e| DataError::io(p, e)))
        .collect::<Result<_>>()?;
    let mut all = Sha256::new();
    for ((path, label), digest) in index.items.iter().zip(&file_digests) {
        let rel = path.strip_prefix(&index.root).unwrap_or(path);
        // '/' separators whatever the platform, so that the digest travels between machines
        let rel: Vec<String> = rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
        all.update(rel.join("/").as_bytes());
        all.update([0]);
        all.update(label.to_le_bytes());
        all.update(digest);
    }
    Ok(hex::encode(all.finalize()))
}
