//! The evaluator behind `tune` on a real GPU: the compile gate on every CPU core, the worker
//! process holding the CUDA context, ncu for profiles, python3 + torch for the baselines.
//!
//! Compiles run ahead: `prepare` queues the batch the search is about to evaluate, so the
//! GPU measures one candidate while the CPUs compile the next. Cubins go to a scratch folder
//! the worker loads them from. A candidate that faults or hangs kills only the worker; the
//! next request starts a fresh one.
//!
//! A candidate about to become an elite is also checked for correctness, untimed, at the
//! task's other verification shapes ([`Evaluator::verify`]): compiled for each shape at once,
//! then run by a second worker process, so that the first keeps the run's shape's inputs.
//!
//! Every evaluation carries its [`Phases`]: the compile's own time and the time spent waiting
//! for it, the worker's correctness and timing, ncu (with `profile_all`), and the rest.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::candidate::{Candidate, SourceRef};
use crate::cuda::{DeviceInfo, Dims};
use crate::eval::baseline::{run_baselines, BaselineOptions, BaselineRun};
use crate::eval::compile::{
    CompileError, CompileGate, CompileJob, CompileQueue, Compiled, CompilerSettings,
};
use crate::eval::inputs::ArgSpec;
use crate::eval::launch::launch_vars;
use crate::eval::profile::{ProfileOutcome, Profiler};
use crate::eval::worker::{EvalRequest, KernelRef, RunOnceRequest, TimingParams, WorkerHandle};
use crate::eval::{Environment, EvalError, Evaluation, Evaluator, Outcome, Phases, ShapeCheck};
use crate::insight::Profile;
use crate::space::Config;
use crate::task::{Shape, Task};

/// How the GPU evaluator measures.
#[derive(Clone, Debug)]
pub struct CudaOptions {
    /// Seed of every input drawn (trial t of every candidate sees the same inputs).
    pub seed: u64,
    /// Correctness trials, each on fresh inputs.
    pub trials: u32,
    pub timing: TimingParams,
    pub compiler: CompilerSettings,
    /// Target architecture; default: the device's (`sm_90a` on Hopper).
    pub arch: Option<String>,
    /// The program started as `PROGRAM worker` (default: this executable).
    pub worker_exe: Option<PathBuf>,
    /// `ncu` to profile with; `None`: insights off.
    pub ncu: Option<PathBuf>,
    /// Profile every correct candidate as part of its evaluation (for landscapes), not only
    /// the new elites the search asks about.
    pub profile_all: bool,
    pub python: PathBuf,
    /// The GPU (CUDA ordinal) the worker process runs on; `None`: CUDA's default.
    pub gpu: Option<u32>,
    /// Check would-be elites for correctness at the task's other verification shapes
    /// ([`Evaluator::verify`]). Off by default until this path has run on a GPU (it has not
    /// yet: see `bench/gpu-test.md`); `show` then says the elites were not verified there.
    pub verify_shapes: bool,
}

impl Default for CudaOptions {
    fn default() -> Self {
        CudaOptions {
            seed: 0,
            trials: 5,
            timing: TimingParams::default(),
            compiler: CompilerSettings::default(),
            arch: None,
            worker_exe: None,
            ncu: Some(PathBuf::from("ncu")),
            profile_all: false,
            python: PathBuf::from("python3"),
            gpu: None,
            verify_shapes: false,
        }
    }
}

pub struct CudaEvaluator {
    task: Task,
    opts: CudaOptions,
    device: DeviceInfo,
    arch: String,
    toolchain: String,
    gate: Arc<CompileGate>,
    queue: CompileQueue<String>,
    worker: WorkerHandle,
    /// The worker of the checks at other shapes ([`Evaluator::verify`]), started on first
    /// use: it prepares those shapes' inputs and references, so that the main worker keeps the
    /// run's shape's (drawing them again after every check would cost seconds).
    checks: Option<WorkerHandle>,
    /// The program the workers run.
    exe: PathBuf,
    profiler: Option<Profiler>,
    scratch: PathBuf,
    /// Compiled reference per shape.
    references: HashMap<String, KernelRef>,
    /// Notes said once (no profiler, ...).
    pub notes: Vec<String>,
    /// Model-written sources by sha256 ([`Evaluator::register_source`]).
    sources: HashMap<String, String>,
    /// Profiles taken during evaluations (`profile_all`), by queue key, so that
    /// [`Evaluator::profile`] does not run ncu on the same candidate twice.
    taken: HashMap<String, Profile>,
    /// The worker's checker kernels (`None` until first needed; `Some(None)`: they did not
    /// compile, and the worker checks on the host).
    checker: Option<Option<PathBuf>>,
    /// Racing: the p50 a candidate must come near (the K-th elite's), from the search.
    bar_us: Option<f64>,
}

/// A worker process (started on its first request) on `gpu`, or CUDA's default.
fn start_worker(exe: &Path, timeout_s: f64, gpu: Option<u32>) -> WorkerHandle {
    let mut worker =
        WorkerHandle::with_command(exe.to_path_buf(), [crate::eval::worker::WORKER_SUBCOMMAND]);
    // A launch that shows no progress for the task's timeout is a hang: killed then (plus a
    // second for the heartbeat's granularity), not at the request's whole deadline.
    worker.set_hang_limit(Some(Duration::from_secs_f64(timeout_s.max(0.1) + 1.0)));
    if let Some(gpu) = gpu {
        worker.env("CUDA_VISIBLE_DEVICES", gpu.to_string());
    }
    worker
}

/// The architecture to build for: Hopper gets its `a` variant (wgmma, setmaxnreg).
pub fn arch_for(device: &DeviceInfo) -> String {
    let base = device.arch();
    if device.cc_major == 9 && device.cc_minor == 0 {
        format!("{base}a")
    } else {
        base
    }
}

fn dims(d: &crate::eval::launch::LaunchDims) -> Dims {
    Dims {
        grid: d.grid,
        block: d.block,
        smem: d.smem,
    }
}

/// The compile job of the worker's checker kernels (`src/eval/checker.cu`), made from any job
/// of the task (its compiler and architecture): no defines, no task flags, no launch checks.
pub fn checker_job(mut job: CompileJob) -> CompileJob {
    job.source = crate::eval::worker::CHECKER_SOURCE.to_string();
    job.file_name = "evo_checker.cu".into();
    job.include_dir = None;
    job.entry = crate::eval::worker::CHECKER_COMPARE_ENTRY.into();
    job.defines.clear();
    // NVRTC optimizes by default and refuses nvcc's -O3.
    job.flags = match job.compiler {
        crate::task::Compiler::Nvcc => vec!["-O3".into()],
        crate::task::Compiler::Nvrtc => Vec::new(),
    };
    job.launch = None;
    job.max_spill_bytes = u64::MAX;
    job
}

impl CudaEvaluator {
    /// Starts a worker and asks it for the device. Fails when there is no usable GPU.
    pub fn new(task: &Task, opts: CudaOptions) -> Result<CudaEvaluator, EvalError> {
        let spec = task.kernel.as_ref().ok_or_else(|| {
            EvalError::Other(format!(
                "task `{}` has no [kernel] section: nothing to run on the GPU",
                task.name
            ))
        })?;
        if task.reference.is_none() {
            tracing::warn!(
                "task `{}` has no reference: only NaN, Inf and unwritten outputs are checked",
                task.name
            );
        }
        let exe = match &opts.worker_exe {
            Some(p) => p.clone(),
            None => std::env::current_exe()
                .map_err(|e| EvalError::Other(format!("cannot find this program: {e}")))?,
        };
        let mut worker = start_worker(&exe, spec.timeout_s, opts.gpu);
        let device = worker.hello(Duration::from_secs(60))?;
        let arch = opts.arch.clone().unwrap_or_else(|| arch_for(&device));
        let gate = Arc::new(CompileGate::new(opts.compiler.clone()));
        let toolchain = gate
            .toolchain(spec.compiler)
            .map_err(|e| EvalError::Other(e.to_string()))?;
        let scratch =
            std::env::temp_dir().join(format!("evoengineer-cubins-{}", std::process::id()));
        std::fs::create_dir_all(&scratch)
            .map_err(|e| EvalError::Other(format!("cannot create {}: {e}", scratch.display())))?;
        let profiler = opts
            .ncu
            .as_ref()
            .map(|ncu| Profiler::new(exe.clone(), task.insight).with_ncu(ncu.clone()));
        Ok(CudaEvaluator {
            task: task.clone(),
            queue: CompileQueue::new(gate.clone()),
            gate,
            device,
            arch,
            toolchain,
            worker,
            checks: None,
            exe: exe.clone(),
            profiler,
            scratch,
            references: HashMap::new(),
            opts,
            notes: Vec::new(),
            sources: HashMap::new(),
            taken: HashMap::new(),
            checker: None,
            bar_us: None,
        })
    }

    /// The checker's cubin, compiled on first use like a reference (`None` if it does not
    /// compile: said once in the notes, and the worker compares on the host).
    fn checker(&mut self, shape: &Shape) -> Option<PathBuf> {
        if let Some(done) = &self.checker {
            return done.clone();
        }
        let compiled = self
            .job(&Candidate::base(self.task.space.default_config()), shape)
            .map_err(|e| e.to_string())
            .and_then(|job| {
                let job = checker_job(job);
                self.gate.compile(&job).map_err(|e| e.to_string())
            })
            .and_then(|c| self.cubin_file(&c).map_err(|e| e.to_string()));
        let path = match compiled {
            Ok(p) => Some(p),
            Err(e) => {
                let note = format!(
                    "the GPU checker does not compile ({e}); outputs are compared on the host"
                );
                eprintln!("note: {note}");
                self.notes.push(note);
                None
            }
        };
        self.checker = Some(path.clone());
        path
    }

    pub fn device(&self) -> &DeviceInfo {
        &self.device
    }

    pub fn arch(&self) -> &str {
        &self.arch
    }

    fn queue_key(&self, c: &Candidate, shape: &Shape) -> String {
        format!("{}@{}", c.key(&self.task.space), shape.name)
    }

    /// The compile job of a candidate: the task's source, or the variant it names.
    fn job(&self, c: &Candidate, shape: &Shape) -> Result<CompileJob, CompileError> {
        let source = match &c.source {
            SourceRef::Base => None,
            SourceRef::Variant(hash) => Some(self.sources.get(hash).ok_or_else(|| {
                CompileError::Setup(format!(
                    "source variant {hash} was never registered with the evaluator"
                ))
            })?),
        };
        CompileJob::for_candidate(
            &self.task,
            &c.config,
            shape,
            &self.arch,
            source.map(String::as_str),
        )
    }

    /// The candidate's compile, from the compile-ahead queue or done now, with the compile's
    /// own time (`compile_s`) and the time spent here waiting for it (`wait_s`; all of it when
    /// the compile runs now).
    fn compiled(&self, c: &Candidate, shape: &Shape) -> (Result<Compiled, CompileError>, Phases) {
        let started = Instant::now();
        if let Some((done, took)) = self.queue.take_timed(&self.queue_key(c, shape)) {
            let phases = Phases {
                compile_s: Some(took.as_secs_f64()),
                wait_s: Some(started.elapsed().as_secs_f64()),
                ..Phases::default()
            };
            return (done, phases);
        }
        let done = self.job(c, shape).and_then(|job| self.gate.compile(&job));
        let secs = started.elapsed().as_secs_f64();
        let phases = Phases {
            compile_s: Some(secs),
            wait_s: Some(secs),
            ..Phases::default()
        };
        (done, phases)
    }

    /// Profiles a compiled candidate with ncu; `Ok(None)` when there is no profiler or ncu
    /// could not profile it (said in a note or a warning).
    fn profile_compiled(
        &mut self,
        candidate: &Candidate,
        shape: &Shape,
        compiled: &Compiled,
    ) -> Result<Option<Profile>, EvalError> {
        if self.profiler.is_none() {
            return Ok(None);
        }
        let Some(d) = compiled.launch else {
            return Ok(None);
        };
        let request = RunOnceRequest {
            kernel: KernelRef {
                cubin: self.cubin_file(compiled)?,
                entry: compiled.entry.clone(),
                dims: dims(&d),
            },
            args: self.args(&candidate.config, shape)?,
            seed: self.opts.seed,
            trial: 0,
        };
        let profiler = self.profiler.as_mut().expect("checked above");
        match profiler.profile(&request) {
            Ok(ProfileOutcome::Profiled(p)) => Ok(Some(p)),
            Ok(ProfileOutcome::Unavailable { note }) => {
                if let Some(note) = note {
                    eprintln!("note: {note}");
                    self.notes.push(note);
                }
                Ok(None)
            }
            Err(e) => {
                tracing::warn!("{}: {e}", candidate.key(&self.task.space));
                Ok(None)
            }
        }
    }

    /// Writes a cubin where the worker can load it.
    fn cubin_file(&self, compiled: &Compiled) -> Result<PathBuf, EvalError> {
        let path = self.scratch.join(format!("{}.cubin", compiled.key));
        if !path.exists() {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, &compiled.cubin)
                .and_then(|_| std::fs::rename(&tmp, &path))
                .map_err(|e| EvalError::Other(format!("cannot write {}: {e}", path.display())))?;
        }
        Ok(path)
    }

    fn reference(&mut self, shape: &Shape) -> Result<Option<KernelRef>, EvalError> {
        let Some(launch) = self.task.reference.clone() else {
            return Ok(None);
        };
        if let Some(r) = self.references.get(&shape.name) {
            return Ok(Some(r.clone()));
        }
        let config = self.task.space.default_config();
        let d = crate::eval::launch::launch_dims(&launch, &self.task.space, &config, shape)
            .map_err(|e| EvalError::Other(format!("reference launch: {e}")))?;
        let source = std::fs::read_to_string(&launch.source).map_err(|e| {
            EvalError::Other(format!("cannot read {}: {e}", launch.source.display()))
        })?;
        let mut job = self
            .job(&Candidate::base(config.clone()), shape)
            .map_err(|e| EvalError::Other(e.to_string()))?;
        job.source = source;
        job.file_name = launch
            .source
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "reference.cu".into());
        job.entry = launch.entry.clone();
        job.launch = Some(d);
        job.max_spill_bytes = u64::MAX;
        let compiled = self.gate.compile(&job).map_err(|e| {
            EvalError::Other(format!(
                "the reference of task `{}` does not compile: {e}",
                self.task.name
            ))
        })?;
        let r = KernelRef {
            cubin: self.cubin_file(&compiled)?,
            entry: compiled.entry.clone(),
            dims: dims(&d),
        };
        self.references.insert(shape.name.clone(), r.clone());
        Ok(Some(r))
    }

    /// Correctness only, at `shape`, of a candidate compiled for that shape (its defines):
    /// the worker's correctness trials on that shape's inputs against its reference, no timing.
    fn check_at(
        &mut self,
        candidate: &Candidate,
        shape: &Shape,
        compiled: Result<Compiled, CompileError>,
    ) -> Result<ShapeCheck, EvalError> {
        let check = |outcome, message| ShapeCheck {
            shape: shape.name.clone(),
            outcome,
            message,
        };
        let compiled = match compiled {
            Ok(c) => c,
            Err(CompileError::Rejected(r)) => {
                return Ok(check(Outcome::CompileError, Some(r.message)))
            }
            Err(e) => return Err(EvalError::Other(e.to_string())),
        };
        let request = self.request(candidate, shape, &compiled, None)?;
        let timeout = self.timeout();
        let timeout_s = self.task.kernel.as_ref().map_or(10.0, |k| k.timeout_s);
        let (exe, gpu) = (&self.exe, self.opts.gpu);
        let worker = self
            .checks
            .get_or_insert_with(|| start_worker(exe, timeout_s, gpu));
        let e = worker.eval(&request, timeout)?;
        if e.outcome != Outcome::Ok {
            tracing::info!(
                "{} at shape {}: {} {}",
                candidate.key(&self.task.space),
                shape.name,
                e.outcome,
                e.message.as_deref().unwrap_or("")
            );
        }
        Ok(check(e.outcome, e.message))
    }

    /// The worker's request for a compiled candidate at `shape`: correctness, then timing if
    /// `timing` is given.
    fn request(
        &mut self,
        candidate: &Candidate,
        shape: &Shape,
        compiled: &Compiled,
        timing: Option<TimingParams>,
    ) -> Result<EvalRequest, EvalError> {
        let d = compiled
            .launch
            .ok_or_else(|| EvalError::Other("the compile gate gave no launch size".into()))?;
        Ok(EvalRequest {
            kernel: KernelRef {
                cubin: self.cubin_file(compiled)?,
                entry: compiled.entry.clone(),
                dims: dims(&d),
            },
            reference: self.reference(shape)?,
            args: self.args(&candidate.config, shape)?,
            trials: self.opts.trials,
            seed: self.opts.seed,
            tolerance: self.task.tolerance,
            timing,
            checker: self.checker(shape),
        })
    }

    /// The task's arguments evaluated for a config and shape.
    pub fn args(&self, config: &Config, shape: &Shape) -> Result<Vec<ArgSpec>, EvalError> {
        task_args(&self.task, config, shape)
    }

    fn timeout(&self) -> Duration {
        let per = self
            .task
            .kernel
            .as_ref()
            .map(|k| k.timeout_s)
            .unwrap_or(10.0);
        // Correctness trials and the reference, then the timing loop's own budget.
        Duration::from_secs_f64(
            per * 2.0 + self.opts.timing.budget_ms.max(0.0) / 1000.0 * 2.0 + 30.0,
        )
    }

    /// Times the task's PyTorch baselines for `shape` on the inputs of trial 0.
    pub fn baselines(&self, shape: &Shape) -> Result<BaselineRun, EvalError> {
        let args = self.args(&self.task.space.default_config(), shape)?;
        Ok(run_baselines(
            &args,
            &self.task.baselines,
            self.opts.seed,
            &BaselineOptions {
                python: self.opts.python.clone(),
                iterations: self.opts.timing.iterations,
                min_iterations: self.opts.timing.min_iterations,
                warmup_ms: self.opts.timing.warmup_ms,
                budget_ms: self.opts.timing.budget_ms,
                device: self.device.ordinal,
                ..BaselineOptions::default()
            },
        ))
    }
}

/// The task's arguments evaluated for a config and shape.
pub fn task_args(task: &Task, config: &Config, shape: &Shape) -> Result<Vec<ArgSpec>, EvalError> {
    let spec = task
        .kernel
        .as_ref()
        .ok_or_else(|| EvalError::Other(format!("task `{}` has no [kernel] section", task.name)))?;
    let vars =
        launch_vars(&task.space, config, shape).map_err(|e| EvalError::Other(e.to_string()))?;
    spec.args
        .iter()
        .map(|a| ArgSpec::from_task_arg(a, &vars).map_err(EvalError::Other))
        .collect()
}

impl Drop for CudaEvaluator {
    fn drop(&mut self) {
        self.worker.shutdown();
        if let Some(w) = &mut self.checks {
            w.shutdown();
        }
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

impl Evaluator for CudaEvaluator {
    fn set_race_bar(&mut self, bar_us: Option<f64>) {
        self.bar_us = bar_us;
    }

    fn environment(&self) -> Environment {
        Environment {
            device: self.device.describe(),
            toolchain: format!("{} {}", self.toolchain, self.arch),
        }
    }

    fn register_source(&mut self, hash: &str, code: &str) {
        self.sources.insert(hash.to_string(), code.to_string());
    }

    fn prepare(&mut self, upcoming: &[Candidate], shape: &Shape) {
        for c in upcoming {
            if let Ok(job) = self.job(c, shape) {
                self.queue.submit(self.queue_key(c, shape), job);
            }
        }
    }

    fn evaluate(&mut self, candidate: &Candidate, shape: &Shape) -> Result<Evaluation, EvalError> {
        let started = Instant::now();
        let (compiled, mut phases) = self.compiled(candidate, shape);
        let compiled = match compiled {
            Ok(c) => c,
            Err(e @ CompileError::Rejected(_)) => {
                return e.into_evaluation().map(|mut ev| {
                    phases.other_s = Some(
                        (started.elapsed().as_secs_f64() - phases.wait_s.unwrap_or(0.0)).max(0.0),
                    );
                    ev.phases = phases;
                    ev
                })
            }
            Err(e) => return Err(EvalError::Other(e.to_string())),
        };
        let timing = TimingParams {
            bar_us: self.bar_us,
            ..self.opts.timing.clone()
        };
        let request = self.request(candidate, shape, &compiled, Some(timing))?;
        let mut evaluation = self.worker.eval(&request, self.timeout())?;
        evaluation.compile = Some(compiled.report.clone());
        // The worker timed its own correctness and timing; the rest of this call is `other`.
        phases.correctness_s = evaluation.phases.correctness_s;
        phases.timing_s = evaluation.phases.timing_s;
        let inside = phases.wait_s.unwrap_or(0.0)
            + phases.correctness_s.unwrap_or(0.0)
            + phases.timing_s.unwrap_or(0.0);
        phases.other_s = Some((started.elapsed().as_secs_f64() - inside).max(0.0));
        evaluation.phases = phases;
        let profiler_on = self
            .profiler
            .as_ref()
            .is_some_and(|p| p.unavailable().is_none());
        if self.opts.profile_all && profiler_on && evaluation.outcome == Outcome::Ok {
            let profiling = Instant::now();
            let profile = self.profile_compiled(candidate, shape, &compiled)?;
            evaluation.phases.profile_s = Some(profiling.elapsed().as_secs_f64());
            if let Some(p) = profile {
                // Its time is in the phases; the search asking again gets it for free.
                let p = Profile {
                    profile_s: None,
                    ..p
                };
                self.taken
                    .insert(self.queue_key(candidate, shape), p.clone());
                evaluation.profile = Some(p);
            }
        }
        if evaluation.outcome != Outcome::Ok {
            tracing::info!(
                "{}: {} {}",
                candidate.key(&self.task.space),
                evaluation.outcome,
                evaluation.message.as_deref().unwrap_or("")
            );
        }
        Ok(evaluation)
    }

    /// Compiles the candidate for every shape at once (each with its shape's defines), then
    /// runs the correctness trials shape by shape, stopping at the first failure.
    fn verify(
        &mut self,
        candidate: &Candidate,
        shapes: &[Shape],
    ) -> Result<Option<Vec<ShapeCheck>>, EvalError> {
        if !self.opts.verify_shapes {
            return Ok(None);
        }
        let jobs: Vec<Result<CompileJob, CompileError>> =
            shapes.iter().map(|s| self.job(candidate, s)).collect();
        let ready: Vec<CompileJob> = jobs
            .iter()
            .filter_map(|j| j.as_ref().ok())
            .cloned()
            .collect();
        let mut compiled = self.gate.compile_many(&ready).into_iter();
        let mut checks = Vec::with_capacity(shapes.len());
        for (shape, job) in shapes.iter().zip(jobs) {
            let c = job.and_then(|_| compiled.next().expect("one compile per job"));
            let check = self.check_at(candidate, shape, c)?;
            let failed = !check.passed();
            checks.push(check);
            if failed {
                break;
            }
        }
        Ok(Some(checks))
    }

    fn profile(
        &mut self,
        candidate: &Candidate,
        shape: &Shape,
    ) -> Result<Option<Profile>, EvalError> {
        if self.profiler.is_none() {
            return Ok(None);
        }
        if let Some(p) = self.taken.get(&self.queue_key(candidate, shape)) {
            return Ok(Some(p.clone()));
        }
        let compiled = match self.compiled(candidate, shape).0 {
            Ok(c) => c,
            Err(_) => return Ok(None),
        };
        self.profile_compiled(candidate, shape, &compiled)
    }
}

/// Whether this machine seems to have an NVIDIA GPU driver (cheap, no CUDA context).
pub fn gpu_present() -> bool {
    Path::new("/dev/nvidia0").exists() || Path::new("/proc/driver/nvidia/gpus").is_dir()
}
