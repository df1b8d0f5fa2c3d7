//! Claims on run folders, so that any number of workers (processes on one machine, or on several
//! sharing a POSIX file system) may work on one run store and no run is ever trained by two at
//! once.
//!
//! A claim is the file `claim.lock` in the run folder, written whole under a temporary name and
//! hard-linked into place (a link never replaces a file: atomic on local file systems and on
//! NFS), holding who made it: host, pid, the pid's start time and when. While it is held, a
//! thread touches the file's modification time every [`HEARTBEAT`]. A claim is stale, and is taken over, when its holder is gone: on the same host,
//! its pid is dead (or a zombie, or a later process with the same pid); on another host, its
//! heartbeat is older than the timeout the caller gives. Taking over renames the stale file
//! away first, so that of two workers that judged it stale only one proceeds, and a claim that
//! turned out fresh is put back. The holder removes its claim when it is done (dropping the
//! [`Claim`]); a process killed outright leaves it behind, to be taken over. A `claim.lock` that
//! is not this tool's is never deleted: it is reported.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::TrainError;

/// The claim file of a run folder.
pub const CLAIM_FILE: &str = "claim.lock";

/// Whether a file named `name` in a run folder belongs to the claims on it: the claim, or one
/// being written or set aside by some worker (`claim.lock.tmp.<pid>.<n>`, see
/// [`data::store::temporary_sibling`]).
pub fn is_claim_file(name: &str) -> bool {
    name == CLAIM_FILE
        || name.strip_prefix(CLAIM_FILE).is_some_and(|rest| rest.starts_with(data::store::TEMPORARY_MARK))
}

/// How often a held claim's modification time is refreshed.
pub const HEARTBEAT: Duration = Duration::from_secs(20);

/// How long a claim from another host may go without a heartbeat before it counts as stale,
/// unless the caller says otherwise (`reproduce --claim-timeout`).
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(300);

/// What marks a claim file as this tool's.
const MARK: &str = "cim-quant run claim";

/// Who holds a claim: the content of `claim.lock`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// Always [`MARK`]: a file without it is not a claim of this tool.
    pub claim: String,
    /// Host name of the holder.
    pub host: String,
    /// Process id of the holder.
    pub pid: u32,
    /// The process's start time (clock ticks after boot, Linux), to tell it from a later process
    /// with the same pid.
    #[serde(default)]
    pub pid_start: Option<u64>,
    /// When the claim was made (seconds since the Unix epoch).
    pub since: u64,
    /// A random number of this claim, so that a holder never removes another's claim.
    pub token: u64,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let age = now_secs().saturating_sub(self.since);
        write!(f, "host {} pid {} (for {} min)", self.host, self.pid, age / 60)
    }
}

/// What [`claim`] found.
#[derive(Debug)]
pub enum ClaimOutcome {
    /// This process holds the folder until the claim is dropped.
    Held(Claim),
    /// A live holder has it.
    Busy(Holder),
}

/// A held claim: released (the file removed) when dropped.
#[derive(Debug)]
pub struct Claim {
    dir: PathBuf,
    /// The stale claim this one replaced, if any.
    pub took_over: Option<Holder>,
}

/// Claims this process holds, by folder: a nested claim of the same folder (`reproduce` claims
/// a cell, then `train` claims its folder) is the same claim.
static HELD: Mutex<Option<HashMap<PathBuf, Held>>> = Mutex::new(None);

#[derive(Debug)]
struct Held {
    token: u64,
    count: usize,
    stop: Arc<AtomicBool>,
}

/// Claims run folder `dir` (creating it), taking over a stale claim: the file of a holder whose
/// process is gone (same host) or whose heartbeat is older than `stale_after` (another host).
pub fn claim(dir: &Path, stale_after: Duration) -> Result<ClaimOutcome, TrainError> {
    let dir = std::path::absolute(dir).map_err(|e| TrainError::io(dir, e))?;
    {
        let mut held = HELD.lock().expect("claim registry");
        if let Some(h) = held.get_or_insert_with(HashMap::new).get_mut(&dir) {
            h.count += 1;
            return Ok(ClaimOutcome::Held(Claim { dir, took_over: None }));
        }
    }
    std::fs::create_dir_all(&dir).map_err(|e| TrainError::io(&dir, e))?;
    let path = dir.join(CLAIM_FILE);
    let mut took_over = None;
    // two rounds: the second after taking a stale claim away
    for _ in 0..2 {
        let me = Holder {
            claim: MARK.into(),
            host: host_name(),
            pid: std::process::id(),
            pid_start: process_start(std::process::id()),
            since: now_secs(),
            token: unique_number(),
        };
        // the claim is written whole under a temporary name, then linked into place: a hard
        // link never replaces a file, so exactly one worker gets the name, and nobody ever sees
        // a claim half written (a crash leaves at most the temporary file)
        let text = serde_json::to_string_pretty(&me).expect("serializable") + "\n";
        let staged = data::store::temporary_sibling(&path);
        std::fs::write(&staged, text.as_bytes())
            .and_then(|()| std::fs::File::open(&staged)?.sync_all())
            // named by the claim it was for, not by the temporary name nobody knows
            .map_err(|e| TrainError::file(&path, format!("cannot claim the run folder: {e}")))?;
        let linked = std::fs::hard_link(&staged, &path);
        let _ = std::fs::remove_file(&staged);
        match linked {
            Ok(()) => {
                let stop = Arc::new(AtomicBool::new(false));
                spawn_heartbeat(path.clone(), me.token, stop.clone());
                let mut held = HELD.lock().expect("claim registry");
                held.get_or_insert_with(HashMap::new).insert(dir.clone(), Held { token: me.token, count: 1, stop });
                return Ok(ClaimOutcome::Held(Claim { dir, took_over }));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            // the staged file was swept away as a leftover by the folder's holder: it is busy
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(TrainError::io(&path, e)),
        }
        let Some((holder, age)) = read_claim(&path)? else { continue }; // released meanwhile
        if !is_stale(&holder, age, stale_after) {
            return Ok(ClaimOutcome::Busy(holder));
        }
        if take_away(&path, &holder)? {
            took_over = Some(holder);
        }
    }
    match read_claim(&path)? {
        Some((holder, _)) => Ok(ClaimOutcome::Busy(holder)),
        None => Err(TrainError::file(&path, "the claim file keeps changing: another worker is claiming the folder")),
    }
}

/// The live holder of `dir`'s claim, if any (a stale claim, or none, gives `None`).
pub fn live_holder(dir: &Path, stale_after: Duration) -> Result<Option<Holder>, TrainError> {
    Ok(read_claim(&dir.join(CLAIM_FILE))?.filter(|(h, age)| !is_stale(h, *age, stale_after)).map(|(h, _)| h))
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut held = HELD.lock().expect("claim registry");
        let registry = held.get_or_insert_with(HashMap::new);
        let Some(h) = registry.get_mut(&self.dir) else { return };
        h.count -= 1;
        if h.count > 0 {
            return;
        }
        let h = registry.remove(&self.dir).expect("present");
        h.stop.store(true, Ordering::Relaxed);
        let path = self.dir.join(CLAIM_FILE);
        // only our own claim is removed
        if let Ok(Some((holder, _))) = read_claim(&path)
            && holder.token == h.token
        {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// The holder in a claim file and the time since its last heartbeat; `None` if there is none.
/// A file that is not this tool's claim is an error, and is left alone.
fn read_claim(path: &Path) -> Result<Option<(Holder, Duration)>, TrainError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(TrainError::io(path, e)),
    };
    let age = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map(|t| SystemTime::now().duration_since(t).unwrap_or_default())
        .unwrap_or_default();
    match serde_json::from_str::<Holder>(&text) {
        Ok(h) if h.claim == MARK => Ok(Some((h, age))),
        _ => Err(TrainError::file(
            path,
            "is not a claim of this tool: it is left alone; remove it if no process of yours uses the folder",
        )),
    }
}

/// Whether a claim's holder is gone.
fn is_stale(holder: &Holder, age: Duration, stale_after: Duration) -> bool {
    if holder.host == host_name()
        && let Some(alive) = process_alive(holder.pid, holder.pid_start)
    {
        return !alive;
    }
    age > stale_after
}

/// Moves the stale claim of `holder` out of the way; false when the file there was no longer it
/// (then it is put back, unless someone claimed the folder meanwhile).
fn take_away(path: &Path, holder: &Holder) -> Result<bool, TrainError> {
    let aside = data::store::temporary_sibling(path);
    match std::fs::rename(path, &aside) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(TrainError::io(path, e)),
    }
    let moved = std::fs::read_to_string(&aside).ok().and_then(|t| serde_json::from_str::<Holder>(&t).ok());
    if moved.as_ref() == Some(holder) {
        let _ = std::fs::remove_file(&aside);
        return Ok(true);
    }
    // a fresh claim made after we judged the old one stale: back where it was, unless the
    // folder has been claimed again meanwhile (a hard link does not replace a file)
    let _ = std::fs::hard_link(&aside, path);
    let _ = std::fs::remove_file(&aside);
    Ok(false)
}

fn spawn_heartbeat(path: PathBuf, token: u64, stop: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(500).min(HEARTBEAT));
            let due = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .map(|t| SystemTime::now().duration_since(t).unwrap_or_default() >= HEARTBEAT)
                .unwrap_or(false);
            if due
                && !stop.load(Ordering::Relaxed)
                && let Ok(Some((holder, _))) = read_claim(&path)
                && holder.token == token
                && let Ok(file) = OpenOptions::new().write(true).open(&path)
            {
                let _ = file.set_modified(SystemTime::now());
            }
        }
    });
}

/// A number no other claim or temporary name of any process is likely to share: the time in
/// nanoseconds, the pid and a counter.
fn unique_number() -> u64 {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 40) ^ COUNTER.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9E37_79B9)
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// This machine's name (Linux: the kernel's host name).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".into())
}

/// A process's start time in clock ticks after boot (`/proc/PID/stat` field 22); `None` where
/// there is no such file.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // the command name may hold spaces and parentheses: fields count from the last ')'
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether process `pid` (started at `start`, if known) is alive: `None` where the system has no
/// `/proc` to tell. A zombie counts as dead.
fn process_alive(pid: u32, start: Option<u64>) -> Option<bool> {
    if !Path::new("/proc/self/stat").exists() {
        return None;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return Some(false) };
    let Some(close) = stat.rfind(')') else { return Some(false) };
    let rest = &stat[close + 2..];
    if rest.starts_with('Z') || rest.starts_with('X') {
        return Some(false);
    }
    Some(start.is_none_or(|s| process_start(pid) == Some(s)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The claim files workers write or set aside beside a claim (`claim.lock.tmp.<pid>.<n>`)
    /// leave a folder as empty as the claim does: a run may be started there.
    #[test]
    fn a_neighbours_claim_files_leave_a_folder_empty() {
        assert!(is_claim_file("claim.lock") && is_claim_file("claim.lock.tmp.4242.7"));
        assert!(!is_claim_file("claim.locked") && !is_claim_file("config.toml.tmp.4242.7"));
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("claim.lock.tmp.4242.7"), "a neighbour's claim, half way").unwrap();
        crate::run::RunDir::new(&dir).check_owner(&crate::RunConfig::default()).unwrap();
        std::fs::write(dir.join("notes.txt"), "someone's file").unwrap();
        assert!(crate::run::RunDir::new(&dir).check_owner(&crate::RunConfig::default()).is_err());
    }

    #[test]
    fn a_claim_is_exclusive_reentrant_released_and_taken_over_from_a_dead_holder() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        let ClaimOutcome::Held(first) = claim(&dir, DEFAULT_STALE_AFTER).unwrap() else { panic!("free folder") };
        assert!(dir.join(CLAIM_FILE).exists());
        // the same process again: the same claim
        let ClaimOutcome::Held(nested) = claim(&dir, DEFAULT_STALE_AFTER).unwrap() else { panic!("reentrant") };
        drop(nested);
        assert!(dir.join(CLAIM_FILE).exists(), "the outer claim still holds");
        drop(first);
        assert!(!dir.join(CLAIM_FILE).exists(), "released");

        // a live holder elsewhere on this host (pid 1 is alive): busy
        let other = Holder {
            claim: MARK.into(),
            host: host_name(),
            pid: 1,
            pid_start: process_start(1),
            since: now_secs(),
            token: 7,
        };
        std::fs::write(dir.join(CLAIM_FILE), serde_json::to_string(&other).unwrap()).unwrap();
        match claim(&dir, DEFAULT_STALE_AFTER).unwrap() {
            ClaimOutcome::Busy(h) => assert_eq!(h, other),
            ClaimOutcome::Held(_) => panic!("a live holder's claim was taken"),
        }
        // a dead holder on this host: taken over
        let dead = Holder { pid: u32::MAX - 1, pid_start: None, ..other.clone() };
        std::fs::write(dir.join(CLAIM_FILE), serde_json::to_string(&dead).unwrap()).unwrap();
        let ClaimOutcome::Held(c) = claim(&dir, DEFAULT_STALE_AFTER).unwrap() else { panic!("stale claim kept") };
        assert_eq!(c.took_over, Some(dead));
        drop(c);
        // another host: stale only after the timeout without heartbeat
        let remote = Holder { host: "elsewhere".into(), ..other.clone() };
        std::fs::write(dir.join(CLAIM_FILE), serde_json::to_string(&remote).unwrap()).unwrap();
        assert!(matches!(claim(&dir, Duration::from_secs(60)).unwrap(), ClaimOutcome::Busy(_)));
        std::thread::sleep(Duration::from_millis(1100));
        let ClaimOutcome::Held(c) = claim(&dir, Duration::from_secs(1)).unwrap() else { panic!("no heartbeat") };
        drop(c);
        // not this tool's file: refused and left alone
        std::fs::write(dir.join(CLAIM_FILE), "someone else's lock\n").unwrap();
        let err = claim(&dir, DEFAULT_STALE_AFTER).unwrap_err().to_string();
        assert!(err.contains("not a claim of this tool"), "{err}");
        assert_eq!(std::fs::read_to_string(dir.join(CLAIM_FILE)).unwrap(), "someone else's lock\n");
    }
}
