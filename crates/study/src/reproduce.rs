//! `reproduce`: train every cell of a study that has no finished result, resume interrupted
//! ones, then run the variation study; a second call finds everything cached.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use data::DataDir;
use train::claim::{ClaimOutcome, claim, live_holder};
use train::run::RunDir;
use train::{ComputeDevice, Holder, RunConfig, Summary, TrainOptions};

use crate::elsewhere::{copy_finished_run, copy_unfinished_run, finished_elsewhere, unfinished_committed};
use crate::{Cell, Study, StudyError};

/// How to reproduce.
#[derive(Clone)]
pub struct ReproduceOptions {
    /// Where run folders go: `<runs_root>/<profile>/<config hash>/`.
    pub runs_root: PathBuf,
    /// Where data sets live.
    pub data_dir: DataDir,
    /// Only cells whose label or benchmark contains this text.
    pub filter: Option<String>,
    /// List the cells, their state and an estimate; train nothing.
    pub dry_run: bool,
    /// Notes on every cell (held by another worker, its state before training, variation studies
    /// started), not only those that need attention.
    pub progress: bool,
    /// Receives what each training reports (epochs, steps), for a progress display.
    pub on_train_event: train::Observer,
    /// Train failed cells again (their `failed.json` is removed first; they resume from their
    /// last good checkpoint).
    pub retry_failed: bool,
    /// Where every cell trains, is inspected and programmed with variation (not part of a
    /// cell's hash: the same cell on either device is the same experiment).
    pub device: ComputeDevice,
    /// The committed results of the profile (`reports/<profile>/runs/`): a cell finished there
    /// is not trained again, and a pretraining finished there is started from.
    pub archive: Option<PathBuf>,
    /// Which cells of the study's fixed order this worker takes.
    pub pick: CellPick,
    /// How long a claim from another host may go without a heartbeat before it is taken over.
    pub claim_timeout: Duration,
    /// Receives what the call has to say while it works ([`ReproduceEvent`]); the library prints
    /// nothing itself.
    pub on_event: fn(&ReproduceEvent),
}

/// What a `reproduce` call reports while it works, for its caller to show.
#[derive(Debug, Clone, PartialEq)]
pub enum ReproduceEvent {
    /// A dry run's selection, before its cells.
    Listing {
        /// Cells selected.
        selected: usize,
        /// Cells of the study.
        cells: usize,
        /// The study's name.
        profile: String,
    },
    /// One cell of a dry run.
    Listed {
        /// Its index in the study's fixed order.
        index: usize,
        /// Its state as shown (`finished (committed)`, `running (...) on ...`, `pending`, ...).
        state: String,
        /// The estimated seconds left and where the estimate comes from (`None`: finished, or not
        /// known).
        estimate: Option<(f64, EstimateBasis)>,
        /// Whether it is finished (no estimate needed).
        finished: bool,
        /// Its one-line description.
        label: String,
        /// Its epochs.
        epochs: usize,
        /// Its key.
        key: String,
    },
    /// A dry run's estimate of what is left: seconds, and how many cells were estimated from
    /// recorded speeds and from the reference constants.
    ListingTotal {
        /// Seconds.
        seconds: f64,
        /// Cells estimated from recorded speeds.
        measured: usize,
        /// Cells estimated from the reference constants.
        reference: usize,
    },
    /// Something about one cell: `tag` is `[i/n] cell k`, `note` follows the label as it reads
    /// (` failed: ...`, `: took over ...`).
    Cell {
        /// `[i/n] cell k`.
        tag: String,
        /// The cell's description.
        label: String,
        /// What happened.
        note: String,
    },
    /// A variation study starts.
    Variation {
        /// The cell's description.
        label: String,
        /// Sigmas studied.
        sigmas: usize,
        /// Chips per sigma.
        chips: usize,
    },
}

/// Which cells of a study's fixed order ([`Study::cells`]) a worker takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CellPick {
    /// Every cell (that the filter selects), with the pretrainings they start from.
    #[default]
    All,
    /// Cell K alone (`--cell K`): a Slurm array task.
    One(usize),
    /// Every N-th cell starting at I (`--shard I/N`).
    Shard {
        /// I: the first cell, and this worker's shard.
        index: usize,
        /// N: the shards in all.
        count: usize,
    },
}

impl CellPick {
    /// Checks the pick against a study of `cells` cells, before any work.
    pub fn check(self, cells: usize) -> Result<(), StudyError> {
        match self {
            CellPick::One(k) if k >= cells => Err(StudyError::Invalid(format!(
                "--cell {k}: the profile has {cells} cells, numbered 0 to {} (`reproduce --dry-run` lists them)",
                cells.saturating_sub(1)
            ))),
            CellPick::Shard { index, count } if count == 0 || index >= count => Err(StudyError::Invalid(format!(
                "--shard {index}/{count}: expected I/N with N >= 1 and 0 <= I < N (shard I takes cells I, I+N, I+2N, ...)"
            ))),
            _ => Ok(()),
        }
    }

    fn takes(self, index: usize) -> bool {
        match self {
            CellPick::All => true,
            CellPick::One(k) => index == k,
            CellPick::Shard { index: i, count } => index % count == i,
        }
    }
}

/// Where a cell stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CellState {
    /// Has a summary.
    Finished,
    /// Has a checkpoint after this many epochs.
    Partial(usize),
    /// Stopped by non-finite values (`failed.json`); not retried unless asked.
    Failed,
    /// Nothing yet.
    Pending,
}

impl std::fmt::Display for CellState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CellState::Finished => write!(f, "finished"),
            CellState::Partial(n) => write!(f, "partial ({n} epochs)"),
            CellState::Failed => write!(f, "failed"),
            CellState::Pending => write!(f, "pending"),
        }
    }
}

/// The state of the run folder of `config`: finished only where its summary is a result of
/// `config` ([`train::Summary::check_against`]); a summary that is not makes it failed.
pub fn cell_state(dir: &Path, config: &RunConfig) -> CellState {
    cell_status(dir, config).0
}

/// The state of the run folder of `config`, and for a failed one why.
pub fn cell_status(dir: &Path, config: &RunConfig) -> (CellState, Option<String>) {
    let run = RunDir::new(dir);
    // a failure record wins over a summary beside it (an archive whose cell failed after an
    // earlier report copied its result)
    match run.read_failure() {
        Ok(Some(f)) => return (CellState::Failed, Some(f.message)),
        Ok(None) => {}
        Err(e) => return (CellState::Failed, Some(e.to_string())),
    }
    match run.read_result(config) {
        Ok(Some(_)) => return (CellState::Finished, None),
        Ok(None) => {}
        Err(e) => return (CellState::Failed, Some(e.to_string())),
    }
    match run.latest_checkpoint() {
        Ok(Some(ckpt)) => (CellState::Partial(ckpt.state.epochs_done), None),
        _ => (CellState::Pending, None),
    }
}

/// What a reproduce call did.
#[derive(Debug, Clone, Default)]
pub struct ReproduceOutcome {
    /// Cells selected.
    pub selected: usize,
    /// Cells that were already finished.
    pub cached: usize,
    /// Cells trained (or resumed) now.
    pub trained: usize,
    /// Cells another worker holds (skipped), with the holder.
    pub busy: Vec<(String, Holder)>,
    /// Cells whose stale claim (a worker that died) this one took over.
    pub taken_over: usize,
    /// Cells that failed, with the error.
    pub failed: Vec<(String, String)>,
    /// Variation studies run or found.
    pub variation: usize,
    /// ADC inspections run or found (finished cells with ADCs and a checkpoint).
    pub inspected: usize,
    /// Summaries of every finished selected cell, with its label.
    pub summaries: Vec<(String, Summary)>,
    /// Seconds spent.
    pub seconds: f64,
}

/// Seconds per image of training ResNet-20 at 32x32 on this project's reference machine (2
/// cores, burn-flex; `cargo xtask train` end to end: floating point 340 img/s at batch 128, CIM
/// about 150 img/s at batch 64), floating point and CIM; a forward pass for testing costs about
/// a third.
const FP_SECONDS_PER_IMAGE: f64 = 0.003;
const CIM_SECONDS_PER_IMAGE: f64 = 0.0068;

/// A cell's work in reference units: image passes of training (a test pass counted as a third of
/// one) over its epochs, scaled by its images' pixels against 32 x 32; `None` where the image
/// counts are not known before its data is read.
fn work_units(c: &RunConfig) -> Option<f64> {
    let (train, test, pixels) = if c.dataset.starts_with(data::source::FOLDER_PREFIX) {
        (c.limit_train?, c.limit_test?, 1024)
    } else {
        let m = data::find_manifest(&c.dataset).ok()?;
        let pixels = m.image_shape[1] * m.image_shape[2];
        (c.limit_train.unwrap_or(m.splits.train), c.limit_test.unwrap_or(m.splits.test), pixels)
    };
    Some(c.epochs as f64 * (train as f64 + test as f64 / 3.0) * pixels as f64 / 1024.0)
}

/// A rough duration of a cell from the reference costs above (ResNet-20 only).
pub fn estimate_seconds(cell: &Cell) -> Option<f64> {
    let c = &cell.config;
    if c.model != models::Arch::Resnet20 {
        return None;
    }
    let per_unit = if c.uses_crossbar() { CIM_SECONDS_PER_IMAGE } else { FP_SECONDS_PER_IMAGE };
    Some(work_units(c)? * per_unit)
}

/// Where an estimate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EstimateBasis {
    /// The median speed of this many finished runs of the same kind (model, method, batch
    /// size, device), as their summaries recorded it.
    Measured(usize),
    /// The reference machine's constants ([`estimate_seconds`]).
    Reference,
}

/// Estimates of cell durations from the speeds finished runs recorded: the seconds per work unit
/// ([`work_units`]) of each kind of run, the median over the runs of that kind.
#[derive(Debug, Default)]
pub struct Estimator {
    per_unit: Vec<(String, Vec<f64>)>,
}

impl Estimator {
    /// What a run is timed as: runs of one kind run the same steps at the same cost per image.
    fn kind(c: &RunConfig, device: ComputeDevice) -> String {
        format!("{} {} {} {} b{} {device}", c.model.name(), c.method, c.encoding, c.activation.name(), c.batch_size)
    }

    /// Learns from the finished runs among `cells` (their run folders, or the archive).
    pub fn from_finished(cells: &[Cell], runs_root: &Path, profile: &str, archive: Option<&Path>) -> Self {
        let mut e = Estimator::default();
        for cell in cells {
            let Some(dir) = finished_dir(cell, runs_root, profile, archive) else { continue };
            let Ok(Some(summary)) = RunDir::new(&dir).read_summary() else { continue };
            let Some(units) = work_units(&cell.config) else { continue };
            if summary.wall_seconds > 0.0 && units > 0.0 {
                e.add(Self::kind(&cell.config, summary.device), summary.wall_seconds / units);
            }
        }
        e
    }

    fn add(&mut self, kind: String, seconds_per_unit: f64) {
        match self.per_unit.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, v)) => v.push(seconds_per_unit),
            None => self.per_unit.push((kind, vec![seconds_per_unit])),
        }
    }

    /// The estimated seconds of `cell` on `device`, and where the estimate comes from.
    pub fn estimate(&self, cell: &Cell, device: ComputeDevice) -> Option<(f64, EstimateBasis)> {
        let kind = Self::kind(&cell.config, device);
        match self.per_unit.iter().find(|(k, _)| *k == kind) {
            Some((_, speeds)) => {
                let mut v = speeds.clone();
                v.sort_by(f64::total_cmp);
                let median =
                    if v.len() % 2 == 1 { v[v.len() / 2] } else { (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0 };
                Some((work_units(&cell.config)? * median, EstimateBasis::Measured(v.len())))
            }
            None => estimate_seconds(cell).map(|s| (s, EstimateBasis::Reference)),
        }
    }
}

/// The cells of `cells` (a study's, in its fixed order) that match `filter`, with the
/// pretrainings they start from (which come first in a study's order), or those of `pick`; each
/// with its index in that order.
fn selected(cells: &[Cell], filter: Option<&str>, pick: CellPick) -> Result<Vec<(usize, Cell)>, StudyError> {
    pick.check(cells.len())?;
    if pick != CellPick::All {
        return Ok(cells.iter().cloned().enumerate().filter(|(i, _)| pick.takes(*i)).collect());
    }
    let matches = |c: &Cell| filter.is_none_or(|f| c.label().contains(f) || c.benchmark.contains(f));
    let needed: std::collections::BTreeSet<&str> =
        cells.iter().filter(|c| matches(c)).filter_map(Cell::starts_from).collect();
    Ok(cells
        .iter()
        .enumerate()
        .filter(|(_, c)| matches(c) || needed.contains(c.key().as_str()))
        .map(|(i, c)| (i, c.clone()))
        .collect())
}

/// The folder holding the finished run of `cell`: its run folder, else its committed copy in
/// the archive (whose summary must be the cell's own).
pub fn finished_dir(cell: &Cell, runs_root: &Path, profile: &str, archive: Option<&Path>) -> Option<PathBuf> {
    let live = cell.dir(runs_root, profile);
    if cell_state(&live, &cell.config) == CellState::Finished {
        return Some(live);
    }
    let committed = archive?.join(cell.key());
    (cell_state(&committed, &cell.config) == CellState::Finished).then_some(committed)
}

/// The profile folder a run folder lies in (`runs/<profile>/<hash>`).
fn profile_of(run: &Path) -> String {
    run.parent().and_then(Path::file_name).map(|p| p.to_string_lossy().to_string()).unwrap_or_default()
}

fn is_committed(dir: &Path, archive: Option<&Path>) -> bool {
    archive.is_some_and(|a| dir.starts_with(a))
}

/// Runs (or lists, with `dry_run`) the selected cells of `study`. Each cell is claimed before
/// it is trained ([`train::claim`]): a cell another worker holds is skipped, one whose worker
/// died is taken over and resumes from its last checkpoint.
pub fn reproduce(study: &Study, opts: &ReproduceOptions) -> Result<ReproduceOutcome, StudyError> {
    let start = Instant::now();
    let all = study.cells()?;
    let cells = selected(&all, opts.filter.as_deref(), opts.pick)?;
    let out = ReproduceOutcome { selected: cells.len(), ..Default::default() };
    if opts.dry_run {
        let mut total = 0.0;
        let (mut measured, mut reference) = (0, 0);
        let estimator = Estimator::from_finished(&all, &opts.runs_root, &study.name, opts.archive.as_deref());
        (opts.on_event)(&ReproduceEvent::Listing {
            selected: cells.len(),
            cells: all.len(),
            profile: study.name.clone(),
        });
        for (index, cell) in &cells {
            let live = cell.dir(&opts.runs_root, &study.name);
            let done = finished_dir(cell, &opts.runs_root, &study.name, opts.archive.as_deref());
            let state = if done.is_some() { CellState::Finished } else { cell_state(&live, &cell.config) };
            let elsewhere =
                (state == CellState::Pending).then(|| finished_elsewhere(cell, &opts.runs_root, &study.name)).flatten();
            let state = if elsewhere.is_some() { CellState::Finished } else { state };
            let carried = (state == CellState::Pending)
                .then(|| opts.archive.as_deref().and_then(|a| unfinished_committed(cell, a)))
                .flatten();
            let state = match carried {
                Some((_, done)) => CellState::Partial(done),
                None => state,
            };
            let holder = match state {
                CellState::Finished => Ok(None),
                _ => live_holder(&live, opts.claim_timeout),
            };
            let shown = match (&done, &holder) {
                (Some(dir), _) if is_committed(dir, opts.archive.as_deref()) => "finished (committed)".to_string(),
                _ if let Some(from) = &elsewhere => format!("finished in {} (copied)", profile_of(from)),
                _ if carried.is_some() => format!("{state}, committed checkpoint (copied, resumed)"),
                (_, Ok(Some(h))) => format!("running ({state}) on {h}"),
                // a claim file this tool cannot read fails the cell when it is trained, not the list
                (_, Err(e)) => format!("{state}, claim unreadable: {e}"),
                _ => state.to_string(),
            };
            // a partial run has only its remaining epochs to train
            let left = match state {
                CellState::Partial(done) => {
                    cell.config.epochs.saturating_sub(done) as f64 / cell.config.epochs.max(1) as f64
                }
                _ => 1.0,
            };
            let estimate = match state {
                CellState::Finished => None,
                _ => estimator.estimate(cell, opts.device).map(|(seconds, basis)| (seconds * left, basis)),
            };
            if let Some((seconds, basis)) = estimate {
                total += seconds;
                match basis {
                    EstimateBasis::Measured(_) => measured += 1,
                    EstimateBasis::Reference => reference += 1,
                }
            }
            (opts.on_event)(&ReproduceEvent::Listed {
                index: *index,
                state: shown,
                estimate,
                finished: state == CellState::Finished,
                label: cell.label(),
                epochs: cell.config.epochs,
                key: cell.key(),
            });
        }
        (opts.on_event)(&ReproduceEvent::ListingTotal { seconds: total, measured, reference });
        return Ok(out);
    }
    let mut worker = Worker { study, all: &all, opts, out };
    let n = cells.len();
    for (i, (index, cell)) in cells.iter().enumerate() {
        let tag = format!("[{}/{n}] cell {index}", i + 1);
        // a cell whose folder cannot be claimed or read fails alone; the worker goes on
        if let Err(e) = worker.run_cell(*index, cell, &tag) {
            worker.note(&tag, cell, format!(" failed: {e}"));
            worker.out.failed.push((cell.label(), e.to_string()));
        }
    }
    if let Some(v) = &study.variation {
        for cell in study.variation_cells()? {
            if !cells.iter().any(|(_, c)| *c == cell) {
                continue;
            }
            if let Err(e) = worker.run_variation(v, &cell) {
                worker.out.failed.push((format!("variation of {}", cell.label()), e.to_string()));
            }
        }
    }
    let mut out = worker.out;
    out.seconds = start.elapsed().as_secs_f64();
    Ok(out)
}

/// How often a worker looks again at a pretraining another worker is training.
const WAIT_POLL: Duration = Duration::from_secs(2);

/// One `reproduce` call's walk over its cells.
struct Worker<'a> {
    study: &'a Study,
    all: &'a [Cell],
    opts: &'a ReproduceOptions,
    out: ReproduceOutcome,
}

impl Worker<'_> {
    /// Says `note` of `cell` to the caller.
    fn note(&self, tag: &str, cell: &Cell, note: String) {
        (self.opts.on_event)(&ReproduceEvent::Cell { tag: tag.to_string(), label: cell.label(), note });
    }

    /// Trains `cell` (number `index` of the study's order) unless it is finished, failed or held
    /// by another worker; what happened goes into the outcome. An error is this cell's alone.
    fn run_cell(&mut self, index: usize, cell: &Cell, tag: &str) -> Result<(), StudyError> {
        let opts = self.opts;
        let dir = cell.dir(&opts.runs_root, &self.study.name);
        let (state, _) = cell_status(&dir, &cell.config);
        if self.take_finished(cell, &dir, state)? {
            return Ok(());
        }
        // what it starts from must be finished before it is claimed
        let Some(init_from) = self.starting_run(index, cell, tag, state)? else { return Ok(()) };
        let claimed = match claim(&dir, opts.claim_timeout)? {
            ClaimOutcome::Held(c) => c,
            ClaimOutcome::Busy(holder) => {
                if opts.progress || opts.pick != CellPick::All {
                    self.note(tag, cell, format!(" is claimed by {holder}: skipped (another worker has it)"));
                }
                self.out.busy.push((cell.label(), holder));
                return Ok(());
            }
        };
        // read again under the claim: another worker may have finished it meanwhile
        let (mut state, failure) = cell_status(&dir, &cell.config);
        if state == CellState::Pending
            && let Some(from) = finished_elsewhere(cell, &opts.runs_root, &self.study.name)
        {
            copy_finished_run(&from, &dir)?;
            self.note(tag, cell, format!(": the same run finished in {}: copied", from.display()));
            state = CellState::Finished;
        }
        if state == CellState::Pending
            && let Some((from, done)) = opts.archive.as_deref().and_then(|a| unfinished_committed(cell, a))
        {
            copy_unfinished_run(&from, &dir)?;
            self.note(
                tag,
                cell,
                format!(
                    ": the committed report holds its checkpoint after epoch {done} ({}): copied, resumed from there",
                    from.display()
                ),
            );
            state = cell_state(&dir, &cell.config);
        }
        if let Some(h) = &claimed.took_over {
            self.note(tag, cell, format!(": took over the claim of {h}, which is gone ({state})"));
            self.out.taken_over += 1;
        }
        if state == CellState::Finished {
            self.out.cached += 1;
        } else if state == CellState::Failed && !opts.retry_failed {
            let message = failure.unwrap_or_else(|| "failed".into());
            self.note(tag, cell, format!(" failed earlier (--retry-failed trains it again): {message}"));
            self.out.failed.push((cell.label(), message));
            return Ok(());
        } else if !self.train_cell(cell, &dir, state, init_from, tag)? {
            return Ok(());
        }
        self.follow_up(cell, &dir)?;
        drop(claimed);
        Ok(())
    }

    /// Whether `cell` needs nothing from this worker: its result is committed, or it is finished
    /// here with everything `reproduce` adds after training (no claim is made: the runs folder
    /// may be read-only). Its summary goes into the outcome.
    fn take_finished(&mut self, cell: &Cell, dir: &Path, state: CellState) -> Result<bool, StudyError> {
        let archive = self.opts.archive.as_deref();
        let done = match finished_dir(cell, &self.opts.runs_root, &self.study.name, archive)
            .filter(|d| state != CellState::Finished && is_committed(d, archive))
        {
            Some(committed) => Some(committed),
            None if state == CellState::Finished && follow_up_done(dir, cell) => Some(dir.to_path_buf()),
            None => None,
        };
        let Some(done) = done else { return Ok(false) };
        self.out.cached += 1;
        if let Some(summary) = RunDir::new(&done).read_summary()? {
            self.out.summaries.push((cell.label(), summary));
        }
        Ok(true)
    }

    /// The folder of the finished run `cell` starts from (`Some(None)`: it starts from scratch, or
    /// is finished and needs none); `None` when that run has not finished, which is noted as this
    /// cell's failure (or refused, for a worker given this one cell).
    fn starting_run(
        &mut self,
        index: usize,
        cell: &Cell,
        tag: &str,
        state: CellState,
    ) -> Result<Option<Option<PathBuf>>, StudyError> {
        let Some(key) = cell.starts_from() else { return Ok(Some(None)) };
        match self.start_of(key, tag, cell)? {
            Some(d) => return Ok(Some(Some(d))),
            None if state == CellState::Finished => return Ok(Some(None)),
            None => {}
        }
        let start = self.all.iter().find(|c| c.key() == key);
        let what = start.map(Cell::label).unwrap_or_else(|| format!("the cell {key}"));
        let message = format!("it starts from {what}, which has not finished");
        if let CellPick::One(_) = self.opts.pick {
            return Err(StudyError::Invalid(format!(
                "--cell {index} ({}): {message}; train that cell first (a Slurm submission makes this array wait for it)",
                cell.label()
            )));
        }
        self.note(tag, cell, format!(" skipped: {message}"));
        self.out.failed.push((cell.label(), message));
        Ok(None)
    }

    /// Trains the claimed `cell` in `dir` from its state; whether it finished (a failure is noted
    /// as this cell's).
    fn train_cell(
        &mut self,
        cell: &Cell,
        dir: &Path,
        state: CellState,
        init_from: Option<PathBuf>,
        tag: &str,
    ) -> Result<bool, StudyError> {
        let opts = self.opts;
        if state == CellState::Failed {
            set_failure_aside(dir)?;
        }
        if opts.progress || opts.pick != CellPick::All {
            self.note(tag, cell, format!(" ({state})"));
        }
        let train_opts = TrainOptions {
            data_dir: opts.data_dir.clone(),
            on_event: opts.on_train_event.clone(),
            stop_after: None,
            device: opts.device,
            init_from,
        };
        match train::train(&cell.config, dir, &train_opts) {
            Ok(_) => {
                self.out.trained += 1;
                Ok(true)
            }
            Err(e) => {
                self.note(tag, cell, format!(" failed: {e}"));
                self.out.failed.push((cell.label(), e.to_string()));
                Ok(false)
            }
        }
    }

    /// What `reproduce` adds to a finished run: its summary into the outcome, and the ADC quality
    /// of a method with ADCs, for the report (archived runs of older versions have no checkpoint
    /// to inspect).
    fn follow_up(&mut self, cell: &Cell, dir: &Path) -> Result<(), StudyError> {
        let opts = self.opts;
        let Some(summary) = RunDir::new(dir).read_summary()? else { return Ok(()) };
        self.out.summaries.push((cell.label(), summary));
        if cell.config.uses_adc() && RunDir::new(dir).latest_checkpoint()?.is_some() {
            match train::inspect_run(dir, train::DEFAULT_INSPECT_BATCHES, &opts.data_dir, opts.device) {
                Ok(_) => self.out.inspected += 1,
                Err(e) => self.out.failed.push((format!("inspect of {}", cell.label()), e.to_string())),
            }
        }
        Ok(())
    }

    /// The finished run that the cell `key` left, waiting for it while another worker trains
    /// it (its claim's heartbeat alive); `None` when it is not finished and nobody trains it.
    fn start_of(&mut self, key: &str, tag: &str, waiting: &Cell) -> Result<Option<PathBuf>, StudyError> {
        let (opts, archive) = (self.opts, self.opts.archive.as_deref());
        let Some(start) = self.all.iter().find(|c| c.key() == key) else { return Ok(None) };
        let mut told = false;
        loop {
            if let Some(d) = finished_dir(start, &opts.runs_root, &self.study.name, archive) {
                return Ok(Some(d));
            }
            let Some(holder) = live_holder(&start.dir(&opts.runs_root, &self.study.name), opts.claim_timeout)? else {
                // its worker is gone: this one trains it, if it is in this worker's share
                let index = self.all.iter().position(|c| c.key() == key).expect("a cell of the study");
                if !told || !opts.pick.takes(index) {
                    return Ok(None);
                }
                self.run_cell(index, start, tag)?;
                told = false;
                continue;
            };
            if !told {
                self.note(
                    tag,
                    waiting,
                    format!(
                        " waits for {}, which {holder} is training (checked every {} s)",
                        start.label(),
                        WAIT_POLL.as_secs()
                    ),
                );
                told = true;
            }
            std::thread::sleep(WAIT_POLL);
        }
    }

    /// The variation study of the finished cell `cell`, unless it is done or another worker has
    /// the run.
    fn run_variation(&mut self, v: &crate::VariationSpec, cell: &Cell) -> Result<(), StudyError> {
        let opts = self.opts;
        let dir = cell.dir(&opts.runs_root, &self.study.name);
        if cell_state(&dir, &cell.config) != CellState::Finished {
            return Ok(());
        }
        let done: Option<train::VariationReport> = train::run::read_json(&dir.join("variation.json")).ok().flatten();
        if done.is_some_and(|r| r.covers(&cell.key(), &v.sigmas, v.chips, v.chip_seed, v.limit_test)) {
            self.out.variation += 1;
            return Ok(());
        }
        let ClaimOutcome::Held(_claimed) = claim(&dir, opts.claim_timeout)? else {
            return Ok(()); // another worker has the run (and runs its study)
        };
        if opts.progress {
            (opts.on_event)(&ReproduceEvent::Variation { label: cell.label(), sigmas: v.sigmas.len(), chips: v.chips });
        }
        train::variation_study(&dir, &v.sigmas, v.chips, v.chip_seed, v.limit_test, &opts.data_dir, opts.device)?;
        self.out.variation += 1;
        Ok(())
    }
}

/// Whether a finished cell's run folder already holds what `reproduce` adds after training (the
/// ADC inspection of a method with ADCs), so that nothing needs writing.
fn follow_up_done(dir: &Path, cell: &Cell) -> bool {
    if !cell.config.uses_adc() {
        return true;
    }
    let report: Option<train::AdcQualityReport> = train::run::read_json(&dir.join("adc-quality.json")).ok().flatten();
    report.is_some_and(|r| r.config_hash == cell.key())
}

/// Before a failed cell is trained again: its failure record goes, and a summary that is not the
/// run's result is kept aside.
fn set_failure_aside(dir: &Path) -> Result<(), StudyError> {
    let run = RunDir::new(dir);
    if run.failure_path().exists() {
        let path = run.failure_path();
        std::fs::remove_file(&path).map_err(|e| StudyError::io(&path, "", e))?;
    }
    if run.summary_path().exists() {
        let (from, to) = (run.summary_path(), dir.join("summary.json.rejected"));
        std::fs::rename(&from, &to).map_err(|e| StudyError::io(&from, "cannot move aside: ", e))?;
    }
    Ok(())
}
