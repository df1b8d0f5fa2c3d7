//! Fault injection on the run store: non-finite training, folders the tool does not own, bad
//! limits, edited configurations, damaged checkpoints, and identical runs that must log identical
//! numbers. Each case expects a clear error (naming the file or flag, the value and what was
//! expected) or an exact recovery. Tiny runs on the synthetic set.

use std::path::{Path, PathBuf};

mod common;

use common::metrics_without_timing;
use data::DataDir;
use serde_json::Value;
use train::{ComputeDevice, RunConfig, TrainError, TrainOptions};

fn tiny() -> RunConfig {
    RunConfig {
        method: "fp".into(),
        epochs: 1,
        batch_size: 32,
        limit_train: Some(64),
        limit_test: Some(32),
        seed: 3,
        ..RunConfig::default()
    }
}

fn options(data: &Path) -> TrainOptions {
    TrainOptions {
        data_dir: DataDir::new(data),
        on_event: train::events::silent(),
        stop_after: None,
        device: ComputeDevice::Cpu,
        init_from: None,
    }
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() { out.extend(files(&p)) } else { out.push(p) }
    }
    out.sort();
    out
}

#[test]
fn a_non_finite_run_stops_is_marked_failed_and_writes_nothing_non_finite() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    for (i, lr) in [1e5, 1e6, 1e12].into_iter().enumerate() {
        let run = tmp.path().join(format!("r{i}"));
        let cfg = RunConfig { lr, ..tiny() };
        let err = train::train(&cfg, &run, &options(&data)).unwrap_err();
        let TrainError::NonFinite { message, marked } = &err else { panic!("lr {lr}: {err}") };
        assert!(message.contains("not finite") && message.contains("--lr"), "{message}");
        assert!(message.contains("no checkpoint was written"), "nothing finished, nothing claimed: {message}");
        assert!(!message.contains("last good checkpoint"), "{message}");
        assert_eq!(marked, &run.join("failed.json"));
        let record: train::run::FailureRecord =
            serde_json::from_str(&std::fs::read_to_string(marked).unwrap()).unwrap();
        assert_eq!((record.epoch, record.last_good_checkpoint.as_deref()), (1, None));
        assert!(!run.join("summary.json").exists());
        for f in files(&run) {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            assert!(!text.contains("null") || f.ends_with("failed.json"), "{}: {text}", f.display());
            assert!(!text.contains("NaN") || f.ends_with("failed.json"), "{}: {text}", f.display());
        }
        // the failed folder is not trained again silently
        let again = train::train(&cfg, &run, &options(&data)).unwrap_err().to_string();
        assert!(again.contains("failed earlier") && again.contains("failed.json"), "{again}");
    }
}

#[test]
fn train_never_writes_into_a_folder_it_does_not_own() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // a user's folder with a file of the same name as the tool's
    let user = tmp.path().join("mine");
    std::fs::create_dir_all(&user).unwrap();
    std::fs::write(user.join("metrics.jsonl"), "my own numbers\n").unwrap();
    let e = train::train(&tiny(), &user, &options(&data)).unwrap_err().to_string();
    assert!(e.contains("--out") && e.contains("not a run folder") && e.contains("mine"), "{e}");
    assert_eq!(std::fs::read_to_string(user.join("metrics.jsonl")).unwrap(), "my own numbers\n");
    assert_eq!(files(&user).len(), 1, "nothing added");
    // a class tree of training images
    let tree = tmp.path().join("tree");
    std::fs::create_dir_all(tree.join("cat")).unwrap();
    std::fs::write(tree.join("cat/0001.jpg"), b"jpeg").unwrap();
    assert!(train::train(&tiny(), &tree, &options(&data)).is_err());
    assert_eq!(files(&tree).len(), 1);
    // an empty folder is fine
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    train::train(&tiny(), &empty, &options(&data)).unwrap().unwrap();
}

#[test]
fn a_run_rejected_by_a_data_check_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let run = tmp.path().join("r");
    let too_many = RunConfig { limit_train: Some(1_000_000), ..tiny() };
    let e = train::train(&too_many, &run, &options(&data)).unwrap_err().to_string();
    assert!(e.contains("limit_train = 1000000") && e.contains("--limit-train") && e.contains("only"), "{e}");
    assert!(!run.exists(), "validation before any file is written");
    // the corrected retry into the same folder trains
    train::train(&tiny(), &run, &options(&data)).unwrap().unwrap();
    let too_many = RunConfig { limit_test: Some(1_000_000), ..tiny() };
    let e = train::train(&too_many, &tmp.path().join("r2"), &options(&data)).unwrap_err().to_string();
    assert!(e.contains("--limit-test") && e.contains("test split"), "{e}");
    let stop = TrainOptions { stop_after: Some(0), ..options(&data) };
    let e = train::train(&tiny(), &tmp.path().join("r3"), &stop).unwrap_err().to_string();
    assert!(e.contains("--stop-after 0") && e.contains("at least 1"), "{e}");
    assert!(!tmp.path().join("r3").exists());
}

/// A two-epoch run stopped after its first epoch, in `<root>/r`; returns (data dir, run folder).
fn half_trained(root: &Path, cfg: &RunConfig) -> (PathBuf, PathBuf) {
    let (data, run) = (root.join("data"), root.join("r"));
    let stop = TrainOptions { stop_after: Some(1), ..options(&data) };
    assert!(train::train(cfg, &run, &stop).unwrap().is_none());
    (data, run)
}

#[test]
fn an_edited_config_is_caught_before_evaluation_and_resume() {
    let (tmp, cfg) = (tempfile::tempdir().unwrap(), RunConfig { epochs: 2, ..tiny() });
    let (data, run) = half_trained(tmp.path(), &cfg);
    let dd = DataDir::new(&data);
    let config = run.join("config.toml");
    let original = std::fs::read_to_string(&config).unwrap();
    // edited bits: a different configuration than the checkpoint's
    let edited = original.replace("weight_bits = 4", "weight_bits = 3");
    assert_ne!(edited, original);
    std::fs::write(&config, &edited).unwrap();
    let edited_hash = RunConfig::from_stored_toml(&edited, "").unwrap().hash();
    for e in [
        train::evaluate_run(&run, None, None, &dd, ComputeDevice::Cpu).unwrap_err().to_string(),
        train::variation_study(&run, &[0.0], 1, 0, None, &dd, ComputeDevice::Cpu).unwrap_err().to_string(),
    ] {
        assert!(
            e.contains("config.toml") && e.contains(&edited_hash) && e.contains(&cfg.hash()) && e.contains("edited"),
            "{e}"
        );
    }
    // resuming with the edited file: the folder holds another configuration's checkpoint
    let stored = RunConfig::from_stored_toml(&edited, "").unwrap();
    let e = train::train(&stored, &run, &options(&data)).unwrap_err().to_string();
    assert!(e.contains(&edited_hash) && e.contains(&cfg.hash()), "{e}");
    // restored, everything works again
    std::fs::write(&config, &original).unwrap();
    train::evaluate_run(&run, None, None, &dd, ComputeDevice::Cpu).unwrap();
    let e = train::variation_study(&run, &[0.0], 1, 0, Some(0), &dd, ComputeDevice::Cpu).unwrap_err().to_string();
    assert!(e.contains("--limit-test 0"), "{e}");
    let e = train::evaluate_run(&run, None, Some(data::source::Holdout::PerClass(7)), &dd, ComputeDevice::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("--folder-holdout 7"), "{e}");
}

#[test]
fn damaged_checkpoints_are_refused_with_their_checksums() {
    let (tmp, cfg) = (tempfile::tempdir().unwrap(), RunConfig { epochs: 2, ..tiny() });
    let (data, run) = half_trained(tmp.path(), &cfg);
    let dd = DataDir::new(&data);
    let model = run.join("ckpt-0001/model.bpk");
    let good = std::fs::read(&model).unwrap();

    // one flipped bit
    let mut flipped = good.clone();
    let at = flipped.len() / 2;
    flipped[at] ^= 0x10;
    std::fs::write(&model, &flipped).unwrap();
    let e = train::train(&cfg, &run, &options(&data)).unwrap_err().to_string();
    assert!(e.contains("model.bpk") && e.contains("SHA-256 mismatch"), "{e}");
    let e = train::evaluate_run(&run, None, None, &dd, ComputeDevice::Cpu).unwrap_err().to_string();
    assert!(e.contains("model.bpk") && e.contains("SHA-256 mismatch"), "{e}");

    // random bytes
    std::fs::write(&model, (0..good.len()).map(|i| (i * 31 % 251) as u8).collect::<Vec<_>>()).unwrap();
    let e = train::train(&cfg, &run, &options(&data)).unwrap_err().to_string();
    assert!(e.contains("SHA-256 mismatch"), "{e}");

    // the optimizer state
    std::fs::write(&model, &good).unwrap();
    let optim = run.join("ckpt-0001/optim.bpk");
    let mut o = std::fs::read(&optim).unwrap();
    let last = o.len() - 1;
    o[last] ^= 1;
    std::fs::write(&optim, &o).unwrap();
    let e = train::train(&cfg, &run, &options(&data)).unwrap_err().to_string();
    assert!(e.contains("optim.bpk") && e.contains("SHA-256 mismatch"), "{e}");
    o[last] ^= 1;
    std::fs::write(&optim, &o).unwrap();

    // the history in state.json
    let state = run.join("ckpt-0001/state.json");
    let text = std::fs::read_to_string(&state).unwrap();
    std::fs::write(&state, text.replacen("\"epoch\": 1", "\"epoch\": 7", 1)).unwrap();
    let e = train::train(&cfg, &run, &options(&data)).unwrap_err().to_string();
    assert!(e.contains("state.json") && e.contains("SHA-256 mismatch"), "{e}");
    std::fs::write(&state, &text).unwrap();

    // intact again: the run resumes and finishes
    train::train(&cfg, &run, &options(&data)).unwrap().unwrap();
}

#[test]
fn identical_runs_log_identical_losses_three_times_over() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cfg = RunConfig { method: "columnwise".into(), epochs: 2, limit_train: Some(96), ..tiny() };
    let runs: Vec<Vec<Value>> = (0..3)
        .map(|i| {
            let run = tmp.path().join(format!("r{i}"));
            train::train(&cfg, &run, &options(&data)).unwrap().unwrap();
            metrics_without_timing(&run)
        })
        .collect();
    assert_eq!(runs[0].len(), 2);
    assert_eq!(runs[0], runs[1]);
    assert_eq!(runs[0], runs[2]);
}
