//! What training reports ([`train::TrainEvent`]) shown on the terminal: a progress bar of the
//! epoch's steps, a line per epoch and for the test before the first step, a spinner for an
//! ADC-bits search. The library crates print nothing; this is where their events are drawn.

use std::sync::{Arc, Mutex};

use indicatif::{ProgressBar, ProgressStyle};
use train::{Observer, TrainEvent};

/// An observer that draws the events on stderr, or ignores them when `quiet`.
pub fn observer(quiet: bool) -> Observer {
    if quiet {
        return train::events::silent();
    }
    let shown = Mutex::new(Shown::default());
    Arc::new(move |event: &TrainEvent<'_>| shown.lock().unwrap_or_else(|e| e.into_inner()).show(event))
}

/// The bars on the terminal now: one per epoch, one spinner per search.
#[derive(Default)]
struct Shown {
    bar: Option<ProgressBar>,
    spinner: Option<ProgressBar>,
}

impl Shown {
    fn show(&mut self, event: &TrainEvent<'_>) {
        match *event {
            TrainEvent::EpochStart { method, epoch, epochs, steps } => {
                let bar = self.bar.get_or_insert_with(|| {
                    ProgressBar::new(0).with_style(
                        ProgressStyle::with_template("{prefix} [{bar:25}] {pos}/{len} {msg} ETA {eta}")
                            .expect("template")
                            .progress_chars("=> "),
                    )
                });
                bar.reset();
                bar.set_length(steps as u64);
                bar.set_prefix(format!("{method} epoch {epoch}/{epochs}"));
            }
            TrainEvent::Step { loss, accuracy, images_per_sec } => {
                if let Some(bar) = &self.bar {
                    bar.inc(1);
                    bar.set_message(format!("loss {loss:.3} acc {:.1}% {images_per_sec:.0} img/s", 100.0 * accuracy));
                }
            }
            TrainEvent::BeforeTraining { method, record, ideal_adc } => self.println(format!(
                "{method} before training: test loss {:.4} acc {:.2}%{}",
                record.test_loss,
                100.0 * record.test_acc,
                if ideal_adc { " (ideal ADC)" } else { "" }
            )),
            TrainEvent::EpochEnd { method, epochs, record } => self.println(format!(
                "{method} epoch {}/{epochs}: train loss {:.4} acc {:.2}% | test loss {:.4} acc {:.2}% | {:.0} img/s",
                record.epoch,
                record.train_loss,
                100.0 * record.train_acc,
                record.test_loss,
                100.0 * record.test_acc,
                record.images_per_sec
            )),
            TrainEvent::Searching { what } => {
                let spinner = self.spinner.get_or_insert_with(|| {
                    let s = ProgressBar::new_spinner()
                        .with_style(ProgressStyle::with_template("{spinner} {msg} [{elapsed}]").expect("template"));
                    s.enable_steady_tick(std::time::Duration::from_millis(200));
                    s
                });
                spinner.set_message(what.to_string());
            }
            TrainEvent::Stopped => {
                for bar in [self.bar.take(), self.spinner.take()].into_iter().flatten() {
                    bar.finish_and_clear();
                }
            }
        }
    }

    /// A line above the bar (or on stderr when there is none).
    fn println(&self, line: String) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }
}

/// An observer of downloads ([`data::download::FetchEvent`]): a bar of bytes per file, and a line
/// for every retry and every installed copy downloaded again.
pub fn fetch_observer() -> data::download::FetchObserver {
    use data::download::FetchEvent;
    let bar: Mutex<Option<ProgressBar>> = Mutex::new(None);
    Arc::new(move |event: &FetchEvent<'_>| {
        let mut bar = bar.lock().unwrap_or_else(|e| e.into_inner());
        match *event {
            FetchEvent::Start { file, size } => {
                let b = ProgressBar::new(size).with_style(
                    ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}")
                        .expect("template")
                        .progress_chars("=> "),
                );
                b.set_message(file.to_string());
                *bar = Some(b);
            }
            FetchEvent::At(position) => bar.iter().for_each(|b| b.set_position(position)),
            FetchEvent::Received(bytes) => bar.iter().for_each(|b| b.inc(bytes)),
            FetchEvent::Retry { file, attempt, attempts, message, wait } => {
                let line = format!(
                    "{file}: attempt {attempt} of {attempts}: {message}; retrying in {:.1} s",
                    wait.as_secs_f64()
                );
                match bar.as_ref() {
                    Some(b) => b.suspend(|| eprintln!("{line}")),
                    None => eprintln!("{line}"),
                }
            }
            FetchEvent::Redownload { path, moved_to } => eprintln!(
                "{}: existing copy failed verification, moved to {}; downloading again",
                path.display(),
                moved_to.display()
            ),
            FetchEvent::End => {
                if let Some(b) = bar.take() {
                    b.finish_and_clear();
                }
            }
        }
    })
}
