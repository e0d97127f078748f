//! Where an evaluation's time went: compile, waiting for the compile, correctness, timing,
//! profiling, and the rest.
//!
//! The GPU evaluator fills these in as it goes ([`crate::eval::cuda::CudaEvaluator`]); an
//! evaluator that measures nothing (a replay of a landscape recorded without phases, a test
//! double) leaves them empty, and nothing invents them. Every field is optional and left out of
//! the JSON when empty, so evaluations recorded before phases existed load unchanged.

use serde::{Deserialize, Serialize};

/// Seconds spent in each phase of one evaluation.
///
/// `compile_s` is the compile's own wall time wherever it ran: in the compile-ahead queue
/// while the GPU measured an earlier candidate, or inline. `wait_s` is the part the evaluation
/// spent blocked on it (the queue had not finished it yet, or it compiled inline), so
/// `compile_s - wait_s` is compile time hidden behind other work. The other phases are
/// sequential: `wait_s + correctness_s + timing_s + other_s` is the evaluation's wall time, and
/// `profile_s` follows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Phases {
    /// This candidate's compile (nvcc or NVRTC; a cubin-cache hit takes milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compile_s: Option<f64>,
    /// Blocked waiting for the compile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_s: Option<f64>,
    /// In the worker: loading the kernel, the reference, the correctness trials; for a
    /// candidate about to become an elite, also its checks at the task's other shapes
    /// (`search::verify`, their compiles included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correctness_s: Option<f64>,
    /// In the worker: the timing input sets, warm-up, the timed launches, the final check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timing_s: Option<f64>,
    /// Nsight Compute on this candidate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_s: Option<f64>,
    /// The rest of the evaluation: starting a worker and drawing its inputs, messages to and
    /// from it, writing the cubin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_s: Option<f64>,
}

impl Phases {
    pub fn is_empty(&self) -> bool {
        *self == Phases::default()
    }

    /// Visits every float, in a fixed order (the store's codec relies on it).
    pub fn floats(&mut self, f: &mut dyn FnMut(&mut f64)) {
        for x in [
            &mut self.compile_s,
            &mut self.wait_s,
            &mut self.correctness_s,
            &mut self.timing_s,
            &mut self.profile_s,
            &mut self.other_s,
        ]
        .into_iter()
        .flatten()
        {
            f(x);
        }
    }

    /// Adds `other`'s figures to these (a field stays `None` only if both are).
    pub fn add(&mut self, other: &Phases) {
        fn plus(a: &mut Option<f64>, b: Option<f64>) {
            if let Some(b) = b {
                *a = Some(a.unwrap_or(0.0) + b);
            }
        }
        plus(&mut self.compile_s, other.compile_s);
        plus(&mut self.wait_s, other.wait_s);
        plus(&mut self.correctness_s, other.correctness_s);
        plus(&mut self.timing_s, other.timing_s);
        plus(&mut self.profile_s, other.profile_s);
        plus(&mut self.other_s, other.other_s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_phases_are_left_out_and_old_json_loads() {
        assert_eq!(serde_json::to_string(&Phases::default()).unwrap(), "{}");
        let p: Phases = serde_json::from_str("{}").unwrap();
        assert!(p.is_empty());
        let p: Phases = serde_json::from_str(r#"{"compile_s":1.5,"wait_s":0.25}"#).unwrap();
        assert_eq!(p.compile_s, Some(1.5));
        assert_eq!(p.wait_s, Some(0.25));
        assert_eq!(p.timing_s, None);
        assert!(!p.is_empty());
    }

    #[test]
    fn adding_keeps_absent_phases_absent() {
        let mut a = Phases {
            compile_s: Some(1.0),
            ..Phases::default()
        };
        a.add(&Phases {
            compile_s: Some(0.5),
            profile_s: Some(2.0),
            ..Phases::default()
        });
        assert_eq!(a.compile_s, Some(1.5));
        assert_eq!(a.profile_s, Some(2.0));
        assert_eq!(a.timing_s, None);
        let mut n = 0;
        a.floats(&mut |x| {
            *x += 1.0;
            n += 1;
        });
        assert_eq!(n, 2);
        assert_eq!(a.compile_s, Some(2.5));
    }
}
