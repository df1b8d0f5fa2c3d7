//! Determinism, interruption and resume, bad runs: small CIM runs on the synthetic set.

use std::path::Path;

mod common;

use common::{metrics_without_timing, summary_without_timing};
use data::DataDir;
use serde_json::Value;
use train::{ComputeDevice, RunConfig, TrainError, TrainOptions};

fn config() -> RunConfig {
    RunConfig {
        method: "columnwise".into(),
        epochs: 3,
        batch_size: 32,
        limit_train: Some(192),
        limit_test: Some(64),
        seed: 7,
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
fn same_seed_twice_gives_identical_metrics_and_interrupted_runs_resume_bit_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (a, b, c) = (tmp.path().join("a"), tmp.path().join("b"), tmp.path().join("c"));
    let cfg = config();
    train::train(&cfg, &a, &options(&data, None)).unwrap().unwrap();
    train::train(&cfg, &b, &options(&data, None)).unwrap().unwrap();
    let ma = metrics_without_timing(&a);
    assert_eq!(ma.len(), 3);
    assert_eq!(ma, metrics_without_timing(&b), "same seed, same machine: identical metrics");

    // interrupted after epoch 1 of 3, then resumed by re-running into the same folder
    assert!(train::train(&cfg, &c, &options(&data, Some(1))).unwrap().is_none());
    assert_eq!(metrics_without_timing(&c).len(), 1);
    assert!(c.join("ckpt-0001/model.bpk").exists() && !c.join("summary.json").exists());
    train::train(&cfg, &c, &options(&data, None)).unwrap().unwrap();
    assert_eq!(summary_without_timing(&c), summary_without_timing(&a));
    assert_eq!(metrics_without_timing(&c), ma);
    assert!(!c.join("ckpt-0001").exists(), "older checkpoints are removed");

    // a finished run is not trained again
    let again = train::train(&cfg, &a, &options(&data, None)).unwrap().unwrap();
    assert_eq!(
        serde_json::to_value(&again).unwrap(),
        serde_json::from_str::<Value>(&std::fs::read_to_string(a.join("summary.json")).unwrap()).unwrap()
    );

    // another configuration may not reuse the folder
    let other = RunConfig { seed: 8, ..cfg };
    let e = train::train(&other, &a, &options(&data, None)).unwrap_err().to_string();
    assert!(e.contains("another configuration"), "{e}");
}

#[test]
fn two_stage_switches_the_adc_on_for_the_last_epochs() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = RunConfig { method: "layercol-2stage".into(), epochs: 2, limit_train: Some(96), ..config() };
    train::train(&cfg, &tmp.path().join("r"), &options(&tmp.path().join("data"), None)).unwrap().unwrap();
    let m = metrics_without_timing(&tmp.path().join("r"));
    let stages: Vec<u64> = m.iter().map(|r| r["stage"].as_u64().unwrap()).collect();
    assert_eq!(stages, vec![1, 2]);
    // the fine-tuning stage restarts the schedule at lr * finetune_lr_scale, decaying from there
    assert!(m[1]["lr"].as_f64().unwrap() < cfg.lr * cfg.finetune_lr_scale);
}

#[test]
fn a_diverging_run_stops_with_a_clear_message() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = RunConfig { method: "fp".into(), lr: 1e12, epochs: 1, ..config() };
    let err = train::train(&cfg, &tmp.path().join("r"), &options(&tmp.path().join("data"), None)).unwrap_err();
    assert!(matches!(err, TrainError::NonFinite { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("not finite") && text.contains("--lr"), "{text}");
    assert!(!tmp.path().join("r/summary.json").exists());
}

#[test]
fn variation_study_at_sigma_zero_is_the_noiseless_accuracy() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let run = tmp.path().join("r");
    let cfg = RunConfig { epochs: 1, limit_train: Some(96), limit_test: Some(64), ..config() };
    train::train(&cfg, &run, &options(&data, None)).unwrap().unwrap();
    let dd = DataDir::new(&data);
    let r = train::variation_study(&run, &[0.0, 0.3], 3, 5, None, &dd, ComputeDevice::Cpu).unwrap();
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(r.noiseless, summary["final_test_acc"].as_f64().unwrap(), "the trained model, evaluated as in training");
    assert!(r.results[0].accuracies.iter().all(|&a| a == r.noiseless), "sigma 0: every chip is the noiseless model");
    assert_eq!(r.results[0].std, 0.0);
    // same chip seeds again: identical accuracies (recomputed, not read from the cache)
    std::fs::remove_file(run.join("variation.json")).unwrap();
    let again = train::variation_study(&run, &[0.0, 0.3], 3, 5, None, &dd, ComputeDevice::Cpu).unwrap();
    assert_eq!(again, r);
    assert!(run.join("variation.json").exists());
    let e = train::variation_study(&run, &[0.1], 0, 5, None, &dd, ComputeDevice::Cpu).unwrap_err().to_string();
    assert!(e.contains("--chips 0"), "{e}");
}

/// Every partial-sum path this CPU runs (AVX-512 VNNI, AVX2, the generic f32 product) trains the
/// same CIM run to the same bits: every epoch's losses and accuracies, and the summary. (The
/// weight files name their parameters by ids drawn per process, so they are not compared as
/// bytes.)
#[test]
fn every_partial_sum_path_gives_the_same_bits() {
    use cim_core::psums::{PsumPath, with_psum_path};
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cfg = RunConfig { epochs: 2, limit_train: Some(96), ..config() };
    let mut runs = Vec::new();
    for path in PsumPath::ALL.into_iter().filter(|p| p.supported()) {
        let dir = tmp.path().join(path.name());
        with_psum_path(path, || train::train(&cfg, &dir, &options(&data, None)).unwrap().unwrap()).unwrap();
        runs.push((path, metrics_without_timing(&dir), summary_without_timing(&dir)));
    }
    assert!(runs.len() >= 2, "at least the generic path and one integer path on an x86-64 CPU");
    for (path, metrics, summary) in &runs[1..] {
        assert_eq!(metrics, &runs[0].1, "{} against {}: metrics", path.name(), runs[0].0.name());
        assert_eq!(summary, &runs[0].2, "{} against {}: summary", path.name(), runs[0].0.name());
    }
}
