//! The parent's side: a worker child process, requests answered within a deadline, and
//! recovery when the worker hangs, dies or talks nonsense.
//!
//! The worker starts on the first request and again on the first request after it went away.
//! A timeout kills it (SIGKILL) and reaps it; so does a garbled answer. A worker that says it
//! is exiting (its CUDA context is lost) is reaped after its answer.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{
    EvalRequest, EvalResponse, PrepareRequest, Request, Response, RunOnceRequest, WORKER_SUBCOMMAND,
};
use crate::cuda::DeviceInfo;
use crate::eval::{EvalError, Evaluation, Outcome};

/// Lines of the worker's stderr kept for messages.
const STDERR_LINES: usize = 40;
/// Bytes of one stderr line kept (a kernel's `printf` may write one huge line).
const STDERR_LINE_BYTES: usize = 400;

/// Why a request got no proper answer.
#[derive(Debug, thiserror::Error)]
pub enum WorkerFailure {
    #[error("cannot start the worker `{program}`: {source}")]
    Spawn {
        program: PathBuf,
        source: std::io::Error,
    },
    #[error("the worker gave no answer within {:.1} s and was killed{}", after.as_secs_f64(), tail(stderr))]
    Timeout { after: Duration, stderr: String },
    #[error(
        "no launch finished for {:.1} s (the task's timeout, plus a second): the kernel hangs; the worker was killed {:.1} s into the request{}",
        quiet.as_secs_f64(),
        after.as_secs_f64(),
        tail(stderr)
    )]
    Hung {
        quiet: Duration,
        after: Duration,
        stderr: String,
    },
    #[error("the worker died ({status}){}", tail(stderr))]
    Died { status: String, stderr: String },
    #[error(
        "the worker answered something that is not a response: {line:?}{}",
        tail(stderr)
    )]
    Garbage { line: String, stderr: String },
}

fn tail(stderr: &str) -> String {
    if stderr.trim().is_empty() {
        String::new()
    } else {
        format!("; its stderr ends: {}", stderr.trim())
    }
}

struct Running {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<std::io::Result<String>>,
    stderr: Arc<Mutex<VecDeque<String>>>,
}

impl Running {
    fn stderr_tail(&self) -> String {
        // Give the stderr reader a moment to catch the last lines of a dying worker.
        std::thread::sleep(Duration::from_millis(20));
        self.stderr
            .lock()
            .map(|t| t.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }
}

/// A worker process and the requests sent to it.
pub struct WorkerHandle {
    program: PathBuf,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    running: Option<Running>,
    spawned: u32,
    prepare: bool,
    prepare_timeout: Duration,
    /// The worker (by spawn number) and the preparation it has.
    prepared: Option<(u32, String)>,
    /// An evaluation that shows no progress (no heartbeat) for this long is a hang.
    hang: Option<Duration>,
}

impl WorkerHandle {
    /// This executable's `worker` subcommand.
    pub fn new() -> std::io::Result<WorkerHandle> {
        Ok(WorkerHandle::with_command(
            std::env::current_exe()?,
            [WORKER_SUBCOMMAND],
        ))
    }

    /// Any program that speaks the protocol (tests use shell scripts).
    pub fn with_command<I, S>(program: impl Into<PathBuf>, args: I) -> WorkerHandle
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        WorkerHandle {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            envs: Vec::new(),
            running: None,
            spawned: 0,
            prepare: true,
            prepare_timeout: Duration::from_secs(600),
            prepared: None,
            hang: None,
        }
    }

    /// Sets an environment variable of future workers (e.g. `CUDA_VISIBLE_DEVICES`).
    pub fn env(&mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> &mut Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// Whether each fresh worker gets a `prepare` request before its first evaluation (on by
    /// default), and its deadline. Preparing draws the inputs and runs the reference for every
    /// trial, so that an evaluation's deadline covers only the candidate's own work.
    pub fn set_prepare(&mut self, prepare: bool, timeout: Duration) -> &mut Self {
        self.prepare = prepare;
        self.prepare_timeout = timeout;
        self
    }

    /// An evaluation whose worker reports no progress for `limit` is killed as hung (its
    /// outcome `timeout`), however much of its whole deadline is left. `None`: only the
    /// deadline counts.
    pub fn set_hang_limit(&mut self, limit: Option<Duration>) -> &mut Self {
        self.hang = limit;
        self
    }

    pub fn program(&self) -> &Path {
        &self.program
    }

    /// Whether a worker process is up.
    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// The worker's process id, while one is up.
    pub fn pid(&self) -> Option<u32> {
        self.running.as_ref().map(|r| r.child.id())
    }

    /// Workers started so far.
    pub fn spawned(&self) -> u32 {
        self.spawned
    }

    fn spawn(&mut self) -> Result<&mut Running, WorkerFailure> {
        if self.running.is_none() {
            let mut cmd = Command::new(&self.program);
            cmd.args(&self.args)
                .envs(self.envs.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let spawn_err = |source| WorkerFailure::Spawn {
                program: self.program.clone(),
                source,
            };
            let mut child = cmd.spawn().map_err(spawn_err)?;
            let (Some(stdin), Some(stdout), Some(stderr)) =
                (child.stdin.take(), child.stdout.take(), child.stderr.take())
            else {
                let _ = child.kill();
                let _ = child.wait();
                return Err(spawn_err(std::io::Error::other("no pipes to the worker")));
            };
            let (tx, lines) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let end = line.is_err();
                    if tx.send(line).is_err() || end {
                        break;
                    }
                }
            });
            let tail = Arc::new(Mutex::new(VecDeque::new()));
            let sink = tail.clone();
            std::thread::spawn(move || {
                // Bytes, not UTF-8 lines: a kernel may print anything, and the pipe must be
                // drained whatever it is, or the worker blocks on its next write.
                let mut reader = BufReader::new(stderr);
                let mut raw = Vec::new();
                loop {
                    raw.clear();
                    match reader.read_until(b'\n', &mut raw) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    let keep = &raw[..raw.len().min(STDERR_LINE_BYTES)];
                    let line = String::from_utf8_lossy(keep).trim_end().to_string();
                    tracing::debug!(target: "evoengineer::worker", "{line}");
                    if let Ok(mut t) = sink.lock() {
                        if t.len() == STDERR_LINES {
                            t.pop_front();
                        }
                        t.push_back(line);
                    }
                }
            });
            self.spawned += 1;
            self.running = Some(Running {
                child,
                stdin,
                lines,
                stderr: tail,
            });
        }
        self.running.as_mut().ok_or_else(|| WorkerFailure::Died {
            status: "not started".into(),
            stderr: String::new(),
        })
    }

    /// Sends one request and waits up to `timeout` for its answer.
    pub fn request(
        &mut self,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, WorkerFailure> {
        let line = serde_json::to_string(request).map_err(|e| WorkerFailure::Garbage {
            line: format!("(cannot encode the request: {e})"),
            stderr: String::new(),
        })?;
        self.exchange(&line, timeout, None)
    }

    /// Sends `line` and waits for the answer until `timeout`, or until the worker has shown no
    /// progress for `hang` (heartbeats, `Response::Alive`, reset that clock).
    fn exchange(
        &mut self,
        line: &str,
        timeout: Duration,
        hang: Option<Duration>,
    ) -> Result<Response, WorkerFailure> {
        let start = Instant::now();
        let deadline = start + timeout;
        let mut heard = start;
        let running = self.spawn()?;
        let sent = running
            .stdin
            .write_all(line.as_bytes())
            .and_then(|()| running.stdin.write_all(b"\n"))
            .and_then(|()| running.stdin.flush());
        if sent.is_err() {
            return Err(self.died());
        }
        loop {
            let Some(running) = self.running.as_mut() else {
                return Err(self.died());
            };
            let quiet_end = hang.map_or(deadline, |h| (heard + h).min(deadline));
            let left = quiet_end.saturating_duration_since(Instant::now());
            match running.lines.recv_timeout(left) {
                Ok(Ok(text)) if text.trim().is_empty() => continue,
                Ok(Ok(text)) => {
                    return match serde_json::from_str::<Response>(&text) {
                        Ok(Response::Alive) => {
                            heard = Instant::now();
                            continue;
                        }
                        Ok(response) => {
                            if response.exiting() {
                                self.reap(Duration::from_secs(5));
                            }
                            Ok(response)
                        }
                        Err(_) => {
                            let stderr = running.stderr_tail();
                            self.kill();
                            Err(WorkerFailure::Garbage {
                                line: crate::eval::subprocess::tail_chars(&text, 300),
                                stderr,
                            })
                        }
                    };
                }
                Ok(Err(_)) | Err(RecvTimeoutError::Disconnected) => return Err(self.died()),
                Err(RecvTimeoutError::Timeout) => {
                    let stderr = running.stderr_tail();
                    self.kill();
                    if quiet_end < deadline {
                        return Err(WorkerFailure::Hung {
                            quiet: hang.unwrap_or_default(),
                            after: start.elapsed(),
                            stderr,
                        });
                    }
                    return Err(WorkerFailure::Timeout {
                        after: timeout,
                        stderr,
                    });
                }
            }
        }
    }

    /// The worker's stdout ended: collect its exit status and last words.
    fn died(&mut self) -> WorkerFailure {
        let Some(mut running) = self.running.take() else {
            return WorkerFailure::Died {
                status: "gone".into(),
                stderr: String::new(),
            };
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        let status = loop {
            match running.child.try_wait() {
                Ok(Some(status)) => break status.to_string(),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Ok(None) => {
                    let _ = running.child.kill();
                    let _ = running.child.wait();
                    break "closed its output and was killed".to_string();
                }
                Err(e) => break format!("unknown status: {e}"),
            }
        };
        let stderr = running.stderr_tail();
        WorkerFailure::Died { status, stderr }
    }

    /// Waits up to `grace` for a worker that said it exits, then kills it.
    fn reap(&mut self, grace: Duration) {
        if let Some(mut running) = self.running.take() {
            drop(running.stdin);
            let deadline = Instant::now() + grace;
            loop {
                match running.child.try_wait() {
                    Ok(Some(_)) | Err(_) => return,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Ok(None) => break,
                }
            }
            kill_and_reap(running.child);
        }
    }

    /// Kills the worker now (if any) and reaps it.
    pub fn kill(&mut self) {
        if let Some(running) = self.running.take() {
            kill_and_reap(running.child);
        }
    }

    /// Asks the worker to exit, and kills it if it does not within a second.
    pub fn shutdown(&mut self) {
        if self.running.is_some() {
            let _ = self.request(&Request::Shutdown, Duration::from_secs(1));
            self.reap(Duration::from_secs(1));
        }
    }

    /// The device the worker sees.
    pub fn hello(&mut self, timeout: Duration) -> Result<DeviceInfo, EvalError> {
        match self.request(&Request::Hello, timeout) {
            Ok(Response::Hello { device, .. }) => Ok(device),
            Ok(Response::Error { message, .. }) => Err(EvalError::Device(message)),
            Ok(other) => Err(EvalError::Other(format!(
                "the worker answered hello with {other:?}"
            ))),
            Err(e) => Err(EvalError::Device(e.to_string())),
        }
    }

    /// Takes a compiled candidate through correctness and timing in the worker. Failures of
    /// the candidate (a fault, a hang, wrong outputs) are outcomes; failures of the evaluator
    /// (no device, a broken reference, no worker at all) are errors.
    pub fn eval(
        &mut self,
        request: &EvalRequest,
        timeout: Duration,
    ) -> Result<Evaluation, EvalError> {
        self.eval_response(request, timeout)
            .map(EvalResponse::into_evaluation)
    }

    /// [`WorkerHandle::eval`] with everything the worker said: the kernel's attributes as the
    /// driver reports them, and the details of the timing loop.
    pub fn eval_response(
        &mut self,
        request: &EvalRequest,
        timeout: Duration,
    ) -> Result<EvalResponse, EvalError> {
        self.ensure_prepared(request)?;
        let line = serde_json::to_string(&Request::Eval(request.clone()))
            .map_err(|e| EvalError::Other(format!("cannot encode the request: {e}")))?;
        match self.exchange(&line, timeout, self.hang) {
            Ok(Response::Eval(r)) => Ok(r),
            Ok(Response::Error { message, .. }) => Err(EvalError::Device(message)),
            Ok(other) => Err(EvalError::Other(format!(
                "the worker answered eval with {other:?}"
            ))),
            Err(e) => failure_evaluation(e).map(|ev| EvalResponse {
                outcome: ev.outcome,
                message: ev.message,
                correctness: None,
                timing: None,
                kernel: None,
                bench: None,
                correctness_s: None,
                timing_s: None,
                exiting: true,
            }),
        }
    }

    /// Sends `prepare` unless this worker already has what `request` needs.
    fn ensure_prepared(&mut self, request: &EvalRequest) -> Result<(), EvalError> {
        if !self.prepare {
            return Ok(());
        }
        let prep = PrepareRequest::for_eval(request);
        let key = serde_json::to_string(&prep).unwrap_or_default();
        if self.running.is_some() && self.prepared.as_ref() == Some(&(self.spawned, key.clone())) {
            return Ok(());
        }
        match self.request(&Request::Prepare(prep), self.prepare_timeout) {
            Ok(Response::Prepared { trials, seconds }) => {
                tracing::debug!(
                    "worker {}: {trials} trials prepared in {seconds:.1} s",
                    self.spawned
                );
                self.prepared = Some((self.spawned, key));
                Ok(())
            }
            Ok(Response::Error { message, .. }) => Err(EvalError::Device(format!(
                "preparing the inputs and the reference: {message}"
            ))),
            Ok(other) => Err(EvalError::Other(format!(
                "the worker answered prepare with {other:?}"
            ))),
            Err(e) => Err(EvalError::Device(format!(
                "preparing the inputs and the reference: {e}"
            ))),
        }
    }

    /// One launch (the profiler runs its own worker; this is for checks and tests).
    pub fn run_once(
        &mut self,
        request: &RunOnceRequest,
        timeout: Duration,
    ) -> Result<Evaluation, EvalError> {
        match self.request(&Request::RunOnce(request.clone()), timeout) {
            Ok(Response::RunOnce(r)) => Ok(Evaluation {
                outcome: r.outcome,
                message: r.message,
                compile: None,
                correctness: None,
                timing: None,
                profile: None,
                phases: crate::eval::Phases::default(),
            }),
            Ok(Response::Error { message, .. }) => Err(EvalError::Device(message)),
            Ok(other) => Err(EvalError::Other(format!(
                "the worker answered run_once with {other:?}"
            ))),
            Err(e) => failure_evaluation(e),
        }
    }
}

fn failure_evaluation(e: WorkerFailure) -> Result<Evaluation, EvalError> {
    match e {
        WorkerFailure::Timeout { .. } | WorkerFailure::Hung { .. } => {
            Ok(Evaluation::failed(Outcome::Timeout, e.to_string()))
        }
        WorkerFailure::Died { .. } | WorkerFailure::Garbage { .. } => {
            Ok(Evaluation::failed(Outcome::RuntimeError, e.to_string()))
        }
        WorkerFailure::Spawn { .. } => Err(EvalError::Device(e.to_string())),
    }
}

fn kill_and_reap(mut child: Child) {
    let _ = child.kill();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) | Err(_) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // Stuck in the driver: let a thread wait for it rather than block the run.
    std::thread::spawn(move || {
        let _ = child.wait();
    });
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda::Dims;
    use crate::eval::inputs::ArgSpec;
    use crate::eval::worker::KernelRef;
    use crate::task::{ArgKind, ArgRole, DType, Init};

    /// A fake worker that knows nothing of `prepare`.
    fn fake(script: &str) -> WorkerHandle {
        let mut w = WorkerHandle::with_command("sh", ["-c", script]);
        w.set_prepare(false, Duration::from_secs(10));
        w
    }

    fn eval_request() -> EvalRequest {
        EvalRequest {
            kernel: KernelRef {
                cubin: "k.cubin".into(),
                entry: "k".into(),
                dims: Dims {
                    grid: [1, 1, 1],
                    block: [32, 1, 1],
                    smem: 0,
                },
            },
            reference: None,
            args: vec![ArgSpec {
                name: "O".into(),
                kind: ArgKind::Buffer,
                dtype: DType::F32,
                role: ArgRole::Output,
                init: Init::default(),
                len: 32,
                shape: vec![],
                value: None,
            }],
            trials: 5,
            seed: 1,
            tolerance: Default::default(),
            timing: None,
            checker: None,
        }
    }

    fn alive(pid: u32) -> bool {
        // A reaped child has no /proc entry (a zombie would still have one).
        Path::new(&format!("/proc/{pid}")).exists()
    }

    const SERVER: &str = r#"
        while IFS= read -r line; do
          case "$line" in
            *'"hello"'*) echo '{"op":"hello","protocol":1,"device":{"name":"Fake GPU","sm_count":132}}' ;;
            *'"prepare"'*) echo '{"op":"prepared","trials":5,"seconds":0.5}' ;;
            *'"eval"'*) echo '{"op":"eval","outcome":"ok","correctness":{"trials":5,"max_abs_err":0.01},"timing":{"p50_us":10.0,"p90_us":11.0}}' ;;
            *'"shutdown"'*) echo '{"op":"bye"}'; exit 0 ;;
            *) echo '{"op":"error","message":"unknown"}' ;;
          esac
        done"#;

    #[test]
    fn each_fresh_worker_is_prepared_once_per_kind_of_request() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("ops");
        let script = format!(
            r#"while IFS= read -r line; do case "$line" in
                 *'"prepare"'*) echo prepare >> '{log}'; echo '{{"op":"prepared","trials":5,"seconds":0.5}}' ;;
                 *'"eval"'*) echo eval >> '{log}'; echo '{{"op":"eval","outcome":"ok"}}' ;;
               esac; done"#,
            log = log.display()
        );
        let mut w = WorkerHandle::with_command("sh", ["-c", &script]);
        let t = Duration::from_secs(10);
        for _ in 0..3 {
            assert_eq!(w.eval(&eval_request(), t).unwrap().outcome, Outcome::Ok);
        }
        let mut other_seed = eval_request();
        other_seed.seed = 2;
        assert_eq!(w.eval(&other_seed, t).unwrap().outcome, Outcome::Ok);
        w.kill();
        assert_eq!(w.eval(&other_seed, t).unwrap().outcome, Outcome::Ok);
        let ops = std::fs::read_to_string(&log).unwrap();
        let ops: Vec<&str> = ops.lines().collect();
        assert_eq!(
            ops,
            ["prepare", "eval", "eval", "eval", "prepare", "eval", "prepare", "eval"]
        );
    }

    #[test]
    fn a_preparation_that_hangs_is_an_evaluator_error() {
        let mut w = WorkerHandle::with_command("sh", ["-c", "read line; exec sleep 1000"]);
        w.set_prepare(true, Duration::from_millis(300));
        let err = w
            .eval(&eval_request(), Duration::from_secs(10))
            .unwrap_err();
        assert!(err.to_string().contains("preparing"), "{err}");
        assert!(!w.is_running());
    }

    #[test]
    fn a_working_worker_answers_many_requests() {
        let mut w = fake(SERVER);
        let device = w.hello(Duration::from_secs(10)).unwrap();
        assert_eq!(device.name, "Fake GPU");
        assert_eq!(device.sm_count, 132);
        for _ in 0..3 {
            let e = w.eval(&eval_request(), Duration::from_secs(10)).unwrap();
            assert_eq!(e.outcome, Outcome::Ok);
            assert_eq!(e.p50_us(), Some(10.0));
        }
        assert_eq!(w.spawned(), 1);
        let pid = w.pid().unwrap();
        w.shutdown();
        assert!(!w.is_running());
        assert!(!alive(pid));
    }

    #[test]
    fn a_hung_worker_is_killed_and_reaped_at_the_deadline_and_restarted() {
        let mut w = fake("read line; exec sleep 1000");
        let start = Instant::now();
        let e = w.eval(&eval_request(), Duration::from_millis(300)).unwrap();
        assert!(start.elapsed() < Duration::from_secs(5));
        assert_eq!(e.outcome, Outcome::Timeout);
        assert!(e.message.unwrap().contains("no answer within 0.3 s"));
        assert!(!w.is_running());
        // The next request starts a fresh worker.
        let e = w.eval(&eval_request(), Duration::from_millis(300)).unwrap();
        assert_eq!(e.outcome, Outcome::Timeout);
        assert_eq!(w.spawned(), 2);
    }

    #[test]
    fn a_launch_that_shows_no_progress_is_killed_at_the_hang_limit_not_the_deadline() {
        let mut w = fake("read line; exec sleep 1000");
        w.set_hang_limit(Some(Duration::from_millis(400)));
        let start = Instant::now();
        let e = w.eval(&eval_request(), Duration::from_secs(60)).unwrap();
        let took = start.elapsed();
        assert!(took < Duration::from_secs(3), "{took:?}");
        assert_eq!(e.outcome, Outcome::Timeout);
        let m = e.message.unwrap();
        assert!(m.contains("no launch finished for 0.4 s"), "{m}");
        assert!(!w.is_running());
    }

    #[test]
    fn heartbeats_keep_a_long_evaluation_alive_past_the_hang_limit() {
        // Ten heartbeats 150 ms apart (1.5 s in all), each within the 400 ms hang limit.
        let script = r#"read line; for i in 1 2 3 4 5 6 7 8 9 10; do echo '{"op":"alive"}'; sleep 0.15; done
            echo '{"op":"eval","outcome":"ok","timing":{"p50_us":10.0,"p90_us":11.0}}'; exec sleep 1000"#;
        let mut w = fake(script);
        w.set_hang_limit(Some(Duration::from_millis(400)));
        let e = w.eval(&eval_request(), Duration::from_secs(60)).unwrap();
        assert_eq!(e.outcome, Outcome::Ok, "{:?}", e.message);
        // ... but not past the whole deadline.
        let mut w = fake(script);
        w.set_hang_limit(Some(Duration::from_millis(400)));
        let e = w.eval(&eval_request(), Duration::from_millis(700)).unwrap();
        assert_eq!(e.outcome, Outcome::Timeout);
        assert!(e.message.unwrap().contains("no answer within 0.7 s"));
    }

    #[test]
    fn stderr_that_is_not_utf8_is_drained_and_the_worker_goes_on() {
        // 4 MiB of invalid UTF-8 on stderr (far more than a pipe holds), then an answer: a
        // parent that stopped reading stderr at the first bad byte would leave the worker
        // blocked on its write, and the request would time out.
        let script = r#"read line; head -c 4194304 /dev/zero | tr '\000' '\377' >&2; printf '\n\303\050 last words\n' >&2
            echo '{"op":"eval","outcome":"incorrect","message":"half of y"}'; read line
            echo '{"op":"eval","outcome":"ok","timing":{"p50_us":10.0,"p90_us":11.0}}'; exec sleep 1000"#;
        let mut w = fake(script);
        let e = w.eval(&eval_request(), Duration::from_secs(20)).unwrap();
        assert_eq!(e.outcome, Outcome::Incorrect, "{:?}", e.message);
        let e = w.eval(&eval_request(), Duration::from_secs(20)).unwrap();
        assert_eq!(e.outcome, Outcome::Ok, "{:?}", e.message);
        let tail = w.running.as_ref().unwrap().stderr_tail();
        assert!(tail.contains("last words"), "{tail}");
        assert!(
            tail.lines().all(|l| l.len() <= 3 * STDERR_LINE_BYTES),
            "lines are cut"
        );
    }

    #[test]
    fn the_killed_process_is_gone() {
        let mut w = fake("read line; exec sleep 1000");
        // Start it with a request that times out, catching its pid first.
        let _ = w.spawn().unwrap();
        let pid = w.pid().unwrap();
        let err = w
            .request(&Request::Hello, Duration::from_millis(200))
            .unwrap_err();
        assert!(matches!(err, WorkerFailure::Timeout { .. }), "{err}");
        assert!(!alive(pid), "pid {pid} still exists");
    }

    #[test]
    fn a_crash_is_a_runtime_error_with_the_stderr_tail() {
        let mut w = fake("read line; echo 'thread main panicked: boom' >&2; exit 101");
        let e = w.eval(&eval_request(), Duration::from_secs(10)).unwrap();
        assert_eq!(e.outcome, Outcome::RuntimeError);
        let m = e.message.unwrap();
        assert!(
            m.contains("died") && m.contains("101") && m.contains("boom"),
            "{m}"
        );
        assert!(!w.is_running());
    }

    #[test]
    fn a_garbage_answer_kills_the_worker() {
        let mut w = fake("read line; echo 'this is not json'; exec sleep 1000");
        let _ = w.spawn().unwrap();
        let pid = w.pid().unwrap();
        let e = w.eval(&eval_request(), Duration::from_secs(10)).unwrap();
        assert_eq!(e.outcome, Outcome::RuntimeError);
        assert!(e.message.unwrap().contains("this is not json"));
        assert!(!w.is_running());
        assert!(!alive(pid));
    }

    #[test]
    fn a_worker_that_loses_its_context_is_reaped_and_replaced() {
        let script = r#"read line; echo '{"op":"eval","outcome":"runtime_error","message":"the kernel failed: CUDA_ERROR_ILLEGAL_ADDRESS","exiting":true}'; exit 3"#;
        let mut w = fake(script);
        let e = w.eval(&eval_request(), Duration::from_secs(10)).unwrap();
        assert_eq!(e.outcome, Outcome::RuntimeError);
        assert!(e.message.unwrap().contains("ILLEGAL_ADDRESS"));
        assert!(!w.is_running());
        let e = w.eval(&eval_request(), Duration::from_secs(10)).unwrap();
        assert_eq!(e.outcome, Outcome::RuntimeError);
        assert_eq!(w.spawned(), 2);
    }

    #[test]
    fn evaluator_failures_are_errors() {
        let mut w = fake(
            r#"read line; echo '{"op":"error","message":"no CUDA device: no driver"}'; read line"#,
        );
        let err = w
            .eval(&eval_request(), Duration::from_secs(10))
            .unwrap_err();
        assert!(err.to_string().contains("no CUDA device"), "{err}");
        let mut w = WorkerHandle::with_command("/nonexistent/evoengineer", ["worker"]);
        let err = w.eval(&eval_request(), Duration::from_secs(1)).unwrap_err();
        assert!(err.to_string().contains("cannot start"), "{err}");
    }

    #[test]
    fn a_worker_that_exits_without_answering_is_a_death() {
        let mut w = fake("exit 0");
        let err = w
            .request(&Request::Hello, Duration::from_secs(10))
            .unwrap_err();
        assert!(matches!(err, WorkerFailure::Died { .. }), "{err}");
    }
}
