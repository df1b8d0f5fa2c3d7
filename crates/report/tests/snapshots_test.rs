//! Report snapshots: (1) a report generated from fixed result fixtures (every table and CSV),
//! showing missing and partial runs and a user's method crate appearing in every table as a
//! row; (2) the committed smoke report, regenerated from the results archived beside it.

use std::path::{Path, PathBuf};

use report::{ReportOptions, generate};
use study::Study;
use train::run::{EpochRecord, FailureRecord, write_json};
use train::{AdcQualityReport, AdcQualityRow, Summary, VariationReport};

const STUDY: &str = r#"
name = "fixture"
description = "Fixture results (made-up numbers) for the report's snapshot tests."

[[benchmark]]
name = "ResNet-20 / fixture"
claim = "resnet20-cifar10"
methods = ["fp", "ideal-adc", "layerwise", "layercol-2stage", "arraywise", "array-column", "columnwise"]
seeds = [0, 1]
base = { dataset = "synthetic", epochs = 2, limit_train = 100, limit_test = 50 }
sweep = [{ psum_bits = [2, 3] }, { methods = ["columnwise"], psum_bits = [3], recipe = ["two-stage"] }]

[variation]
benchmark = "ResNet-20 / fixture"
methods = ["layerwise", "columnwise"]
at = { psum_bits = 3 }
sigmas = [0.0, 0.1]
chips = 3
"#;

fn claims() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../baselines/paper-claims.toml")
}

fn energy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../baselines/energy/default.toml")
}

/// The options of a report of the runs in `runs_root` into `out_dir`, with the project's claims
/// and energy model, adopting no file.
fn options(runs_root: PathBuf, out_dir: &Path, figures: bool) -> ReportOptions {
    ReportOptions {
        runs_root,
        out_dir: out_dir.to_path_buf(),
        claims: claims(),
        energy: energy(),
        figures,
        adopt: false,
    }
}

/// A made-up but fixed accuracy for a cell.
fn accuracy(i: usize, method: &str, psum_bits: u32, seed: u64) -> f64 {
    let base = match method {
        "fp" => 0.90,
        "ideal-adc" => 0.88,
        "columnwise" => 0.85,
        "array-column" => 0.84,
        "arraywise" => 0.83,
        "layercol-2stage" => 0.82,
        _ => 0.80,
    };
    base - 0.02 * (3 - psum_bits.min(3)) as f64 + 0.004 * seed as f64 + 0.0001 * (i % 3) as f64
}

fn write_fixtures(study: &Study, runs: &Path) {
    for (i, cell) in study.cells().unwrap().into_iter().enumerate() {
        let dir = cell.dir(runs, &study.name);
        std::fs::create_dir_all(&dir).unwrap();
        let c = &cell.config;
        // one pending cell (nothing written) and one partial cell (one epoch, no summary)
        if c.method == "arraywise" && c.psum_bits == 2.into() && c.seed == 1 {
            continue;
        }
        let epochs = if c.method == "layerwise" && c.psum_bits == 2.into() && c.seed == 1 { 1 } else { 2 };
        let acc = accuracy(i, &c.method, c.psum_bits.of_layer(0), c.seed) - if c.recipe.is_some() { 0.01 } else { 0.0 };
        let history: Vec<EpochRecord> = (1..=epochs)
            .map(|e| EpochRecord {
                epoch: e,
                stage: 1,
                train_loss: 1.0 / e as f64,
                train_acc: acc - 0.05,
                test_loss: 0.5 / e as f64,
                test_acc: acc - 0.002 * (2 - e) as f64, // a flat last epoch: converged
                lr: 0.01,
                images_per_sec: 100.0,
                epoch_seconds: 1.0,
                wall_seconds: e as f64,
            })
            .collect();
        std::fs::write(dir.join("config.toml"), c.to_toml()).unwrap();
        std::fs::write(dir.join("metrics.jsonl"), train::run::metrics_lines(&history)).unwrap();
        if epochs == 1 {
            let state = serde_json::json!({ "config_hash": cell.key(), "epochs_done": 1, "history": history });
            write_json(&dir.join("ckpt-0001/state.json"), &state).unwrap();
            let sha = train::run::sha256_hex(&std::fs::read(dir.join("ckpt-0001/state.json")).unwrap());
            let pointer = serde_json::json!({ "dir": "ckpt-0001", "state_sha256": sha });
            write_json(&dir.join("checkpoint.json"), &pointer).unwrap();
            continue;
        }
        // one run stopped by a non-finite loss
        if c.method == "columnwise" && c.psum_bits == 2.into() && c.seed == 1 {
            let failure = FailureRecord {
                config_hash: cell.key(),
                epoch: 2,
                what: "the test loss".into(),
                value: "NaN".into(),
                last_good_checkpoint: Some("ckpt-0001".into()),
                message: "epoch 2: the test loss is NaN (not finite)".into(),
            };
            write_json(&dir.join("failed.json"), &failure).unwrap();
            continue;
        }
        let summary = Summary {
            method: c.method.clone(),
            dataset: c.dataset.clone(),
            config_hash: cell.key(),
            best_test_acc: acc,
            best_epoch: 2,
            final_test_acc: acc,
            epochs: 2,
            seed: c.seed,
            code_version: "fixture".into(),
            train_images: 100,
            test_images: 50,
            wall_seconds: 2.0,
            images_per_sec: 100.0,
            device: Default::default(),
            before_training: None,
            classes: Vec::new(),
            input_shape: None,
        };
        write_json(&dir.join("summary.json"), &summary).unwrap();
        if c.uses_adc() {
            // two CIM layers x two slices; finer granularity, more bits: higher SQNR
            let gain = accuracy(i, &c.method, c.psum_bits.of_layer(0), c.seed) * 10.0;
            let rows = (0..4)
                .map(|j| AdcQualityRow {
                    layer: j / 2,
                    shape: "16->16 s1".into(),
                    polarity: 0,
                    slice: j % 2,
                    sqnr_db: Some(gain + j as f64),
                    spread_sqnr_db: Some(gain - 3.0 + j as f64),
                    clipped_low: 0.01 * j as f64,
                    clipped_high: 0.02,
                    code_entropy_bits: 2.0,
                    codes_used: 6,
                    codes: 1 << c.psum_bits.of_layer(0),
                    digit_shares: vec![0.25; 4],
                    digit_low: 0,
                })
                .collect();
            let q = AdcQualityReport { method: c.method.clone(), config_hash: cell.key(), images: 50, rows };
            write_json(&dir.join("adc-quality.json"), &q).unwrap();
        }
    }
    for cell in study.variation_cells().unwrap() {
        let dir = cell.dir(runs, &study.name);
        let base = accuracy(0, &cell.config.method, 3, cell.config.seed);
        let drop = if cell.config.method == "columnwise" { 0.02 } else { 0.05 };
        let results = [0.0, 0.1]
            .iter()
            .map(|&sigma| {
                let accs: Vec<f64> = (0..3).map(|c| base - drop * sigma * 10.0 - 0.001 * c as f64 * sigma * 10.0).collect();
                let mean = accs.iter().sum::<f64>() / 3.0;
                let std = (accs.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / 2.0).sqrt();
                serde_json::json!({ "sigma": sigma, "accuracies": accs, "mean": mean, "std": std,
                    "min": accs.iter().cloned().fold(f64::INFINITY, f64::min), "max": accs.iter().cloned().fold(f64::NEG_INFINITY, f64::max) })
            })
            .collect::<Vec<_>>();
        let v = serde_json::json!({ "method": cell.config.method, "config_hash": cell.key(), "chips": 3, "base_seed": 0,
            "images": 50, "noiseless": base, "results": results });
        let v: VariationReport = serde_json::from_value(v).unwrap();
        write_json(&dir.join("variation.json"), &v).unwrap();
    }
}

#[test]
fn report_of_fixed_results() {
    let study: Study = toml::from_str(STUDY).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let out = tmp.path().join("report");
    write_fixtures(&study, &runs);
    let opts = options(runs, &out, true);
    let tables = generate(&study, &opts).unwrap();
    for stem in ["accuracy", "claims", "stages", "hardware", "energy", "adc_quality", "variation", "variation_claims"] {
        insta::assert_snapshot!(format!("fixture_{stem}_md"), tables.markdown(stem));
        insta::assert_snapshot!(
            format!("fixture_{stem}_csv"),
            std::fs::read_to_string(out.join(format!("{stem}.csv"))).unwrap()
        );
    }
    // the user's method crate is a row of every table it belongs in
    for stem in ["accuracy", "hardware"] {
        assert!(tables.markdown(stem).contains("| array-column |"), "{stem}");
    }
    // missing, partial and failed runs are shown, not dropped
    let acc = tables.markdown("accuracy");
    assert!(acc.contains("1 missing") && acc.contains("1 partial") && acc.contains("1 failed"), "{acc}");
    // figures and the README exist
    for f in [
        "acc_vs_energy_fom_0.svg",
        "acc_vs_adc_bits.svg",
        "acc_vs_adc_bits.png",
        "acc_vs_sigma.svg",
        "acc_vs_sigma.png",
        "acc_vs_epoch_0_0.svg",
        "acc_vs_epoch_0_1.png",
        "README.md",
    ] {
        assert!(out.join(f).exists(), "{f}");
    }
    // every figure names its benchmark; a method has one colour in every figure
    let epoch = std::fs::read_to_string(out.join("acc_vs_epoch_0_1.svg")).unwrap();
    let sigma = std::fs::read_to_string(out.join("acc_vs_sigma.svg")).unwrap();
    let bits = std::fs::read_to_string(out.join("acc_vs_adc_bits.svg")).unwrap();
    for svg in [&epoch, &sigma, &bits] {
        assert!(svg.contains("ResNet-20 / fixture"));
        assert!(svg.contains("#D62728"), "columnwise's colour in every figure");
    }
    // the finding states the intervals and verdicts of the claim, stage and variation tables
    let finding = tables.finding();
    assert!(finding.contains("+1.01 points [+0.81, +1.20] over array-column at P = 3 (yes)"), "{finding}");
    assert!(finding.contains("one stage minus two stages at P = 3 is +1.01 points"), "{finding}");
    assert!(finding.contains("+3.00 [+3.00, +3.00] at σ = 0.1 (column/column more robust)"), "{finding}");
    let readme = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(readme.contains("## Finding"), "{readme}");
    // the energy sensitivity figure: one front per ADC figure of merit, each named
    let fronts = std::fs::read_to_string(out.join("acc_vs_energy_fom_0.svg")).unwrap();
    for fom in ["1 fJ/conv-step", "3 fJ/conv-step", "10 fJ/conv-step", "30 fJ/conv-step", "100 fJ/conv-step"] {
        assert!(fronts.contains(fom), "{fom}");
        assert!(readme.contains(&format!("{fom}: ")), "{fom}: {readme}");
    }
    // single-seed points have a marker of their own, explained in the legend
    assert!(epoch.contains("one seed (no spread)") || bits.contains("one seed (no spread)"));
    assert!(readme.contains("runs/") && readme.contains("fixture"), "{readme}");
    assert!(readme.contains("### Failed runs") && readme.contains("the test loss is NaN"), "{readme}");
}

/// Options of a quiet `reproduce` on the CPU with run folders in `tmp/runs` and data in
/// `tmp/data`.
fn reproduce_options(tmp: &Path, runs: &str, archive: Option<PathBuf>) -> study::ReproduceOptions {
    study::ReproduceOptions {
        runs_root: tmp.join(runs),
        data_dir: data::DataDir::new(tmp.join("data")),
        filter: None,
        dry_run: false,
        progress: false,
        on_train_event: train::events::silent(),
        retry_failed: false,
        device: Default::default(), // the CPU
        archive,
        pick: study::CellPick::All,
        claim_timeout: train::claim::DEFAULT_STALE_AFTER,
        on_event: |_| {},
    }
}

/// Copies a folder tree.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.path().is_dir() {
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// The committed smoke report, regenerated as in a fresh clone: no run folders, only the results
/// archived under reports/smoke/runs. Its tables must not change unless the results (or the
/// report code) do, and no finished result may turn into a "missing" row.
#[test]
fn committed_smoke_report_regenerates_identically() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../reports/smoke");
    let study = Study::load(&root.join("study.toml")).unwrap();
    let archived = root.join("runs");
    assert!(archived.exists(), "{} missing: run `cargo xtask reproduce && cargo xtask report`", archived.display());
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("report");
    copy_tree(&root, &out);
    let before = std::fs::read(out.join("README.md")).unwrap();
    let opts = options(tmp.path().join("no-runs"), &out, true);
    let tables = generate(&study, &opts).unwrap();
    for stem in ["accuracy", "claims", "stages", "hardware", "adc_quality", "variation"] {
        let committed = std::fs::read_to_string(root.join(format!("{stem}.md"))).unwrap();
        assert_eq!(tables.markdown(stem), committed, "reports/smoke/{stem}.md");
        insta::assert_snapshot!(format!("smoke_{stem}_md"), tables.markdown(stem));
    }
    assert!(!tables.markdown("accuracy").contains("missing"));
    assert_eq!(std::fs::read(out.join("README.md")).unwrap(), before, "the README regenerates byte for byte");
}

/// Two study files in one folder: the second's report is refused, not written over the first's.
#[test]
fn a_second_study_in_the_same_folder_does_not_replace_the_first_report() {
    let study: Study = toml::from_str(STUDY).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    write_fixtures(&study, &runs);
    let out = tmp.path().join("mine");
    let opts = options(runs, &out, false);
    generate(&study, &opts).unwrap();
    let before = std::fs::read(out.join("README.md")).unwrap();
    let other: Study = toml::from_str(&STUDY.replace("name = \"fixture\"", "name = \"other\"")).unwrap();
    let e = generate(&other, &opts).err().expect("refused").to_string();
    assert!(e.contains("holds the report of study `fixture`") && e.contains("`other`"), "{e}");
    assert_eq!(std::fs::read(out.join("README.md")).unwrap(), before);
    generate(&study, &opts).unwrap();
}

/// A report beside a user's own study file never replaces the user's files.
#[test]
fn a_report_beside_a_users_files_replaces_none_of_them() {
    let study: Study = toml::from_str(STUDY).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    write_fixtures(&study, &runs);
    let out = tmp.path().join("mine");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("README.md"), "my notes\n").unwrap();
    std::fs::write(out.join("accuracy.csv"), "my,table\n").unwrap();
    let opts = options(runs, &out, false);
    let Err(e) = generate(&study, &opts) else { panic!("the report replaced the user's files") };
    let e = e.to_string();
    assert!(e.contains("README.md (not written by the report)") && e.contains("accuracy.csv"), "{e}");
    assert_eq!(std::fs::read_to_string(out.join("README.md")).unwrap(), "my notes\n");
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 2, "nothing was written");
    // moved away, the report is written, and the next one replaces its own files
    std::fs::remove_file(out.join("README.md")).unwrap();
    std::fs::remove_file(out.join("accuracy.csv")).unwrap();
    generate(&study, &opts).unwrap();
    generate(&study, &opts).unwrap();
    assert!(out.join(report::writer::MANIFEST).exists());
    // a file put there by hand is taken over only when asked
    std::fs::write(out.join("accuracy.md"), "by hand\n").unwrap();
    assert!(generate(&study, &opts).is_err());
    generate(&study, &ReportOptions { adopt: true, ..opts }).unwrap();
    assert_ne!(std::fs::read_to_string(out.join("accuracy.md")).unwrap(), "by hand\n");
}

/// A run stopped by non-finite values is reported as failed by `reproduce`, not retried
/// silently, and `report` shows it as failed while reporting every other cell.
#[test]
fn a_failed_cell_does_not_fail_the_profile() {
    let text = r#"
name = "faults"
description = "one good and one diverging run"
[[benchmark]]
name = "ResNet-20 / synthetic"
methods = ["fp"]
seeds = [0]
base = { dataset = "synthetic", epochs = 1, batch_size = 32, limit_train = 64, limit_test = 32 }
sweep = [{ lr = [0.05, 1e6] }]
"#;
    let study: Study = toml::from_str(text).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let opts = reproduce_options(tmp.path(), "runs", None);
    let first = study::reproduce(&study, &opts).unwrap();
    assert_eq!((first.trained, first.failed.len()), (1, 1), "{:?}", first.failed);
    assert!(first.failed[0].1.contains("not finite"), "{:?}", first.failed);
    // a second call reports the failure again without training it again
    let second = study::reproduce(&study, &opts).unwrap();
    assert_eq!((second.cached, second.trained, second.failed.len()), (1, 0, 1));
    let out = tmp.path().join("report");
    let ropts = options(tmp.path().join("runs"), &out, false);
    generate(&study, &ropts).unwrap();
    let readme = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(readme.contains("| failed |") && readme.contains("### Failed runs"), "{readme}");
    assert!(readme.contains("| finished |"), "{readme}");
    // a damaged file (here a summary with a null where a number belongs, as older versions
    // wrote) marks its cell failed, with the reason, and the report is still written
    let good = first.summaries[0].1.config_hash.clone();
    let summary = tmp.path().join("runs/faults").join(&good).join("summary.json");
    let text = std::fs::read_to_string(&summary).unwrap();
    let damaged = text.replacen("\"best_test_acc\": ", "\"best_test_acc\": null, \"x\": ", 1);
    std::fs::write(&summary, damaged).unwrap();
    generate(&study, &ropts).unwrap();
    let readme = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(
        !readme.contains("| finished |") && readme.contains("unreadable") && readme.contains("summary.json"),
        "{readme}"
    );
}

/// The committed real-data report, regenerated as in a fresh clone from its archive alone (its
/// CIFAR-10 input taken from the archived runs), byte for byte.
#[test]
fn committed_real_report_regenerates_identically() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../reports/real");
    let mut study = Study::load(&root.join("study.toml")).unwrap();
    study.provide_from_archive(&root.join("runs"));
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("report");
    copy_tree(&root, &out);
    let before = std::fs::read(out.join("README.md")).unwrap();
    let opts = options(tmp.path().join("no-runs"), &out, true);
    let tables = generate(&study, &opts).unwrap();
    for stem in ["accuracy", "claims", "stages", "variation_claims"] {
        let committed = std::fs::read_to_string(root.join(format!("{stem}.md"))).unwrap();
        assert_eq!(tables.markdown(stem), committed, "reports/real/{stem}.md");
    }
    assert_eq!(std::fs::read(out.join("README.md")).unwrap(), before, "the README regenerates byte for byte");
    // runs of uncommitted code are named as such, once at the top per code version and beside
    // every table
    let readme = String::from_utf8(before).unwrap();
    let dirty: std::collections::BTreeSet<String> = walk_files(&root.join("runs"))
        .iter()
        .filter(|p| p.ends_with("summary.json"))
        .filter_map(|p| train::RunDir::new(p.parent().unwrap()).read_summary().ok().flatten())
        .map(|s| s.code_version)
        .filter(|v| v.ends_with("-dirty"))
        .collect();
    for v in &dirty {
        assert!(readme.contains(&format!("trained by code version `{v}`, built from a checkout with uncommitted")));
    }
    let beside = readme.matches("> Includes runs of uncommitted code").count();
    assert!(dirty.is_empty() || beside >= 9, "{beside} tables marked");
}

/// Committed configurations name their data by the study's input and content identity, never by
/// a path of the machine that trained them.
#[test]
fn committed_configs_name_no_machine_path() {
    let reports = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../reports");
    let configs: Vec<PathBuf> = walk_files(&reports).into_iter().filter(|p| p.ends_with("config.toml")).collect();
    assert!(configs.len() > 100, "{}", configs.len());
    for path in configs {
        let config = train::RunConfig::from_stored_toml(&std::fs::read_to_string(&path).unwrap(), "").unwrap();
        assert!(!config.dataset.contains('/'), "{}: dataset = {:?}", path.display(), config.dataset);
    }
}

/// Committed results are the cache: a pretraining and the cells that start from it, trained
/// once and reported; then, with no run folders (a fresh clone), `reproduce` trains nothing,
/// the report regenerates byte for byte from its archive, and the archived seed-0 model is
/// evaluated with the accuracy its run reported.
#[test]
fn committed_results_are_the_cache_and_hold_their_models() {
    let text = r#"
name = "cache"
description = "a pretraining and two fine-tuned cells"
archive_weights = true
[[benchmark]]
name = "ResNet-20 / synthetic"
methods = ["fp", "ideal-adc"]
seeds = [0, 1]
base = { dataset = "synthetic", epochs = 1, batch_size = 32, lr = 0.01, limit_train = 64, limit_test = 32 }
pretrain = { epochs = 1, lr = 0.05, limit_train = 128 }
sweep = [{ methods = ["fp"] }, { methods = ["ideal-adc"], seeds = [0] }]
"#;
    let study: Study = toml::from_str(text).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("report");
    let opts = |runs: &str| reproduce_options(tmp.path(), runs, Some(out.join("runs")));
    let first = study::reproduce(&study, &opts("runs")).unwrap();
    assert_eq!((first.trained, first.cached, first.failed.len()), (4, 0, 0), "{:?}", first.failed);
    let ropts = |runs: &str| options(tmp.path().join(runs), &out, false);
    generate(&study, &ropts("runs")).unwrap();
    let readme = std::fs::read(out.join("README.md")).unwrap();
    assert!(String::from_utf8_lossy(&readme).contains("fp (pretraining)"));

    // a fresh clone: no run folders, only the archive
    let again = study::reproduce(&study, &opts("fresh")).unwrap();
    assert_eq!((again.trained, again.cached), (0, 4));
    assert!(!tmp.path().join("fresh").exists(), "nothing was trained or written");
    generate(&study, &ropts("fresh")).unwrap();
    assert_eq!(std::fs::read(out.join("README.md")).unwrap(), readme, "regenerated byte for byte");

    // models kept: the pretraining and seed 0, not seed 1; no optimizer state
    let cells = study.cells().unwrap();
    let kept = |c: &study::Cell| out.join("runs").join(c.key()).join("checkpoint.json").exists();
    assert!(cells[0].pretraining && kept(&cells[0]));
    for c in &cells[1..] {
        assert_eq!(kept(c), c.config.seed == 0, "{}", c.label());
    }
    let walk = walk_files(&out.join("runs"));
    assert!(walk.iter().all(|p| !p.ends_with("optim.bpk")), "{walk:?}");
    let seed0 = cells.iter().find(|c| c.config.method == "ideal-adc").unwrap();
    let archived = out.join("runs").join(seed0.key());
    let summary = train::RunDir::new(&archived).read_summary().unwrap().unwrap();
    let eval = train::evaluate_run(
        &archived,
        None,
        None,
        &data::DataDir::new(tmp.path().join("data")),
        train::ComputeDevice::Cpu,
    )
    .unwrap();
    assert_eq!(eval.accuracy, summary.final_test_acc);
    // a damaged committed model is refused
    let model = walk.iter().find(|p| p.starts_with(&archived) && p.ends_with("model.bpk")).unwrap();
    let mut bytes = std::fs::read(model).unwrap();
    bytes[64] ^= 1;
    std::fs::write(model, bytes).unwrap();
    let e = train::evaluate_run(
        &archived,
        None,
        None,
        &data::DataDir::new(tmp.path().join("data")),
        train::ComputeDevice::Cpu,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("SHA-256 mismatch"), "{e}");
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk_files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// A summary is a result only if it is its cell's own and possible: one swapped for another
/// cell's, an accuracy outside [0, 1], or a final value its metrics.jsonl contradicts makes the
/// cell failed, with the reason, in the report and in reproduce; repairing the file clears it,
/// and `--retry-failed` finishes a cell from its checkpoint with the bad summary kept aside.
#[test]
fn summaries_are_checked_against_their_cell() {
    let text = r#"
name = "verified"
description = "two fp cells"
[[benchmark]]
name = "ResNet-20 / synthetic"
methods = ["fp"]
seeds = [0]
base = { dataset = "synthetic", epochs = 2, batch_size = 32, limit_train = 64, limit_test = 32 }
sweep = [{ lr = [0.05, 0.02] }]
"#;
    let study: Study = toml::from_str(text).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let opts = reproduce_options(tmp.path(), "runs", None);
    assert_eq!(study::reproduce(&study, &opts).unwrap().trained, 2);
    let cells = study.cells().unwrap();
    let dirs: Vec<PathBuf> = cells.iter().map(|c| c.dir(&opts.runs_root, &study.name)).collect();
    let out = tmp.path().join("report");
    let ropts = options(opts.runs_root.clone(), &out, false);
    let good = std::fs::read_to_string(dirs[0].join("summary.json")).unwrap();
    let readme = || std::fs::read_to_string(out.join("README.md")).unwrap();
    let failure_of = |dir: &Path, config: &train::RunConfig| study::cell_status(dir, config);
    let tampered: [(&str, String); 3] = [
        ("belongs to the run of config hash", std::fs::read_to_string(dirs[1].join("summary.json")).unwrap()),
        ("final_test_acc = 1.7: not an accuracy", {
            let v: serde_json::Value = serde_json::from_str(&good).unwrap();
            good.replace(&format!("\"final_test_acc\": {}", v["final_test_acc"]), "\"final_test_acc\": 1.7")
        }),
        ("but metrics.jsonl's last epoch has", {
            let v: serde_json::Value = serde_json::from_str(&good).unwrap();
            good.replace(&format!("\"final_test_acc\": {}", v["final_test_acc"]), "\"final_test_acc\": 0.77")
        }),
    ];
    for (why, text) in &tampered {
        assert_ne!(text, &good);
        std::fs::write(dirs[0].join("summary.json"), text).unwrap();
        let (state, message) = failure_of(&dirs[0], &cells[0].config);
        assert_eq!(state, study::CellState::Failed);
        assert!(message.as_deref().unwrap_or_default().contains(why), "{message:?}");
        let again = study::reproduce(&study, &opts).unwrap();
        assert_eq!((again.trained, again.failed.len()), (0, 1), "{why}");
        assert!(again.failed[0].1.contains(why), "{:?}", again.failed);
        let tables = generate(&study, &ropts).unwrap();
        assert!(readme().contains(why), "{why}");
        assert!(!tables.markdown("accuracy").contains("170.00") && tables.markdown("accuracy").contains("1 failed"));
        let archived = std::fs::read_to_string(out.join("runs").join(cells[0].key()).join("failed.json")).unwrap();
        assert!(!archived.contains(tmp.path().to_str().unwrap()), "no absolute path archived: {archived}");
    }
    // repaired by hand: the failure is gone from the report and its archive
    std::fs::write(dirs[0].join("summary.json"), &good).unwrap();
    let tables = generate(&study, &ropts).unwrap();
    assert!(!tables.markdown("accuracy").contains("failed"), "{}", tables.markdown("accuracy"));
    assert!(!out.join("runs").join(cells[0].key()).join("failed.json").exists());
    // or finished again from its checkpoint: the bad summary is kept aside, the result is the same
    std::fs::write(dirs[0].join("summary.json"), &tampered[2].1).unwrap();
    let retried = study::reproduce(&study, &study::ReproduceOptions { retry_failed: true, ..opts.clone() }).unwrap();
    assert_eq!((retried.trained, retried.failed.len()), (1, 0));
    assert_eq!(std::fs::read_to_string(dirs[0].join("summary.json.rejected")).unwrap(), tampered[2].1);
    let redone: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dirs[0].join("summary.json")).unwrap()).unwrap();
    let before: serde_json::Value = serde_json::from_str(&good).unwrap();
    assert_eq!(redone["final_test_acc"], before["final_test_acc"]);
    // train itself refuses a summary that is not its own
    std::fs::write(dirs[0].join("summary.json"), &tampered[0].1).unwrap();
    let e = train::train(
        &cells[0].config,
        &dirs[0],
        &train::TrainOptions {
            data_dir: opts.data_dir.clone(),
            on_event: train::events::silent(),
            stop_after: None,
            device: Default::default(),
            init_from: None,
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("belongs to the run of config hash") && e.contains("move summary.json aside"), "{e}");
}

/// A finished run of `cell` in `runs`: test accuracies `accs` per epoch (one stage), and its
/// accuracy before the first step where given.
fn write_run(runs: &Path, study: &Study, cell: &study::Cell, accs: &[f64], before: Option<f64>) {
    let dir = cell.dir(runs, &study.name);
    std::fs::create_dir_all(&dir).unwrap();
    let history: Vec<EpochRecord> = accs
        .iter()
        .enumerate()
        .map(|(e, &acc)| EpochRecord {
            epoch: e + 1,
            stage: 1,
            train_loss: 1.0,
            train_acc: acc,
            test_loss: 1.0,
            test_acc: acc,
            lr: 0.01,
            images_per_sec: 100.0,
            epoch_seconds: 1.0,
            wall_seconds: (e + 1) as f64,
        })
        .collect();
    let best = train::best_epoch(&history).unwrap().clone();
    let summary = Summary {
        method: cell.config.method.clone(),
        dataset: cell.config.dataset.clone(),
        config_hash: cell.key(),
        best_test_acc: best.test_acc,
        best_epoch: best.epoch,
        final_test_acc: *accs.last().unwrap(),
        epochs: accs.len(),
        seed: cell.config.seed,
        code_version: "fixture".into(),
        train_images: 100,
        test_images: 50,
        wall_seconds: 2.0,
        images_per_sec: 100.0,
        device: Default::default(),
        classes: Vec::new(),
        input_shape: None,
        before_training: before.map(|acc| train::run::StartRecord {
            stage: 1,
            adc: true,
            test_loss: 2.0,
            test_acc: acc,
        }),
    };
    std::fs::write(dir.join("config.toml"), cell.config.to_toml()).unwrap();
    std::fs::write(dir.join("metrics.jsonl"), train::run::metrics_lines(&history)).unwrap();
    write_json(&dir.join("summary.json"), &summary).unwrap();
}

/// A verdict between cells still climbing reads "unconverged" with their last-epoch gains; the
/// same differences from converged curves keep their verdict. The accuracy before the first
/// step of every fine-tuned run is tabulated beside its final accuracy.
#[test]
fn unconverged_comparisons_and_accuracy_before_fine_tuning() {
    let text = r#"
name = "convergence"
description = "hand-made curves"
[[benchmark]]
name = "ResNet-20 / hand-made"
methods = ["ideal-adc", "layerwise", "columnwise"]
seeds = [0, 1, 2]
base = { dataset = "synthetic", epochs = 2, limit_train = 100, limit_test = 50 }
pretrain = { epochs = 2, activation = "clamp" }
"#;
    let study: Study = toml::from_str(text).unwrap();
    let report = |columnwise_first_epoch: f64| {
        let tmp = tempfile::tempdir().unwrap();
        let runs = tmp.path().join("runs");
        for cell in study.cells().unwrap() {
            let seed = cell.config.seed as f64 * 0.002;
            let (accs, before) = match (cell.pretraining, cell.config.method.as_str()) {
                (true, _) => (vec![0.88, 0.90], None),
                (false, "columnwise") => (vec![columnwise_first_epoch + seed, 0.82 + seed], Some(0.40 + seed)),
                (false, "ideal-adc") => (vec![0.81, 0.81], Some(0.70)),
                _ => (vec![0.788 + seed, 0.79 + 1.5 * seed], Some(0.30 + seed)),
            };
            write_run(&runs, &study, &cell, &accs, before);
        }
        let out = tmp.path().join("report");
        let tables = generate(&study, &options(runs, &out, false)).unwrap();
        let csv = std::fs::read_to_string(out.join("claims.csv")).unwrap();
        let accuracy = tables.markdown("accuracy").to_string();
        (tables.markdown("claims").to_string(), csv, tables.markdown("ptq").to_string(), tables.finding(), accuracy)
    };
    // column/column still gained 2 points in its last epoch: no verdict
    let (md, csv, ptq, finding, accuracy) = report(0.80);
    assert!(md.contains("| +2.00 / +0.30 | unconverged (+2.00 / +0.30) |"), "{md}");
    assert!(csv.contains("proposed_last_epoch_gain_points") && csv.contains("unconverged"), "{csv}");
    assert!(finding.contains("(unconverged, last-epoch gains +2.00 / +0.30)"), "{finding}");
    // the same final accuracies from a curve that has flattened: the interval decides
    let (md, _, _, finding, _) = report(0.818);
    assert!(md.contains("| +0.20 / +0.30 | yes |"), "{md}");
    assert!(finding.contains("over layerwise at P = 3 (yes)"), "{finding}");
    // column/column (82.20) is above the ideal ADC (81.00): marked, layerwise (79.30) is not
    assert!(
        accuracy.contains("82.20 ± 0.20 (best 82.20) n=3 ↑") && accuracy.contains("↑: above the best run"),
        "{accuracy}"
    );
    assert!(accuracy.contains("| 79.30 ± 0.30 (best 79.30) n=3 |"), "{accuracy}");
    // before fine-tuning: 40.20 ± 0.20 (seeds 40.0, 40.2, 40.4), after 82.20 ± 0.20, pretraining 90.00
    assert!(
        ptq.contains("| ResNet-20 / hand-made | columnwise | P3 N128 c2 W4A4 differential | 90.00 | 40.20 ± 0.20 | 82.20 ± 0.20 | +42.00 [+42.00, +42.00] | 3 |"),
        "{ptq}"
    );
}

/// Variation claims take the seed as the unit: 3 seeds x 10 chips give the t(2) interval of
/// the three chip-averaged differences, not a t(29) interval over 30 seed-chip pairs.
#[test]
fn variation_claims_replicate_over_seeds_not_chips() {
    let text = r#"
name = "seeds"
description = "hand-made variation results"
[[benchmark]]
name = "ResNet-20 / hand-made"
methods = ["layerwise", "columnwise"]
seeds = [0, 1, 2]
base = { dataset = "synthetic", epochs = 1, limit_train = 100, limit_test = 50 }
[variation]
benchmark = "ResNet-20 / hand-made"
methods = ["layerwise", "columnwise"]
at = { psum_bits = 3 }
sigmas = [0.2]
chips = 10
"#;
    let study: Study = toml::from_str(text).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    for cell in study.cells().unwrap() {
        write_run(&runs, &study, &cell, &[0.8], None);
    }
    // layerwise loses 2, 3 and 4 points (seeds 0-2) more than column/column, every chip a little
    // differently: a seed's chip average is what counts
    for cell in study.variation_cells().unwrap() {
        let seed = cell.config.seed as f64;
        let extra = if cell.config.method == "layerwise" { 0.02 + 0.01 * seed } else { 0.0 };
        let accuracies: Vec<f64> = (0..10).map(|chip| 0.7 - extra + 0.001 * (chip as f64 - 4.5)).collect();
        let v = serde_json::json!({ "method": cell.config.method, "config_hash": cell.key(), "chips": 10,
            "base_seed": 0, "images": 50, "noiseless": 0.8, "results": [{ "sigma": 0.2, "accuracies": accuracies,
            "mean": 0.7 - extra, "std": 0.003, "min": 0.69, "max": 0.71 }] });
        let v: VariationReport = serde_json::from_value(v).unwrap();
        write_json(&cell.dir(&runs, &study.name).join("variation.json"), &v).unwrap();
    }
    let out = tmp.path().join("report");
    let tables = generate(&study, &options(runs, &out, false)).unwrap();
    // differences 2, 3, 4: mean 3, sd 1, t(0.975, 2) = 4.302653, half-width 2.484
    let md = tables.markdown("variation_claims");
    assert!(md.contains("| +3.00 [+0.52, +5.48] | 3 | yes |"), "{md}");
}

/// The archive is used only as the report wrote it. In a fresh clone (no run folders): a result
/// edited consistently (summary and metrics) is refused naming the files, not tabulated, unless
/// `--adopt`; a missing or edited `config.toml` fails its cell with that reason, leaves it out of
/// every table and is not rewritten; restored, the cell counts again.
#[test]
fn archived_runs_are_used_only_as_the_report_wrote_them() {
    let text = r#"
name = "archive"
description = "two fp cells"
[[benchmark]]
name = "ResNet-20 / synthetic"
methods = ["fp"]
seeds = [0, 1]
base = { dataset = "synthetic", epochs = 1, batch_size = 32, lr = 0.01, limit_train = 64, limit_test = 40 }
"#;
    let study: Study = toml::from_str(text).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("report");
    let trained = study::reproduce(&study, &reproduce_options(tmp.path(), "runs", None)).unwrap();
    assert_eq!(trained.trained, 2);
    generate(&study, &options(tmp.path().join("runs"), &out, false)).unwrap();
    let fresh = options(tmp.path().join("no-runs"), &out, false);
    let readme = std::fs::read(out.join("README.md")).unwrap();
    let cell = study.cells().unwrap()[0].key();
    let archived = out.join("runs").join(&cell);
    let read = |name: &str| std::fs::read_to_string(archived.join(name)).unwrap();
    let (summary, metrics, config) = (read("summary.json"), read("metrics.jsonl"), read("config.toml"));

    // case 2: an archived result edited consistently
    let v: serde_json::Value = serde_json::from_str(&summary).unwrap();
    let acc = v["final_test_acc"].to_string();
    assert_ne!(acc, "0.95");
    std::fs::write(archived.join("summary.json"), summary.replace(&acc, "0.95")).unwrap();
    std::fs::write(archived.join("metrics.jsonl"), metrics.replace(&acc, "0.95")).unwrap();
    let e = generate(&study, &fresh).err().expect("refused").to_string();
    assert!(e.contains("summary.json (changed since the report wrote it)") && e.contains("metrics.jsonl"), "{e}");
    assert!(e.contains("nothing was written") && e.contains("--adopt"), "{e}");
    assert_eq!(std::fs::read(out.join("README.md")).unwrap(), readme, "nothing was written");
    let before = std::fs::read_to_string(out.join("accuracy.md")).unwrap();
    let adopted = generate(&study, &ReportOptions { adopt: true, ..fresh.clone() }).unwrap();
    assert_ne!(adopted.markdown("accuracy"), before, "adopted: tabulated as it is now");
    std::fs::write(archived.join("summary.json"), &summary).unwrap();
    std::fs::write(archived.join("metrics.jsonl"), &metrics).unwrap();
    assert!(generate(&study, &fresh).is_err(), "the restored files are no longer the ones adopted");
    generate(&study, &ReportOptions { adopt: true, ..fresh.clone() }).unwrap();
    assert_eq!(std::fs::read(out.join("README.md")).unwrap(), readme);

    // case 3: the archived config deleted, then edited
    for (damage, why) in [(None, "config.toml is missing"), (Some("seed = 5"), "not this cell's configuration")] {
        match damage {
            None => std::fs::remove_file(archived.join("config.toml")).unwrap(),
            Some(line) => std::fs::write(archived.join("config.toml"), config.replace("seed = 0", line)).unwrap(),
        }
        let tables = generate(&study, &fresh).unwrap();
        assert_eq!(tables.failed.len(), 1, "{:?}", tables.failed);
        assert!(tables.failed[0].1.contains(why), "{:?}", tables.failed);
        let readme = std::fs::read_to_string(out.join("README.md")).unwrap();
        assert!(readme.contains(why) && readme.contains("| failed |"), "{readme}");
        assert!(tables.markdown("accuracy").contains("1 failed"), "{}", tables.markdown("accuracy"));
        assert_eq!(
            std::fs::read_to_string(archived.join("config.toml")).ok(),
            damage.map(|l| config.replace("seed = 0", l))
        );
        assert!(!archived.join("failed.json").exists(), "nothing written into the damaged copy");
    }
    // case 4: restored, the cell counts again
    std::fs::write(archived.join("config.toml"), &config).unwrap();
    let tables = generate(&study, &fresh).unwrap();
    assert!(tables.failed.is_empty(), "{:?}", tables.failed);
    assert_eq!(std::fs::read(out.join("README.md")).unwrap(), readme);
}

/// A failure the report derived from a damaged file follows the file: once the file is repaired
/// the cell counts again, though the failure record was archived beside it.
#[test]
fn a_repaired_cell_counts_again() {
    let text = r#"
name = "repaired"
description = "one fp cell"
[[benchmark]]
name = "ResNet-20 / synthetic"
methods = ["fp"]
base = { dataset = "synthetic", epochs = 1, batch_size = 32, lr = 0.01, limit_train = 64, limit_test = 40 }
"#;
    let study: Study = toml::from_str(text).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("report");
    study::reproduce(&study, &reproduce_options(tmp.path(), "runs", None)).unwrap();
    generate(&study, &options(tmp.path().join("runs"), &out, false)).unwrap();
    // in a fresh clone, the archived metrics emptied (and the change adopted)
    let adopt = ReportOptions { adopt: true, ..options(tmp.path().join("no-runs"), &out, false) };
    let archived = out.join("runs").join(study.cells().unwrap()[0].key());
    let metrics = std::fs::read_to_string(archived.join("metrics.jsonl")).unwrap();
    std::fs::write(archived.join("metrics.jsonl"), "").unwrap();
    let tables = generate(&study, &adopt).unwrap();
    assert_eq!(tables.failed.len(), 1, "an empty metrics.jsonl fails the cell");
    assert!(archived.join("failed.json").exists());
    std::fs::write(archived.join("metrics.jsonl"), &metrics).unwrap();
    let tables = generate(&study, &adopt).unwrap();
    assert!(tables.failed.is_empty(), "{:?}", tables.failed);
    assert!(!archived.join("failed.json").exists(), "the stale record is gone");
}

/// A budget study (the same methods fine-tuned for 1, 2 and 4 epochs): the budget table gives
/// each budget's accuracy and what doubling it changed, the finding names the smallest budget
/// that doubling moves by at most 0.5 points for every method, or the methods for which none
/// did; the accuracy-against-budget figure is drawn. Profiles with one budget have no such table.
#[test]
fn a_budget_study_finds_the_smallest_converged_budget() {
    let text = r#"
name = "budget"
description = "hand-made budgets"
[[benchmark]]
name = "ResNet-20 / hand-made"
methods = ["ideal-adc", "columnwise"]
base = { dataset = "synthetic", limit_train = 100, limit_test = 50 }
pretrain = { epochs = 2 }
sweep = [{ psum_bits = [3], epochs = [1, 2, 4] }]
"#;
    let study: Study = toml::from_str(text).unwrap();
    let report = |final_of: &dyn Fn(&str, usize) -> f64| {
        let tmp = tempfile::tempdir().unwrap();
        let runs = tmp.path().join("runs");
        for cell in study.cells().unwrap() {
            let epochs = cell.config.epochs;
            let last = if cell.pretraining { 0.9 } else { final_of(&cell.config.method, epochs) };
            // a flat curve: each budget's own run, ending at its final accuracy
            write_run(&runs, &study, &cell, &vec![last; epochs], None);
        }
        let out = tmp.path().join("report");
        let tables = generate(&study, &options(runs, &out, true)).unwrap();
        let figure = std::fs::read_to_string(out.join("acc_vs_budget.svg")).unwrap_or_default();
        (tables, figure.contains("ideal-adc") && figure.contains("columnwise"))
    };
    // ideal-adc: 80.0, 80.2, 80.3 (converged at 1); columnwise: 75.0, 78.0, 78.4 (at 2)
    let (tables, figure) = report(&|method, epochs| match (method, epochs) {
        ("ideal-adc", 1) => 0.800,
        ("ideal-adc", 2) => 0.802,
        ("ideal-adc", _) => 0.803,
        (_, 1) => 0.750,
        (_, 2) => 0.780,
        _ => 0.784,
    });
    let md = tables.markdown("budget");
    assert!(md.contains("| columnwise | P3 N128 c2 W4A4 differential | 2 | 100 | 78.00 | +3.00 |"), "{md}");
    assert!(md.contains("| 4 | 100 | 78.40 | +0.40 |"), "{md}");
    let finding = tables.finding();
    assert!(finding.contains("every method is 2 epochs"), "{finding}");
    assert!(finding.contains("ideal-adc") && finding.contains("+0.20 from 1 to 2"), "{finding}");
    assert!(figure, "the accuracy-against-budget figure, a line per method (the ideal ADC too)");
    // columnwise still moving at 2 -> 4: no budget found, the doublings named
    let (tables, _) = report(&|method, epochs| match (method, epochs) {
        ("ideal-adc", _) => 0.80,
        (_, 1) => 0.70,
        (_, 2) => 0.75,
        _ => 0.78,
    });
    let finding = tables.finding();
    assert!(
        finding.contains("no budget tried has converged for columnwise (1 -> 2: +5.00, 2 -> 4: +3.00)"),
        "{finding}"
    );
}

/// `reproduce --dry-run` estimates a cell from the speed its profile's finished runs of the same
/// kind recorded, scaled by its images and epochs, and says so; a kind nobody finished falls back
/// to the reference constants.
#[test]
fn estimates_come_from_recorded_speeds() {
    let text = r#"
name = "estimates"
description = "two kinds"
[[benchmark]]
name = "ResNet-20 / hand-made"
methods = ["fp", "columnwise"]
seeds = [0, 1]
base = { dataset = "synthetic", epochs = 2, limit_train = 100, limit_test = 60 }
sweep = [{ psum_bits = [3] }, { methods = ["fp"], epochs = [4], seeds = [0] }]
"#;
    let study: Study = toml::from_str(text).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let cells = study.cells().unwrap();
    let fp0 = cells.iter().find(|c| c.config.method == "fp" && c.config.seed == 0 && c.config.epochs == 2).unwrap();
    write_run(&runs, &study, fp0, &[0.5, 0.6], None); // 2 s of wall time
    let estimator = study::Estimator::from_finished(&cells, &runs, &study.name, None);
    let cpu = train::ComputeDevice::Cpu;
    let fp1 = cells.iter().find(|c| c.config.method == "fp" && c.config.seed == 1).unwrap();
    assert_eq!(estimator.estimate(fp1, cpu), Some((2.0, study::EstimateBasis::Measured(1))));
    let longer = cells.iter().find(|c| c.config.epochs == 4).unwrap();
    assert_eq!(estimator.estimate(longer, cpu), Some((4.0, study::EstimateBasis::Measured(1))));
    let cim = cells.iter().find(|c| c.config.method == "columnwise").unwrap();
    let (_, basis) = estimator.estimate(cim, cpu).unwrap();
    assert_eq!(basis, study::EstimateBasis::Reference);
}
