//! The gates a candidate goes through, and the `Evaluator` trait the search talks to.
//!
//! Gates, in order, failing fast: compile (registers, shared memory, spills), correctness
//! (against a reference on fresh random inputs), performance (median and p90 of many timed
//! launches). An evaluator answers every candidate with an [`Evaluation`]; failures of the
//! candidate are outcomes, not errors. [`EvalError`] is kept for failures of the evaluator
//! itself (a landscape that cannot be read, a GPU that vanished), which end the run.

pub mod baseline;
pub mod compare;
pub mod compile;
pub mod cuda;
pub mod inputs;
pub mod launch;
pub mod phases;
pub mod profile;
pub mod protocol;
pub mod replay;
pub mod stats;
pub mod subprocess;
pub mod worker;

use serde::{Deserialize, Serialize};

use crate::candidate::Candidate;
use crate::insight::Profile;
use crate::task::Shape;
pub use phases::Phases;

/// How far a candidate got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Passed every gate and was timed.
    Ok,
    CompileError,
    Incorrect,
    RuntimeError,
    Timeout,
    /// The evaluator has no measurement for it (a config absent from a replayed landscape).
    Missing,
    /// Correct, but raced out: after a few timed launches even its fastest was clearly slower
    /// than the current K-th elite (see `eval::protocol`). Its timing holds those launches
    /// only; it can never be an elite.
    Slower,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::CompileError => "compile_error",
            Outcome::Incorrect => "incorrect",
            Outcome::RuntimeError => "runtime_error",
            Outcome::Timeout => "timeout",
            Outcome::Missing => "missing",
            Outcome::Slower => "slower",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the compiler reported.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CompileReport {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registers: Option<u32>,
    /// Static plus dynamic shared memory per block, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smem_bytes: Option<u64>,
    /// Spill stores plus spill loads, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spill_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack_frame_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cubin_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compile_s: Option<f64>,
}

/// What the correctness gate measured, worst over its trials.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CorrectnessReport {
    pub trials: u32,
    pub max_abs_err: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_abs_err: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rel_l2_err: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rmse: Option<f64>,
    #[serde(default)]
    pub nan_count: u64,
    #[serde(default)]
    pub unwritten_count: u64,
    /// Correctness at the task's other verification shapes, checked before the candidate
    /// could become an elite ([`Evaluator::verify`]), in the order checked; the last one is the
    /// failure if any failed. Empty: not checked elsewhere (it was not going to be an elite,
    /// the evaluator cannot check other shapes, or the task has one verification shape).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verified: Vec<ShapeCheck>,
}

/// Correctness (no timing) at one shape other than the run's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShapeCheck {
    pub shape: String,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl ShapeCheck {
    pub fn passed(&self) -> bool {
        self.outcome == Outcome::Ok
    }
}

/// What the performance gate measured, in microseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    pub p50_us: f64,
    pub p90_us: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_us: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_us: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std_us: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub samples_us: Vec<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sm_clock_mhz_before: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sm_clock_mhz_after: Option<u32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub clock_dropped: bool,
}

/// One candidate's result through the gates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compile: Option<CompileReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correctness: Option<CorrectnessReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timing: Option<Timing>,
    /// A profile taken with the evaluation (a replayed landscape carries one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<Profile>,
    /// Where the evaluation's time went (empty where nothing was measured, as in evaluations
    /// recorded before phases existed).
    #[serde(default, skip_serializing_if = "Phases::is_empty")]
    pub phases: Phases,
}

impl Evaluation {
    pub fn failed(outcome: Outcome, message: impl Into<String>) -> Evaluation {
        Evaluation {
            outcome,
            message: Some(message.into()),
            compile: None,
            correctness: None,
            timing: None,
            profile: None,
            phases: Phases::default(),
        }
    }

    /// The score: p50 in μs, for a candidate that passed every gate.
    pub fn p50_us(&self) -> Option<f64> {
        match (self.outcome, &self.timing) {
            (Outcome::Ok, Some(t)) if t.p50_us.is_finite() => Some(t.p50_us),
            _ => None,
        }
    }

    pub fn p90_us(&self) -> Option<f64> {
        self.timing.as_ref().map(|t| t.p90_us)
    }

    pub fn registers(&self) -> Option<u32> {
        self.compile.as_ref()?.registers
    }

    pub fn smem_bytes(&self) -> Option<u64> {
        self.compile.as_ref()?.smem_bytes
    }

    /// The checks at other shapes ([`CorrectnessReport::verified`]); empty if none.
    pub fn verified(&self) -> &[ShapeCheck] {
        self.correctness
            .as_ref()
            .map(|c| c.verified.as_slice())
            .unwrap_or_default()
    }
}

/// The machine and compiler behind a measurement; part of the key under which measurements
/// are reused across runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Environment {
    pub device: String,
    pub toolchain: String,
}

/// A failure of the evaluator itself; it ends the run (the candidate in flight is lost, the
/// run can be resumed).
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{0}")]
    Landscape(String),
    #[error("{0}")]
    Device(String),
    #[error("{0}")]
    Other(String),
}

/// Takes candidates through the gates. The search holds one and nothing else that touches
/// the GPU, so a replay of recorded measurements and the real device are interchangeable.
pub trait Evaluator {
    /// Device and toolchain, recorded with every measurement.
    fn environment(&self) -> Environment;

    /// The text of a model-written source, so candidates naming it (`SourceRef::Variant`) can
    /// be compiled. Evaluators that do not compile (a replay) ignore it.
    fn register_source(&mut self, _hash: &str, _code: &str) {}

    /// A hint that these candidates come next, so compiles can start while the GPU measures.
    fn prepare(&mut self, _upcoming: &[Candidate], _shape: &Shape) {}

    /// Racing: the p50 (μs) of the current K-th elite, once the elite set is full. An
    /// evaluator that races may stop timing a candidate that is clearly slower and answer
    /// [`Outcome::Slower`]; the default ignores it.
    fn set_race_bar(&mut self, _bar_us: Option<f64>) {}

    /// Takes one candidate through every gate.
    fn evaluate(&mut self, candidate: &Candidate, shape: &Shape) -> Result<Evaluation, EvalError>;

    /// Takes several candidates through the gates, possibly at once (one per GPU, or by
    /// external workers); answers in the order given, each with the GPU that measured it
    /// (`None`: one device). The default measures them one by one.
    fn evaluate_batch(
        &mut self,
        candidates: &[Candidate],
        shape: &Shape,
    ) -> Result<Vec<(Evaluation, Option<u32>)>, EvalError> {
        candidates
            .iter()
            .map(|c| Ok((self.evaluate(c, shape)?, None)))
            .collect()
    }

    /// Checks the correctness (no timing) of a candidate, correct at the run's shape, at
    /// each of `shapes` in order, stopping at the first that it fails; one check per shape
    /// tried. The search asks this before a candidate may become an elite, so that a kernel
    /// fitted to the run's shape (a hard-coded size) cannot win. `Ok(None)`: this evaluator
    /// cannot check other shapes (a replayed landscape knows one), the default.
    fn verify(
        &mut self,
        _candidate: &Candidate,
        _shapes: &[Shape],
    ) -> Result<Option<Vec<ShapeCheck>>, EvalError> {
        Ok(None)
    }

    /// Profiles a candidate that passed the gates. `Ok(None)`: no profiler here (said once by
    /// the evaluator, not an error).
    fn profile(
        &mut self,
        candidate: &Candidate,
        shape: &Shape,
    ) -> Result<Option<Profile>, EvalError>;
}
