//! Runs that start from the final weights of a finished floating-point run (`init_from`): the
//! weights arrive, the start is part of the identity, and every wrong starting point is refused
//! before any work, naming the folder and what differs.

use std::path::{Path, PathBuf};

use data::DataDir;
use train::{ComputeDevice, RunConfig, RunDir, StartingPoint, TrainOptions};

fn pretraining() -> RunConfig {
    RunConfig {
        method: "fp".into(),
        epochs: 3,
        batch_size: 32,
        limit_train: Some(512),
        limit_test: Some(64),
        seed: 3,
        ..RunConfig::default()
    }
}

fn options(data: &Path, init_from: Option<PathBuf>) -> TrainOptions {
    TrainOptions {
        data_dir: DataDir::new(data),
        on_event: train::events::silent(),
        stop_after: None,
        device: ComputeDevice::Cpu,
        init_from,
    }
}

fn fine_tuning(from: &RunConfig, method: &str) -> RunConfig {
    RunConfig {
        method: method.into(),
        epochs: 1,
        lr: 1e-9, // the weights stay where they start: the test sees the starting point
        init_from: Some(from.hash()),
        ..from.clone()
    }
}

fn error_of(config: &RunConfig, out: &Path, data: &Path, from: Option<PathBuf>) -> String {
    train::train(config, out, &options(data, from)).unwrap_err().to_string()
}

#[test]
fn a_run_starts_from_the_final_weights_of_its_pretraining() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let pre_dir = tmp.path().join("pre");
    let pre = pretraining();
    let pre_summary = train::train(&pre, &pre_dir, &options(&data, None)).unwrap().unwrap();
    assert!(pre_summary.before_training.is_none(), "a run from scratch has no start to record");

    // fp from fp with a vanishing learning rate: the pretrained network's accuracy, not chance
    let fp = fine_tuning(&pre, "fp");
    assert_ne!(fp.hash(), RunConfig { init_from: None, ..fp.clone() }.hash(), "the start is part of the hash");
    let fp_dir = tmp.path().join("fp");
    let s = train::train(&fp, &fp_dir, &options(&data, Some(pre_dir.clone()))).unwrap().unwrap();
    // (only the batch norms' running statistics move: by at most a few of the 64 test images)
    let moved = (s.final_test_acc - pre_summary.final_test_acc).abs();
    assert!(moved <= 3.0 / 64.0, "{} vs {}", s.final_test_acc, pre_summary.final_test_acc);
    // before its first step it is the pretrained network, tested on the same images; the record
    // is not an epoch (metrics.jsonl holds the one trained epoch, the summary's final is its)
    let before = s.before_training.clone().expect("recorded before the first step");
    assert_eq!((before.test_acc, before.stage, before.adc), (pre_summary.final_test_acc, 1, false));
    let metrics = std::fs::read_to_string(fp_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 1, "{metrics}");
    assert!(metrics.contains("\"epoch\":1"), "{metrics}");
    let stored: train::Summary =
        serde_json::from_str(&std::fs::read_to_string(fp_dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(stored.before_training, Some(before));
    let from_scratch = RunConfig { init_from: None, ..fp.clone() };
    let scratch = train::train(&from_scratch, &tmp.path().join("scratch"), &options(&data, None)).unwrap().unwrap();
    assert!((scratch.final_test_acc - pre_summary.final_test_acc).abs() > moved, "{scratch:?}");

    // a CIM run starts from the same weights (quantized) and is bit-identical when repeated
    let cim = fine_tuning(&pre, "ideal-adc");
    let a = train::train(&cim, &tmp.path().join("a"), &options(&data, Some(pre_dir.clone()))).unwrap().unwrap();
    let b = train::train(&cim, &tmp.path().join("b"), &options(&data, Some(pre_dir.clone()))).unwrap().unwrap();
    assert_eq!(a.final_test_acc, b.final_test_acc);
    assert_eq!(a.before_training, b.before_training);
    // a one-stage run with ADCs starts with them calibrated
    let col = fine_tuning(&pre, "columnwise");
    let c = train::train(&col, &tmp.path().join("col"), &options(&data, Some(pre_dir.clone()))).unwrap().unwrap();
    let before = c.before_training.expect("recorded");
    assert!(before.adc && (0.0..=1.0).contains(&before.test_acc), "{before:?}");
    let point = StartingPoint::check(&cim, &pre_dir).unwrap();
    assert_eq!(point.config, pre);
}

#[test]
fn wrong_starting_points_are_refused_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let pre_dir = tmp.path().join("pre");
    let pre = pretraining();
    let out = tmp.path().join("out");
    let ft = fine_tuning(&pre, "columnwise");

    // nothing there yet; then an unfinished run
    let e = error_of(&ft, &out, &data, Some(tmp.path().join("nowhere")));
    assert!(e.contains("nowhere") && e.contains("not a run folder"), "{e}");
    let stopped = TrainOptions { stop_after: Some(1), ..options(&data, None) };
    assert!(train::train(&pre, &pre_dir, &stopped).unwrap().is_none());
    let e = error_of(&ft, &out, &data, Some(pre_dir.clone()));
    assert!(e.contains(&pre_dir.display().to_string()) && e.contains("not a finished run"), "{e}");
    train::train(&pre, &pre_dir, &options(&data, None)).unwrap().unwrap();

    // the start missing, or given to a run that names none
    let e = error_of(&ft, &out, &data, None);
    assert!(e.contains("init_from") && e.contains("--init-from"), "{e}");
    let plain = RunConfig { init_from: None, ..ft.clone() };
    let e = error_of(&plain, &out, &data, Some(pre_dir.clone()));
    assert!(e.contains("names no init_from"), "{e}");

    // another run than the one the configuration names
    let other = RunConfig { init_from: Some("0123456789ab".into()), ..ft.clone() };
    let e = error_of(&other, &out, &data, Some(pre_dir.clone()));
    assert!(e.contains(&pre.hash()) && e.contains("0123456789ab"), "{e}");

    // another architecture, another data set
    let resnet18 = RunConfig { model: models::Arch::Resnet18, ..ft.clone() };
    let e = error_of(&resnet18, &out, &data, Some(pre_dir.clone()));
    assert!(e.contains("a resnet20 run, this run is a resnet18"), "{e}");
    let fashion = RunConfig { dataset: "fashion-mnist".into(), ..ft.clone() };
    let e = error_of(&fashion, &out, &data, Some(pre_dir.clone()));
    assert!(e.contains("trained on data set synthetic, this run on fashion-mnist"), "{e}");

    // a finished run that also carries a failure record is no starting point
    std::fs::write(
        pre_dir.join("failed.json"),
        serde_json::json!({ "config_hash": pre.hash(), "epoch": 3,
        "what": "x", "value": "NaN", "last_good_checkpoint": null, "message": "epoch 3: x is NaN" })
        .to_string(),
    )
    .unwrap();
    let e = error_of(&ft, &out, &data, Some(pre_dir.clone()));
    assert!(e.contains("the run failed (epoch 3: x is NaN)"), "{e}");
    std::fs::remove_file(pre_dir.join("failed.json")).unwrap();

    // a floating-point run that would change the network's form
    let clamp = RunConfig { activation: models::Activation::Clamp, ..fine_tuning(&pre, "fp") };
    let e = error_of(&clamp, &out, &data, Some(pre_dir.clone()));
    assert!(e.contains("trained with activation = relu, this run has activation = clamp"), "{e}");

    // damaged weights
    let ckpt = RunDir::new(&pre_dir).latest_checkpoint().unwrap().unwrap();
    let model = ckpt.dir.join("model.bpk");
    let mut bytes = std::fs::read(&model).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&model, bytes).unwrap();
    let e = error_of(&ft, &out, &data, Some(pre_dir.clone()));
    assert!(e.contains("model.bpk") && e.contains("SHA-256 mismatch"), "{e}");
    assert!(!out.exists(), "nothing was written");
}

/// A finished run reduced to its model (what a report archives) is a starting point and can
/// be evaluated; the optimizer state is gone.
#[test]
fn a_model_only_copy_is_a_run_to_start_from_and_evaluate() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let pre_dir = tmp.path().join("pre");
    let pre = pretraining();
    let s = train::train(&pre, &pre_dir, &options(&data, None)).unwrap().unwrap();
    let copy = tmp.path().join("copy");
    for name in ["config.toml", "summary.json", "metrics.jsonl"] {
        std::fs::create_dir_all(&copy).unwrap();
        std::fs::copy(pre_dir.join(name), copy.join(name)).unwrap();
    }
    let files = RunDir::new(&pre_dir).model_only_checkpoint().unwrap().unwrap();
    assert_eq!(files.len(), 3);
    for (rel, bytes) in &files {
        std::fs::create_dir_all(copy.join(rel).parent().unwrap()).unwrap();
        std::fs::write(copy.join(rel), bytes).unwrap();
    }
    assert!(!copy.join("ckpt-0002/optim.bpk").exists());
    let eval = train::evaluate_run(&copy, None, None, &DataDir::new(&data), ComputeDevice::Cpu).unwrap();
    assert_eq!(eval.accuracy, s.final_test_acc);
    let ft = fine_tuning(&pre, "fp");
    let from_copy = train::train(&ft, &tmp.path().join("a"), &options(&data, Some(copy.clone()))).unwrap().unwrap();
    let from_run = train::train(&ft, &tmp.path().join("b"), &options(&data, Some(pre_dir.clone()))).unwrap().unwrap();
    assert_eq!(from_copy.final_test_acc, from_run.final_test_acc);
    // an edited configuration in the copy is refused
    let text = std::fs::read_to_string(copy.join("config.toml")).unwrap();
    assert!(text.contains("limit_test = 64"), "{text}");
    std::fs::write(copy.join("config.toml"), text.replace("limit_test = 64", "limit_test = 32")).unwrap();
    let e = train::evaluate_run(&copy, None, None, &DataDir::new(&data), ComputeDevice::Cpu).unwrap_err().to_string();
    assert!(e.contains("edited after training"), "{e}");
}
