//! Progress of a search: a bar on a terminal, plain lines otherwise. Wraps the store's journal.

use std::io::IsTerminal;

use evoengineer::eval::Evaluation;
use evoengineer::insight::Profile;
use evoengineer::search::{Elite, Journal, JournalError, Trial};
use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress<J> {
    inner: J,
    bar: Option<ProgressBar>,
    budget: usize,
    started: std::time::Instant,
    done: usize,
    replayed: usize,
    best: Option<f64>,
}

impl<J: Journal> Progress<J> {
    /// `replayed`: trials a resumed run takes from its record (they are not reported again).
    pub fn new(inner: J, budget: usize, replayed: usize) -> Progress<J> {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(budget as u64);
            bar.set_style(
                ProgressStyle::with_template("{bar:30} {pos}/{len} evaluations  {per_sec}  {msg}")
                    .expect("valid template"),
            );
            bar.set_position(replayed as u64);
            bar
        });
        Progress {
            inner,
            bar,
            budget,
            started: std::time::Instant::now(),
            done: replayed,
            replayed,
            best: None,
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl<J: Journal> Journal for Progress<J> {
    fn reuse(&mut self, key: &str) -> Result<Option<Evaluation>, JournalError> {
        self.inner.reuse(key)
    }

    fn reuse_profile(&mut self, key: &str) -> Result<Option<Option<Profile>>, JournalError> {
        self.inner.reuse_profile(key)
    }

    fn trial(&mut self, trial: &Trial, elites: &[Elite]) -> Result<(), JournalError> {
        self.trial_on(trial, elites, None)
    }

    fn trial_on(
        &mut self,
        trial: &Trial,
        elites: &[Elite],
        gpu: Option<u32>,
    ) -> Result<(), JournalError> {
        self.inner.trial_on(trial, elites, gpu)?;
        self.done = trial.seq + 1;
        self.best = elites.first().map(|e| e.p50_us);
        let best = self
            .best
            .map(|b| format!("best {b:.2} us"))
            .unwrap_or_else(|| "no correct candidate yet".into());
        match &self.bar {
            Some(bar) => {
                bar.set_position(self.done as u64);
                bar.set_message(best);
            }
            None => {
                let rate = (self.done - self.replayed) as f64
                    / self.started.elapsed().as_secs_f64().max(1e-9);
                let result = match trial.evaluation.p50_us() {
                    Some(p) => format!("{p:.2} us"),
                    None => trial.evaluation.outcome.to_string(),
                };
                eprintln!(
                    "[{:>4}/{}] {:<14} {best}  ({rate:.1}/s)  {}{}{}",
                    self.done,
                    self.budget,
                    result,
                    trial.key,
                    if trial.reused { "  (reused)" } else { "" },
                    gpu.map(|g| format!("  (GPU {g})")).unwrap_or_default()
                );
            }
        }
        Ok(())
    }

    fn profiled(&mut self, trial: &Trial) -> Result<(), JournalError> {
        self.inner.profiled(trial)
    }
}
