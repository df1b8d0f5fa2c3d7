//! Downloads against a local HTTP server: success, resume after a cut, wrong digest, 404, and a
//! server that drops every connection.

mod common;

use std::time::Duration;

use common::{Behaviour, Server, sha256_hex};
use data::download::{FetchOptions, fetch_dataset};
use data::manifest::{FileSpec, Layout, Manifest, Normalization, Splits};
use data::{DataDir, DataError, FileStatus};

fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn manifest(bytes: &[u8]) -> Manifest {
    Manifest {
        name: "toy".into(),
        description: "test".into(),
        classes: vec!["a".into()],
        image_shape: [1, 1, 1],
        augment: Default::default(),
        local_only: false,
        import_from: None,
        splits: Splits { train: 1, test: 1 },
        normalization: Normalization { mean: vec![0.0], std: vec![1.0] },
        files: vec![FileSpec {
            name: "toy.bin".into(),
            url: "https://official.example.org/files/toy.bin".into(),
            size: bytes.len() as u64,
            sha256: sha256_hex(bytes),
            digest_of: Default::default(),
            decompressed_size: None,
        }],
        layout: Layout::Synthetic { seed: 0, label_noise: 0.0 },
    }
}

fn options(server: &Server) -> FetchOptions {
    FetchOptions {
        mirror: Some(server.url()),
        retries: 3,
        backoff: Duration::from_millis(10),
        ..FetchOptions::default()
    }
}

#[test]
fn good_download_is_installed_and_verified() {
    let bytes = payload(300_000);
    let server = Server::start(Behaviour::Serve(bytes.clone()));
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::new(dir.path());
    let m = manifest(&bytes);
    let paths = fetch_dataset(&data, &m, &options(&server)).unwrap();
    assert_eq!(std::fs::read(&paths[0]).unwrap(), bytes);
    assert_eq!(data.status(&m, &m.files[0]), FileStatus::Verified);
    assert_eq!(server.requests.lock().unwrap()[0].0, "/files/toy.bin");
    // a second fetch does not ask the server again
    fetch_dataset(&data, &m, &options(&server)).unwrap();
    assert_eq!(server.requests.lock().unwrap().len(), 1);
}

#[test]
fn a_download_cut_half_way_resumes_with_a_range_request() {
    let bytes = payload(400_000);
    let server = Server::start(Behaviour::CutOffOnce(bytes.clone()));
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::new(dir.path());
    let m = manifest(&bytes);
    let paths = fetch_dataset(&data, &m, &options(&server)).unwrap();
    assert_eq!(std::fs::read(&paths[0]).unwrap(), bytes);
    let log = server.requests.lock().unwrap();
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(log[0].1, None);
    let offset: usize =
        log[1].1.as_deref().unwrap().trim_start_matches("bytes=").trim_end_matches('-').parse().unwrap();
    assert!(offset > 0 && offset < bytes.len(), "resume offset {offset}");
}

#[test]
fn a_wrong_digest_is_rejected_and_moved_aside() {
    let bytes = payload(50_000);
    let mut wrong = bytes.clone();
    wrong[100] ^= 1;
    let server = Server::start(Behaviour::Serve(wrong));
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::new(dir.path());
    let m = manifest(&bytes);
    let err = fetch_dataset(&data, &m, &options(&server)).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("SHA-256") && text.contains(&m.files[0].sha256) && text.contains("toy.bin"), "{text}");
    let DataError::DigestMismatch { moved_to, .. } = err else { panic!("{text}") };
    assert!(moved_to.exists() && moved_to.starts_with(dir.path().join("toy/rejected")));
    assert!(!data.file(&m, &m.files[0]).exists());
    assert_eq!(data.status(&m, &m.files[0]), FileStatus::Missing);
    let leftovers: Vec<_> =
        std::fs::read_dir(dir.path().join("toy")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("rejected")]);
}

#[test]
fn not_found_is_an_error_naming_the_url() {
    let bytes = payload(10);
    let server = Server::start(Behaviour::NotFound);
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::new(dir.path());
    let err = fetch_dataset(&data, &manifest(&bytes), &options(&server)).unwrap_err().to_string();
    assert!(err.contains("404") && err.contains("/files/toy.bin"), "{err}");
    assert_eq!(server.requests.lock().unwrap().len(), 1, "a 404 is not retried");
}

#[test]
fn a_server_that_drops_connections_fails_after_the_retries() {
    let bytes = payload(10);
    let server = Server::start(Behaviour::Drop);
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::new(dir.path());
    let m = manifest(&bytes);
    let err = fetch_dataset(&data, &m, &options(&server)).unwrap_err().to_string();
    assert!(err.contains("after 4 attempts"), "{err}");
    assert!(!data.file(&m, &m.files[0]).exists());
}

#[test]
fn a_refused_connection_fails_at_once_and_says_so() {
    // a port that nothing listens on
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::new(dir.path());
    let bytes = payload(10);
    let opts = FetchOptions {
        mirror: Some(format!("http://127.0.0.1:{port}")),
        retries: 5,
        backoff: Duration::from_secs(2),
        ..FetchOptions::default()
    };
    let start = std::time::Instant::now();
    let err = fetch_dataset(&data, &manifest(&bytes), &opts).unwrap_err().to_string();
    assert!(err.contains("connection refused") && err.contains(&port.to_string()), "{err}");
    assert!(start.elapsed() < Duration::from_secs(2), "not retried for a minute: {:?}", start.elapsed());
}

#[test]
fn an_installed_file_changed_in_place_is_caught_at_load_even_with_size_and_mtime_restored() {
    let bytes = payload(4096);
    let server = Server::start(Behaviour::Serve(bytes.clone()));
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::new(dir.path());
    let m = manifest(&bytes);
    let path = fetch_dataset(&data, &m, &options(&server)).unwrap().remove(0);
    assert_eq!(data.status(&m, &m.files[0]), FileStatus::Verified);
    // loading checks the file: verified, so it is not hashed again, and the load goes on
    let first = data::load_split(&data, &m, data::Split::Train).map(|_| ()).map_err(|e| e.to_string());
    assert!(first.as_ref().err().is_none_or(|e| !e.contains("SHA-256")), "{first:?}");
    // tamper: same size, one byte changed, mtime set back
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    let mut tampered = bytes.clone();
    tampered[100] ^= 0xff;
    std::fs::write(&path, &tampered).unwrap();
    std::fs::File::options().write(true).open(&path).unwrap().set_modified(mtime).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), mtime);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), bytes.len() as u64);
    assert_eq!(data.status(&m, &m.files[0]), FileStatus::Downloaded, "`data list` must not say verified");
    let err = data::load_split(&data, &m, data::Split::Train).unwrap_err().to_string();
    assert!(err.contains("toy.bin") && err.contains("SHA-256 mismatch"), "{err}");
}
