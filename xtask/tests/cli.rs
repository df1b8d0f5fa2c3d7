//! The command line as a user meets it: a bad download through `data fetch`, a training run
//! killed with SIGKILL after its first epoch, then resumed, and `reproduce` killed mid-matrix.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn xtask() -> Command {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
}

/// Answers every request with 200 and the same (wrong) bytes.
fn serve_wrong_file() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let body = b"this is not the CIFAR-10 archive";
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(body);
        }
    });
    port
}

#[test]
fn fetch_from_a_mirror_serving_a_wrong_file_fails_and_installs_nothing() {
    let port = serve_wrong_file();
    let dir = tempfile::tempdir().unwrap();
    let out = xtask()
        .args(["data", "fetch", "cifar10", "--mirror", &format!("http://127.0.0.1:{port}"), "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("SHA-256") && stderr.contains("cifar-10-binary.tar.gz"), "{stderr}");
    assert!(!dir.path().join("cifar10/cifar-10-binary.tar.gz").exists());
    let rejected: Vec<_> = std::fs::read_dir(dir.path().join("cifar10/rejected")).unwrap().collect();
    assert_eq!(rejected.len(), 1);
}

fn summary_without_timing(run: &Path) -> serde_json::Value {
    train::without_timing(serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap())
}

#[test]
fn a_run_killed_after_its_first_epoch_resumes_to_the_same_result() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let args = |out: &Path| -> Vec<String> {
        let mut v: Vec<String> = [
            "train",
            "--method",
            "ideal-adc",
            "--epochs",
            "3",
            "--limit-train",
            "160",
            "--limit-test",
            "64",
            "--batch-size",
            "32",
            "--seed",
            "3",
            "--quiet",
            "--data-dir",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.push(data.display().to_string());
        v.push("--out".into());
        v.push(out.display().to_string());
        v
    };
    let whole = tmp.path().join("whole");
    assert!(xtask().args(args(&whole)).status().unwrap().success());

    let killed = tmp.path().join("killed");
    let mut child = xtask().args(args(&killed)).stdout(Stdio::null()).spawn().unwrap();
    let start = Instant::now();
    loop {
        let done = std::fs::read_to_string(killed.join("checkpoint.json")).unwrap_or_default();
        if done.contains("ckpt-0001") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(300), "no checkpoint after 300 s");
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be killed");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!killed.join("summary.json").exists());

    let out = xtask()
        .args(["train", "--resume", "--quiet", "--data-dir"])
        .arg(&data)
        .arg("--out")
        .arg(&killed)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(summary_without_timing(&killed), summary_without_timing(&whole));
}

/// The summaries under `runs`, by run folder.
fn finished_cells(runs: &Path) -> Vec<(std::path::PathBuf, Vec<u8>, std::time::SystemTime)> {
    let Ok(dirs) = std::fs::read_dir(runs) else { return Vec::new() };
    let mut out: Vec<_> = dirs
        .filter_map(|d| {
            let s = d.ok()?.path().join("summary.json");
            let bytes = std::fs::read(&s).ok()?;
            let modified = std::fs::metadata(&s).ok()?.modified().ok()?;
            Some((s, bytes, modified))
        })
        .collect();
    out.sort();
    out
}

#[test]
fn reproduce_killed_mid_matrix_finishes_without_redoing_finished_cells() {
    let tmp = tempfile::tempdir().unwrap();
    let study = tmp.path().join("study.toml");
    std::fs::write(
        &study,
        r#"name = "killed"
description = "three tiny cells"
[[benchmark]]
name = "tiny"
methods = ["fp"]
seeds = [0, 1, 2]
base = { dataset = "synthetic", model = "resnet20", epochs = 1, batch_size = 32, limit_train = 96, limit_test = 32 }
"#,
    )
    .unwrap();
    let reproduce = || {
        let mut c = xtask();
        c.args(["reproduce", "--quiet", "--profile"])
            .arg(&study)
            .arg("--runs")
            .arg(tmp.path().join("runs"))
            .arg("--data-dir")
            .arg(tmp.path().join("data"));
        c
    };
    let runs = tmp.path().join("runs/killed");
    let mut child = reproduce().stdout(Stdio::null()).spawn().unwrap();
    let start = Instant::now();
    while finished_cells(&runs).is_empty() {
        assert!(start.elapsed() < Duration::from_secs(300), "no cell finished after 300 s");
        assert!(child.try_wait().unwrap().is_none(), "reproduce ended before it could be killed");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL, mid-matrix
    child.wait().unwrap();
    let before = finished_cells(&runs);
    assert!(!before.is_empty() && before.len() < 3, "{} cells finished before the kill", before.len());

    let out = reproduce().output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    // the killed worker's claim is taken over (same host, its process gone)
    let expected = format!("3 cells selected, {} already finished, {} trained now (", before.len(), 3 - before.len());
    assert!(stdout.contains(&expected) && stdout.contains("died), 0 failed"), "{stdout}");
    let after = finished_cells(&runs);
    assert_eq!(after.len(), 3);
    for cell in &before {
        assert!(after.contains(cell), "{} was rewritten", cell.0.display());
    }

    let again = reproduce().output().unwrap();
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(stdout.contains("3 cells selected, 3 already finished, 0 trained now"), "{stdout}");
    assert_eq!(finished_cells(&runs), after);

    // a study file of one's own gets its report beside it
    let report = xtask()
        .args(["report", "--no-figures", "--profile"])
        .arg(&study)
        .arg("--runs")
        .arg(tmp.path().join("runs"))
        .output()
        .unwrap();
    assert!(report.status.success(), "{}", String::from_utf8_lossy(&report.stderr));
    assert!(std::fs::read_to_string(tmp.path().join("accuracy.md")).unwrap().contains("| fp |"));
}

/// A run another profile finished is the same run (its folder is named by its configuration):
/// the dry run says so, and `reproduce` copies it, whole and byte for byte, instead of training
/// it again; the cells only this profile has are trained.
#[test]
fn a_run_another_profile_finished_is_copied_not_trained() {
    let tmp = tempfile::tempdir().unwrap();
    let study = |name: &str, seeds: &str| {
        let path = tmp.path().join(format!("{name}.toml"));
        let text = format!(
            "name = \"{name}\"\ndescription = \"shared cells\"\n[[benchmark]]\nname = \"tiny\"\nmethods = [\"fp\"]\n\
             seeds = {seeds}\nbase = {{ dataset = \"synthetic\", model = \"resnet20\", epochs = 1, batch_size = 32, \
             limit_train = 64, limit_test = 32 }}\n"
        );
        std::fs::write(&path, text).unwrap();
        path
    };
    let (first, second) = (study("first", "[0]"), study("second", "[0, 1]"));
    let reproduce = |study: &Path, extra: &[&str]| {
        let mut c = xtask();
        c.args(["reproduce", "--quiet", "--profile"]).arg(study).arg("--runs").arg(tmp.path().join("runs"));
        c.arg("--data-dir").arg(tmp.path().join("data")).args(extra).output().unwrap()
    };
    let o = reproduce(&first, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let trained = finished_cells(&tmp.path().join("runs/first"));
    assert_eq!(trained.len(), 1);
    let key = trained[0].0.parent().unwrap().file_name().unwrap().to_owned();

    let dry = reproduce(&second, &["--dry-run"]);
    let listing = String::from_utf8_lossy(&dry.stdout);
    assert!(dry.status.success() && listing.contains("finished in first (copied)"), "{listing}");
    assert_eq!(listing.matches("pending").count(), 1, "{listing}");

    let o = reproduce(&second, &[]);
    let (stdout, stderr) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{stdout}{stderr}");
    assert!(format!("{stdout}{stderr}").contains("the same run finished in"), "{stdout}{stderr}");
    assert!(stdout.contains("2 cells selected, 1 already finished, 1 trained now"), "{stdout}");
    let (from, to) = (tmp.path().join("runs/first").join(&key), tmp.path().join("runs/second").join(&key));
    for file in ["summary.json", "metrics.jsonl", "config.toml"] {
        assert_eq!(std::fs::read(from.join(file)).unwrap(), std::fs::read(to.join(file)).unwrap(), "{file}");
    }
    assert!(!to.join("claim.lock").exists(), "the claim is released after the copy");
}

/// A run still training when its profile's report was written: the report archives its newest
/// checkpoint whole, and on a machine without the run folder `reproduce` copies it and resumes
/// from there, to the result of a run trained straight through; the next report keeps only the
/// final model.
#[test]
fn a_committed_unfinished_run_resumes_where_it_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let study = tmp.path().join("carried").join("study.toml");
    std::fs::create_dir_all(study.parent().unwrap()).unwrap();
    std::fs::write(
        &study,
        "name = \"carried\"\ndescription = \"a run carried between machines\"\narchive_weights = true\n\
         [[benchmark]]\nname = \"tiny\"\nmethods = [\"columnwise\"]\nseeds = [0]\nbase = { dataset = \"synthetic\", \
         model = \"resnet20\", epochs = 2, batch_size = 32, limit_train = 64, limit_test = 32 }\n",
    )
    .unwrap();
    let data = tmp.path().join("data");
    let run = |args: &[&str], runs: &str| {
        let mut c = xtask();
        c.args(args).arg("--profile").arg(&study).arg("--runs").arg(tmp.path().join(runs));
        if args[0] == "reproduce" {
            c.arg("--data-dir").arg(&data);
        }
        let o = c.output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(o.status.success(), "{args:?}: {text}");
        text
    };
    // the reference: trained straight through
    run(&["reproduce", "--quiet"], "straight");
    let straight = finished_cells(&tmp.path().join("straight/carried"));
    assert_eq!(straight.len(), 1);
    let whole = straight[0].0.parent().unwrap().to_path_buf();
    let key = whole.file_name().unwrap().to_owned();

    // the same cell stopped after its first epoch, and the report written meanwhile
    let partial = tmp.path().join("first/carried").join(&key);
    let o = xtask()
        .args(["train", "--quiet", "--stop-after", "1", "--config"])
        .arg(whole.join("config.toml"))
        .arg("--out")
        .arg(&partial)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let config = |dir: &Path| std::fs::read_to_string(dir.join("config.toml")).unwrap();
    assert_eq!(config(&partial), config(&whole), "the same cell, stopped early");
    run(&["report", "--no-figures"], "first");
    let accuracy = std::fs::read_to_string(study.parent().unwrap().join("accuracy.md")).unwrap();
    assert!(accuracy.contains("1 partial (epoch 1 of 2: "), "{accuracy}");
    let archived = study.parent().unwrap().join("runs").join(&key);
    for file in ["checkpoint.json", "ckpt-0001/state.json", "ckpt-0001/model.bpk", "ckpt-0001/optim.bpk"] {
        assert!(archived.join(file).is_file(), "{file} archived");
    }

    // another machine: no run folder, the committed report
    let listing = run(&["reproduce", "--dry-run"], "second");
    assert!(listing.contains("partial (1 epochs), committed checkpoint"), "{listing}");
    let text = run(&["reproduce", "--quiet"], "second");
    assert!(text.contains("checkpoint after epoch 1") && text.contains("resumed from there"), "{text}");
    let resumed = tmp.path().join("second/carried").join(&key);
    // the same losses and accuracies, epoch by epoch (weight files differ in burn's parameter ids)
    assert_eq!(summary_without_timing(&resumed), summary_without_timing(&whole));

    // the next report archives the final model alone; the superseded checkpoint goes
    run(&["report", "--no-figures"], "second");
    assert!(archived.join("ckpt-0002/model.bpk").is_file() && !archived.join("ckpt-0002/optim.bpk").exists());
    assert!(!archived.join("ckpt-0001").exists(), "the superseded checkpoint is removed");
}

#[test]
fn bad_flags_are_named() {
    let out = xtask().args(["train", "--method", "rowwise", "--out", "/nonexistent/x"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("unknown method `rowwise`"), "{stderr}");
    // clap names the flag and the value, the setting's parser what it expects
    let flag_error = |args: &[&str], flag: &str, value: &str, expected: &str| {
        let out = xtask().args(["train"]).args(args).args(["--out", "/nonexistent/x"]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let named = stderr.contains(&format!("'{value}' for '{flag}")) && stderr.contains(expected);
        assert!(!out.status.success() && named, "{stderr}");
    };
    flag_error(&["--encoding", "ones"], "--encoding", "ones", "`twos`, `differential`");
    flag_error(&["--adc-window", "offset"], "--adc-window", "offset", "`zero`, `learned`");
    flag_error(&["--adc-init", "max"], "--adc-init", "max", "`mse`, `lsq`");
    flag_error(&["--weight-bits", "four"], "--weight-bits", "four", "invalid digit");
    flag_error(&["--recipe", "three-stage"], "--recipe", "three-stage", "`one-stage` or `two-stage`");
    // a window setting on a method without ADCs, rejected before any work
    let out =
        xtask().args(["train", "--method", "fp", "--adc-window", "zero", "--out", "/nonexistent/x"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("--adc-window zero: method fp has no ADC"), "{stderr}");
    // a method with its own ADC takes no P window either
    let out = xtask()
        .args(["train", "--method", "saxena-roy-ternary", "--adc-init", "lsq", "--out", "/nonexistent/x"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("--adc-init lsq: method saxena-roy-ternary has its own ADC"),
        "{stderr}"
    );
    assert!(!Path::new("/nonexistent/x").exists());
    // a forced partial-sum path: an unknown name is refused naming the valid ones, and a path
    // this CPU cannot run naming the features it has, before any work
    let out = xtask().env("CIM_PSUM_PATH", "sse9").args(["train", "--out", "/nonexistent/x"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("CIM_PSUM_PATH=sse9") && stderr.contains("vnni512, avx2, generic")
    );
    for path in cim_core::psums::PsumPath::ALL.into_iter().filter(|p| !p.supported()) {
        let out = xtask().env("CIM_PSUM_PATH", path.name()).args(["data", "list"]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains("this CPU cannot run") && stderr.contains("it has:"));
    }
    assert!(!Path::new("/nonexistent/x").exists());
}

/// `--device gpu` on a binary built without the `gpu` feature stops before any work and says how
/// to build one; an unknown device is named with the two there are.
#[cfg(not(feature = "gpu"))]
#[test]
fn a_cpu_only_binary_refuses_the_gpu() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("r");
    let run_arg = run.to_str().unwrap();
    for args in [
        vec!["train", "--device", "gpu", "--out", run_arg],
        vec!["eval", "--device", "gpu", "--run", run_arg],
        vec!["speed", "--devices", "cpu,gpu"],
    ] {
        let out = xtask().args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("without the `gpu` feature") && stderr.contains("--features gpu"),
            "{args:?}: {stderr}"
        );
    }
    assert!(!run.exists());
    let out = xtask().args(["train", "--device", "tpu", "--out", run_arg]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("'tpu' for '--device") && stderr.contains("`cpu` or `gpu`"),
        "{stderr}"
    );
}

#[test]
fn small_bad_inputs_get_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    // an empty run-config file does not silently train the defaults
    let empty = tmp.path().join("empty.toml");
    std::fs::write(&empty, "# nothing yet\n\n").unwrap();
    let out = xtask().args(["train", "--out"]).arg(tmp.path().join("r")).arg("--config").arg(&empty).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("empty.toml") && stderr.contains("sets nothing"), "{stderr}");
    // a mistyped --data-dir is not created
    let missing = tmp.path().join("no/such/dir");
    let out =
        xtask().args(["train", "--out"]).arg(tmp.path().join("r")).arg("--data-dir").arg(&missing).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("--data-dir") && stderr.contains("no such folder"), "{stderr}");
    assert!(stderr.contains("neither is its parent"), "{stderr}");
    assert!(!missing.exists() && !tmp.path().join("r").exists());
    let out = xtask().args(["data", "list", "--dir"]).arg(&missing).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--dir"));
    // --stop-after 0 trains nothing and says so
    let out = xtask().args(["train", "--stop-after", "0", "--out"]).arg(tmp.path().join("r")).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("--stop-after 0"), "{stderr}");
    // eval takes --folder-holdout
    let out = xtask().args(["eval", "--folder-holdout", "10", "--run"]).arg(tmp.path().join("r")).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("unexpected argument") && stderr.contains("config.toml"), "{stderr}");
    // adc-bits: the tolerance and the energy file are checked before the run is read
    for bad in ["-1", "nan", "inf", "1e9", "100.5"] {
        let out = xtask().args(["adc-bits", "--within", bad, "--run"]).arg(tmp.path().join("r")).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let shown = match bad {
            "nan" => "NaN".to_string(),
            "1e9" => "1000000000".to_string(),
            _ => bad.to_string(),
        };
        let named = stderr.contains(&format!("--within {shown}")) && stderr.contains("accuracy points from 0 to 100");
        assert!(!out.status.success() && named, "{stderr}");
    }
    let energy = tmp.path().join("energy.toml");
    std::fs::write(&energy, "node = \"45 nm\"\n").unwrap();
    let out = xtask()
        .args(["adc-bits", "--within", "1", "--energy"])
        .arg(&energy)
        .arg("--run")
        .arg(tmp.path().join("r"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("energy.toml") && stderr.contains("missing field"), "{stderr}");
    // a per-layer ADC list of the wrong length, refused before any work
    let out = xtask().args(["train", "--psum-bits", "3,4", "--out"]).arg(tmp.path().join("r")).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("a list of 2 values") && stderr.contains("18 CIM layers"),
        "{stderr}"
    );
    assert!(!tmp.path().join("r").exists());
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let mut child =
        xtask().args(["data", "list", "--dir", "."]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    drop(child.stdout.take()); // the reader went away, as `| head -1` does after one line
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(out.status.code(), Some(101), "{stderr}");
}

/// Writes a tiny image-folder tree: `classes` folders of `per_class` 8x8 PNGs each.
fn write_tree(root: &Path, classes: usize, per_class: usize) {
    for c in 0..classes {
        let dir = root.join(format!("class{c}"));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..per_class {
            let img = image::RgbImage::from_fn(8, 8, |x, y| {
                image::Rgb([(x * 30) as u8, (y * 30) as u8, (c * 100 + i) as u8])
            });
            img.save(dir.join(format!("{i:03}.png"))).unwrap();
        }
    }
}

/// A folder data set is keyed by its content: the same tree at two places trains into the same
/// configuration hash; a changed image is refused before training resumes; `--init-from` starts
/// from a finished run and refuses a folder that is not one.
#[test]
fn folder_runs_are_keyed_by_content_and_start_from_finished_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a/tree"), tmp.path().join("b/elsewhere"));
    write_tree(&a, 2, 6);
    write_tree(&b, 2, 6);
    let train = |tree: &Path, out: &Path, extra: &[&str]| {
        let method = if extra.contains(&"--method") { [].as_slice() } else { ["--method", "fp"].as_slice() };
        xtask()
            .args(["train", "--quiet", "--epochs", "1", "--batch-size", "4", "--folder-holdout", "2"])
            .args(method)
            .arg("--dataset")
            .arg(format!("folder:{}", tree.display()))
            .arg("--out")
            .arg(out)
            .args(extra)
            .output()
            .unwrap()
    };
    let (ra, rb) = (tmp.path().join("ra"), tmp.path().join("rb"));
    for (tree, out) in [(&a, &ra), (&b, &rb)] {
        let o = train(tree, out, &[]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let config = |run: &Path| std::fs::read_to_string(run.join("config.toml")).unwrap();
    let hash = |run: &Path| {
        let s: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
        s["config_hash"].as_str().unwrap().to_string()
    };
    assert!(config(&ra).contains("dataset_id = \"folder@"), "{}", config(&ra));
    assert_eq!(hash(&ra), hash(&rb), "same images, same run, wherever the tree lies");

    // fine-tuning from the finished run; then from a folder that is not a run
    let ft = tmp.path().join("ft");
    let o = train(&a, &ft, &["--method", "ideal-adc", "--init-from", ra.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(config(&ft).contains(&format!("init_from = \"{}\"", hash(&ra))), "{}", config(&ft));
    let o = train(&a, &tmp.path().join("ft2"), &["--init-from", a.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && stderr.contains("--init-from") && stderr.contains("not a run folder"), "{stderr}");

    // a changed image: the tree is no longer the one the run was keyed by
    image::RgbImage::from_pixel(8, 8, image::Rgb([1, 2, 3])).save(b.join("class0/000.png")).unwrap();
    let o = xtask().args(["eval", "--run"]).arg(&rb).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && stderr.contains("identity"), "{stderr}");
}

/// The binary finds the workspace it is run in, not the one it was built in: run from inside
/// another checkout (as with a shared target folder), its outputs go to that checkout.
#[test]
fn outputs_go_to_the_checkout_the_command_runs_in() {
    let tmp = tempfile::tempdir().unwrap();
    let other = tmp.path().join("other-checkout");
    std::fs::create_dir_all(other.join("reports/tiny")).unwrap();
    std::fs::create_dir_all(other.join("baselines")).unwrap();
    std::fs::write(other.join("Cargo.toml"), "[workspace]\nmembers = []\n").unwrap();
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    std::fs::copy(here.join("baselines/paper-claims.toml"), other.join("baselines/paper-claims.toml")).unwrap();
    std::fs::write(
        other.join("reports/tiny/study.toml"),
        "name = \"tiny\"\ndescription = \"one cell\"\n[[benchmark]]\nname = \"B\"\nmethods = [\"fp\"]\n\
         base = { dataset = \"synthetic\", epochs = 1, batch_size = 16, limit_train = 32, limit_test = 16 }\n",
    )
    .unwrap();
    let data = tmp.path().join("data");
    for (cwd, manifest_dir) in [(other.join("reports"), None), (tmp.path().to_path_buf(), Some(other.join("xtask")))] {
        let mut cmd = xtask();
        cmd.current_dir(&cwd).env_remove("CARGO_MANIFEST_DIR");
        if let Some(d) = &manifest_dir {
            cmd.env("CARGO_MANIFEST_DIR", d);
        }
        let o = cmd.args(["reproduce", "--quiet", "--profile", "tiny", "--data-dir"]).arg(&data).output().unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{stderr}");
        assert!(stderr.contains(&other.join("runs/tiny").display().to_string()), "says where: {stderr}");
    }
    assert_eq!(std::fs::read_dir(other.join("runs/tiny")).unwrap().count(), 1);
    assert!(!here.join("runs/tiny").exists(), "nothing went to the checkout the binary was built in");
    // outside any checkout: a clear error
    let o = xtask()
        .current_dir(tmp.path())
        .env_remove("CARGO_MANIFEST_DIR")
        .args(["reproduce", "--dry-run"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && stderr.contains("no cim-quant workspace here"), "{stderr}");
}

/// Small items of the command line: a negative sigma is a value (and then refused as one), not a
/// flag; `data` takes `--data-dir` like every other command.
#[test]
fn negative_sigmas_and_data_dir_are_understood() {
    let tmp = tempfile::tempdir().unwrap();
    let o = xtask().args(["variation", "--run"]).arg(tmp.path()).args(["--sigmas", "-1"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && stderr.contains("-1 is not a non-negative number"), "{stderr}");
    let o = xtask().args(["data", "list", "--data-dir"]).arg(tmp.path()).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains(&tmp.path().display().to_string()));
}

/// Ctrl-C and SIGTERM say what is kept and how to resume, and exit with the status of the
/// signal (130, 143).
#[test]
fn an_interrupt_says_how_to_resume() {
    for (signal, status) in [(libc::SIGINT, 130), (libc::SIGTERM, 143)] {
        interrupt_says_how_to_resume(signal, status);
    }
}

fn interrupt_says_how_to_resume(signal: libc::c_int, code: i32) {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = xtask()
        .args(["train", "--quiet", "--method", "fp", "--epochs", "50", "--batch-size", "16", "--limit-train", "64"])
        .args(["--limit-test", "16", "--out"])
        .arg(tmp.path().join("run"))
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // once the first epoch is written the process is surely past its start
    let start = Instant::now();
    while !tmp.path().join("run/metrics.jsonl").exists() && start.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: sending a signal to our own child process.
    unsafe {
        libc::kill(child.id() as libc::pid_t, signal);
    }
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert_eq!(status.code(), Some(code), "{stderr}");
    assert!(stderr.contains("interrupted") && stderr.contains("run the same command again"), "{stderr}");
}

/// An error names its path and its cause once each.
#[test]
fn an_error_says_its_cause_once() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nothing-here");
    let o = xtask().args(["data", "load"]).arg(format!("folder:{}", missing.display())).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert_eq!(stderr.matches("No such file or directory").count(), 1, "{stderr}");
    assert_eq!(stderr.matches(&missing.display().to_string()).count(), 1, "{stderr}");
}

/// A checkout of its own in `dir` with one tiny study `tiny` (its `claim` given), for commands
/// that write into a workspace.
fn tiny_checkout(dir: &Path, claim: &str) {
    std::fs::create_dir_all(dir.join("reports/tiny")).unwrap();
    std::fs::create_dir_all(dir.join("baselines")).unwrap();
    std::fs::write(dir.join("Cargo.toml"), "[workspace]\nmembers = []\n").unwrap();
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    std::fs::copy(here.join("baselines/paper-claims.toml"), dir.join("baselines/paper-claims.toml")).unwrap();
    std::fs::create_dir_all(dir.join("baselines/energy")).unwrap();
    std::fs::copy(here.join("baselines/energy/default.toml"), dir.join("baselines/energy/default.toml")).unwrap();
    std::fs::write(
        dir.join("reports/tiny/study.toml"),
        format!(
            "name = \"tiny\"\ndescription = \"one cell\"\n[[benchmark]]\nname = \"B\"\n{claim}methods = [\"fp\"]\n\
             base = {{ dataset = \"synthetic\", epochs = 1, batch_size = 16, limit_train = 32, limit_test = 16 }}\n"
        ),
    )
    .unwrap();
}

/// `report` says a failed cell on the terminal and exits non-zero unless `--allow-failed`;
/// `reproduce` ends with the report command that fits (the study, its --runs); an unknown
/// claim is refused when the study is read.
#[test]
fn failures_and_hints_reach_the_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("ws");
    tiny_checkout(&ws, "");
    let runs = tmp.path().join("elsewhere");
    let run = |args: &[&str]| xtask().current_dir(&ws).env_remove("CARGO_MANIFEST_DIR").args(args).output().unwrap();
    let data = tmp.path().join("data");
    let (runs_s, data_s) = (runs.to_str().unwrap(), data.to_str().unwrap());
    let o = run(&["reproduce", "--quiet", "--profile", "tiny", "--runs", runs_s, "--data-dir", data_s]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains(&format!("cargo xtask report --profile tiny --runs {runs_s}")), "{stdout}");
    assert!(run(&["report", "--profile", "tiny", "--runs", runs_s, "--no-figures"]).status.success());
    // a summary made impossible by hand
    let cell = std::fs::read_dir(runs.join("tiny")).unwrap().next().unwrap().unwrap().path();
    let text = std::fs::read_to_string(cell.join("summary.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let bad = text.replace(&format!("\"final_test_acc\": {}", v["final_test_acc"]), "\"final_test_acc\": 1.7");
    std::fs::write(cell.join("summary.json"), bad).unwrap();
    let o = run(&["report", "--profile", "tiny", "--runs", runs_s, "--no-figures"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && stderr.contains("FAILED") && stderr.contains("not an accuracy"), "{stderr}");
    assert!(stderr.contains("--allow-failed"), "{stderr}");
    let o = run(&["report", "--profile", "tiny", "--runs", runs_s, "--no-figures", "--allow-failed"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = run(&["reproduce", "--dry-run", "--profile", "tiny", "--runs", runs_s]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("failed"), "{}", String::from_utf8_lossy(&o.stdout));
    // an unknown claim, before any work
    let other = tmp.path().join("other");
    tiny_checkout(&other, "claim = \"resnet99-mnist\"\n");
    let o = xtask()
        .current_dir(&other)
        .env_remove("CARGO_MANIFEST_DIR")
        .args(["reproduce", "--dry-run", "--profile", "tiny"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && stderr.contains("resnet99-mnist") && stderr.contains("paper-claims.toml"),
        "{stderr}"
    );
}

/// `--activation`: shown in `train --help` with its default; a value it cannot take and a value
/// for a method on arrays are refused before any work, naming the flag.
#[test]
fn the_activation_flag_in_help_and_refusals() {
    let out = xtask().args(["train", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--activation <relu|clamp>") && help.contains("[default: relu]"), "{help}");
    let tmp = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = xtask().args(["train", "--out"]).arg(tmp.path().join("x")).args(args).output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = run(&["--method", "fp", "--activation", "gelu"]);
    assert!(e.contains("gelu") && e.contains("\"relu\" or \"clamp\""), "{e}");
    let e = run(&["--method", "columnwise", "--activation", "clamp"]);
    assert!(e.contains("--activation clamp: method columnwise runs its 3x3 convs on arrays"), "{e}");
    assert!(!tmp.path().join("x").exists(), "nothing was written");
}

/// `adc-bits --out` never replaces a file it did not write and refuses a folder, before any
/// work (the run given does not even exist).
#[test]
fn adc_bits_out_is_checked_before_the_search() {
    let tmp = tempfile::tempdir().unwrap();
    let mine = tmp.path().join("notes.json");
    std::fs::write(&mine, "{\"mine\": true}").unwrap();
    let run = |out: &Path| {
        let out = xtask()
            .args(["adc-bits", "--within", "1", "--run"])
            .arg(tmp.path().join("no-run"))
            .arg("--out")
            .arg(out)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = run(&mine);
    assert!(e.contains("notes.json") && e.contains("not an adc-bits result; it is not replaced"), "{e}");
    assert_eq!(std::fs::read_to_string(&mine).unwrap(), "{\"mine\": true}");
    let e = run(tmp.path());
    assert!(e.contains("a folder; give the path of a file"), "{e}");
    let e = run(&tmp.path().join("nowhere/out.json"));
    assert!(e.contains("does not exist"), "{e}");
}
