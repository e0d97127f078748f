//! The search: which candidate to evaluate next, which to keep, and when to stop.
//!
//! [`run`] drives a [`strategy::Strategy`] against an [`Evaluator`]. It never evaluates the
//! same config twice, keeps the elite set, profiles new elites when the variant uses insights,
//! and stops on the first termination rule that fires. Every random choice comes from one
//! ChaCha8 generator seeded with the run's seed, so the same seed and the same measurements
//! give the same sequence of candidates. A resumed run replays its recorded trials through the
//! same code path and goes on from where the record ends.

pub mod elites;
pub mod gp;
pub mod step;
pub mod strategy;
pub mod termination;
pub mod verify;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::candidate::Candidate;
use crate::eval::{EvalError, Evaluation, Evaluator};
use crate::insight::{Bottleneck, Profile};
use crate::space::{Config, Layer, SpaceError};
use crate::task::{Shape, Task};
pub use elites::{Elite, EliteSet};
pub use termination::{CallsMade, Limits, StopReason};

/// The search strategies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// Bayesian optimisation with a Gaussian-process surrogate (the default).
    Surrogate,
    /// Two-layer traverse, elite preservation and insights.
    Full,
    /// One best, profiling-guided.
    Insight,
    /// Exploration, keeps only the best, no profiling.
    Free,
    /// Every valid config (baseline).
    Grid,
    /// Uniform random without replacement (baseline).
    Random,
}

impl Variant {
    pub const ALL: [Variant; 6] = [
        Variant::Surrogate,
        Variant::Full,
        Variant::Insight,
        Variant::Free,
        Variant::Grid,
        Variant::Random,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Surrogate => "surrogate",
            Variant::Full => "full",
            Variant::Insight => "insight",
            Variant::Free => "free",
            Variant::Grid => "grid",
            Variant::Random => "random",
        }
    }

    pub fn parse(s: &str) -> Option<Variant> {
        Variant::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything that decides what a search proposes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub variant: Variant,
    pub seed: u64,
    pub limits: Limits,
    /// Elite set size K (Full; the other variants keep one).
    pub elites: usize,
    /// Micro variants proposed per elite and generation (Full).
    pub micro_per_elite: usize,
    /// Prefer elites of different macro variants.
    pub diverse: bool,
    /// Profile new elites and order proposals by their bottleneck class.
    pub insights: bool,
    /// Macro variants first, then micro variants of the elites (Full).
    pub two_layer: bool,
    /// Code evolution with a language model instead of knob search ([`crate::llm::evolve`]);
    /// `variant` then chooses the prompts (Free, Insight, Full).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm: Option<crate::llm::evolve::LlmSettings>,
    /// Search the knobs of this model-written source (sha256) instead of the task's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Candidates proposed and measured together (one per GPU, or for external workers):
    /// each batch is proposed from the state at its start and concluded in proposal order,
    /// so the run does not depend on which measurement finishes first. 1: one at a time.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub batch: usize,
    /// Racing: the evaluator may stop timing a candidate that is clearly slower than the
    /// K-th elite (it is recorded as `slower`, never an elite). Runs recorded before racing
    /// existed read as off.
    #[serde(default)]
    pub race: bool,
    /// The GPU timing protocol, as recorded (`TimingParams::describe`); `None` off the GPU
    /// or in runs recorded before it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timing: Option<String>,
}

fn one() -> usize {
    1
}

fn is_one(n: &usize) -> bool {
    *n == 1
}

impl Settings {
    /// The defaults of a variant: budget 100, patience 10, K 3, 4 micro variants per elite.
    pub fn new(variant: Variant, seed: u64) -> Settings {
        Settings {
            variant,
            seed,
            limits: Limits {
                budget: 100,
                patience: 10,
                time_limit: None,
            },
            elites: 3,
            micro_per_elite: 4,
            diverse: false,
            insights: matches!(variant, Variant::Full | Variant::Insight),
            two_layer: variant == Variant::Full,
            llm: None,
            source: None,
            batch: 1,
            race: true,
            timing: None,
        }
    }

    /// The elite set size this variant really keeps.
    pub fn effective_elites(&self) -> usize {
        match self.variant {
            Variant::Full => self.elites.max(1),
            _ => 1,
        }
    }
}

/// One evaluated candidate.
#[derive(Clone, Debug, PartialEq)]
pub struct Trial {
    /// Position in the run, from 0.
    pub seq: usize,
    pub candidate: Candidate,
    pub key: String,
    pub evaluation: Evaluation,
    /// Taken from an earlier run's measurement instead of measured again.
    pub reused: bool,
    /// Seconds this evaluation took.
    pub wall_s: f64,
    /// Seconds since the run started, at the end of this trial.
    pub elapsed_s: f64,
    /// Whether a profile was asked for (after it became an elite, with insights on).
    pub profiled: bool,
    pub profile: Option<Profile>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct JournalError(pub String);

/// Where the search reports what it does, and asks for measurements it may reuse. The store
/// implements it; the default methods do nothing.
pub trait Journal {
    /// A measurement of this candidate key made earlier with the same kernel source, shape,
    /// device and toolchain.
    fn reuse(&mut self, _key: &str) -> Result<Option<Evaluation>, JournalError> {
        Ok(None)
    }

    /// Likewise for a profile. `Some(None)`: profiled before, no profiler was there.
    fn reuse_profile(&mut self, _key: &str) -> Result<Option<Option<Profile>>, JournalError> {
        Ok(None)
    }

    /// A trial is done; `elites` is the elite set after it, best first.
    fn trial(&mut self, _trial: &Trial, _elites: &[Elite]) -> Result<(), JournalError> {
        Ok(())
    }

    /// [`Journal::trial`], with the GPU that measured it (`None`: one device, or not
    /// measured now).
    fn trial_on(
        &mut self,
        trial: &Trial,
        elites: &[Elite],
        _gpu: Option<u32>,
    ) -> Result<(), JournalError> {
        self.trial(trial, elites)
    }

    /// The trial's profile was taken (or found unavailable).
    fn profiled(&mut self, _trial: &Trial) -> Result<(), JournalError> {
        Ok(())
    }
}

/// A journal that records nothing.
pub struct NoJournal;
impl Journal for NoJournal {}

/// The time source of the time limit.
pub trait Clock {
    fn elapsed(&self) -> Duration;
}

/// Wall-clock time since creation, plus an offset (the time a resumed run had already spent).
pub struct WallClock {
    start: Instant,
    offset: Duration,
}

impl WallClock {
    pub fn new(offset: Duration) -> WallClock {
        WallClock {
            start: Instant::now(),
            offset,
        }
    }
}

impl Clock for WallClock {
    fn elapsed(&self) -> Duration {
        self.offset + self.start.elapsed()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error(transparent)]
    Space(#[from] SpaceError),
    #[error(transparent)]
    Eval(#[from] EvalError),
    #[error("cannot record the run: {0}")]
    Journal(#[from] JournalError),
    #[error("cannot resume: {0}")]
    Resume(String),
    /// The run cannot start or go on for a reason of its setup (a task without a kernel, a
    /// prompt that cannot be built).
    #[error("{0}")]
    Setup(String),
}

/// How a search ended.
#[derive(Clone, Debug)]
pub struct SearchResult {
    pub trials: Vec<Trial>,
    /// Best first; empty when no candidate was correct.
    pub elites: Vec<Elite>,
    pub stopped_by: StopReason,
    pub elapsed_s: f64,
}

impl SearchResult {
    pub fn winner(&self) -> Option<&Elite> {
        self.elites.first()
    }
}

/// Runs a search to its end. `resume` holds the trials a killed run had recorded, in order:
/// they are replayed, not measured again, and must be what the search proposes.
pub fn run(
    task: &Task,
    shape: &Shape,
    settings: &Settings,
    evaluator: &mut dyn Evaluator,
    journal: &mut dyn Journal,
    resume: Vec<Trial>,
    clock: &dyn Clock,
) -> Result<SearchResult, SearchError> {
    let space = &task.space;
    let mut strategy = strategy::build(settings.variant, space, settings)?;
    let mut rng = ChaCha8Rng::seed_from_u64(settings.seed);
    let mut elites = EliteSet::new(settings.effective_elites(), settings.diverse);
    let mut seen: HashSet<Config> = HashSet::new();
    let mut profiles: BTreeMap<Config, Bottleneck> = BTreeMap::new();
    let mut trials: Vec<Trial> = Vec::new();
    let mut queue: VecDeque<Config> = VecDeque::new();
    let mut unchanged_for = 0usize;
    let macros = space.layer_indices(Layer::Macro);
    let limits = settings.limits;
    let mut resume = VecDeque::from(resume);
    let mut empty_asks = 0;
    let source = match &settings.source {
        Some(h) => crate::candidate::SourceRef::Variant(h.clone()),
        None => crate::candidate::SourceRef::Base,
    };
    let candidate_of = |config: Config| Candidate {
        source: source.clone(),
        config,
    };

    let width = settings.batch.max(1);
    let verify = task.verification_shapes(shape);

    let stopped_by = 'search: loop {
        let elapsed = match (trials.last(), resume.is_empty()) {
            // While replaying a record, time is what the record says it was.
            (Some(t), false) => Duration::from_secs_f64(t.elapsed_s),
            (None, false) => Duration::ZERO,
            _ => clock.elapsed(),
        };
        if let Some(reason) = limits.check(
            trials.len(),
            unchanged_for,
            strategy.may_converge(),
            elapsed,
        ) {
            break reason;
        }
        // The next batch, proposed from the state now: configs in it count as seen, so no
        // proposal repeats one in flight.
        let room = width.min(limits.budget.saturating_sub(trials.len())).max(1);
        let mut batch: Vec<Config> = Vec::with_capacity(room);
        while batch.len() < room {
            if let Some(config) = queue.pop_front() {
                seen.insert(config.clone());
                batch.push(config);
                continue;
            }
            let mut ctx = strategy::Ctx {
                space,
                seen: &seen,
                elites: &elites,
                profiles: &profiles,
                rng: &mut rng,
                remaining: limits.budget - trials.len() - batch.len(),
            };
            let mut proposed = strategy.ask(&mut ctx);
            let asked = proposed.len();
            let mut unique = HashSet::new();
            proposed.retain(|c| {
                if !space.is_valid(c) {
                    tracing::warn!(
                        "strategy proposed an invalid config {}; skipped",
                        space.display(c)
                    );
                    return false;
                }
                !seen.contains(c) && unique.insert(c.clone())
            });
            if proposed.is_empty() {
                if !batch.is_empty() {
                    // Nothing more until results come in: measure what there is.
                    break;
                }
                empty_asks += 1;
                if asked == 0 || empty_asks >= 3 {
                    break 'search StopReason::Exhausted;
                }
                continue 'search;
            }
            empty_asks = 0;
            let upcoming: Vec<Candidate> = proposed.iter().cloned().map(&candidate_of).collect();
            if resume.len() < upcoming.len() {
                evaluator.prepare(&upcoming[resume.len()..], shape);
                // Compile ahead what the strategy expects to ask next (never measured unless
                // it does ask).
                let ahead: Vec<Candidate> = strategy
                    .lookahead()
                    .into_iter()
                    .filter(|c| !seen.contains(c) && !proposed.contains(c))
                    .map(&candidate_of)
                    .collect();
                if !ahead.is_empty() {
                    evaluator.prepare(&ahead, shape);
                }
            }
            queue.extend(proposed);
        }

        // Each config: from a resumed record, reused from an earlier run, or measured; the
        // measured ones all at once.
        let first_seq = trials.len();
        let started = Instant::now();
        let mut plan = Vec::with_capacity(batch.len());
        let mut to_measure: Vec<Candidate> = Vec::new();
        for (i, config) in batch.iter().enumerate() {
            let candidate = candidate_of(config.clone());
            let key = candidate.key(space);
            let how = if let Some(rec) = resume.pop_front() {
                if rec.key != key {
                    return Err(SearchError::Resume(format!(
                        "trial {} of the record is {} but the search now proposes {}: the task, the landscape or the settings changed since the run started",
                        first_seq + i, rec.key, key
                    )));
                }
                Planned::Recorded(Box::new(rec))
            } else if let Some(e) = journal.reuse(&key)? {
                Planned::Reused(Box::new(e))
            } else {
                to_measure.push(candidate.clone());
                Planned::Measured(to_measure.len() - 1)
            };
            plan.push((candidate, key, how));
        }
        let mut measured: Vec<Option<(Evaluation, Option<u32>)>> = if to_measure.is_empty() {
            Vec::new()
        } else {
            let bar = (settings.race && elites.members().len() >= elites.k())
                .then(|| elites.members().last().map(|e| e.p50_us))
                .flatten();
            evaluator.set_race_bar(bar);
            let answers = evaluator.evaluate_batch(&to_measure, shape)?;
            if answers.len() != to_measure.len() {
                return Err(SearchError::Eval(EvalError::Other(format!(
                    "the evaluator answered {} of {} candidates",
                    answers.len(),
                    to_measure.len()
                ))));
            }
            answers.into_iter().map(Some).collect()
        };

        // Concluded in proposal order, whichever finished first.
        for (i, (config, (candidate, key, how))) in batch.into_iter().zip(plan).enumerate() {
            let (evaluation, reused, recorded, gpu) = match how {
                Planned::Recorded(rec) => (rec.evaluation.clone(), rec.reused, Some(*rec), None),
                Planned::Reused(e) => (*e, true, None, None),
                Planned::Measured(j) => {
                    let (e, gpu) = measured[j].take().expect("each answer is taken once");
                    (e, false, None, gpu)
                }
            };
            let (trial, changed) = step::conclude(
                step::Measured {
                    candidate,
                    key,
                    evaluation,
                    reused,
                    recorded,
                    started,
                    gpu,
                },
                first_seq + i,
                &mut elites,
                &macros,
                settings.insights,
                &mut step::Sinks {
                    shape,
                    verify: &verify,
                    evaluator: &mut *evaluator,
                    journal: &mut *journal,
                    clock,
                },
            )?;
            unchanged_for = if changed { 0 } else { unchanged_for + 1 };
            if let Some(b) = trial.profile.as_ref().and_then(|p| p.bottleneck) {
                profiles.insert(config.clone(), b);
            }

            let mut ctx = strategy::Ctx {
                space,
                seen: &seen,
                elites: &elites,
                profiles: &profiles,
                rng: &mut rng,
                remaining: limits.budget - trials.len() - 1,
            };
            strategy.tell(&mut ctx, &config, &trial.evaluation);
            if !strategy.may_converge() {
                // Patience counts only where convergence may stop the search (not in Full's
                // first layer), so a first layer that ends quietly does not stop it at once.
                unchanged_for = 0;
            }
            trials.push(trial);
        }
    };

    step::finish(trials, &elites, stopped_by, resume.len(), clock)
}

/// Where a batch's config gets its evaluation.
enum Planned {
    Recorded(Box<Trial>),
    Reused(Box<Evaluation>),
    /// Index into the batch's measurements.
    Measured(usize),
}

#[cfg(test)]
mod tests;
