//! The GPU worker: a child process (`evoengineer worker`) that owns the CUDA context, so a
//! kernel that faults or hangs costs a process, not the run.
//!
//! Protocol: one JSON request per line on the worker's stdin, one JSON response per line on
//! its stdout; logs go to stderr. Before serving, the worker points its file descriptor 1 at
//! stderr and keeps the original stdout for responses only, so a kernel's `printf` (which the
//! driver writes to fd 1) cannot corrupt the protocol.
//!
//! | request (`op`) | response (`op`) |
//! |---|---|
//! | `hello` | `hello` {protocol, device} |
//! | `prepare` {reference, args, seed, trials, input_sets} | `prepared` {trials, seconds} |
//! | `eval` {kernel, reference, args, trials, seed, tolerance, timing, checker} | `eval` {outcome, message, correctness, timing, kernel, bench, exiting}; `alive` heartbeats while it runs |
//! | `run_once` {kernel, args, seed, trial} | `run_once` {outcome, message, kernel_us, exiting} |
//! | `shutdown` | `bye`, then the worker exits |
//! | anything malformed, or an evaluator failure | `error` {message, exiting} |
//!
//! The gates inside `eval`, failing fast: the kernel loads and its launch fits the device;
//! `trials` correctness trials (fresh inputs each, outputs poisoned, compared with the
//! reference's f32 outputs, inputs verified unchanged); then, if asked and only if correct,
//! the timing loop ([`crate::cuda::bench`]) under the protocol of [`crate::eval::protocol`]
//! (stopping rule, racing, checked launches).
//!
//! After a CUDA error the worker answers (`runtime_error` for the candidate's own launches, an
//! `error` for the reference's) and, when the error is sticky or the context no longer
//! works, sets `exiting` and exits: the parent starts a fresh worker for the next request.
//!
//! One-shot mode for the profiler: `evoengineer worker --once REQUEST.json --response
//! RESPONSE.json` handles a single request read from a file and writes its response to a
//! file. With a `run_once` request it launches the kernel exactly once, so
//! `ncu -k regex:^entry$ -c 1` profiles just that launch ([`worker_once`]).

mod check;
mod data;
pub mod handle;
mod measure;
pub mod server;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use crate::cuda::{DeviceInfo, Dims, KernelAttrs};
use crate::eval::inputs::ArgSpec;
use crate::eval::{CorrectnessReport, Evaluation, Outcome, Timing};
use crate::task::Tolerance;
pub use check::SOURCE as CHECKER_SOURCE;
pub use check::{COMPARE_ENTRY as CHECKER_COMPARE_ENTRY, SAME_ENTRY as CHECKER_SAME_ENTRY};
pub use handle::{WorkerFailure, WorkerHandle};
pub use server::{parse_worker_args, serve, worker_command, worker_main, worker_once, WorkerMode};

/// Bumped when a message changes incompatibly.
pub const PROTOCOL_VERSION: u32 = 1;

/// The subcommand that starts a worker.
pub const WORKER_SUBCOMMAND: &str = "worker";

/// A compiled kernel, ready to launch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelRef {
    pub cubin: PathBuf,
    /// The lowered (mangled, for C++) name in the cubin.
    pub entry: String,
    pub dims: Dims,
}

/// How to time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimingParams {
    /// Timed launches at most.
    pub iterations: u32,
    /// Timed launches taken before the stopping rule may end timing (and even when
    /// `budget_ms` would allow fewer).
    pub min_iterations: u32,
    /// Warm-up, wall time.
    pub warmup_ms: f64,
    /// Input sets launches rotate among (fewer if device memory is short).
    pub input_sets: u32,
    /// Wall-time budget of the timed launches; ≤ 0: no limit.
    pub budget_ms: f64,
    /// The stopping rule: timing ends once the 95 % interval of the median is within this
    /// fraction of it on either side; ≤ 0: always `iterations` launches
    /// ([`crate::eval::protocol`]).
    pub ci_rel: f64,
    /// Timed launches checked besides every new fastest one (a fraction, drawn at random).
    pub check_fraction: f64,
    /// Racing: samples before a candidate may be stopped as slower than `bar_us`.
    pub race_after: u32,
    /// Racing: how far above the bar the fastest sample must be.
    pub race_margin: f64,
    /// Racing: the p50 to beat (the current K-th elite's), if any; set per request.
    pub bar_us: Option<f64>,
}

impl Default for TimingParams {
    fn default() -> Self {
        TimingParams {
            iterations: 100,
            min_iterations: 10,
            warmup_ms: 25.0,
            input_sets: 6,
            budget_ms: 5000.0,
            ci_rel: 0.01,
            check_fraction: 0.5,
            race_after: 5,
            race_margin: 0.1,
            bar_us: None,
        }
    }
}

impl TimingParams {
    /// The protocol in one line, as recorded with a run.
    pub fn describe(&self) -> String {
        let stop = if self.ci_rel > 0.0 {
            format!(
                "{}..{} launches until the median's 95% interval is within ±{}%",
                self.min_iterations,
                self.iterations,
                self.ci_rel * 100.0
            )
        } else {
            format!("{} launches", self.iterations)
        };
        format!(
            "{stop}, {} input sets, {}% of launches checked (and every new fastest), \
             racing after {} launches at +{}% of the K-th elite",
            self.input_sets,
            self.check_fraction * 100.0,
            self.race_after,
            self.race_margin * 100.0
        )
    }
}

fn five() -> u32 {
    5
}

/// Take a candidate through correctness and (optionally) timing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalRequest {
    pub kernel: KernelRef,
    /// Takes the same arguments, outputs as f32. Without one only NaN/Inf and unwritten
    /// outputs are checked.
    #[serde(default)]
    pub reference: Option<KernelRef>,
    pub args: Vec<ArgSpec>,
    #[serde(default = "five")]
    pub trials: u32,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub tolerance: Tolerance,
    /// Time the kernel if it is correct.
    #[serde(default)]
    pub timing: Option<TimingParams>,
    /// The worker's own kernels (`evo_compare`, `evo_same`; `src/eval/checker.cu`), compiled
    /// for the device: outputs compared and inputs verified on the GPU. Without it the
    /// worker does both on the host (slower, the same verdicts).
    #[serde(default)]
    pub checker: Option<PathBuf>,
}

/// Draw the inputs of every correctness trial and timing set and run the reference on them
/// ahead of the evaluations, which then find them cached (the parent sends this to every
/// fresh worker, with a deadline of its own, so a candidate's deadline covers the candidate's
/// work only).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrepareRequest {
    #[serde(default)]
    pub reference: Option<KernelRef>,
    pub args: Vec<ArgSpec>,
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "five")]
    pub trials: u32,
    /// Timing input sets to prepare too.
    #[serde(default)]
    pub input_sets: u32,
}

impl PrepareRequest {
    /// What an evaluation request will need.
    pub fn for_eval(req: &EvalRequest) -> PrepareRequest {
        PrepareRequest {
            reference: req.reference.clone(),
            args: req.args.clone(),
            seed: req.seed,
            trials: req.trials,
            input_sets: req.timing.as_ref().map_or(0, |t| t.input_sets.max(1)),
        }
    }
}

/// Launch once (for the profiler), on the inputs of `trial`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunOnceRequest {
    pub kernel: KernelRef,
    pub args: Vec<ArgSpec>,
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub trial: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
#[allow(clippy::large_enum_variant)] // one request at a time, never kept in bulk
pub enum Request {
    Hello,
    Prepare(PrepareRequest),
    Eval(EvalRequest),
    RunOnce(RunOnceRequest),
    Shutdown,
}

/// Details of the timing loop.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BenchInfo {
    pub iterations: u32,
    /// Timed launches whose outputs were checked against the reference.
    #[serde(default)]
    pub checked: u32,
    /// Why timing stopped: `stable` (the stopping rule), `limit` (iterations or budget),
    /// `slower` (raced out).
    #[serde(default)]
    pub stopped: String,
    pub warmup_samples: u32,
    pub warmup_ms: f64,
    pub input_sets: u32,
    pub flush_bytes: u64,
    /// Median of host wall time minus GPU span per sample (see `cuda::bench`).
    pub tail_p50_us: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalResponse {
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correctness: Option<CorrectnessReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timing: Option<Timing>,
    /// What the driver says about the loaded kernel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<KernelAttrs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bench: Option<BenchInfo>,
    /// Seconds from the request to the correctness verdict: loading the kernel, the
    /// reference, the trials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correctness_s: Option<f64>,
    /// Seconds after the verdict: timing inputs, warm-up, timed launches, the final check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timing_s: Option<f64>,
    /// The worker exits after this response (its context is unusable).
    #[serde(default)]
    pub exiting: bool,
}

impl EvalResponse {
    pub fn failed(outcome: Outcome, message: impl Into<String>) -> EvalResponse {
        EvalResponse {
            outcome,
            message: Some(message.into()),
            correctness: None,
            timing: None,
            kernel: None,
            bench: None,
            correctness_s: None,
            timing_s: None,
            exiting: false,
        }
    }

    /// The search's view (the compile report and the phases outside the worker are the
    /// evaluator's to fill in).
    pub fn into_evaluation(self) -> Evaluation {
        Evaluation {
            outcome: self.outcome,
            message: self.message,
            compile: None,
            correctness: self.correctness,
            timing: self.timing,
            profile: None,
            phases: crate::eval::Phases {
                correctness_s: self.correctness_s,
                timing_s: self.timing_s,
                ..crate::eval::Phases::default()
            },
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunOnceResponse {
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_us: Option<f64>,
    #[serde(default)]
    pub exiting: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
#[allow(clippy::large_enum_variant)] // one answer per request, never kept in bulk
pub enum Response {
    Hello {
        protocol: u32,
        device: DeviceInfo,
    },
    Prepared {
        trials: u32,
        seconds: f64,
    },
    Eval(EvalResponse),
    RunOnce(RunOnceResponse),
    Bye,
    /// Not an answer: work on the request moved on (a launch finished). Sent while a request
    /// runs, at most every 200 ms.
    Alive,
    /// A malformed request, or a failure of the evaluator rather than of the candidate (no
    /// device, a broken reference, out of memory).
    Error {
        message: String,
        #[serde(default)]
        exiting: bool,
    },
}

impl Response {
    /// Whether the worker exits after sending this.
    pub fn exiting(&self) -> bool {
        match self {
            Response::Eval(r) => r.exiting,
            Response::RunOnce(r) => r.exiting,
            Response::Error { exiting, .. } => *exiting,
            Response::Bye => true,
            Response::Hello { .. } | Response::Prepared { .. } | Response::Alive => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::{ArgKind, ArgRole, DType, Init};

    fn kernel() -> KernelRef {
        KernelRef {
            cubin: "/tmp/k.cubin".into(),
            entry: "_Z4gemmPKfPf".into(),
            dims: Dims {
                grid: [4, 1, 1],
                block: [128, 1, 1],
                smem: 0,
            },
        }
    }

    #[test]
    fn requests_round_trip() {
        let args = vec![ArgSpec {
            name: "O".into(),
            kind: ArgKind::Buffer,
            dtype: DType::Bf16,
            role: ArgRole::Output,
            init: Init::default(),
            len: 512,
            shape: vec![],
            value: None,
        }];
        let reqs = [
            Request::Hello,
            Request::Shutdown,
            Request::Eval(EvalRequest {
                kernel: kernel(),
                reference: Some(kernel()),
                args: args.clone(),
                trials: 5,
                seed: 42,
                tolerance: Tolerance {
                    max_abs_err: Some(0.06),
                    ..Default::default()
                },
                timing: Some(TimingParams::default()),
                checker: None,
            }),
            Request::RunOnce(RunOnceRequest {
                kernel: kernel(),
                args: args.clone(),
                seed: 1,
                trial: 0,
            }),
            Request::Prepare(PrepareRequest {
                reference: Some(kernel()),
                args,
                seed: 1,
                trials: 5,
                input_sets: 3,
            }),
        ];
        for r in reqs {
            let line = serde_json::to_string(&r).unwrap();
            assert!(!line.contains('\n'));
            assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), r, "{line}");
        }
    }

    #[test]
    fn hand_written_requests() {
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"op":"hello"}"#).unwrap(),
            Request::Hello
        );
        let text = r#"{"op":"eval","kernel":{"cubin":"k.cubin","entry":"k","dims":{"grid":[1,1,1],"block":[32,1,1]}},
            "args":[{"name":"O","kind":"buffer","dtype":"f32","role":"output","len":32}],
            "timing":{"iterations":50}}"#;
        let Request::Eval(r) = serde_json::from_str::<Request>(text).unwrap() else {
            panic!("not eval");
        };
        assert_eq!(r.trials, 5);
        assert_eq!(r.timing.unwrap().iterations, 50);
        assert!(r.reference.is_none());
        assert!(serde_json::from_str::<Request>(r#"{"op":"dance"}"#).is_err());
        assert!(serde_json::from_str::<Request>(
            r#"{"op":"run_once","kernel":{"cubin":"k","entry":"k","dims":{"grid":[1,1,1],"block":[1,1,1]}},"args":[],"bogus":1}"#
        )
        .is_err());
    }

    #[test]
    fn responses_round_trip() {
        let resps = [
            Response::Hello {
                protocol: PROTOCOL_VERSION,
                device: DeviceInfo::default(),
            },
            Response::Bye,
            Response::Prepared {
                trials: 8,
                seconds: 1.5,
            },
            Response::Error {
                message: "no device".into(),
                exiting: false,
            },
            Response::Eval(EvalResponse::failed(
                Outcome::RuntimeError,
                "CUDA_ERROR_ILLEGAL_ADDRESS",
            )),
            Response::RunOnce(RunOnceResponse {
                outcome: Outcome::Ok,
                message: None,
                kernel_us: Some(12.5),
                exiting: false,
            }),
        ];
        for r in resps {
            let line = serde_json::to_string(&r).unwrap();
            assert_eq!(
                serde_json::from_str::<Response>(&line).unwrap(),
                r,
                "{line}"
            );
        }
        assert!(Response::Bye.exiting());
    }

    #[test]
    fn eval_response_becomes_an_evaluation() {
        let e = EvalResponse::failed(Outcome::Incorrect, "trial 0: max_abs_err 1 > 0.06")
            .into_evaluation();
        assert_eq!(e.outcome, Outcome::Incorrect);
        assert!(e.compile.is_none());
        assert_eq!(e.message.as_deref(), Some("trial 0: max_abs_err 1 > 0.06"));
    }
}
