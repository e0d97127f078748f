//! The worker process's side: requests in, work on the GPU, responses out.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::check::Checker;
use super::data::{
    alloc_buffers, alloc_each, load_reference, make_trial, param_list, ptr, upload, DataCache,
    References,
};
use super::measure::eval_on;
use super::{
    EvalRequest, EvalResponse, PrepareRequest, Request, Response, RunOnceRequest, RunOnceResponse,
    PROTOCOL_VERSION,
};
use crate::cuda::{CudaError, Gpu};
use crate::eval::inputs::{self, ArgSpec};
use crate::eval::Outcome;
use crate::task::ArgRole;

/// The worker's exit status after a CUDA error left its context unusable.
pub const EXIT_CONTEXT_LOST: u8 = 3;

/// Trial numbers of the timing input sets, apart from any correctness trial.
pub const TIMING_TRIAL_BASE: u64 = 1 << 32;

/// Device memory left free beside what a request needs.
pub const MEMORY_MARGIN: u64 = 256 << 20;

/// Work done so far (launches finished, checks made): a heartbeat thread tells the parent
/// when it moves, so the parent can tell a slow evaluation from a hung launch.
static PROGRESS: AtomicU64 = AtomicU64::new(0);

/// How often the heartbeat thread looks at [`PROGRESS`].
const HEARTBEAT: Duration = Duration::from_millis(200);

/// Records progress (call after each finished launch).
pub fn progress() {
    PROGRESS.fetch_add(1, Ordering::Relaxed);
}

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
    let output: Box<dyn Write + Send> = match isolate_stdout() {
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
/// says the worker exits. While a request runs, a heartbeat thread writes `{"op":"alive"}`
/// whenever work moved on since the last look (every 200 ms at most), so the parent knows a
/// long evaluation from a hung launch.
pub fn serve(input: impl BufRead, output: impl Write + Send) -> ExitCode {
    let out = Mutex::new(output);
    let busy = AtomicBool::new(false);
    let done = AtomicBool::new(false);
    std::thread::scope(|sc| {
        sc.spawn(|| heartbeat(&out, &busy, &done));
        let code = serve_lines(input, &out, &busy);
        done.store(true, Ordering::Relaxed);
        code
    })
}

fn heartbeat(out: &Mutex<impl Write>, busy: &AtomicBool, done: &AtomicBool) {
    let mut seen = PROGRESS.load(Ordering::Relaxed);
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(HEARTBEAT);
        let now = PROGRESS.load(Ordering::Relaxed);
        if now != seen && busy.load(Ordering::Relaxed) {
            if let Ok(mut o) = out.lock() {
                // The request may have finished meanwhile; an extra heartbeat is harmless.
                let _ = send(&mut *o, &Response::Alive);
            }
        }
        seen = now;
    }
}

fn serve_lines(input: impl BufRead, out: &Mutex<impl Write>, busy: &AtomicBool) -> ExitCode {
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
        busy.store(true, Ordering::Relaxed);
        let response = match serde_json::from_str::<Request>(&line) {
            Ok(req) => worker.handle(req),
            Err(e) => Response::Error {
                message: format!("a malformed request: {e}"),
                exiting: false,
            },
        };
        busy.store(false, Ordering::Relaxed);
        let sent = match out.lock() {
            Ok(mut o) => send(&mut *o, &response),
            Err(_) => Err(std::io::Error::other("the output lock is poisoned")),
        };
        if let Err(e) = sent {
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
pub enum Fail {
    /// The candidate failed on the device (or cannot be launched): `runtime_error`.
    Candidate { what: String, error: CudaError },
    /// Not the candidate's fault: an `error` response.
    Evaluator {
        message: String,
        error: Option<CudaError>,
    },
}

pub fn cand(what: &'static str) -> impl FnOnce(CudaError) -> Fail {
    move |error| Fail::Candidate {
        what: what.to_string(),
        error,
    }
}

pub fn evaluator(what: impl Into<String>) -> impl FnOnce(CudaError) -> Fail {
    let what = what.into();
    move |error| Fail::Evaluator {
        message: format!("{what}: {error}"),
        error: Some(error),
    }
}

pub fn evaluator_msg(message: impl Into<String>) -> Fail {
    Fail::Evaluator {
        message: message.into(),
        error: None,
    }
}

#[derive(Default)]
struct Worker {
    gpu: Option<Gpu>,
    gpu_error: Option<String>,
    references: References,
    data: DataCache,
    /// The checker loaded from this cubin, or why it could not be.
    checker: Option<(PathBuf, Result<Checker, String>)>,
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

    /// Loads the checker from `cubin` unless it is loaded already; a checker that does not
    /// load is said once on stderr, and the host does its work.
    fn load_checker(&mut self, cubin: Option<&Path>) {
        let (Some(path), Some(gpu)) = (cubin, self.gpu.as_ref()) else {
            return;
        };
        if self.checker.as_ref().is_some_and(|(p, _)| p == path) {
            return;
        }
        let loaded = Checker::load(gpu, path).map_err(|e| e.to_string());
        if let Err(e) = &loaded {
            eprintln!(
                "worker: the checker {} does not load ({e}); comparing on the host",
                path.display()
            );
        }
        self.checker = Some((path.to_path_buf(), loaded));
    }

    fn eval(&mut self, req: &EvalRequest) -> Response {
        if let Err(message) = self.ready(&req.args) {
            return refused(message);
        }
        self.load_checker(req.checker.as_deref());
        let Worker {
            gpu: Some(gpu),
            references,
            data,
            checker,
            ..
        } = self
        else {
            return refused("no CUDA device".into());
        };
        let checker = checker
            .as_ref()
            .filter(|(p, _)| Some(p.as_path()) == req.checker.as_deref())
            .and_then(|(_, c)| c.as_ref().ok());
        match eval_on(gpu, references, data, checker, req) {
            Ok(r) => Response::Eval(r),
            Err(fail) => {
                let (response, exiting) = failure_response(gpu, fail, |message, exiting| {
                    let mut r = EvalResponse::failed(Outcome::RuntimeError, message);
                    r.exiting = exiting;
                    Response::Eval(r)
                });
                if exiting {
                    data.clear();
                    *self.checker_mut() = None;
                }
                response
            }
        }
    }

    fn checker_mut(&mut self) -> &mut Option<(PathBuf, Result<Checker, String>)> {
        &mut self.checker
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
    let (main, ref_out) = alloc_buffers(gpu, args, reference.is_some(), None)?;
    let trials = (0..req.trials.max(1) as u64)
        .chain((0..req.input_sets as u64).map(|k| TIMING_TRIAL_BASE + k));
    let mut n = 0;
    for t in trials {
        data.get(gpu, t, || {
            make_trial(gpu, args, req.seed, t, reference, &main, &ref_out)
        })?;
        n += 1;
    }
    Ok(n)
}

fn run_once_on(gpu: &mut Gpu, req: &RunOnceRequest) -> Result<f64, Fail> {
    let args = &req.args;
    let kernel = gpu
        .load_kernel(&req.kernel.cubin, &req.kernel.entry)
        .map_err(cand("cannot load the kernel"))?;
    gpu.prepare(&kernel, &req.kernel.dims)
        .map_err(cand("the launch does not fit"))?;
    let main = alloc_each(gpu, args, |a| a.is_buffer().then(|| a.bytes()), None)?;
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
            // Heartbeats are not answers (none come without a GPU, but PROGRESS is global).
            .filter(|r| !matches!(r, Response::Alive))
            .collect();
        (code, responses)
    }

    /// Eval and prepare requests with arguments that cannot run are answered before any GPU
    /// is opened (so this holds on a machine without one), and the worker goes on.
    #[test]
    fn requests_with_bad_arguments_are_answered_without_a_gpu() {
        let kernel = super::super::KernelRef {
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
            checker: None,
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
}
