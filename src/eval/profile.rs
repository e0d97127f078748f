//! Profiling a candidate with Nsight Compute, and classifying it with the task's rules.
//!
//! `ncu` wraps a fresh one-shot worker (`evoengineer worker --once REQUEST --response
//! RESPONSE`) whose `run_once` request launches the kernel exactly once; `-k
//! regex:^<entry>$ -c 1` with the mangled name base picks that launch (the worker's memsets
//! are not kernels). The metrics come back as ncu's CSV "details" page, one row per metric:
//!
//! ```text
//! "ID","Process ID","Process Name","Host Name","Kernel Name",...,"Section Name","Metric Name","Metric Unit","Metric Value"
//! ```
//!
//! Values may carry thousands separators (`"1,234.5"`) and scaled units (`usecond`, `Kinst`);
//! they are read in base units (durations in ns). `--clock-control none` leaves the GPU's
//! clocks as they are, as the timing loop sees them.
//!
//! If ncu is missing, or may not read the performance counters (`ERR_NVGPUCTRPERM`), the
//! profiler says so once and stays off for the rest of the run.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::eval::subprocess;
use crate::eval::worker::{Request, Response, RunOnceRequest, WORKER_SUBCOMMAND};
use crate::eval::Outcome;
use crate::insight::{InsightRules, Profile, SEED_METRICS};

/// The worker's one-shot flags.
pub const ONCE_FLAG: &str = "--once";
pub const RESPONSE_FLAG: &str = "--response";

/// A profile that could not be taken (profiling stays on; the next one may work).
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The kernel failed under the profiler.
    #[error("the kernel failed under ncu: {0}")]
    Candidate(String),
    #[error("ncu gave no metrics for `{entry}`: {detail}")]
    NoMetrics { entry: String, detail: String },
    #[error("ncu did not finish within {:.0} s", .0.as_secs_f64())]
    Timeout(Duration),
    #[error("profiling: {0}")]
    Io(#[from] std::io::Error),
}

/// What a call to [`Profiler::profile`] gave.
#[derive(Clone, Debug, PartialEq)]
pub enum ProfileOutcome {
    Profiled(Profile),
    /// No profiler here. `note` says why, the first time only.
    Unavailable {
        note: Option<String>,
    },
}

/// Runs ncu around one-shot workers.
pub struct Profiler {
    ncu: PathBuf,
    ncu_args: Vec<OsString>,
    exe: PathBuf,
    worker_args: Vec<OsString>,
    metrics: Vec<String>,
    rules: InsightRules,
    timeout: Duration,
    unavailable: Option<String>,
    noted: bool,
}

impl Profiler {
    /// Profiles with `ncu` from PATH, workers started as `exe worker`, the seed's metrics.
    pub fn new(exe: impl Into<PathBuf>, rules: InsightRules) -> Profiler {
        Profiler {
            ncu: PathBuf::from("ncu"),
            ncu_args: Vec::new(),
            exe: exe.into(),
            worker_args: vec![WORKER_SUBCOMMAND.into()],
            metrics: SEED_METRICS.iter().map(|m| m.to_string()).collect(),
            rules,
            timeout: Duration::from_secs(180),
            unavailable: None,
            noted: false,
        }
    }

    pub fn with_ncu(mut self, ncu: impl Into<PathBuf>) -> Profiler {
        self.ncu = ncu.into();
        self
    }

    /// Runs ncu as `program args... <ncu options>` (a wrapper script, `sudo -E ncu`, ...).
    pub fn with_ncu_command<S: Into<OsString>>(
        mut self,
        program: impl Into<PathBuf>,
        args: impl IntoIterator<Item = S>,
    ) -> Profiler {
        self.ncu = program.into();
        self.ncu_args = args.into_iter().map(Into::into).collect();
        self
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Profiler {
        self.timeout = timeout;
        self
    }

    /// Collects these metrics too.
    pub fn with_metrics<S: Into<String>>(mut self, extra: impl IntoIterator<Item = S>) -> Profiler {
        for m in extra {
            let m = m.into();
            if !self.metrics.contains(&m) {
                self.metrics.push(m);
            }
        }
        self
    }

    /// Why there is no profiler, once it is known.
    pub fn unavailable(&self) -> Option<&str> {
        self.unavailable.as_deref()
    }

    /// The ncu command line for one profile.
    pub fn command(&self, entry: &str, request: &Path, response: &Path, csv: &Path) -> Command {
        let mut cmd = Command::new(&self.ncu);
        cmd.args(&self.ncu_args)
            .arg("--csv")
            .arg("--log-file")
            .arg(csv)
            .args(["--clock-control", "none"])
            .arg("--metrics")
            .arg(self.metrics.join(","))
            .args(["--target-processes", "all"])
            .args(["--kernel-name-base", "mangled"])
            .arg("-k")
            .arg(format!("regex:^{}$", regex_escape(entry)))
            .args(["-c", "1"])
            .arg(&self.exe)
            .args(&self.worker_args)
            .arg(ONCE_FLAG)
            .arg(request)
            .arg(RESPONSE_FLAG)
            .arg(response);
        cmd
    }

    fn off(&mut self, why: String) -> ProfileOutcome {
        tracing::warn!("{why}");
        self.unavailable = Some(why);
        self.note()
    }

    fn note(&mut self) -> ProfileOutcome {
        let note = if self.noted {
            None
        } else {
            self.noted = true;
            self.unavailable.clone()
        };
        ProfileOutcome::Unavailable { note }
    }

    /// Profiles one launch of the kernel in `request`.
    pub fn profile(&mut self, request: &RunOnceRequest) -> Result<ProfileOutcome, ProfileError> {
        if self.unavailable.is_some() {
            return Ok(self.note());
        }
        let started = std::time::Instant::now();
        let dir = scratch_dir()?;
        let mut result = self.profile_in(&dir, request);
        let _ = std::fs::remove_dir_all(&dir);
        if let Ok(ProfileOutcome::Profiled(p)) = &mut result {
            p.profile_s = Some(started.elapsed().as_secs_f64());
        }
        result
    }

    fn profile_in(
        &mut self,
        dir: &Path,
        request: &RunOnceRequest,
    ) -> Result<ProfileOutcome, ProfileError> {
        let req_path = dir.join("request.json");
        let resp_path = dir.join("response.json");
        let csv_path = dir.join("metrics.csv");
        let text = serde_json::to_string(&Request::RunOnce(request.clone()))
            .map_err(std::io::Error::other)?;
        std::fs::write(&req_path, text)?;
        let cmd = self.command(&request.kernel.entry, &req_path, &resp_path, &csv_path);
        let out = match subprocess::run(cmd, None, self.timeout) {
            Ok(out) => out,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(self.off(format!(
                    "no profiler: `{}` was not found; insights are off for this run",
                    self.ncu.display()
                )));
            }
            Err(e) => return Err(e.into()),
        };
        if out.timed_out() {
            return Err(ProfileError::Timeout(self.timeout));
        }
        let log = std::fs::read_to_string(&csv_path).unwrap_or_default();
        let everything = format!("{}\n{}\n{}", log, out.stdout, out.stderr);
        if is_permission_error(&everything) {
            return Ok(self.off(
                "no profiler: ncu may not read the GPU's performance counters (ERR_NVGPUCTRPERM); \
                 insights are off for this run (an administrator can allow it: \
                 NVreg_RestrictProfilingToAdminUsers=0)"
                    .to_string(),
            ));
        }
        // The worker's own verdict on its launch.
        if let Ok(text) = std::fs::read_to_string(&resp_path) {
            match serde_json::from_str::<Response>(&text) {
                Ok(Response::RunOnce(r)) if r.outcome != Outcome::Ok => {
                    return Err(ProfileError::Candidate(
                        r.message.unwrap_or_else(|| r.outcome.to_string()),
                    ));
                }
                Ok(Response::Error { message, .. }) => {
                    return Err(ProfileError::Candidate(message))
                }
                _ => {}
            }
        }
        let kernels = parse_csv(&log).map_err(|detail| ProfileError::NoMetrics {
            entry: request.kernel.entry.clone(),
            detail: format!("{detail}; ncu said: {}", out.tail(600)),
        })?;
        let Some(k) = kernels.into_iter().next() else {
            return Err(ProfileError::NoMetrics {
                entry: request.kernel.entry.clone(),
                detail: format!("no kernel was profiled; ncu said: {}", out.tail(600)),
            });
        };
        let bottleneck = Some(self.rules.classify(&k.metrics));
        Ok(ProfileOutcome::Profiled(Profile {
            metrics: k.metrics,
            bottleneck,
            profile_s: None,
        }))
    }
}

fn scratch_dir() -> std::io::Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("evoengineer-ncu-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Escapes regex metacharacters (entries are identifiers, but be safe).
pub fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Whether ncu's output says it may not read the performance counters.
pub fn is_permission_error(text: &str) -> bool {
    text.contains("ERR_NVGPUCTRPERM")
        || text.contains("permission to access NVIDIA GPU Performance Counters")
}

/// One profiled launch.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KernelMetrics {
    pub id: String,
    pub kernel_name: String,
    /// Metric values in base units (durations in ns).
    pub metrics: BTreeMap<String, f64>,
}

/// Splits one CSV line (quoted fields, `""` escapes).
pub fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    fields.push(cur);
    fields
}

/// A metric value in base units: thousands separators dropped, `n/a` is `None`, scaled units
/// (`usecond`, `Kinst`, `Mbyte`) scaled back, durations in ns.
pub fn parse_value(value: &str, unit: &str) -> Option<f64> {
    let clean: String = value.trim().chars().filter(|&c| c != ',').collect();
    let v: f64 = clean.parse().ok()?;
    if !v.is_finite() {
        return None;
    }
    let unit = unit.trim();
    let time = match unit {
        "nsecond" | "ns" => Some(1.0),
        "usecond" | "us" => Some(1e3),
        "msecond" | "ms" => Some(1e6),
        "second" | "s" => Some(1e9),
        _ => None,
    };
    if let Some(scale) = time {
        return Some(v * scale);
    }
    let mut chars = unit.chars();
    let scale = match (chars.next(), chars.next()) {
        (Some(p), Some(next)) if next.is_ascii_lowercase() => match p {
            'K' => 1e3,
            'M' => 1e6,
            'G' => 1e9,
            'T' => 1e12,
            _ => 1.0,
        },
        _ => 1.0,
    };
    Some(v * scale)
}

/// Reads ncu's `--csv` details page: metrics per profiled launch, in launch order. Lines that
/// are not CSV (`==PROF==` messages, the program's output) are skipped.
pub fn parse_csv(text: &str) -> Result<Vec<KernelMetrics>, String> {
    let mut lines = text.lines().map(str::trim).filter(|l| l.starts_with('"'));
    let header = loop {
        let Some(line) = lines.next() else {
            return Err("no CSV header in ncu's output".into());
        };
        let fields = csv_fields(line);
        if fields.iter().any(|f| f == "Metric Name") {
            break fields;
        }
    };
    let col = |name: &str| header.iter().position(|f| f == name);
    let (Some(c_name), Some(c_value)) = (col("Metric Name"), col("Metric Value")) else {
        return Err("ncu's CSV has no Metric Name / Metric Value columns".into());
    };
    let c_unit = col("Metric Unit");
    let c_id = col("ID");
    let c_kernel = col("Kernel Name");
    let mut kernels: Vec<KernelMetrics> = Vec::new();
    for line in lines {
        let f = csv_fields(line);
        let get = |c: Option<usize>| c.and_then(|c| f.get(c)).map(String::as_str).unwrap_or("");
        let name = get(Some(c_name));
        if name.is_empty() {
            continue;
        }
        let id = get(c_id).to_string();
        let Some(value) = parse_value(get(Some(c_value)), get(c_unit)) else {
            continue;
        };
        let k = match kernels.iter_mut().position(|k| k.id == id) {
            Some(i) => &mut kernels[i],
            None => {
                kernels.push(KernelMetrics {
                    id: id.clone(),
                    kernel_name: get(c_kernel).to_string(),
                    metrics: BTreeMap::new(),
                });
                kernels.last_mut().expect("just pushed")
            }
        };
        k.metrics.insert(name.to_string(), value);
    }
    Ok(kernels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuda::Dims;
    use crate::eval::inputs::ArgSpec;
    use crate::eval::worker::KernelRef;
    use crate::insight::{
        Bottleneck, METRIC_DRAM, METRIC_DURATION, METRIC_FMA_INST, METRIC_TENSOR_PIPE,
        METRIC_WARPS_ACTIVE,
    };
    use crate::task::{ArgKind, ArgRole, DType, Init};

    const HEADER: &str = r#""ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream","Block Size","Grid Size","Device","CC","Section Name","Metric Name","Metric Unit","Metric Value""#;

    fn row(id: u32, kernel: &str, metric: &str, unit: &str, value: &str) -> String {
        format!(
            r#""{id}","48213","evoengineer","gpu-host","{kernel}","1","13","(256, 1, 1)","(132, 1, 1)","0","9.0","Command line profiler metrics","{metric}","{unit}","{value}""#
        )
    }

    fn sample_csv() -> String {
        let k = "sdpa_fp8_kernel";
        [
            "==PROF== Connected to process 48213 (/opt/evoengineer)".to_string(),
            "==PROF== Profiling \"sdpa_fp8_kernel\" - 0: 0%....50%....100% - 9 passes".to_string(),
            HEADER.to_string(),
            row(0, k, METRIC_DRAM, "%", "12.41"),
            row(0, k, METRIC_DURATION, "usecond", "1,234.50"),
            row(0, k, METRIC_FMA_INST, "Kinst", "5,120.00"),
            row(0, k, METRIC_TENSOR_PIPE, "%", "63.18"),
            row(0, k, "smsp__cycles_active.avg", "cycle", "1,804,211.25"),
            row(0, k, METRIC_WARPS_ACTIVE, "%", "18.75"),
            row(
                0,
                k,
                "sm__throughput.avg.pct_of_peak_sustained_elapsed",
                "%",
                "n/a",
            ),
            "==PROF== Disconnected from process 48213".to_string(),
        ]
        .join("\n")
    }

    #[test]
    fn csv_fields_handle_quotes_and_commas() {
        assert_eq!(
            csv_fields(r#""a","1,234.5","say ""hi""""#),
            vec!["a", "1,234.5", r#"say "hi""#]
        );
        assert_eq!(csv_fields(r#""(256, 1, 1)",x"#), vec!["(256, 1, 1)", "x"]);
    }

    #[test]
    fn values_in_base_units() {
        assert_eq!(parse_value("1,234.5", ""), Some(1234.5));
        assert_eq!(parse_value("12.5", "%"), Some(12.5));
        assert_eq!(parse_value("3", "usecond"), Some(3000.0));
        assert_eq!(parse_value("2", "msecond"), Some(2e6));
        assert_eq!(parse_value("812", "nsecond"), Some(812.0));
        assert_eq!(parse_value("1.5", "Kinst"), Some(1500.0));
        assert_eq!(parse_value("2", "Mbyte"), Some(2e6));
        assert_eq!(parse_value("7", "inst"), Some(7.0));
        assert_eq!(parse_value("7", "cycle"), Some(7.0));
        assert_eq!(parse_value("n/a", "%"), None);
        assert_eq!(parse_value("", "%"), None);
    }

    #[test]
    fn a_realistic_csv() {
        let ks = parse_csv(&sample_csv()).unwrap();
        assert_eq!(ks.len(), 1);
        let k = &ks[0];
        assert_eq!(k.kernel_name, "sdpa_fp8_kernel");
        assert_eq!(k.metrics[METRIC_DURATION], 1_234_500.0);
        assert_eq!(k.metrics[METRIC_FMA_INST], 5_120_000.0);
        assert_eq!(k.metrics["smsp__cycles_active.avg"], 1_804_211.25);
        assert_eq!(k.metrics[METRIC_WARPS_ACTIVE], 18.75);
        assert!(!k
            .metrics
            .contains_key("sm__throughput.avg.pct_of_peak_sustained_elapsed"));
        assert_eq!(
            InsightRules::default().classify(&k.metrics),
            Bottleneck::Compute
        );
    }

    #[test]
    fn several_launches_and_no_header() {
        let text = [
            HEADER.to_string(),
            row(0, "a", METRIC_DRAM, "%", "1"),
            row(1, "b", METRIC_DRAM, "%", "2"),
        ]
        .join("\n");
        let ks = parse_csv(&text).unwrap();
        assert_eq!(ks.len(), 2);
        assert_eq!(ks[1].kernel_name, "b");
        assert!(parse_csv("==ERROR== something").is_err());
        assert_eq!(parse_csv(HEADER).unwrap(), vec![]);
    }

    #[test]
    fn permission_errors_are_recognised() {
        assert!(is_permission_error(
            "==ERROR== ERR_NVGPUCTRPERM - The user does not have permission to access NVIDIA GPU Performance Counters on the target device 0."
        ));
        assert!(!is_permission_error("==PROF== Disconnected"));
    }

    #[test]
    fn regex_of_entries() {
        assert_eq!(regex_escape("_Z6kernelPf"), "_Z6kernelPf");
        assert_eq!(regex_escape("a.b$"), "a\\.b\\$");
    }

    fn request() -> RunOnceRequest {
        RunOnceRequest {
            kernel: KernelRef {
                cubin: "/tmp/k.cubin".into(),
                entry: "sdpa_fp8_kernel".into(),
                dims: Dims {
                    grid: [132, 1, 1],
                    block: [256, 1, 1],
                    smem: 0,
                },
            },
            args: vec![ArgSpec {
                name: "O".into(),
                kind: ArgKind::Buffer,
                dtype: DType::Bf16,
                role: ArgRole::Output,
                init: Init::default(),
                len: 64,
                shape: vec![],
                value: None,
            }],
            seed: 1,
            trial: 0,
        }
    }

    #[test]
    fn the_command_line() {
        let p = Profiler::new("/opt/evoengineer", InsightRules::default());
        let cmd = p.command(
            "k",
            Path::new("/t/req.json"),
            Path::new("/t/resp.json"),
            Path::new("/t/m.csv"),
        );
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let line = args.join(" ");
        assert_eq!(cmd.get_program(), "ncu");
        assert!(
            line.starts_with("--csv --log-file /t/m.csv --clock-control none --metrics "),
            "{line}"
        );
        assert!(line.contains(&SEED_METRICS.join(",")), "{line}");
        assert!(line.contains("--target-processes all --kernel-name-base mangled -k regex:^k$ -c 1 /opt/evoengineer worker --once /t/req.json --response /t/resp.json"), "{line}");
    }

    /// A stand-in for ncu: writes a CSV to --log-file and the worker's answer to --response.
    fn fake_ncu(dir: &Path, body: &str) -> PathBuf {
        let path = dir.join("ncu");
        let script = format!(
            "#!/bin/sh\ncount=\"{count}\"\necho run >> \"$count\"\n\
             while [ $# -gt 0 ]; do case \"$1\" in --log-file) log=\"$2\"; shift;; --response) resp=\"$2\"; shift;; esac; shift; done\n{body}\n",
            count = dir.join("runs").display()
        );
        std::fs::write(&path, script).unwrap();
        path
    }

    /// A profiler whose "ncu" is `sh <fake script>` (no executable file, no ETXTBSY races).
    fn with_fake(dir: &Path, body: &str) -> Profiler {
        Profiler::new("/opt/evoengineer", InsightRules::default())
            .with_ncu_command("sh", [fake_ncu(dir, body)])
    }

    #[test]
    fn profiles_through_a_fake_ncu() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("sample.csv");
        std::fs::write(&csv, sample_csv()).unwrap();
        let body = format!(
            "cp \"{}\" \"$log\"\necho '{{\"op\":\"run_once\",\"outcome\":\"ok\",\"kernel_us\":1234.5}}' > \"$resp\"",
            csv.display()
        );
        let mut p = with_fake(dir.path(), &body);
        let ProfileOutcome::Profiled(profile) = p.profile(&request()).unwrap() else {
            panic!("no profile");
        };
        assert_eq!(profile.bottleneck, Some(Bottleneck::Compute));
        assert_eq!(profile.metrics[METRIC_DURATION], 1_234_500.0);
        // What ncu cost is part of the profile.
        assert!(profile.profile_s.is_some_and(|s| s > 0.0), "{profile:?}");
    }

    #[test]
    fn a_kernel_that_fails_under_ncu() {
        let dir = tempfile::tempdir().unwrap();
        let body = "echo '{\"op\":\"run_once\",\"outcome\":\"runtime_error\",\"message\":\"the kernel failed: CUDA_ERROR_ILLEGAL_ADDRESS\",\"exiting\":true}' > \"$resp\"; exit 1";
        let mut p = with_fake(dir.path(), body);
        let err = p.profile(&request()).unwrap_err();
        assert!(
            matches!(err, ProfileError::Candidate(ref m) if m.contains("ILLEGAL_ADDRESS")),
            "{err}"
        );
        // Still on: the next candidate is profiled.
        assert!(p.unavailable().is_none());
    }

    #[test]
    fn no_permission_turns_profiling_off_with_one_note() {
        let dir = tempfile::tempdir().unwrap();
        let body = "echo '==ERROR== ERR_NVGPUCTRPERM - The user does not have permission to access NVIDIA GPU Performance Counters on the target device 0.'; exit 1";
        let mut p = with_fake(dir.path(), body);
        let first = p.profile(&request()).unwrap();
        assert!(
            matches!(first, ProfileOutcome::Unavailable { note: Some(ref n) } if n.contains("ERR_NVGPUCTRPERM")),
            "{first:?}"
        );
        assert_eq!(
            p.profile(&request()).unwrap(),
            ProfileOutcome::Unavailable { note: None }
        );
        // ncu ran once only.
        let runs = std::fs::read_to_string(dir.path().join("runs")).unwrap();
        assert_eq!(runs.lines().count(), 1);
    }

    #[test]
    fn a_missing_ncu_is_said_once() {
        let mut p = Profiler::new("/x", InsightRules::default()).with_ncu("/nonexistent/ncu");
        let first = p.profile(&request()).unwrap();
        assert!(
            matches!(first, ProfileOutcome::Unavailable { note: Some(ref n) } if n.contains("not found")),
            "{first:?}"
        );
        assert_eq!(
            p.profile(&request()).unwrap(),
            ProfileOutcome::Unavailable { note: None }
        );
    }

    #[test]
    fn empty_output_is_an_error_not_a_profile() {
        let dir = tempfile::tempdir().unwrap();
        let body = "echo '==PROF== Disconnected' ; : > \"$log\"";
        let mut p = with_fake(dir.path(), body);
        let err = p.profile(&request()).unwrap_err();
        assert!(matches!(err, ProfileError::NoMetrics { .. }), "{err}");
    }
}
