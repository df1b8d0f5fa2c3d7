//! CIFAR-10/100 binary batches, read straight from the official .tar.gz or from its extracted
//! folder. A record is `label_bytes` label bytes followed by 3072 pixels (1024 R, G, B each).

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use flate2::read::GzDecoder;

use crate::imageset::ImageSet;
use crate::{DataError, Result};

/// Pixels of one CIFAR image.
pub const CIFAR_PIXELS: usize = 3 * 32 * 32;

/// Parses the records of one batch file.
pub fn parse_records(
    bytes: &[u8],
    label_bytes: usize,
    label_index: usize,
    classes: usize,
    origin: &Path,
    out: &mut ImageSet,
) -> Result<()> {
    let record = label_bytes + CIFAR_PIXELS;
    if bytes.is_empty() || !bytes.len().is_multiple_of(record) {
        return Err(DataError::corrupt(
            origin,
            format!(
                "{} bytes is not a whole number of {record}-byte records (truncated or not a CIFAR batch?)",
                bytes.len()
            ),
        ));
    }
    for (i, rec) in bytes.chunks_exact(record).enumerate() {
        let label = rec[label_index] as usize;
        if label >= classes {
            return Err(DataError::corrupt(origin, format!("record {i}: label {label} out of range 0..{classes}")));
        }
        out.labels.push(label as u16);
        out.pixels.extend_from_slice(&rec[label_bytes..]);
    }
    Ok(())
}

/// Reads batch `files` from `source`: a .tar.gz archive holding them, or a folder that holds
/// them (at their archive paths or by bare file name).
pub fn read_cifar(
    source: &Path,
    files: &[String],
    label_bytes: usize,
    label_index: usize,
    classes: &[String],
) -> Result<ImageSet> {
    let mut set = ImageSet { shape: [3, 32, 32], classes: classes.to_vec(), pixels: Vec::new(), labels: Vec::new() };
    if source.is_dir() {
        for f in files {
            let nested = source.join(f);
            let path = if nested.exists() { nested } else { source.join(Path::new(f).file_name().unwrap_or_default()) };
            let bytes = std::fs::read(&path).map_err(|e| DataError::io(&path, e))?;
            parse_records(&bytes, label_bytes, label_index, classes.len(), &path, &mut set)?;
        }
        return Ok(set);
    }
    // one pass over the archive; batches are parsed in the order `files` lists them
    let file = File::open(source).map_err(|e| DataError::io(source, e))?;
    let mut archive = tar::Archive::new(GzDecoder::new(BufReader::new(file)));
    let mut found: Vec<Option<Vec<u8>>> = vec![None; files.len()];
    let entries = archive.entries().map_err(|e| DataError::corrupt(source, format!("not a tar.gz archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| DataError::corrupt(source, format!("broken archive: {e}")))?;
        let path = entry.path().map_err(|e| DataError::corrupt(source, e.to_string()))?.to_string_lossy().to_string();
        if let Some(i) = files.iter().position(|f| path.trim_start_matches("./") == f) {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).map_err(|e| DataError::corrupt(source, format!("{path}: {e}")))?;
            found[i] = Some(bytes);
        }
    }
    for (f, bytes) in files.iter().zip(found) {
        let bytes = bytes.ok_or_else(|| DataError::corrupt(source, format!("archive has no {f}")))?;
        parse_records(&bytes, label_bytes, label_index, classes.len(), &source.join(f), &mut set)?;
    }
    Ok(set)
}
