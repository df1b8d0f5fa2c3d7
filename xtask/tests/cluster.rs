//! Many workers on one run store: three `reproduce` processes sharing a runs folder train every
//! cell once, and a worker killed with SIGKILL leaves its cell to another; on a real Slurm
//! (started by `scripts/slurm-local.sh`, as `.ci/run` does; the tests say so and pass where
//! there is none) a tiny study runs as job arrays, and a cancelled task's cell resumes from its
//! checkpoint when the study is submitted again.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn xtask() -> Command {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
}

/// A study file of fp cells on the synthetic data set; `epochs` and `images` size each cell.
fn study(dir: &Path, name: &str, seeds: &[u32], epochs: usize, images: usize, pretrain: bool) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let seeds: Vec<String> = seeds.iter().map(u32::to_string).collect();
    let pretrain = if pretrain { "pretrain = { epochs = 1, seed = 0 }\n" } else { "" };
    std::fs::write(
        &path,
        format!(
            "name = \"{name}\"\ndescription = \"tiny\"\n[[benchmark]]\nname = \"B\"\nmethods = [\"fp\"]\n\
             seeds = [{}]\nbase = {{ dataset = \"synthetic\", epochs = {epochs}, batch_size = 16, \
             limit_train = {images}, limit_test = 16 }}\n{pretrain}",
            seeds.join(", ")
        ),
    )
    .unwrap();
    path
}

/// `reproduce` of `study` on the runs and data folders under `tmp`.
fn reproduce(tmp: &Path, study: &Path) -> Command {
    let mut c = xtask();
    c.args(["reproduce", "--quiet", "--profile"])
        .arg(study)
        .arg("--runs")
        .arg(tmp.join("runs"))
        .arg("--data-dir")
        .arg(tmp.join("data"));
    c
}

/// How many cells a worker's report says it trained ("N trained now").
fn trained_now(out: &str) -> usize {
    let at = out.find(" trained now").unwrap_or_else(|| panic!("no summary line in: {out}"));
    out[..at].rsplit(' ').next().unwrap().parse().unwrap()
}

/// Run folders (below `runs`) with a summary.
fn finished(runs: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(runs) else { return Vec::new() };
    entries.flatten().map(|e| e.path()).filter(|p| p.join("summary.json").exists()).collect()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The first run folder below `runs` whose checkpoint exists, within `limit`.
fn wait_for_checkpoint(runs: &Path, limit: Duration, alive: &mut dyn FnMut() -> bool) -> PathBuf {
    let start = Instant::now();
    loop {
        if let Ok(entries) = std::fs::read_dir(runs)
            && let Some(p) = entries.flatten().map(|e| e.path()).find(|p| p.join("checkpoint.json").exists())
        {
            return p;
        }
        assert!(start.elapsed() < limit, "no checkpoint in {} after {limit:?}", runs.display());
        assert!(alive(), "the worker ended before its first checkpoint");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn three_workers_share_a_runs_folder_and_a_killed_workers_cell_is_taken_over() {
    let tmp = tempfile::tempdir().unwrap();
    let path = study(tmp.path(), "shared", &[0, 1, 2, 3, 4, 5], 1, 64, false);
    let workers: Vec<_> = (0..3)
        .map(|_| reproduce(tmp.path(), &path).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap())
        .collect();
    let outputs: Vec<String> = workers.into_iter().map(|w| text(&w.wait_with_output().unwrap())).collect();
    let trained: usize = outputs.iter().map(|o| trained_now(o)).sum();
    assert_eq!(trained, 6, "every cell trained exactly once over the three workers:\n{}", outputs.join("\n---\n"));
    assert_eq!(finished(&tmp.path().join("runs/shared")).len(), 6);
    assert!(
        std::fs::read_dir(tmp.path().join("runs/shared"))
            .unwrap()
            .flatten()
            .all(|run| !run.path().join(train::claim::CLAIM_FILE).exists()),
        "every claim released"
    );

    // a worker killed outright mid-cell: its claim stays, its process is gone, and the next
    // worker takes the cell over and resumes it from its checkpoint
    let slow = study(tmp.path(), "killed", &[0], 5, 1200, false);
    let mut first = reproduce(tmp.path(), &slow).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let run = wait_for_checkpoint(&tmp.path().join("runs/killed"), Duration::from_secs(300), &mut || {
        first.try_wait().unwrap().is_none()
    });
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    assert!(run.join(train::claim::CLAIM_FILE).exists(), "a killed worker cannot release its claim");
    let second = reproduce(tmp.path(), &slow).output().unwrap();
    let out = text(&second);
    assert!(second.status.success(), "{out}");
    assert!(out.contains("took over the claim") && out.contains("(1 taken over from workers that died)"), "{out}");
    assert!(out.contains("(partial ("), "resumed from its checkpoint, not started over: {out}");
    assert!(run.join("summary.json").exists());
    assert!(!run.join(train::claim::CLAIM_FILE).exists());
}

/// Workers that wait: with a pretraining in the study, the workers that find it claimed wait for
/// it (saying so) and then train what starts from it; every cell is trained once and every
/// worker ends well. (Three workers on one folder also exercise the claim files that workers
/// write beside each other: none is taken for a foreign file.)
#[test]
fn workers_wait_for_a_pretraining_another_worker_holds() {
    let tmp = tempfile::tempdir().unwrap();
    let path = study(tmp.path(), "waits", &[0, 1, 2, 3], 1, 64, true);
    let workers: Vec<_> = (0..3)
        .map(|i| {
            std::thread::sleep(Duration::from_millis(300 * i));
            reproduce(tmp.path(), &path).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
        })
        .collect();
    let outputs: Vec<Output> = workers.into_iter().map(|w| w.wait_with_output().unwrap()).collect();
    let all = outputs.iter().map(text).collect::<Vec<_>>().join("\n---\n");
    assert!(outputs.iter().all(|o| o.status.success()), "{all}");
    let trained: usize = outputs.iter().map(|o| trained_now(&text(o))).sum();
    assert_eq!(trained, 5, "the pretraining and four cells, once each:\n{all}");
    assert!(all.contains("waits for") && all.contains("pretraining"), "{all}");
    assert_eq!(finished(&tmp.path().join("runs/waits")).len(), 5);
}

/// A cell folder whose claim cannot be read fails that cell alone: the others are trained, the
/// worker ends non-zero naming it, and `--dry-run` still lists every cell. Finished cells are
/// counted without a claim, so that a runs folder nobody may write to still reproduces.
#[test]
fn a_bad_claim_fails_its_cell_alone_and_finished_cells_need_no_claim() {
    let tmp = tempfile::tempdir().unwrap();
    let path = study(tmp.path(), "claims", &[0, 1, 2], 1, 32, false);
    let dry = reproduce(tmp.path(), &path).arg("--dry-run").output().unwrap();
    let listing = text(&dry);
    let keys: Vec<String> =
        listing.lines().filter_map(|l| l.rsplit_once('[').map(|(_, k)| k.trim_end_matches(']').to_string())).collect();
    assert_eq!(keys.len(), 3, "{listing}");
    let runs = tmp.path().join("runs/claims");
    // a garbage claim in one folder, a folder where the claim goes in another
    std::fs::create_dir_all(runs.join(&keys[0])).unwrap();
    std::fs::write(runs.join(&keys[0]).join(train::claim::CLAIM_FILE), "garbage").unwrap();
    std::fs::create_dir_all(runs.join(&keys[1]).join(train::claim::CLAIM_FILE)).unwrap();
    let dry = reproduce(tmp.path(), &path).arg("--dry-run").output().unwrap();
    assert!(dry.status.success(), "{}", text(&dry));
    assert!(text(&dry).contains("claim unreadable"), "{}", text(&dry));
    let run = reproduce(tmp.path(), &path).output().unwrap();
    let out = text(&run);
    assert!(!run.status.success(), "{out}");
    assert_eq!(trained_now(&out), 1, "{out}");
    assert!(out.contains("2 failed") && out.contains("is not a claim of this tool"), "{out}");
    // repaired: the other two are trained; then, all finished, a claim that cannot be made (a
    // folder where the claim file goes) stops nothing
    std::fs::remove_file(runs.join(&keys[0]).join(train::claim::CLAIM_FILE)).unwrap();
    std::fs::remove_dir(runs.join(&keys[1]).join(train::claim::CLAIM_FILE)).unwrap();
    let run = reproduce(tmp.path(), &path).output().unwrap();
    assert!(run.status.success(), "{}", text(&run));
    for key in &keys {
        std::fs::create_dir_all(runs.join(key).join(train::claim::CLAIM_FILE)).unwrap();
    }
    let run = reproduce(tmp.path(), &path).output().unwrap();
    assert!(run.status.success() && text(&run).contains("3 already finished"), "{}", text(&run));
}

/// `SLURM_CONF` of a running local cluster with `sbatch` on PATH; `None` (said on stderr) where
/// there is none.
fn slurm() -> Option<String> {
    let conf = std::env::var("SLURM_CONF").ok().filter(|c| Path::new(c).exists());
    let sbatch = Command::new("sbatch").arg("--version").output().is_ok_and(|o| o.status.success());
    let up = Command::new("sinfo").args(["-h", "-o", "%T"]).output().is_ok_and(|o| o.status.success());
    match (conf, sbatch && up) {
        (Some(conf), true) => Some(conf),
        _ => {
            eprintln!(
                "SKIPPED: no Slurm cluster here (needs SLURM_CONF and a running slurmctld: \
                 `scripts/slurm-local.sh start DIR`, as .ci/run does)"
            );
            None
        }
    }
}

/// The job ids `reproduce --slurm --submit` printed.
fn job_ids(out: &str) -> Vec<String> {
    out.lines().filter_map(|l| l.split_once(": job ").map(|(_, id)| id.trim().to_string())).collect()
}

/// Waits until none of `jobs` is pending or running.
fn wait_for_jobs(jobs: &[String], limit: Duration) {
    let start = Instant::now();
    loop {
        let out = Command::new("squeue").args(["-h", "-t", "PD,R,CG,CF,S", "-j", &jobs.join(",")]).output().unwrap();
        if String::from_utf8_lossy(&out.stdout).trim().is_empty() {
            return;
        }
        assert!(start.elapsed() < limit, "jobs {jobs:?} still queued after {limit:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn logs(dir: &Path) -> Vec<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("logs")).unwrap().flatten().map(|e| e.path()).collect();
    files.sort();
    files.iter().map(|f| std::fs::read_to_string(f).unwrap()).collect()
}

#[test]
fn a_study_runs_as_slurm_arrays_and_a_cancelled_task_resumes_when_submitted_again() {
    let Some(_conf) = slurm() else { return };
    let tmp = tempfile::tempdir().unwrap();
    // a pretraining and four cells that start from it: two arrays, the second after the first
    let path = study(tmp.path(), "arrays", &[0, 1], 1, 48, true);
    let slurm_dir = tmp.path().join("slurm");
    let started = Instant::now();
    let submit = reproduce(tmp.path(), &path)
        .arg("--slurm")
        .arg(&slurm_dir)
        .args(["--submit", "--max-parallel", "2"])
        .output()
        .unwrap();
    let out = text(&submit);
    assert!(submit.status.success(), "{out}");
    let jobs = job_ids(&out);
    assert_eq!(jobs.len(), 2, "a first array for the pretraining, a second after it: {out}");
    wait_for_jobs(&jobs, Duration::from_secs(600));
    eprintln!("tiny study as Slurm arrays: {:.1} s from submission to done", started.elapsed().as_secs_f64());
    let task_logs = logs(&slurm_dir);
    assert_eq!(task_logs.len(), 3, "one log per task: {task_logs:?}");
    let trained: usize = task_logs.iter().map(|l| trained_now(l)).sum();
    assert_eq!(trained, 3, "every cell trained exactly once: {task_logs:?}");
    assert_eq!(finished(&tmp.path().join("runs/arrays")).len(), 3);
    let again = reproduce(tmp.path(), &path).arg("--slurm").arg(&slurm_dir).arg("--submit").output().unwrap();
    assert!(text(&again).contains("nothing to submit"), "{}", text(&again));
    let report = xtask()
        .args(["report", "--no-figures", "--profile"])
        .arg(&path)
        .arg("--runs")
        .arg(tmp.path().join("runs"))
        .output()
        .unwrap();
    assert!(report.status.success(), "{}", text(&report));
    let readme = std::fs::read_to_string(tmp.path().join("README.md")).unwrap();
    assert!(readme.contains("from 3 of 3 runs finished"), "{readme}");

    // one slow cell, cancelled after its first checkpoint, then submitted again
    let slow = study(tmp.path(), "cancelled", &[0], 5, 1200, false);
    let first_dir = tmp.path().join("slurm-cancel");
    let submit = reproduce(tmp.path(), &slow).arg("--slurm").arg(&first_dir).arg("--submit").output().unwrap();
    let jobs = job_ids(&text(&submit));
    assert_eq!(jobs.len(), 1, "{}", text(&submit));
    let run = wait_for_checkpoint(&tmp.path().join("runs/cancelled"), Duration::from_secs(600), &mut || true);
    assert!(Command::new("scancel").arg(format!("{}_0", jobs[0])).status().unwrap().success());
    wait_for_jobs(&jobs, Duration::from_secs(120));
    assert!(!run.join("summary.json").exists(), "cancelled before it finished");
    let resubmit = reproduce(tmp.path(), &slow).arg("--slurm").arg(&first_dir).arg("--submit").output().unwrap();
    let jobs = job_ids(&text(&resubmit));
    assert_eq!(jobs.len(), 1, "the unfinished cell is submitted again: {}", text(&resubmit));
    wait_for_jobs(&jobs, Duration::from_secs(600));
    assert!(run.join("summary.json").exists(), "{:?}", logs(&first_dir));
    let last = logs(&first_dir).into_iter().find(|l| l.contains("trained now")).unwrap_or_default();
    assert!(last.contains("took over the claim") && last.contains("(partial ("), "resumed, not restarted: {last}");
}

#[test]
fn bad_cluster_flags_are_named_and_nothing_is_written_or_submitted() {
    let tmp = tempfile::tempdir().unwrap();
    let path = study(tmp.path(), "flags", &[0, 1], 1, 16, false);
    let refused = |extra: &[&str], expected: &str| {
        let out = reproduce(tmp.path(), &path).args(extra).env("PATH", "/nonexistent").output().unwrap();
        let said = text(&out);
        assert!(!out.status.success() && said.contains(expected), "{extra:?}: {said}");
    };
    refused(&["--cell", "2"], "--cell 2: the profile has 2 cells, numbered 0 to 1");
    refused(&["--shard", "3/2"], "expected I/N with N >= 1 and 0 <= I < N");
    let foreign = tmp.path().join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "mine").unwrap();
    refused(&["--slurm", foreign.to_str().unwrap()], "holds files this tool did not write");
    let fresh = tmp.path().join("fresh");
    refused(&["--slurm", fresh.to_str().unwrap(), "--submit"], "no `sbatch` on PATH");
    assert!(!fresh.exists(), "nothing written");
    assert!(!tmp.path().join("runs/flags").exists(), "nothing trained");
    // a claim file that is not this tool's is refused, never deleted
    let run = tmp.path().join("runs/flags");
    let dry = reproduce(tmp.path(), &path).arg("--dry-run").output().unwrap();
    let key =
        text(&dry).lines().find_map(|l| l.split('[').nth(1)).map(|k| k.trim_end_matches(']').to_string()).unwrap();
    std::fs::create_dir_all(run.join(&key)).unwrap();
    std::fs::write(run.join(&key).join(train::claim::CLAIM_FILE), "held by a script of mine\n").unwrap();
    let out = reproduce(tmp.path(), &path).output().unwrap();
    assert!(text(&out).contains("not a claim of this tool"), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(run.join(&key).join(train::claim::CLAIM_FILE)).unwrap(),
        "held by a script of mine\n"
    );
}
