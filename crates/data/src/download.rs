//! Verified, resumable downloads.
//!
//! A file is streamed into `<name>.partial` beside its final place while its SHA-256 is computed;
//! a broken transfer is resumed with an HTTP Range request (after a backoff), and only a file whose
//! size and digest match the manifest is renamed into place. A mismatching file is moved to
//! `rejected/` and the error names it, with both digests.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::manifest::{DigestOf, FileSpec, Manifest};
use crate::store::{DataDir, FileStatus, check_file, mark_verified, move_aside};
use crate::{DataError, Result};

/// What a download reports while it works, for its caller to show (the library prints nothing).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FetchEvent<'a> {
    /// A file's transfer starts (or resumes: [`FetchEvent::At`] follows).
    Start {
        /// The file's name.
        file: &'a str,
        /// Its size in bytes.
        size: u64,
    },
    /// The transfer stands at this byte of the file (a resume starts past 0).
    At(u64),
    /// This many more bytes arrived.
    Received(u64),
    /// An attempt failed; the next starts after `wait` (said even without a terminal: a silent
    /// minute looks like a hang).
    Retry {
        /// The file's name.
        file: &'a str,
        /// The attempt that failed, from 1.
        attempt: u32,
        /// Attempts in all.
        attempts: u32,
        /// What failed.
        message: &'a str,
        /// The wait before the next attempt.
        wait: Duration,
    },
    /// An installed copy failed verification and was moved aside; it is downloaded again.
    Redownload {
        /// The installed copy's place.
        path: &'a Path,
        /// Where it was moved.
        moved_to: &'a Path,
    },
    /// The file's transfer ended (done or given up).
    End,
}

/// Receives the events of a download.
pub type FetchObserver = Arc<dyn Fn(&FetchEvent<'_>) + Send + Sync>;

/// How to fetch.
#[derive(Clone)]
pub struct FetchOptions {
    /// Replaces scheme, host and port of every URL (a mirror, or a test server).
    pub mirror: Option<String>,
    /// Attempts after the first one when the connection fails or breaks.
    pub retries: u32,
    /// Wait before the first retry; doubled after each further one.
    pub backoff: Duration,
    /// Receives what the download reports (progress, retries).
    pub on_event: FetchObserver,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self { mirror: None, retries: 5, backoff: Duration::from_secs(2), on_event: Arc::new(|_| {}) }
    }
}

impl std::fmt::Debug for FetchOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchOptions")
            .field("mirror", &self.mirror)
            .field("retries", &self.retries)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

/// `url` with its scheme, host and port replaced by `mirror` (which may carry a path prefix).
pub fn mirror_url(url: &str, mirror: Option<&str>) -> String {
    let Some(mirror) = mirror else {
        return url.to_string();
    };
    let after_scheme = url.find("://").map(|i| i + 3).unwrap_or(0);
    let path = url[after_scheme..].find('/').map(|i| &url[after_scheme + i..]).unwrap_or("/");
    format!("{}{}", mirror.trim_end_matches('/'), path)
}

/// Fetches every file of a data set that is not verified yet; returns the installed paths.
pub fn fetch_dataset(dir: &DataDir, manifest: &Manifest, opts: &FetchOptions) -> Result<Vec<PathBuf>> {
    if manifest.local_only {
        return Err(DataError::Invalid(format!(
            "{} cannot be downloaded: place your copy under {} as described in datasets/{}.toml",
            manifest.name,
            dir.dataset(&manifest.name).display(),
            manifest.name
        )));
    }
    if manifest.files.is_empty() {
        return Ok(Vec::new());
    }
    let client = reqwest::blocking::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| DataError::Invalid(format!("cannot build an HTTP client: {e}")))?;
    manifest.files.iter().map(|spec| fetch_file(&client, dir, manifest, spec, opts)).collect()
}

/// Fetches one file (see the module docs).
pub fn fetch_file(
    client: &reqwest::blocking::Client,
    dir: &DataDir,
    manifest: &Manifest,
    spec: &FileSpec,
    opts: &FetchOptions,
) -> Result<PathBuf> {
    let target = dir.file(manifest, spec);
    match dir.status(manifest, spec) {
        FileStatus::Verified => return Ok(target),
        FileStatus::Downloaded => match dir.verify(manifest, spec) {
            Ok(()) => return Ok(target),
            // the bad copy is already moved aside: download a fresh one
            Err(DataError::DigestMismatch { moved_to, .. }) => {
                (opts.on_event)(&FetchEvent::Redownload { path: &target, moved_to: &moved_to });
            }
            Err(e) => return Err(e),
        },
        FileStatus::Missing => {}
    }
    let folder = dir.dataset(&manifest.name);
    std::fs::create_dir_all(&folder).map_err(|e| DataError::io(&folder, e))?;
    let partial = partial_path(&target);
    let url = mirror_url(&spec.url, opts.mirror.as_deref());
    (opts.on_event)(&FetchEvent::Start { file: &spec.name, size: spec.size });
    let transferred = transfer_with_retries(client, &url, &partial, spec, opts);
    (opts.on_event)(&FetchEvent::End);
    let (digest, size) = transferred?;
    match spec.digest_of {
        DigestOf::File if digest != spec.sha256 || size != spec.size => {
            let moved_to = move_aside(&partial, &target)?;
            return Err(DataError::DigestMismatch {
                path: target,
                expected: spec.sha256.clone(),
                actual: digest,
                size,
                moved_to,
            });
        }
        DigestOf::File => {}
        DigestOf::Decompressed => check_file(&partial, spec, &target)?,
    }
    std::fs::rename(&partial, &target).map_err(|e| DataError::io(&target, e))?;
    mark_verified(&target, spec)?;
    Ok(target)
}

/// Transfers `spec` from `url` into `partial`, resuming after a broken connection up to
/// `opts.retries` times with a doubling backoff. Returns the SHA-256 and size of the whole file.
fn transfer_with_retries(
    client: &reqwest::blocking::Client,
    url: &str,
    partial: &Path,
    spec: &FileSpec,
    opts: &FetchOptions,
) -> Result<(String, u64)> {
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match transfer(client, url, partial, spec, &opts.on_event) {
            Ok(done) => return Ok(done),
            Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::Retry(message)) if attempt > opts.retries => {
                return Err(DataError::Network { url: url.to_string(), attempts: attempt, message });
            }
            Err(Failure::Retry(message)) => {
                let wait = opts.backoff * 2u32.saturating_pow(attempt - 1);
                (opts.on_event)(&FetchEvent::Retry {
                    file: &spec.name,
                    attempt,
                    attempts: opts.retries + 1,
                    message: &message,
                    wait,
                });
                std::thread::sleep(wait);
            }
        }
    }
}

/// Installs a local copy (e.g. a Debian package's) after checking it; returns the installed path.
pub fn import_file(dir: &DataDir, manifest: &Manifest, spec: &FileSpec, from: &Path) -> Result<PathBuf> {
    let source = from.join(&spec.name);
    if !source.exists() {
        return Err(DataError::Invalid(format!(
            "{}: not found (expected {} from the manifest of {})",
            source.display(),
            spec.name,
            manifest.name
        )));
    }
    let target = dir.file(manifest, spec);
    let folder = dir.dataset(&manifest.name);
    std::fs::create_dir_all(&folder).map_err(|e| DataError::io(&folder, e))?;
    let partial = partial_path(&target);
    std::fs::copy(&source, &partial).map_err(|e| DataError::io(&source, e))?;
    check_file(&partial, spec, &target)?;
    std::fs::rename(&partial, &target).map_err(|e| DataError::io(&target, e))?;
    mark_verified(&target, spec)?;
    Ok(target)
}

/// Whether a request failed because the host refused the connection.
fn refused(e: &reqwest::Error) -> bool {
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        source = err.source();
    }
    false
}

fn partial_path(target: &Path) -> PathBuf {
    let mut name = target.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    target.with_file_name(name)
}

enum Failure {
    /// Not worth retrying (HTTP 4xx, local I/O).
    Fatal(DataError),
    /// The connection failed or broke: resume later.
    Retry(String),
}

/// One attempt: continues `partial` from its current length. Returns the SHA-256 and size of
/// the whole file once the server has sent everything it announced.
fn transfer(
    client: &reqwest::blocking::Client,
    url: &str,
    partial: &Path,
    spec: &FileSpec,
    on_event: &FetchObserver,
) -> std::result::Result<(String, u64), Failure> {
    let have = std::fs::metadata(partial).map(|m| m.len()).unwrap_or(0);
    let mut request = client.get(url);
    if have > 0 {
        request = request.header(reqwest::header::RANGE, format!("bytes={have}-"));
    }
    let response = request.send().map_err(|e| {
        // a refused connection will not change by waiting: say so at once
        if refused(&e) {
            Failure::Fatal(DataError::Network {
                url: url.to_string(),
                attempts: 1,
                message: "connection refused: nothing listens there (is the server or --mirror up?)".into(),
            })
        } else {
            Failure::Retry(e.to_string())
        }
    })?;
    let status = response.status();
    let resumed = status == reqwest::StatusCode::PARTIAL_CONTENT;
    if status == reqwest::StatusCode::RANGE_NOT_SATISFIABLE {
        // the partial file is not a prefix the server knows: start over
        let _ = std::fs::remove_file(partial);
        return Err(Failure::Retry(format!("HTTP 416 for a resume at byte {have}; restarting")));
    }
    if status.is_server_error() {
        return Err(Failure::Retry(format!("HTTP {}", status.as_u16())));
    }
    if !status.is_success() {
        return Err(Failure::Fatal(DataError::Http {
            url: url.to_string(),
            status: status.as_u16(),
            file: spec.name.clone(),
        }));
    }
    let announced = response.content_length();
    let mut hasher = Sha256::new();
    let mut file =
        open_partial(partial, resumed, &mut hasher).map_err(|e| Failure::Fatal(DataError::io(partial, e)))?;
    let start = if resumed { have } else { 0 };
    on_event(&FetchEvent::At(start));
    let mut received = 0u64;
    let mut reader = response;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(n) => n,
            Err(e) => {
                file.flush().map_err(|e| Failure::Fatal(DataError::io(partial, e)))?;
                return Err(Failure::Retry(format!("connection broke after {} bytes: {e}", start + received)));
            }
        };
        if n == 0 {
            break;
        }
        file.write_all(&buf[..n]).map_err(|e| Failure::Fatal(DataError::io(partial, e)))?;
        hasher.update(&buf[..n]);
        received += n as u64;
        on_event(&FetchEvent::Received(n as u64));
    }
    file.sync_all().map_err(|e| Failure::Fatal(DataError::io(partial, e)))?;
    if let Some(len) = announced
        && received < len
    {
        return Err(Failure::Retry(format!("connection closed after {} of {} bytes", start + received, start + len)));
    }
    Ok((hex::encode(hasher.finalize()), start + received))
}

/// The partial file a transfer writes to: appended to (its contents hashed first) when the
/// server resumes it, else created empty.
fn open_partial(partial: &Path, resumed: bool, hasher: &mut Sha256) -> std::io::Result<File> {
    if !resumed {
        return File::create(partial);
    }
    let mut reader = BufReader::new(File::open(partial)?);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    OpenOptions::new().append(true).open(partial)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_replace_scheme_host_and_port() {
        let url = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";
        assert_eq!(mirror_url(url, None), url);
        assert_eq!(
            mirror_url(url, Some("http://127.0.0.1:8080")),
            "http://127.0.0.1:8080/~kriz/cifar-10-binary.tar.gz"
        );
        assert_eq!(
            mirror_url(url, Some("http://m.example/data/")),
            "http://m.example/data/~kriz/cifar-10-binary.tar.gz"
        );
    }
}
