//! The run store against leftovers and misuse: temporary files of an interrupted write are
//! removed at the next start, a run folder under a file is refused, a run without arrays is not
//! a variation study, and a summary beside an edited configuration is no result.

use std::path::Path;

use data::DataDir;
use train::{ComputeDevice, RunConfig, RunDir, TrainOptions};

fn config(method: &str) -> RunConfig {
    RunConfig {
        method: method.into(),
        epochs: 2,
        batch_size: 32,
        limit_train: Some(64),
        limit_test: Some(32),
        ..RunConfig::default()
    }
}

fn options(data: &Path, stop_after: Option<usize>) -> TrainOptions {
    TrainOptions {
        data_dir: DataDir::new(data),
        on_event: train::events::silent(),
        stop_after,
        device: ComputeDevice::Cpu,
        init_from: None,
    }
}

#[test]
fn leftover_temporary_files_are_removed_when_the_run_starts_again() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let run = tmp.path().join("run");
    let cfg = config("fp");
    assert!(train::train(&cfg, &run, &options(&data, Some(1))).unwrap().is_none());
    std::fs::write(run.join("metrics.jsonl.tmp"), b"half a line").unwrap();
    std::fs::write(run.join("ckpt-0001/model.bpk.tmp"), b"half a model").unwrap();
    train::train(&cfg, &run, &options(&data, None)).unwrap().unwrap();
    assert!(!run.join("metrics.jsonl.tmp").exists());
    assert!(RunDir::new(&run).read_result(&cfg).unwrap().is_some());
    let leftovers: Vec<_> = walk(&run).into_iter().filter(|p| p.to_string_lossy().ends_with(".tmp")).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_summary_beside_an_edited_or_missing_configuration_is_no_result() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let run = tmp.path().join("run");
    let cfg = config("fp");
    train::train(&cfg, &run, &options(&data, None)).unwrap().unwrap();
    let text = std::fs::read_to_string(run.join("config.toml")).unwrap();
    std::fs::write(run.join("config.toml"), text.replace("epochs = 2", "epochs = 3")).unwrap();
    let e = RunDir::new(&run).read_result(&cfg).unwrap_err().to_string();
    assert!(e.contains("config.toml") && e.contains("edited after training"), "{e}");
    std::fs::remove_file(run.join("config.toml")).unwrap();
    let e = RunDir::new(&run).read_result(&cfg).unwrap_err().to_string();
    assert!(e.contains("missing beside summary.json"), "{e}");
}

#[test]
fn a_run_folder_under_a_file_is_refused_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("file");
    std::fs::write(&file, b"not a folder").unwrap();
    let e = train::train(&config("fp"), &file.join("sub"), &options(&tmp.path().join("data"), None))
        .unwrap_err()
        .to_string();
    assert!(e.contains(&format!("{} is a file", file.display())), "{e}");
}

#[test]
fn a_floating_point_run_has_no_cells_to_vary() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let run = tmp.path().join("run");
    train::train(&config("fp"), &run, &options(&data, None)).unwrap().unwrap();
    let e = train::variation_study(&run, &[0.1], 2, 0, Some(16), &DataDir::new(&data), ComputeDevice::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("method fp") && e.contains("no arrays"), "{e}");
    assert!(!run.join("variation.json").exists());
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
