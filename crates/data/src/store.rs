//! The data directory: `<dir>/<data set>/<file>`, with a `<file>.verified` marker written after a
//! successful check, and rejected files moved to `<dir>/<data set>/rejected/`.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use flate2::read::MultiGzDecoder;
use sha2::{Digest, Sha256};

use crate::manifest::{DigestOf, FileSpec, Manifest};
use crate::{DataError, Result};

/// Environment variable naming the data directory.
pub const DATA_DIR_ENV: &str = "CIM_DATA_DIR";

/// The root of all data sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
}

/// What is known about one file of a data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileStatus {
    /// Not there.
    Missing,
    /// There, not (or no longer) verified.
    Downloaded,
    /// There and verified since it last changed.
    Verified,
}

impl FileStatus {
    /// Lowercase name for listings.
    pub fn name(self) -> &'static str {
        match self {
            FileStatus::Missing => "missing",
            FileStatus::Downloaded => "downloaded",
            FileStatus::Verified => "verified",
        }
    }
}

impl DataDir {
    /// `explicit`, else `$CIM_DATA_DIR`, else `./data`.
    pub fn resolve(explicit: Option<&Path>) -> Self {
        let root = match explicit {
            Some(p) => p.to_path_buf(),
            None => std::env::var_os(DATA_DIR_ENV).map(PathBuf::from).unwrap_or_else(|| PathBuf::from("data")),
        };
        Self { root }
    }

    /// As [`DataDir::resolve`], for a folder named on the command line by `flag`: it must be a
    /// folder, or not exist yet inside an existing one (it is then created on first use, for a
    /// generated data set). A mistyped path such as `/nonexistent/x` is an error, never a new
    /// tree of empty folders.
    pub fn resolve_checked(explicit: Option<&Path>, flag: &str) -> Result<Self> {
        if let Some(p) = explicit {
            let parent = p.parent().filter(|q| !q.as_os_str().is_empty()).unwrap_or(Path::new("."));
            let problem = if p.exists() {
                (!p.is_dir()).then_some("not a folder")
            } else {
                (!parent.is_dir()).then_some("no such folder, and neither is its parent")
            };
            if let Some(problem) = problem {
                return Err(DataError::Invalid(format!(
                    "{flag} {}: {problem}; expected a data directory (leave the flag out for $CIM_DATA_DIR or ./data)",
                    p.display()
                )));
            }
        }
        Ok(Self::resolve(explicit))
    }

    /// A data directory at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder of one data set.
    pub fn dataset(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Where a file of a data set is installed.
    pub fn file(&self, manifest: &Manifest, spec: &FileSpec) -> PathBuf {
        self.dataset(&manifest.name).join(&spec.name)
    }

    /// Makes sure an installed file is the one its manifest names before it is loaded: a file
    /// whose marker still matches (size, mtime, change time and inode unchanged since it was
    /// verified) is trusted, any other is hashed again (and moved aside if it differs). A
    /// missing file is left to the loader, which names it.
    pub fn ensure_verified(&self, manifest: &Manifest, spec: &FileSpec) -> Result<()> {
        match self.status(manifest, spec) {
            FileStatus::Verified | FileStatus::Missing => Ok(()),
            FileStatus::Downloaded => self.verify(manifest, spec),
        }
    }

    /// Status of one file: the marker must match the file's current size, mtime, change time
    /// and inode (a change time cannot be set back, so an edit that restores size and mtime is
    /// still seen).
    pub fn status(&self, manifest: &Manifest, spec: &FileSpec) -> FileStatus {
        let path = self.file(manifest, spec);
        let Ok(meta) = std::fs::metadata(&path) else {
            return FileStatus::Missing;
        };
        match std::fs::read_to_string(marker_path(&path)) {
            Ok(text) if text.trim() == marker_text(&meta, &spec.sha256) => FileStatus::Verified,
            _ => FileStatus::Downloaded,
        }
    }

    /// Verifies an installed file against its spec; marks it verified, or moves it aside.
    pub fn verify(&self, manifest: &Manifest, spec: &FileSpec) -> Result<()> {
        let path = self.file(manifest, spec);
        if !path.exists() {
            return Err(DataError::Invalid(format!(
                "{}: missing (run `cargo xtask data fetch {}`)",
                path.display(),
                manifest.name
            )));
        }
        check_file(&path, spec, &path)?;
        mark_verified(&path, spec)
    }
}

fn marker_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".verified");
    path.with_file_name(name)
}

fn marker_text(meta: &std::fs::Metadata, sha256: &str) -> String {
    let mtime = meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_nanos()).unwrap_or(0);
    #[cfg(unix)]
    let identity = {
        use std::os::unix::fs::MetadataExt;
        format!(" ctime_ns={} inode={}", meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128, meta.ino())
    };
    #[cfg(not(unix))]
    let identity = String::new();
    format!("sha256={sha256} size={} mtime_ns={mtime}{identity}", meta.len())
}

/// Writes the verified marker of an installed file (atomically).
pub(crate) fn mark_verified(path: &Path, spec: &FileSpec) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| DataError::io(path, e))?;
    write_atomic(&marker_path(path), marker_text(&meta, &spec.sha256).as_bytes())
}

/// Writes a file through a temporary sibling and a rename, so that readers never see half of it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    }
    let tmp = temporary_sibling(path);
    std::fs::write(&tmp, bytes).map_err(|e| DataError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        DataError::io(path, e)
    })
}

/// A name beside `path` that no other writer uses: `<name>.tmp.<pid>.<n>`, so that two
/// processes writing the same file never share a temporary file (the last rename wins, whole).
pub fn temporary_sibling(path: &Path) -> std::path::PathBuf {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!("{name}{TEMPORARY_MARK}{}.{n}", std::process::id()))
}

/// What [`temporary_sibling`] puts in a name: a file or folder whose name holds it is an
/// interrupted write.
pub const TEMPORARY_MARK: &str = ".tmp.";

/// SHA-256 and byte count of a stream.
pub(crate) fn sha256_of(mut reader: impl Read, path: &Path) -> Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf).map_err(|e| DataError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), total))
}

/// Digest and size of a file as its spec defines them (the file, or its gunzipped content).
pub(crate) fn digest_file(path: &Path, spec: &FileSpec) -> Result<(String, u64)> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    match spec.digest_of {
        DigestOf::File => sha256_of(BufReader::new(file), path),
        DigestOf::Decompressed => sha256_of(MultiGzDecoder::new(BufReader::new(file)), path),
    }
}

/// Checks `candidate` against `spec`; on a mismatch moves it to `rejected/` beside
/// `install_path` and returns the error naming `install_path`, both digests and the new place.
pub(crate) fn check_file(candidate: &Path, spec: &FileSpec, install_path: &Path) -> Result<()> {
    let expected_size = match spec.digest_of {
        DigestOf::File => Some(spec.size),
        DigestOf::Decompressed => spec.decompressed_size,
    };
    let (actual, size) = match digest_file(candidate, spec) {
        Ok(v) => v,
        // a truncated gzip stream is a bad file like any other
        Err(DataError::Io { source, .. }) if spec.digest_of == DigestOf::Decompressed => {
            (format!("(unreadable gzip: {source})"), 0)
        }
        Err(e) => return Err(e),
    };
    if actual == spec.sha256 && expected_size.is_none_or(|s| s == size) {
        return Ok(());
    }
    let moved_to = move_aside(candidate, install_path)?;
    Err(DataError::DigestMismatch {
        path: install_path.to_path_buf(),
        expected: spec.sha256.clone(),
        actual,
        size,
        moved_to,
    })
}

/// Moves a bad file into `rejected/` beside where it would be installed (never loaded from there).
pub(crate) fn move_aside(bad: &Path, install_path: &Path) -> Result<PathBuf> {
    let dir = install_path.parent().unwrap_or(Path::new(".")).join("rejected");
    std::fs::create_dir_all(&dir).map_err(|e| DataError::io(&dir, e))?;
    let stamp = std::time::SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    let name = install_path.file_name().unwrap_or_default().to_string_lossy();
    let target = dir.join(format!("{name}.{stamp}.bad"));
    std::fs::rename(bad, &target).map_err(|e| DataError::io(bad, e))?;
    let _ = std::fs::remove_file(marker_path(install_path));
    Ok(target)
}
