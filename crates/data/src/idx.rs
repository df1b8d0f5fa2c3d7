//! idx files (MNIST, Fashion-MNIST), gzipped or raw: a big-endian magic (0x0000_08NN, NN the
//! number of dimensions), the dimensions, then unsigned bytes.

use std::io::Read;
use std::path::Path;

use flate2::read::MultiGzDecoder;

use crate::imageset::ImageSet;
use crate::{DataError, Result};

const IMAGES_MAGIC: u32 = 0x0000_0803;
const LABELS_MAGIC: u32 = 0x0000_0801;

/// The bytes of an idx file, gunzipped when it starts with the gzip magic.
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| DataError::corrupt(path, format!("broken gzip stream: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn header(bytes: &[u8], path: &Path, magic: u32, dims: usize) -> Result<Vec<usize>> {
    let need = 4 + 4 * dims;
    if bytes.len() < need {
        return Err(DataError::corrupt(
            path,
            format!("{} bytes is shorter than an idx header ({need} bytes)", bytes.len()),
        ));
    }
    let found = u32::from_be_bytes(bytes[0..4].try_into().unwrap());
    if found != magic {
        return Err(DataError::corrupt(path, format!("idx magic 0x{found:08x}, expected 0x{magic:08x}")));
    }
    let sizes: Vec<usize> =
        (0..dims).map(|d| u32::from_be_bytes(bytes[4 + 4 * d..8 + 4 * d].try_into().unwrap()) as usize).collect();
    let payload = sizes.iter().product::<usize>();
    if bytes.len() != need + payload {
        return Err(DataError::corrupt(
            path,
            format!("dimensions {sizes:?} need {} bytes, the file has {}", need + payload, bytes.len()),
        ));
    }
    Ok(sizes)
}

/// Reads an idx image file and its label file into one set.
pub fn read_idx(images: &Path, labels: &Path, classes: &[String]) -> Result<ImageSet> {
    let img = read_maybe_gz(images)?;
    let dims = header(&img, images, IMAGES_MAGIC, 3)?;
    let lab = read_maybe_gz(labels)?;
    let n = header(&lab, labels, LABELS_MAGIC, 1)?[0];
    if n != dims[0] {
        return Err(DataError::corrupt(labels, format!("{n} labels for {} images in {}", dims[0], images.display())));
    }
    let labels_out: Vec<u16> = lab[8..].iter().map(|&l| l as u16).collect();
    if let Some((i, l)) = labels_out.iter().enumerate().find(|(_, l)| **l as usize >= classes.len()) {
        return Err(DataError::corrupt(labels, format!("label {i}: {l} out of range 0..{}", classes.len())));
    }
    Ok(ImageSet {
        shape: [1, dims[1], dims[2]],
        classes: classes.to_vec(),
        pixels: img[16..].to_vec(),
        labels: labels_out,
    })
}
