//! How well each search strategy does on a recorded landscape, over many seeds.
//!
//! A study replays every arm (a [`Variant`], or an ablation of Full) with seeds `0..N`, all in
//! memory: [`search::run`] against the landscape's [`ReplayEvaluator`] with a [`NoJournal`].
//! The replay is deterministic, so a run costs microseconds per evaluation and the only
//! randomness left is the search's own.
//!
//! Each arm is run twice per seed:
//!
//! - **trajectory runs**: patience 0 (never converge) and the study's budget, so every run
//!   walks as far as the budget lets it and the runs are comparable at any evaluation count.
//!   From these: the evaluations to first reach the landscape's optimum (the best p50 among
//!   its `ok` lines for the shape, over configs the task's space holds) and to first come
//!   within 2% of it, and the best p50 found after 16, 32 and 64 evaluations.
//! - **default runs**: the variant's default settings (patience 10) and the same budget: how
//!   many evaluations the search spends before it stops, and how far from the optimum it
//!   stops.
//!
//! A run that never reaches a target within its budget counts as taking infinitely many
//! evaluations: medians and p90s are taken over *all* runs with "never" sorted last, so a
//! median is infinite ("not reached") when half the runs or more never got there, and a p90
//! when more than a tenth did not. The fraction of runs that reached the target is reported
//! alongside. Quantiles interpolate linearly between ranks (numpy's default).

mod markdown;
pub mod peers;
pub mod score;
pub mod stats;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::eval::replay::ReplayEvaluator;
use crate::eval::{Evaluator, Outcome};
use crate::search::strategy::GRID_LIMIT;
use crate::search::{self, Clock, Limits, NoJournal, SearchError, Settings, StopReason, Variant};
use crate::task::{Shape, Task};

pub use markdown::{markdown, overview, score_overview};
pub use peers::{PeerArm, PeerRun};
pub use score::{RandomBaseline, ScoreStats};

/// What an arm takes away from Full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ablation {
    /// No profiling; proposals not ordered by bottleneck class (`Settings::insights`).
    NoInsights,
    /// One elite instead of K (`Settings::elites = 1`).
    NoElites,
    /// One layer: every knob varied around the elites (`Settings::two_layer`).
    NoTwoLayer,
}

/// One line of a study: a variant with its default settings, or Full without one of its parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Arm {
    pub variant: Variant,
    pub ablation: Option<Ablation>,
}

impl Arm {
    /// Full, its three ablations, then the other variants and the baselines.
    pub const STANDARD: [Arm; 9] = [
        Arm::plain(Variant::Surrogate),
        Arm::plain(Variant::Full),
        Arm::ablated(Ablation::NoInsights),
        Arm::ablated(Ablation::NoElites),
        Arm::ablated(Ablation::NoTwoLayer),
        Arm::plain(Variant::Insight),
        Arm::plain(Variant::Free),
        Arm::plain(Variant::Random),
        Arm::plain(Variant::Grid),
    ];

    pub const fn plain(variant: Variant) -> Arm {
        Arm {
            variant,
            ablation: None,
        }
    }

    pub const fn ablated(ablation: Ablation) -> Arm {
        Arm {
            variant: Variant::Full,
            ablation: Some(ablation),
        }
    }

    /// `full`, `random`, `full-no-insights`, ...
    pub fn name(&self) -> String {
        match self.ablation {
            None => self.variant.as_str().to_string(),
            Some(Ablation::NoInsights) => "full-no-insights".into(),
            Some(Ablation::NoElites) => "full-no-elites".into(),
            Some(Ablation::NoTwoLayer) => "full-no-two-layer".into(),
        }
    }

    pub fn parse(s: &str) -> Option<Arm> {
        Arm::STANDARD.into_iter().find(|a| a.name() == s)
    }

    /// The variant's default settings with this arm's ablation, this seed and these limits.
    pub fn settings(&self, seed: u64, limits: Limits) -> Settings {
        let mut s = Settings::new(self.variant, seed);
        s.limits = limits;
        match self.ablation {
            None => {}
            Some(Ablation::NoInsights) => s.insights = false,
            Some(Ablation::NoElites) => s.elites = 1,
            Some(Ablation::NoTwoLayer) => s.two_layer = false,
        }
        s
    }
}

impl Serialize for Arm {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

/// What to run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StudySpec {
    /// Runs per arm: seeds `0..seeds`.
    pub seeds: u64,
    /// Evaluations at most, in both kinds of runs.
    pub budget: usize,
    /// Patience of the default runs (the trajectory runs have none).
    pub patience: usize,
    /// Evaluation counts at which the best p50 found so far is reported.
    pub checkpoints: Vec<usize>,
    /// "Near the optimum": within this fraction of it (0.02: within 2%).
    pub near: f64,
    pub arms: Vec<Arm>,
}

impl Default for StudySpec {
    /// 50 seeds, budget 128, patience 10, checkpoints 16/32/64, within 2%, every standard arm.
    fn default() -> StudySpec {
        StudySpec {
            seeds: 50,
            budget: 128,
            patience: 10,
            checkpoints: vec![16, 32, 64],
            near: 0.02,
            arms: Arm::STANDARD.to_vec(),
        }
    }
}

/// The landscape a study replays.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LandscapeInfo {
    pub path: PathBuf,
    pub sha256: String,
    /// Records for the study's shape (configs that fit the task's knobs).
    pub records: usize,
    /// Of these, `ok` ones.
    pub ok: usize,
}

/// The target: the best p50 of the landscape, over `ok` records of the shape whose config the
/// task's space holds (a search can propose nothing else).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Optimum {
    pub p50_us: f64,
    /// Keys of the records at the optimum (usually one), sorted.
    pub keys: Vec<String>,
}

impl Optimum {
    pub fn of_landscape(
        replay: &ReplayEvaluator,
        task: &Task,
        shape: &Shape,
    ) -> Result<Optimum, StudyError> {
        let mut best: Option<Optimum> = None;
        for (key, rec) in replay.records_for(&shape.name) {
            let Some(p50) = rec.p50_us.filter(|p| p.is_finite()) else {
                continue;
            };
            if rec.outcome != Outcome::Ok || rec.source.as_deref().is_some_and(|s| s != "base") {
                continue;
            }
            let valid = task
                .space
                .from_json(&rec.config)
                .is_ok_and(|c| task.space.is_valid(&c));
            if !valid {
                continue;
            }
            match &mut best {
                Some(b) if p50 == b.p50_us => b.keys.push(key.to_string()),
                Some(b) if p50 > b.p50_us => {}
                _ => {
                    best = Some(Optimum {
                        p50_us: p50,
                        keys: vec![key.to_string()],
                    })
                }
            }
        }
        let mut best = best.ok_or_else(|| StudyError::NoOptimum {
            path: replay.path().to_path_buf(),
            shape: shape.name.clone(),
        })?;
        best.keys.sort();
        Ok(best)
    }
}

/// One run of one arm, reduced to what the study reports.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunSummary {
    pub seed: u64,
    pub evaluations: usize,
    pub stopped_by: StopReason,
    /// Evaluations to first hold the optimum; `None`: never within the run.
    pub to_optimum: Option<usize>,
    /// Evaluations to first come within `near` of the optimum.
    pub to_near: Option<usize>,
    /// The best p50 after each checkpoint's evaluation count (`None`: nothing correct yet).
    pub best_at: Vec<Option<f64>>,
    /// The best p50 when the run stopped.
    pub final_best: Option<f64>,
}

/// Medians over an arm's trajectory runs. Infinite values mean "never" / "nothing found"
/// (they serialize as JSON `null`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TrajectoryStats {
    /// Fraction of runs that reached the optimum.
    pub reached_optimum: f64,
    pub to_optimum_median: f64,
    pub to_optimum_p90: f64,
    /// Fraction of runs that came within `near` of the optimum.
    pub reached_near: f64,
    pub to_near_median: f64,
    pub to_near_p90: f64,
    /// Per checkpoint, in the spec's order.
    pub at: Vec<Checkpoint>,
    pub evaluations_median: f64,
    pub stopped_by: BTreeMap<String, usize>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Checkpoint {
    pub evaluations: usize,
    /// Median over runs of the best p50 after this many evaluations (a run with nothing
    /// correct yet counts as infinite).
    pub median_best_p50_us: f64,
    /// That median over the optimum (≥ 1).
    pub ratio: f64,
}

/// Medians over an arm's default runs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DefaultStats {
    pub patience: usize,
    pub evaluations_median: f64,
    pub evaluations_p90: f64,
    /// Fraction of runs whose final best is the optimum.
    pub reached_optimum: f64,
    pub median_final_p50_us: f64,
    /// Median over runs of (final best / optimum − 1), in percent.
    pub median_gap_pct: f64,
    pub stopped_by: BTreeMap<String, usize>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ArmResult {
    pub arm: Arm,
    /// The settings of seed 0's trajectory run (the others differ only by seed).
    pub settings: Settings,
    pub trajectory: TrajectoryStats,
    pub default: DefaultStats,
    /// Scores against random search at each checkpoint, over the trajectory runs (empty when
    /// the study has no random baseline).
    pub scores: Vec<ScoreStats>,
    pub trajectory_runs: Vec<RunSummary>,
    pub default_runs: Vec<RunSummary>,
}

/// A study's result, with what is needed to reproduce it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Study {
    pub task: String,
    pub shape: String,
    /// `evoengineer study ...` as typed, when known.
    pub command_line: Option<String>,
    /// When it ran (UTC, RFC 3339).
    pub date: String,
    pub landscape: LandscapeInfo,
    /// Valid configs in the task's space, when it is small enough to list.
    pub space_size: Option<usize>,
    pub optimum: Optimum,
    pub spec: StudySpec,
    /// Random search's exact median best at each checkpoint, when every valid config could be
    /// listed: the zero of the scores.
    pub random: Option<RandomSummary>,
    pub arms: Vec<ArmResult>,
    /// Other tools' runs on the same landscape (`study --peers`), scored the same way.
    pub peers: Vec<PeerArm>,
    /// The landscape's source, when its sidecar names one (an imported cache's sha256): what
    /// peer runs are matched by.
    pub source_sha256: Option<String>,
    #[serde(skip)]
    pub baseline: Option<RandomBaseline>,
}

/// Random search as the scores' zero.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RandomSummary {
    /// Valid configs in the space (those without a time included).
    pub configs: usize,
    /// Median best after each checkpoint's evaluations (μs), in the spec's order.
    pub median_best_us: Vec<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum StudyError {
    #[error("{} has no `ok` record for shape `{shape}` whose config is in the task's space: there is no optimum to reach", path.display())]
    NoOptimum { path: PathBuf, shape: String },
    #[error("a study needs at least one seed and a budget of at least one evaluation")]
    Empty,
    #[error("{arm}, seed {seed}: {source}")]
    Search {
        arm: String,
        seed: u64,
        source: SearchError,
    },
}

/// Time stands still in a study: the budget and patience decide, never a clock.
struct Frozen;
impl Clock for Frozen {
    fn elapsed(&self) -> Duration {
        Duration::ZERO
    }
}

/// Runs one search and reduces it.
pub fn run_one(
    task: &Task,
    shape: &Shape,
    settings: &Settings,
    evaluator: &mut dyn Evaluator,
    optimum: f64,
    spec: &StudySpec,
) -> Result<RunSummary, SearchError> {
    let r = search::run(
        task,
        shape,
        settings,
        evaluator,
        &mut NoJournal,
        vec![],
        &Frozen,
    )?;
    let best = stats::best_so_far(r.trials.iter().map(|t| t.evaluation.p50_us()));
    Ok(RunSummary {
        seed: settings.seed,
        evaluations: r.trials.len(),
        stopped_by: r.stopped_by,
        to_optimum: stats::evaluations_to_reach(&best, optimum),
        to_near: stats::evaluations_to_reach(&best, optimum * (1.0 + spec.near)),
        best_at: spec
            .checkpoints
            .iter()
            .map(|&n| stats::best_after(&best, n))
            .collect(),
        final_best: best.last().copied().flatten(),
    })
}

/// Runs one arm over every seed, both kinds of runs.
pub fn run_arm(
    task: &Task,
    shape: &Shape,
    evaluator: &mut dyn Evaluator,
    optimum: f64,
    arm: Arm,
    spec: &StudySpec,
    baseline: Option<&RandomBaseline>,
) -> Result<ArmResult, StudyError> {
    let trajectory_limits = Limits {
        budget: spec.budget,
        patience: 0,
        time_limit: None,
    };
    let default_limits = Limits {
        budget: spec.budget,
        patience: spec.patience,
        time_limit: None,
    };
    let mut trajectory_runs = Vec::new();
    let mut default_runs = Vec::new();
    for seed in 0..spec.seeds {
        for (limits, out) in [
            (trajectory_limits, &mut trajectory_runs),
            (default_limits, &mut default_runs),
        ] {
            let settings = arm.settings(seed, limits);
            let run = run_one(task, shape, &settings, evaluator, optimum, spec).map_err(|e| {
                StudyError::Search {
                    arm: arm.name(),
                    seed,
                    source: e,
                }
            })?;
            out.push(run);
        }
    }
    let scores = match baseline {
        Some(b) => spec
            .checkpoints
            .iter()
            .enumerate()
            .filter_map(|(i, &n)| {
                ScoreStats::of(
                    b,
                    n,
                    trajectory_runs
                        .iter()
                        .map(|r| r.best_at.get(i).copied().flatten()),
                )
            })
            .collect(),
        None => Vec::new(),
    };
    Ok(ArmResult {
        arm,
        settings: arm.settings(0, trajectory_limits),
        scores,
        trajectory: trajectory_stats(&trajectory_runs, optimum, spec),
        default: default_stats(&default_runs, optimum, spec),
        trajectory_runs,
        default_runs,
    })
}

fn never(v: Option<usize>) -> f64 {
    v.map_or(f64::INFINITY, |n| n as f64)
}

fn stopped_by(runs: &[RunSummary]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in runs {
        *m.entry(r.stopped_by.as_str().to_string()).or_insert(0) += 1;
    }
    m
}

fn median_inf(v: &[f64]) -> f64 {
    stats::median(v).unwrap_or(f64::INFINITY)
}

fn p90_inf(v: &[f64]) -> f64 {
    stats::p90(v).unwrap_or(f64::INFINITY)
}

/// The statistics of trajectory runs.
pub fn trajectory_stats(runs: &[RunSummary], optimum: f64, spec: &StudySpec) -> TrajectoryStats {
    let to_opt: Vec<f64> = runs.iter().map(|r| never(r.to_optimum)).collect();
    let to_near: Vec<f64> = runs.iter().map(|r| never(r.to_near)).collect();
    let evaluations: Vec<f64> = runs.iter().map(|r| r.evaluations as f64).collect();
    let at = spec
        .checkpoints
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let best: Vec<f64> = runs
                .iter()
                .map(|r| r.best_at.get(i).copied().flatten().unwrap_or(f64::INFINITY))
                .collect();
            let m = median_inf(&best);
            Checkpoint {
                evaluations: n,
                median_best_p50_us: m,
                ratio: m / optimum,
            }
        })
        .collect();
    TrajectoryStats {
        reached_optimum: stats::fraction_finite(&to_opt),
        to_optimum_median: median_inf(&to_opt),
        to_optimum_p90: p90_inf(&to_opt),
        reached_near: stats::fraction_finite(&to_near),
        to_near_median: median_inf(&to_near),
        to_near_p90: p90_inf(&to_near),
        at,
        evaluations_median: median_inf(&evaluations),
        stopped_by: stopped_by(runs),
    }
}

/// The statistics of default runs.
pub fn default_stats(runs: &[RunSummary], optimum: f64, spec: &StudySpec) -> DefaultStats {
    let evaluations: Vec<f64> = runs.iter().map(|r| r.evaluations as f64).collect();
    let finals: Vec<f64> = runs
        .iter()
        .map(|r| r.final_best.unwrap_or(f64::INFINITY))
        .collect();
    let gaps: Vec<f64> = finals.iter().map(|f| (f / optimum - 1.0) * 100.0).collect();
    DefaultStats {
        patience: spec.patience,
        evaluations_median: median_inf(&evaluations),
        evaluations_p90: p90_inf(&evaluations),
        reached_optimum: if runs.is_empty() {
            0.0
        } else {
            finals.iter().filter(|&&f| f <= optimum).count() as f64 / runs.len() as f64
        },
        median_final_p50_us: median_inf(&finals),
        median_gap_pct: median_inf(&gaps),
        stopped_by: stopped_by(runs),
    }
}

/// Runs every arm of `spec` on the landscape `replay` answers from.
pub fn run_study(
    task: &Task,
    shape: &Shape,
    replay: &mut ReplayEvaluator,
    spec: &StudySpec,
    command_line: Option<String>,
) -> Result<Study, StudyError> {
    if spec.seeds == 0 || spec.budget == 0 {
        return Err(StudyError::Empty);
    }
    let optimum = Optimum::of_landscape(replay, task, shape)?;
    let (records, ok) = replay
        .records_for(&shape.name)
        .fold((0, 0), |(n, ok), (_, r)| {
            (n + 1, ok + usize::from(r.outcome == Outcome::Ok))
        });
    let landscape = LandscapeInfo {
        path: replay.path().to_path_buf(),
        sha256: replay.file_sha256().to_string(),
        records,
        ok,
    };
    let baseline = random_baseline(replay, task, shape);
    let mut arms = Vec::new();
    for &arm in &spec.arms {
        arms.push(run_arm(
            task,
            shape,
            replay,
            optimum.p50_us,
            arm,
            spec,
            baseline.as_ref(),
        )?);
    }
    let random = baseline.as_ref().map(|b| RandomSummary {
        configs: b.configs(),
        median_best_us: spec.checkpoints.iter().map(|&n| b.median_best(n)).collect(),
    });
    Ok(Study {
        task: task.name.clone(),
        shape: shape.name.clone(),
        command_line,
        date: crate::store::time::now_utc(),
        landscape,
        space_size: task.space.enumerate(GRID_LIMIT).ok().map(|v| v.len()),
        optimum,
        spec: spec.clone(),
        random,
        arms,
        peers: Vec::new(),
        source_sha256: peers::source_sha256(replay.path()),
        baseline,
    })
}

/// Spaces with at most this many knob combinations get a random baseline.
const BASELINE_LIST_LIMIT: u128 = 1 << 24;

/// Random search on the landscape: every valid config of the task's space with its recorded
/// p50 (none if it failed a gate or is absent); `None` when the space is too large to list or
/// nothing is correct.
pub fn random_baseline(
    replay: &ReplayEvaluator,
    task: &Task,
    shape: &Shape,
) -> Option<RandomBaseline> {
    let listing = task.space.listed(BASELINE_LIST_LIMIT).ok()?;
    let mut times: std::collections::HashMap<crate::space::Config, f64> =
        std::collections::HashMap::new();
    for (_, rec) in replay.records_for(&shape.name) {
        if rec.outcome != Outcome::Ok || rec.source.as_deref().is_some_and(|s| s != "base") {
            continue;
        }
        let (Some(p50), Ok(c)) = (rec.p50_us, task.space.from_json(&rec.config)) else {
            continue;
        };
        if p50.is_finite() {
            times.insert(c, p50);
        }
    }
    RandomBaseline::new(
        listing
            .iter()
            .map(|c| times.get(c).copied().unwrap_or(f64::INFINITY))
            .collect(),
    )
}

#[cfg(test)]
mod tests;
