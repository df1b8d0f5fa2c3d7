//! The ADC-bits search on a small trained run of the synthetic set: what it returns is within
//! the tolerance on its own evaluation data, as an independent evaluation of the bits confirms.

use std::path::Path;

use data::DataDir;
use models::PsumBits;
use train::adc_bits::MIN_ADC_BITS;
use train::{ComputeDevice, RunConfig, SearchOrder, TrainOptions};

fn train_run(config: &RunConfig, data: &Path, out: &Path) {
    let options = TrainOptions {
        data_dir: DataDir::new(data),
        on_event: train::events::silent(),
        stop_after: None,
        device: ComputeDevice::Cpu,
        init_from: None,
    };
    train::train(config, out, &options).unwrap().unwrap();
}

/// A columnwise run of 2 epochs of 160 synthetic images, tested on 50.
fn small_columnwise_run() -> RunConfig {
    RunConfig {
        method: "columnwise".into(),
        epochs: 2,
        batch_size: 16,
        limit_train: Some(160),
        limit_test: Some(50),
        seed: 5,
        ..RunConfig::default()
    }
}

fn synthetic_test_images(data: &Path) -> usize {
    data::load_dataset("synthetic", &DataDir::new(data), data::source::FolderOptions::holdout(500)).unwrap().test.len()
}

#[test]
fn the_search_never_returns_bits_outside_the_tolerance() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let run = tmp.path().join("run");
    let config = small_columnwise_run();
    train_run(&config, &data, &run);
    let dir = DataDir::new(&data);
    let trained = train::evaluate_adc_bits(&run, &config.psum_bits, &dir, ComputeDevice::Cpu).unwrap();
    let mut seen = Vec::new();
    let orders = [SearchOrder::MostSensitive, SearchOrder::LeastSensitive, SearchOrder::MostSensitive];
    for (within, order) in [0.0, 4.0, 100.0].into_iter().zip(orders) {
        let r =
            train::search_adc_bits(&run, within, order, &dir, ComputeDevice::Cpu, &train::events::silent()).unwrap();
        assert_eq!(r.images, 50);
        assert_eq!(r.trained_accuracy, trained, "the reference is the run as trained");
        // within the tolerance, counted in images (4 points of 50 images: 2 images)
        assert_eq!(r.tolerance_images, [0, 2, 50][seen.len()]);
        let allowed = r.tolerance_images as f64 / 50.0;
        assert!(r.accuracy + allowed + 1e-12 >= r.trained_accuracy, "within {within}: {r:?}");
        // the bits alone reproduce the accuracy, through another path than the search's
        let again = train::evaluate_adc_bits(&run, &r.psum_bits, &dir, ComputeDevice::Cpu).unwrap();
        assert_eq!(again, r.accuracy, "within {within}: {}", r.psum_bits);
        assert_eq!(r.layers.len(), 18);
        for l in &r.layers {
            assert!(l.bits <= l.trained_bits && l.bits >= MIN_ADC_BITS, "{l:?}");
            assert_eq!(l.trained_bits, 3);
            assert!(l.sensitivity_points.is_some());
        }
        assert_eq!(r.psum_bits.per_layer(18), r.layers.iter().map(|l| l.bits).collect::<Vec<_>>());
        // the rest of the synthetic test split, which the search has not seen
        let unseen = r.unseen.as_ref().expect("the run tests on a subset");
        assert!(unseen.images > 0 && unseen.images + 50 == synthetic_test_images(&data));
        seen.push(r);
    }
    // 100 points accept everything: every layer reaches the minimum
    assert_eq!(seen[2].psum_bits, PsumBits::All(MIN_ADC_BITS));

    // bad input, before any work
    for bad in [-1.0, f64::NAN, f64::INFINITY, 1e9] {
        let e = train::search_adc_bits(
            &run,
            bad,
            SearchOrder::MostSensitive,
            &dir,
            ComputeDevice::Cpu,
            &train::events::silent(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("--within") && e.contains("accuracy points from 0 to 100"), "{e}");
    }
    let e = train::evaluate_adc_bits(&run, &PsumBits::PerLayer(vec![3; 4]), &dir, ComputeDevice::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("a list of 4 values") && e.contains("18 CIM layers"), "{e}");
    // a run trained with one resolution per layer is read back with its own layers' bits
    let mixed_bits = PsumBits::PerLayer([vec![2; 6], vec![3; 12]].concat());
    let mixed = tmp.path().join("mixed");
    train_run(&RunConfig { psum_bits: mixed_bits.clone(), epochs: 1, ..config.clone() }, &data, &mixed);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(mixed.join("summary.json")).unwrap()).unwrap();
    let own = train::evaluate_adc_bits(&mixed, &mixed_bits, &dir, ComputeDevice::Cpu).unwrap();
    assert_eq!(Some(own), summary["final_test_acc"].as_f64());
    let stored = std::fs::read_to_string(mixed.join("config.toml")).unwrap();
    assert!(stored.contains("psum_bits = [2, 2, 2, 2, 2, 2, 3,"), "{stored}");
    let ideal = tmp.path().join("ideal");
    train_run(&RunConfig { method: "ideal-adc".into(), epochs: 1, ..config.clone() }, &data, &ideal);
    let e = train::search_adc_bits(
        &ideal,
        1.0,
        SearchOrder::MostSensitive,
        &dir,
        ComputeDevice::Cpu,
        &train::events::silent(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("method ideal-adc, which has no built-in ADC"), "{e}");
}

/// The search takes only finished, unfailed runs: a run stopped after 1 of 2 epochs is refused
/// (it was once searched and called "trained"), and so is one marked failed.
#[test]
fn an_unfinished_or_failed_run_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let run = tmp.path().join("run");
    let config = RunConfig { limit_train: Some(32), limit_test: Some(16), seed: 0, ..small_columnwise_run() };
    let options = TrainOptions {
        data_dir: DataDir::new(&data),
        on_event: train::events::silent(),
        stop_after: Some(1),
        device: ComputeDevice::Cpu,
        init_from: None,
    };
    assert!(train::train(&config, &run, &options).unwrap().is_none());
    let search = || {
        train::search_adc_bits(
            &run,
            1.0,
            SearchOrder::MostSensitive,
            &DataDir::new(&data),
            ComputeDevice::Cpu,
            &train::events::silent(),
        )
    };
    let e = search().unwrap_err().to_string();
    assert!(e.contains("has not finished (1 of 2 epochs") && e.contains("adc-bits takes only finished runs"), "{e}");
    train_run(&config, &data, &run);
    assert!(train::RunDir::new(&run).finished("adc-bits").is_ok(), "finished now");
    let failure = serde_json::json!({ "config_hash": config.hash(), "epoch": 2, "what": "the test loss",
        "value": "NaN", "last_good_checkpoint": null, "message": "epoch 2: the test loss is NaN" });
    std::fs::write(run.join("failed.json"), failure.to_string()).unwrap();
    let e = search().unwrap_err().to_string();
    assert!(e.contains("the run failed (epoch 2: the test loss is NaN)"), "{e}");
    // eval refuses it too
    let e = train::evaluate_run(&run, None, None, &DataDir::new(&data), ComputeDevice::Cpu).unwrap_err().to_string();
    assert!(e.contains("the run failed (epoch 2: the test loss is NaN)") && e.contains("eval takes"), "{e}");
}
