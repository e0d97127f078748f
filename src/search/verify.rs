//! Correct on every shape. A candidate is timed at the run's shape only, but before it may
//! become an elite (and so the run's winner) it must also pass correctness at each of the
//! task's other verification shapes (`[task] verify_shapes`, by default every shape): a kernel
//! that hard-codes the run's sizes is correct there and wrong everywhere else.
//!
//! [`at_other_shapes`] runs in [`super::step::conclude`], for the knob search and for code
//! evolution alike, only for a candidate that would enter the elite set
//! ([`super::EliteSet::would_enter`]), so a run pays for it once per new elite. The checks are
//! kept in the evaluation ([`crate::eval::CorrectnessReport::verified`]), so a measurement
//! reused from the store carries them and is checked only at the shapes it lacks; a resumed
//! run replays its record and checks nothing again. A failure makes the trial `incorrect`,
//! with a message naming the shape, and keeps its timing for the record. An evaluator that
//! cannot check other shapes (a replayed landscape) lets the candidate in unchecked, and
//! [`ShapesPassed`] says so.

use std::time::Instant;

use serde::Serialize;

use crate::candidate::Candidate;
use crate::eval::{CorrectnessReport, EvalError, Evaluation, Evaluator, Outcome};
use crate::task::{Shape, Task};

use super::Trial;

/// Checks `evaluation` (correct at `run`) at each of `shapes` it has not passed yet, and
/// records the checks in it. Returns whether the candidate may be offered to the elites:
/// `false` when it failed at a shape; the evaluation is then `incorrect`, its message names
/// the shape and what happened there, and its timing stays for the record. When the evaluator
/// cannot check other shapes, nothing is recorded and the answer is `true`.
pub fn at_other_shapes(
    evaluator: &mut dyn Evaluator,
    candidate: &Candidate,
    evaluation: &mut Evaluation,
    run: &Shape,
    shapes: &[Shape],
) -> Result<bool, EvalError> {
    let done = |s: &Shape| {
        evaluation
            .verified()
            .iter()
            .any(|c| c.shape == s.name && c.passed())
    };
    // A fresh measurement (the common case) needs every shape: no copy of them.
    let left: Vec<Shape>;
    let todo = if shapes.iter().any(done) {
        left = shapes.iter().filter(|s| !done(s)).cloned().collect();
        &left[..]
    } else {
        shapes
    };
    if todo.is_empty() {
        return Ok(true);
    }
    let started = Instant::now();
    let Some(checks) = evaluator.verify(candidate, todo)? else {
        return Ok(true);
    };
    // The checks are part of the candidate's correctness gate (their compiles included).
    if !evaluation.phases.is_empty() {
        let spent = started.elapsed().as_secs_f64();
        evaluation.phases.correctness_s =
            Some(evaluation.phases.correctness_s.unwrap_or(0.0) + spent);
    }
    let failed = checks.iter().find(|c| !c.passed()).cloned();
    evaluation
        .correctness
        .get_or_insert_with(CorrectnessReport::default)
        .verified
        .extend(checks);
    let Some(f) = failed else {
        return Ok(true);
    };
    let why = format!(
        "correct at `{}` but {} at `{}`{}",
        run.name,
        f.outcome,
        f.shape,
        f.message.map(|m| format!(": {m}")).unwrap_or_default()
    );
    evaluation.message = Some(match evaluation.message.take() {
        Some(m) => format!("{why}; {m}"),
        None => why,
    });
    evaluation.outcome = Outcome::Incorrect;
    Ok(false)
}

/// The shapes an elite was found correct at, for `show` and the report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ShapesPassed {
    /// The run's shape (where it was also timed), then the other shapes it passed.
    pub passed: Vec<String>,
    /// The task's verification shapes it was never checked at: the evaluator could not check
    /// other shapes (a replayed landscape), or the elite was recorded before the checks existed.
    pub not_verified: Vec<String>,
}

impl ShapesPassed {
    /// Of the elite `key` of a run at shape `run`: read from the trial that made it an elite
    /// (its first correct one; a key offered again changes nothing).
    pub fn of(task: &Task, trials: &[Trial], key: &str, run: &str) -> ShapesPassed {
        let checks = trials
            .iter()
            .find(|t| t.key == key && t.evaluation.p50_us().is_some())
            .map(|t| t.evaluation.verified())
            .unwrap_or_default();
        let mut passed = vec![run.to_string()];
        passed.extend(
            checks
                .iter()
                .filter(|c| c.passed() && c.shape != run)
                .map(|c| c.shape.clone()),
        );
        let not_verified = task
            .verify_shapes
            .iter()
            .filter(|n| !passed.contains(n))
            .cloned()
            .collect();
        ShapesPassed {
            passed,
            not_verified,
        }
    }

    /// `mission, tail, wide`, or `mission; not verified at tail, wide` (beyond four shapes
    /// left unchecked, their number).
    pub fn describe(&self) -> String {
        let passed = self.passed.join(", ");
        match self.not_verified.len() {
            0 => passed,
            1..=4 => format!("{passed}; not verified at {}", self.not_verified.join(", ")),
            n => format!("{passed}; not verified at {n} further shapes"),
        }
    }
}

#[cfg(test)]
mod tests;
