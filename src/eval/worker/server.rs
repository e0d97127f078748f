//! The worker process's side: requests in, work on the GPU, responses out.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use super::{
    BenchInfo, EvalRequest, EvalResponse, KernelRef, PrepareRequest, Request, Response,
    RunOnceRequest, RunOnceResponse, PROTOCOL_VERSION,
};
use crate::cuda::bench::{self, Plan, Prep};
use crate::cuda::{sm_clock_mhz, CudaError, DeviceBuffer, Gpu, Kernel, Param};
use crate::eval::compare::{self, short, Errors, Worst};
use crate::eval::inputs::{self, ArgSpec};
use crate::eval::{stats, Outcome};
use crate::task::{ArgRole, DType};

/// The worker's exit status after a CUDA error left its context unusable.
pub const EXIT_CONTEXT_LOST: u8 = 3;

/// Trial numbers of the timing input sets, apart from any correctness trial.
pub const TIMING_TRIAL_BASE: u64 = 1 << 32;

/// Host bytes of inputs and reference outputs kept between requests (the same for every
/// candidate of a shape, so the reference runs once per trial, not once per candidate).
const CACHE_LIMIT: usize = 8 << 30;

/// Device memory left free beside what a request needs.
const MEMORY_MARGIN: u64 = 256 << 20;

/// How `evoengineer worker [ARGS]` runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkerMode {
    /// Requests on stdin, responses on stdout.
    Serve,
    /// One request from a file, its response to a file.
    Once {
        request: std::path::PathBuf,
        response: std::path::PathBuf,
    },
}

/// Reads the worker subcommand's arguments: none, or `--once REQUEST --response RESPONSE`.
pub fn parse_worker_args<I, S>(args: I) -> Result<WorkerMode, String>
where
    I: IntoIterator<Item = S>,
    S: Into<std::ffi::OsString>,
{
    let mut request = None;
    let mut response = None;
    let mut it = args.into_iter().map(Into::into);
    while let Some(a) = it.next() {
        let slot = if a == crate::eval::profile::ONCE_FLAG {
            &mut request
        } else if a == crate::eval::profile::RESPONSE_FLAG {
            &mut response
        } else {
            return Err(format!("unexpected worker argument {a:?}"));
        };
        let Some(v) = it.next() else {
            return Err(format!("{a:?} needs a path"));
        };
        *slot = Some(std::path::PathBuf::from(v));
    }
    match (request, response) {
        (None, None) => Ok(WorkerMode::Serve),
        (Some(request), Some(response)) => Ok(WorkerMode::Once { request, response }),
        _ => Err("--once and --response go together".into()),
    }
}

/// The whole `worker` subcommand: give it the arguments after `worker`.
pub fn worker_command<I, S>(args: I) -> ExitCode
where
    I: IntoIterator<Item = S>,
    S: Into<std::ffi::OsString>,
{
    match parse_worker_args(args) {
        Ok(WorkerMode::Serve) => worker_main(),
        Ok(WorkerMode::Once { request, response }) => worker_once(&request, &response),
        Err(e) => {
            eprintln!("worker: {e}");
            ExitCode::from(2)
        }
    }
}

/// `evoengineer worker`: serves stdin/stdout until `shutdown`, end of input, or a CUDA error
/// that loses the context. Call it from the CLI; it owns the process's standard streams.
pub fn worker_main() -> ExitCode {
    let output: Box<dyn Write> = match isolate_stdout() {
        Ok(protocol) => Box::new(protocol),
        Err(e) => {
            eprintln!("worker: cannot set up its output: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stdin = std::io::stdin();
    serve(stdin.lock(), output)
}

/// `evoengineer worker --once REQUEST --response RESPONSE`: one request from a file, its
/// response to a file (for `ncu`, which wraps the whole process).
pub fn worker_once(request: &Path, response: &Path) -> ExitCode {
    if let Err(e) = isolate_stdout() {
        eprintln!("worker: cannot set up its output: {e}");
    }
    let answer = match std::fs::read_to_string(request) {
        Err(e) => Response::Error {
            message: format!("cannot read {}: {e}", request.display()),
            exiting: false,
        },
        Ok(text) => match serde_json::from_str::<Request>(&text) {
            Ok(req) => Worker::default().handle(req),
            Err(e) => Response::Error {
                message: format!("a malformed request: {e}"),
                exiting: false,
            },
        },
    };
    let text = match serde_json::to_string(&answer) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("worker: cannot encode the response: {e}");
            return ExitCode::FAILURE;
        }
    };
    match std::fs::write(response, text + "\n") {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("worker: cannot write {}: {e}", response.display());
            ExitCode::FAILURE
        }
    }
}

/// Keeps the process's stdout for the protocol and points file descriptor 1 at stderr, so
/// that anything else written to fd 1 (a kernel's `printf`, a library's chatter) lands in the
/// log instead of the protocol.
#[cfg(unix)]
fn isolate_stdout() -> std::io::Result<std::fs::File> {
    use std::os::fd::AsFd;
    std::io::stdout().flush()?;
    let protocol = std::io::stdout().as_fd().try_clone_to_owned()?;
    // SAFETY: dup2 on two descriptors the process owns; fd 1 is replaced atomically.
    if unsafe { libc::dup2(2, 1) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(std::fs::File::from(protocol))
}

#[cfg(not(unix))]
fn isolate_stdout() -> std::io::Result<std::io::Stdout> {
    Ok(std::io::stdout())
}

/// Serves requests, one JSON line each, until `shutdown`, end of input, or a response that
/// says the worker exits.
pub fn serve(input: impl BufRead, mut output: impl Write) -> ExitCode {
    let mut worker = Worker::default();
    for line in input.lines() {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                eprintln!("worker: cannot read a request: {e}");
                return ExitCode::FAILURE;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let response = match serde_json::from_str::<Request>(&line) {
            Ok(req) => worker.handle(req),
            Err(e) => Response::Error {
                message: format!("a malformed request: {e}"),
                exiting: false,
            },
        };
        if let Err(e) = send(&mut output, &response) {
            eprintln!("worker: cannot send a response: {e}");
            return ExitCode::FAILURE;
        }
        if matches!(response, Response::Bye) {
            return ExitCode::SUCCESS;
        }
        if response.exiting() {
            eprintln!("worker: the CUDA context is lost; exiting");
            return ExitCode::from(EXIT_CONTEXT_LOST);
        }
    }
    ExitCode::SUCCESS
}

fn send(out: &mut impl Write, response: &Response) -> std::io::Result<()> {
    let mut line = serde_json::to_string(response)?;
    line.push('\n');
    out.write_all(line.as_bytes())?;
    out.flush()
}

/// Why a request failed.
enum Fail {
    /// The candidate failed on the device (or cannot be launched): `runtime_error`.
    Candidate { what: String, error: CudaError },
    /// Not the candidate's fault: an `error` response.
    Evaluator {
        message: String,
        error: Option<CudaError>,
    },
}

fn cand(what: &'static str) -> impl FnOnce(CudaError) -> Fail {
    move |error| Fail::Candidate {
        what: what.to_string(),
        error,
    }
}

fn evaluator(what: impl Into<String>) -> impl FnOnce(CudaError) -> Fail {
    let what = what.into();
    move |error| Fail::Evaluator {
        message: format!("{what}: {error}"),
        error: Some(error),
    }
}

fn evaluator_msg(message: impl Into<String>) -> Fail {
    Fail::Evaluator {
        message: message.into(),
        error: None,
    }
}

/// Inputs and reference outputs of one trial, host side.
struct TrialData {
    /// Per argument: initial values (inputs and inouts), in the argument's type.
    inputs: Vec<Option<Vec<u8>>>,
    /// Per argument: the reference's outputs (outputs and inouts), f32.
    reference: Vec<Option<Vec<u8>>>,
}

impl TrialData {
    fn bytes(&self) -> usize {
        self.inputs
            .iter()
            .chain(&self.reference)
            .flatten()
            .map(Vec::len)
            .sum()
    }
}

#[derive(Default)]
struct DataCache {
    key: String,
    trials: HashMap<u64, Arc<TrialData>>,
    bytes: usize,
}

impl DataCache {
    fn use_key(&mut self, key: String) {
        if key != self.key {
            self.clear();
            self.key = key;
        }
    }

    fn clear(&mut self) {
        self.trials.clear();
        self.bytes = 0;
        self.key.clear();
    }

    fn get(
        &mut self,
        trial: u64,
        make: impl FnOnce() -> Result<TrialData, Fail>,
    ) -> Result<Arc<TrialData>, Fail> {
        if let Some(d) = self.trials.get(&trial) {
            return Ok(d.clone());
        }
        let d = Arc::new(make()?);
        let size = d.bytes();
        if self.bytes + size <= CACHE_LIMIT {
            self.bytes += size;
            self.trials.insert(trial, d.clone());
        }
        Ok(d)
    }
}

/// Reference kernels loaded so far, by cubin hash and entry.
#[derive(Default)]
struct References {
    kernels: HashMap<(String, String), Kernel>,
}

impl References {
    fn load(&mut self, gpu: &Gpu, r: &KernelRef) -> Result<(&Kernel, String), Fail> {
        let bytes = std::fs::read(&r.cubin).map_err(|e| {
            evaluator_msg(format!(
                "cannot read the reference {}: {e}",
                r.cubin.display()
            ))
        })?;
        let sha = crate::task::sha256_hex(&bytes);
        let key = (sha.clone(), r.entry.clone());
        if !self.kernels.contains_key(&key) {
            if self.kernels.len() >= 16 {
                self.kernels.clear();
            }
            let k = gpu
                .load_kernel_bytes(bytes, &r.entry)
                .map_err(evaluator("cannot load the reference kernel"))?;
            self.kernels.insert(key.clone(), k);
        }
        let kernel = &self.kernels[&key];
        gpu.prepare(kernel, &r.dims)
            .map_err(evaluator("the reference's launch does not fit the device"))?;
        Ok((kernel, sha))
    }
}

#[derive(Default)]
struct Worker {
    gpu: Option<Gpu>,
    gpu_error: Option<String>,
    references: References,
    data: DataCache,
}

impl Worker {
    fn handle(&mut self, req: Request) -> Response {
        match req {
            Request::Shutdown => Response::Bye,
            Request::Hello => match self.open() {
                Ok(gpu) => Response::Hello {
                    protocol: PROTOCOL_VERSION,
                    device: gpu.info().clone(),
                },
                Err(message) => Response::Error {
                    message,
                    exiting: false,
                },
            },
            Request::Prepare(r) => self.prepare(&r),
            Request::Eval(r) => self.eval(&r),
            Request::RunOnce(r) => self.run_once(&r),
        }
    }

    fn open(&mut self) -> Result<&mut Gpu, String> {
        if self.gpu.is_none() {
            if let Some(e) = &self.gpu_error {
                return Err(e.clone());
            }
            match Gpu::open(0) {
                Ok(g) => {
                    eprintln!("worker: {}", g.info().describe());
                    self.gpu = Some(g);
                }
                Err(e) => {
                    let message = format!("no CUDA device: {e}");
                    self.gpu_error = Some(message.clone());
                    return Err(message);
                }
            }
        }
        self.gpu
            .as_mut()
            .ok_or_else(|| "no CUDA device".to_string())
    }

    /// Checks a request's arguments and opens the GPU: the parts a request runs on, or the
    /// message of the error to answer with.
    fn ready(
        &mut self,
        args: &[ArgSpec],
    ) -> Result<(&mut Gpu, &mut References, &mut DataCache), String> {
        inputs::validate_args(args).map_err(|m| format!("a bad request: {m}"))?;
        self.open()?;
        let Worker {
            gpu,
            references,
            data,
            ..
        } = self;
        let gpu = gpu.as_mut().ok_or_else(|| "no CUDA device".to_string())?;
        Ok((gpu, references, data))
    }

    fn eval(&mut self, req: &EvalRequest) -> Response {
        let (gpu, references, data) = match self.ready(&req.args) {
            Ok(parts) => parts,
            Err(message) => return refused(message),
        };
        match eval_on(gpu, references, data, req) {
            Ok(r) => Response::Eval(r),
            Err(fail) => {
                let (response, exiting) = failure_response(gpu, fail, |message, exiting| {
                    let mut r = EvalResponse::failed(Outcome::RuntimeError, message);
                    r.exiting = exiting;
                    Response::Eval(r)
                });
                if exiting {
                    data.clear();
                }
                response
            }
        }
    }

    fn prepare(&mut self, req: &PrepareRequest) -> Response {
        let (gpu, references, data) = match self.ready(&req.args) {
            Ok(parts) => parts,
            Err(message) => return refused(message),
        };
        let start = std::time::Instant::now();
        match prepare_on(gpu, references, data, req) {
            Ok(trials) => Response::Prepared {
                trials,
                seconds: start.elapsed().as_secs_f64(),
            },
            Err(fail) => {
                let (response, exiting) = failure_response(gpu, fail, |message, exiting| {
                    Response::Error { message, exiting }
                });
                if exiting {
                    data.clear();
                }
                response
            }
        }
    }

    fn run_once(&mut self, req: &RunOnceRequest) -> Response {
        if let Err(m) = inputs::validate_args(&req.args) {
            return Response::Error {
                message: format!("a bad request: {m}"),
                exiting: false,
            };
        }
        let gpu = match self.open() {
            Ok(g) => g,
            Err(message) => return refused(message),
        };
        match run_once_on(gpu, req) {
            Ok(us) => Response::RunOnce(RunOnceResponse {
                outcome: Outcome::Ok,
                message: None,
                kernel_us: Some(us),
                exiting: false,
            }),
            Err(fail) => {
                failure_response(gpu, fail, |message, exiting| {
                    Response::RunOnce(RunOnceResponse {
                        outcome: Outcome::RuntimeError,
                        message: Some(message),
                        kernel_us: None,
                        exiting,
                    })
                })
                .0
            }
        }
    }
}

/// The response to a failure, and whether the worker must exit (the error is sticky, or the
/// context no longer synchronizes).
fn failure_response(
    gpu: &Gpu,
    fail: Fail,
    candidate: impl FnOnce(String, bool) -> Response,
) -> (Response, bool) {
    match fail {
        Fail::Candidate { what, error } => {
            let exiting = error.is_sticky() || !gpu.healthy();
            eprintln!("worker: {what}: {error}");
            (candidate(format!("{what}: {error}"), exiting), exiting)
        }
        Fail::Evaluator { message, error } => {
            let exiting = error.as_ref().is_some_and(CudaError::is_sticky) || !gpu.healthy();
            eprintln!("worker: {message}");
            (Response::Error { message, exiting }, exiting)
        }
    }
}

/// The kernel's value for a scalar argument.
fn scalar_param(a: &ArgSpec) -> Result<Param, Fail> {
    let value = a
        .value
        .ok_or_else(|| evaluator_msg(format!("scalar `{}` has no value", a.name)))?;
    let bytes = inputs::scalar_bytes(a.dtype, value)
        .map_err(|e| evaluator_msg(format!("scalar `{}`: {e}", a.name)))?;
    let word4 = |b: &[u8]| [b[0], b[1], b[2], b[3]];
    Ok(match a.dtype {
        DType::I32 => Param::I32(i32::from_le_bytes(word4(&bytes))),
        DType::F32 => Param::F32(f32::from_le_bytes(word4(&bytes))),
        DType::I64 => Param::I64(i64::from_le_bytes([
            bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
        ])),
        other => {
            return Err(evaluator_msg(format!(
                "a scalar cannot be {}",
                other.as_str()
            )))
        }
    })
}

/// The parameter list: scalars by value, buffers by the address `buffer(i)` gives.
fn param_list(
    args: &[ArgSpec],
    mut buffer: impl FnMut(usize) -> Option<u64>,
) -> Result<Vec<Param>, Fail> {
    args.iter()
        .enumerate()
        .map(|(i, a)| {
            if a.is_buffer() {
                buffer(i)
                    .map(Param::Ptr)
                    .ok_or_else(|| evaluator_msg(format!("no device buffer for `{}`", a.name)))
            } else {
                scalar_param(a)
            }
        })
        .collect()
}

/// One device buffer per argument (none for scalars and for arguments that need none).
type Buffers = Vec<Option<DeviceBuffer>>;

fn ptr(bufs: &[Option<DeviceBuffer>], i: usize) -> Option<u64> {
    bufs.get(i)?.as_ref().map(DeviceBuffer::ptr)
}

fn alloc_each(
    gpu: &Gpu,
    args: &[ArgSpec],
    bytes: impl Fn(&ArgSpec) -> Option<u64>,
) -> Result<Buffers, Fail> {
    args.iter()
        .map(|a| {
            bytes(a)
                .map(|n| gpu.alloc(n as usize))
                .transpose()
                .map_err(evaluator(format!("cannot allocate `{}`", a.name)))
        })
        .collect()
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1 << 20) as f64)
}

/// Draws a trial's inputs and, with a reference, runs it on them.
fn make_trial(
    gpu: &Gpu,
    args: &[ArgSpec],
    seed: u64,
    trial: u64,
    reference: Option<(&Kernel, &KernelRef)>,
    main: &[Option<DeviceBuffer>],
    ref_out: &[Option<DeviceBuffer>],
) -> Result<TrialData, Fail> {
    let inputs: Vec<Option<Vec<u8>>> = args
        .iter()
        .enumerate()
        .map(|(i, a)| {
            a.has_initial_values()
                .then(|| inputs::generate(&a.init, a.dtype, a.len as usize, seed, trial, i as u32))
        })
        .collect();
    let Some((kernel, r)) = reference else {
        return Ok(TrialData {
            reference: vec![None; args.len()],
            inputs,
        });
    };
    for (i, a) in args.iter().enumerate() {
        let upload_err = evaluator(format!("cannot upload `{}`", a.name));
        match (a.role, &inputs[i]) {
            (ArgRole::Input, Some(bytes)) if a.is_buffer() => {
                upload(gpu, main, i, bytes).map_err(upload_err)?
            }
            (ArgRole::Inout, Some(bytes)) => {
                let as_f32 = inputs::encode_all(DType::F32, &inputs::decode_all(a.dtype, bytes));
                upload(gpu, ref_out, i, &as_f32).map_err(upload_err)?
            }
            (ArgRole::Output, _) if a.is_buffer() => {
                if let Some(Some(buf)) = ref_out.get(i) {
                    gpu.fill(buf, inputs::poison_byte(DType::F32))
                        .map_err(upload_err)?;
                }
            }
            _ => {}
        }
    }
    let params = param_list(args, |i| {
        if args[i].is_output() {
            ptr(ref_out, i)
        } else {
            ptr(main, i)
        }
    })?;
    gpu.launch(kernel, &r.dims, &params)
        .map_err(evaluator("the reference kernel does not launch"))?;
    gpu.synchronize().map_err(evaluator(format!(
        "the reference kernel failed on trial {trial}"
    )))?;
    let mut reference_out = vec![None; args.len()];
    for (i, a) in args.iter().enumerate() {
        if !a.is_output() {
            continue;
        }
        let Some(Some(buf)) = ref_out.get(i) else {
            return Err(evaluator_msg(format!(
                "no reference buffer for `{}`",
                a.name
            )));
        };
        let out = gpu
            .download(buf)
            .map_err(evaluator("cannot read the reference's output"))?;
        let bad = out
            .chunks_exact(4)
            .filter(|b| !f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite())
            .count();
        if bad > 0 {
            return Err(evaluator_msg(format!(
                "the reference left {bad} of {} elements of `{}` NaN, Inf or unwritten on trial {trial}; \
                 the task's reference is broken",
                a.len, a.name
            )));
        }
        reference_out[i] = Some(out);
    }
    Ok(TrialData {
        inputs,
        reference: reference_out,
    })
}

/// Host bytes into an argument's device buffer.
fn upload(
    gpu: &Gpu,
    bufs: &[Option<DeviceBuffer>],
    i: usize,
    bytes: &[u8],
) -> Result<(), CudaError> {
    match bufs.get(i) {
        Some(Some(buf)) => gpu.upload(buf, bytes),
        _ => Err(CudaError::Invalid(format!(
            "argument {i} has no device buffer"
        ))),
    }
}

/// Puts a trial's inputs in place, poisons the outputs, launches the candidate and waits.
fn run_candidate(
    gpu: &Gpu,
    kernel: &Kernel,
    dims: &crate::cuda::Dims,
    args: &[ArgSpec],
    data: &TrialData,
    main: &[Option<DeviceBuffer>],
    params: &[Param],
) -> Result<(), Fail> {
    for (i, a) in args.iter().enumerate() {
        if let Some(bytes) = &data.inputs[i] {
            upload(gpu, main, i, bytes)
                .map_err(evaluator(format!("cannot upload `{}`", a.name)))?;
        } else if a.role == ArgRole::Output {
            if let Some(Some(buf)) = main.get(i) {
                gpu.fill(buf, inputs::poison_byte(a.dtype))
                    .map_err(evaluator(format!("cannot poison `{}`", a.name)))?;
            }
        }
    }
    gpu.launch(kernel, dims, params)
        .map_err(cand("the launch failed"))?;
    gpu.synchronize().map_err(cand("the kernel failed"))
}

/// Reads the outputs back and compares them (with the reference's, or alone).
fn check_outputs(
    gpu: &Gpu,
    args: &[ArgSpec],
    data: &TrialData,
    main: &[Option<DeviceBuffer>],
) -> Result<Errors, Fail> {
    let mut trial = Errors::default();
    for (i, a) in args.iter().enumerate() {
        if !a.is_output() {
            continue;
        }
        let Some(Some(buf)) = main.get(i) else {
            return Err(evaluator_msg(format!("no device buffer for `{}`", a.name)));
        };
        let out = gpu
            .download(buf)
            .map_err(evaluator(format!("cannot read `{}` back", a.name)))?;
        let e = match &data.reference[i] {
            Some(r) => compare::compare(&a.name, &out, a.dtype, r),
            None => compare::check_only(&a.name, &out, a.dtype),
        };
        trial.pool(&e);
    }
    Ok(trial)
}

/// Loads the reference (if any) and points the data cache at this (arguments, seed,
/// reference): the key under which inputs and reference outputs are reused.
fn load_reference<'a>(
    gpu: &Gpu,
    references: &'a mut References,
    data: &mut DataCache,
    reference: Option<&'a KernelRef>,
    args: &[ArgSpec],
    seed: u64,
) -> Result<Option<(&'a Kernel, &'a KernelRef)>, Fail> {
    let loaded = match reference {
        Some(r) => Some((references.load(gpu, r)?, r)),
        None => None,
    };
    let key = serde_json::to_string(&(
        args,
        seed,
        loaded.as_ref().map(|((_, sha), r)| (sha, &r.entry, r.dims)),
    ))
    .unwrap_or_default();
    data.use_key(key);
    Ok(loaded.map(|((k, _), r)| (k, r)))
}

/// Device buffers of one request: each argument in its own type (`main`), and the
/// reference's outputs in f32 (`ref_out`).
fn alloc_buffers(
    gpu: &Gpu,
    args: &[ArgSpec],
    with_reference: bool,
) -> Result<(Buffers, Buffers), Fail> {
    let main_bytes: u64 = args
        .iter()
        .filter(|a| a.is_buffer())
        .map(ArgSpec::bytes)
        .sum();
    let ref_bytes: u64 = if with_reference {
        args.iter()
            .filter(|a| a.is_output())
            .map(|a| a.len * 4)
            .sum()
    } else {
        0
    };
    let (free, _) = gpu
        .mem_info()
        .map_err(evaluator("cannot read free device memory"))?;
    let need = main_bytes + ref_bytes + gpu.flush_bytes() as u64 + MEMORY_MARGIN;
    if need > free as u64 {
        return Err(evaluator_msg(format!(
            "the arguments need {} of device memory, {} is free",
            mib(need),
            mib(free as u64)
        )));
    }
    let main = alloc_each(gpu, args, |a| a.is_buffer().then(|| a.bytes()))?;
    let ref_out = alloc_each(gpu, args, |a| {
        (with_reference && a.is_output()).then(|| a.len * 4)
    })?;
    Ok((main, ref_out))
}

/// Draws the inputs of every trial and timing set and runs the reference on them, so that
/// evaluations find them ready. Returns how many trials are ready.
fn prepare_on(
    gpu: &mut Gpu,
    references: &mut References,
    data: &mut DataCache,
    req: &PrepareRequest,
) -> Result<u32, Fail> {
    let args = &req.args;
    let reference = load_reference(
        gpu,
        references,
        data,
        req.reference.as_ref(),
        args,
        req.seed,
    )?;
    let (main, ref_out) = alloc_buffers(gpu, args, reference.is_some())?;
    let trials = (0..req.trials.max(1) as u64)
        .chain((0..req.input_sets as u64).map(|k| TIMING_TRIAL_BASE + k));
    let mut n = 0;
    for t in trials {
        data.get(t, || {
            make_trial(gpu, args, req.seed, t, reference, &main, &ref_out)
        })?;
        n += 1;
    }
    Ok(n)
}

fn eval_on(
    gpu: &mut Gpu,
    references: &mut References,
    data: &mut DataCache,
    req: &EvalRequest,
) -> Result<EvalResponse, Fail> {
    let started = std::time::Instant::now();
    let args = &req.args;
    let kernel = gpu
        .load_kernel(&req.kernel.cubin, &req.kernel.entry)
        .map_err(cand("cannot load the kernel"))?;
    gpu.prepare(&kernel, &req.kernel.dims)
        .map_err(cand("the launch does not fit"))?;
    let reference = load_reference(
        gpu,
        references,
        data,
        req.reference.as_ref(),
        args,
        req.seed,
    )?;
    let (main, ref_out) = alloc_buffers(gpu, args, reference.is_some())?;
    let params = param_list(args, |i| ptr(&main, i))?;

    // Correctness: fresh inputs every trial, outputs poisoned before every launch.
    let mut worst = Worst::default();
    for t in 0..req.trials.max(1) as u64 {
        let d = data.get(t, || {
            make_trial(gpu, args, req.seed, t, reference, &main, &ref_out)
        })?;
        run_candidate(gpu, &kernel, &req.kernel.dims, args, &d, &main, &params)?;
        let errors = check_outputs(gpu, args, &d, &main)?;
        worst.add_trial(&errors);
        if let Err(why) = compare::verdict(&errors, &req.tolerance) {
            let mut r = EvalResponse::failed(
                Outcome::Incorrect,
                format!("trial {t}: {why} ({})", errors.notes.join("; ")),
            );
            r.correctness = Some(worst.report());
            r.kernel = Some(kernel.attrs.clone());
            r.correctness_s = Some(started.elapsed().as_secs_f64());
            return Ok(r);
        }
    }
    let correctness_s = started.elapsed().as_secs_f64();
    let timing_started = std::time::Instant::now();
    let mut notes = Vec::new();
    if reference.is_none() {
        notes.push("no reference: only NaN/Inf and unwritten outputs were checked".to_string());
    }
    let mut response = EvalResponse {
        outcome: Outcome::Ok,
        message: None,
        correctness: Some(worst.report()),
        timing: None,
        kernel: Some(kernel.attrs.clone()),
        bench: None,
        correctness_s: Some(correctness_s),
        timing_s: None,
        exiting: false,
    };
    let Some(tp) = &req.timing else {
        response.message = (!notes.is_empty()).then(|| notes.join("; "));
        return Ok(response);
    };

    // Timing: input sets to rotate among, as many as fit (at least one).
    let per_set: u64 = args
        .iter()
        .filter(|a| a.has_initial_values())
        .map(ArgSpec::bytes)
        .sum();
    let (free, _) = gpu
        .mem_info()
        .map_err(evaluator("cannot read free device memory"))?;
    let room = (free as u64).saturating_sub(gpu.flush_bytes() as u64 + MEMORY_MARGIN);
    let sets = (tp.input_sets.max(1) as u64).min(room / per_set.max(1));
    if sets == 0 {
        return Err(evaluator_msg(format!(
            "no device memory left for the timing inputs ({} needed, {} free)",
            mib(per_set),
            mib(free as u64)
        )));
    }
    let mut set_data = Vec::new();
    for k in 0..sets {
        let trial = TIMING_TRIAL_BASE + k;
        set_data.push(data.get(trial, || {
            make_trial(gpu, args, req.seed, trial, reference, &main, &ref_out)
        })?);
    }
    let mut set_bufs = Vec::new();
    for d in &set_data {
        let bufs = alloc_each(gpu, args, |a| a.has_initial_values().then(|| a.bytes()))?;
        for (i, a) in args.iter().enumerate() {
            if let Some(bytes) = &d.inputs[i] {
                upload(gpu, &bufs, i, bytes)
                    .map_err(evaluator(format!("cannot upload `{}`", a.name)))?;
            }
        }
        set_bufs.push(bufs);
    }
    let mut set_params = Vec::new();
    let mut prep = Vec::new();
    for bufs in &set_bufs {
        set_params.push(param_list(args, |i| {
            if args[i].role == ArgRole::Input {
                ptr(bufs, i)
            } else {
                ptr(&main, i)
            }
        })?);
        let mut ops = Vec::new();
        for (i, a) in args.iter().enumerate() {
            match (a.role, &main[i], &bufs[i]) {
                (ArgRole::Output, Some(out), _) => {
                    ops.push(Prep::Fill(out, inputs::poison_byte(a.dtype)))
                }
                (ArgRole::Inout, Some(work), Some(initial)) => ops.push(Prep::Copy {
                    dst: work,
                    src: initial,
                }),
                _ => {}
            }
        }
        prep.push(ops);
    }
    let plan = Plan {
        kernel: &kernel,
        dims: req.kernel.dims,
        sets: set_params,
        prep,
        warmup_ms: tp.warmup_ms,
        iterations: tp.iterations.max(1),
        min_iterations: tp.min_iterations,
        budget_ms: tp.budget_ms,
    };
    let uuid = gpu.info().uuid.clone();
    let clock_before = sm_clock_mhz(&uuid);
    let measured = bench::run(gpu, &plan).map_err(cand("a timed launch failed"))?;
    let clock_after = sm_clock_mhz(&uuid);

    // The last timed launch's outputs are still there: they must match its input set.
    let errors = check_outputs(gpu, args, &set_data[measured.last_set], &main)?;
    if let Err(why) = compare::verdict(&errors, &req.tolerance) {
        let mut r = EvalResponse::failed(
            Outcome::Incorrect,
            format!(
                "the last timed launch (input set {}) is wrong: {why} ({}); the kernel may keep results \
                 between launches",
                measured.last_set,
                errors.notes.join("; ")
            ),
        );
        r.correctness = Some(worst.report());
        r.kernel = Some(kernel.attrs.clone());
        r.correctness_s = Some(correctness_s);
        r.timing_s = Some(timing_started.elapsed().as_secs_f64());
        return Ok(r);
    }
    let tail_p50 = stats::summarize(&measured.tail_us)
        .map(|s| s.p50)
        .unwrap_or(0.0);
    let timing = stats::timing(measured.samples_us.clone(), clock_before, clock_after)
        .ok_or_else(|| evaluator_msg("the timing loop gave no finite sample"))?;
    if tail_p50 > timing.p50_us.max(500.0) {
        notes.push(format!(
            "suspect: each launch took {} μs longer on the host clock than on the GPU's events (p50); \
             work may outlive the kernel's end event",
            short(tail_p50)
        ));
    }
    if timing.clock_dropped {
        notes.push(format!(
            "the SM clock fell from {} to {} MHz during timing",
            clock_before.unwrap_or(0),
            clock_after.unwrap_or(0)
        ));
    }
    response.bench = Some(BenchInfo {
        iterations: measured.samples_us.len() as u32,
        warmup_samples: measured.warmup_samples,
        warmup_ms: measured.warmup_ms,
        input_sets: sets as u32,
        flush_bytes: measured.flush_bytes as u64,
        tail_p50_us: tail_p50,
    });
    response.timing = Some(timing);
    response.message = (!notes.is_empty()).then(|| notes.join("; "));
    response.timing_s = Some(timing_started.elapsed().as_secs_f64());
    Ok(response)
}

fn run_once_on(gpu: &mut Gpu, req: &RunOnceRequest) -> Result<f64, Fail> {
    let args = &req.args;
    let kernel = gpu
        .load_kernel(&req.kernel.cubin, &req.kernel.entry)
        .map_err(cand("cannot load the kernel"))?;
    gpu.prepare(&kernel, &req.kernel.dims)
        .map_err(cand("the launch does not fit"))?;
    let main = alloc_each(gpu, args, |a| a.is_buffer().then(|| a.bytes()))?;
    let data = make_trial(gpu, args, req.seed, req.trial, None, &main, &[])?;
    let params = param_list(args, |i| ptr(&main, i))?;
    for (i, a) in args.iter().enumerate() {
        if let Some(bytes) = &data.inputs[i] {
            upload(gpu, &main, i, bytes)
                .map_err(evaluator(format!("cannot upload `{}`", a.name)))?;
        } else if a.role == ArgRole::Output {
            if let Some(Some(buf)) = main.get(i) {
                gpu.fill(buf, inputs::poison_byte(a.dtype))
                    .map_err(evaluator(format!("cannot poison `{}`", a.name)))?;
            }
        }
    }
    let ev = gpu.events().map_err(evaluator("cannot create events"))?;
    gpu.synchronize()
        .map_err(evaluator("cannot prepare the inputs"))?;
    gpu.record(&ev, 1)
        .map_err(evaluator("cannot record an event"))?;
    gpu.launch(&kernel, &req.kernel.dims, &params)
        .map_err(cand("the launch failed"))?;
    gpu.record(&ev, 2)
        .map_err(evaluator("cannot record an event"))?;
    gpu.synchronize().map_err(cand("the kernel failed"))?;
    let ms = gpu
        .elapsed_ms(&ev, 1, 2)
        .map_err(evaluator("cannot read the events"))?;
    Ok(ms * 1e3)
}

/// The answer to a request that cannot run (the worker goes on).
fn refused(message: String) -> Response {
    Response::Error {
        message,
        exiting: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &str) -> (ExitCode, Vec<Response>) {
        let mut out = Vec::new();
        let code = serve(input.as_bytes(), &mut out);
        let responses = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (code, responses)
    }

    /// Eval and prepare requests with arguments that cannot run are answered before any GPU
    /// is opened (so this holds on a machine without one), and the worker goes on.
    #[test]
    fn requests_with_bad_arguments_are_answered_without_a_gpu() {
        let kernel = KernelRef {
            cubin: "/nonexistent.cubin".into(),
            entry: "k".into(),
            dims: crate::cuda::Dims {
                grid: [1, 1, 1],
                block: [32, 1, 1],
                smem: 0,
            },
        };
        let eval = Request::Eval(EvalRequest {
            kernel,
            reference: None,
            args: Vec::new(),
            trials: 1,
            seed: 0,
            tolerance: crate::task::Tolerance::default(),
            timing: None,
        });
        let input = format!(
            "{}\n{{\"op\":\"prepare\",\"args\":[]}}\n{{\"op\":\"shutdown\"}}\n",
            serde_json::to_string(&eval).unwrap()
        );
        let (code, r) = run(&input);
        assert_eq!(code, ExitCode::SUCCESS);
        assert_eq!(r.len(), 3, "{r:?}");
        for resp in &r[..2] {
            assert!(
                matches!(resp, Response::Error { message, exiting: false }
                    if message == "a bad request: the kernel has no arguments"),
                "{resp:?}"
            );
        }
        assert_eq!(r[2], Response::Bye);
    }

    #[test]
    fn malformed_requests_get_an_error_and_the_worker_goes_on() {
        let (code, r) =
            run("not json\n\n{\"op\":\"dance\"}\n{\"op\":\"shutdown\"}\n{\"op\":\"hello\"}\n");
        assert_eq!(code, ExitCode::SUCCESS);
        assert_eq!(r.len(), 3, "{r:?}");
        assert!(
            matches!(&r[0], Response::Error { message, exiting: false } if message.contains("malformed"))
        );
        assert!(matches!(&r[1], Response::Error { .. }));
        assert_eq!(r[2], Response::Bye);
    }

    #[test]
    fn without_a_gpu_hello_and_eval_say_so() {
        if Gpu::driver_present() {
            return; // this test is about machines without a driver
        }
        let eval = r#"{"op":"eval","kernel":{"cubin":"k.cubin","entry":"k","dims":{"grid":[1,1,1],"block":[32,1,1]}},"args":[{"name":"O","kind":"buffer","dtype":"f32","role":"output","len":32}]}"#;
        let (code, r) = run(&format!("{{\"op\":\"hello\"}}\n{eval}\n"));
        assert_eq!(code, ExitCode::SUCCESS);
        assert_eq!(r.len(), 2);
        for resp in &r {
            assert!(
                matches!(resp, Response::Error { message, exiting: false } if message.contains("no CUDA")),
                "{resp:?}"
            );
        }
    }

    #[test]
    fn bad_arguments_are_refused_before_the_gpu() {
        let eval = r#"{"op":"eval","kernel":{"cubin":"k.cubin","entry":"k","dims":{"grid":[1,1,1],"block":[32,1,1]}},"args":[{"name":"A","kind":"buffer","dtype":"f32","len":32}]}"#;
        let (_, r) = run(&format!("{eval}\n"));
        assert!(
            matches!(&r[0], Response::Error { message, .. } if message.contains("no argument is an output"))
        );
    }

    #[test]
    fn once_mode_writes_its_response_to_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let req = dir.path().join("req.json");
        let resp = dir.path().join("resp.json");
        std::fs::write(&req, r#"{"op":"shutdown"}"#).unwrap();
        // worker_once redirects fd 1; do not call it in the test process. Check the parts.
        let text = std::fs::read_to_string(&req).unwrap();
        let answer = Worker::default().handle(serde_json::from_str(&text).unwrap());
        std::fs::write(&resp, serde_json::to_string(&answer).unwrap()).unwrap();
        let back: Response =
            serde_json::from_str(&std::fs::read_to_string(&resp).unwrap()).unwrap();
        assert_eq!(back, Response::Bye);
    }

    #[test]
    fn worker_arguments() {
        let none: [&str; 0] = [];
        assert_eq!(parse_worker_args(none), Ok(WorkerMode::Serve));
        assert_eq!(
            parse_worker_args(["--once", "r.json", "--response", "s.json"]),
            Ok(WorkerMode::Once {
                request: "r.json".into(),
                response: "s.json".into()
            })
        );
        assert!(parse_worker_args(["--once", "r.json"]).is_err());
        assert!(parse_worker_args(["--once"]).is_err());
        assert!(parse_worker_args(["--bogus"]).is_err());
    }

    #[test]
    fn scalar_parameters() {
        let a = |dtype, value| ArgSpec {
            name: "s".into(),
            kind: crate::task::ArgKind::Scalar,
            dtype,
            role: ArgRole::Input,
            init: Default::default(),
            len: 0,
            shape: vec![],
            value: Some(value),
        };
        use inputs::Scalar;
        assert_eq!(
            scalar_param(&a(DType::I32, Scalar::Int(-3))).ok(),
            Some(Param::I32(-3))
        );
        assert_eq!(
            scalar_param(&a(DType::I64, Scalar::Int(1 << 40))).ok(),
            Some(Param::I64(1 << 40))
        );
        assert_eq!(
            scalar_param(&a(DType::F32, Scalar::Float(0.5))).ok(),
            Some(Param::F32(0.5))
        );
        assert!(scalar_param(&a(DType::I32, Scalar::Int(1 << 40))).is_err());
    }
}
