//! The compile gate: a candidate's source and knob values to a cubin, with ptxas's report of
//! its entry kernel, checked against the device's limits and the task's spill allowance.
//!
//! Two compilers sit behind one interface ([`CompileGate::compile`]): nvcc as a subprocess
//! ([`nvcc`]) and NVRTC in-process ([`nvrtc`]). Both get every knob and every
//! `kernel.shape_defines` parameter as `-DNAME=VALUE`, and both print ptxas's `-v` report,
//! which [`ptxas`] parses. A C++ entry name is lowered by NVRTC itself and matched against the
//! compiled symbols for nvcc ([`entry`]); the symbol to give `cuModuleGetFunction` is
//! [`Compiled::entry`].
//!
//! Results are cached on disk ([`cache`]) under a key over the source text, the side files in
//! its directory, the defines, the flags, the compiler's identity and version, the arch and
//! the entry; a compile the compiler refused is cached as well. The gate's limits are checked
//! after the cache, since the launch (and so the dynamic shared memory and threads) depends on
//! the shape too.
//!
//! Failures come in three kinds ([`CompileError`]): the candidate is rejected (compile error,
//! too many registers, spills, … — an `Outcome::CompileError` for the search), the toolchain is
//! missing or broken, or the task is set up wrong. Only the first is the candidate's fault.

pub mod cache;
mod command;
pub mod entry;
pub mod gate;
pub mod nvcc;
pub mod nvrtc;
pub mod ptxas;
mod queue;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use crate::eval::launch::{launch_dims, LaunchDims};
use crate::eval::{CompileReport, EvalError, Evaluation, Outcome};
use crate::space::Config;
use crate::task::{sha256_hex, Compiler, Shape, Task};
use cache::{CachedResult, CubinCache, KeyHasher};
pub use command::{compile_command, CompileRow};
pub use gate::{RejectReason, ResourceLimits};
use nvcc::Nvcc;
use nvrtc::{Nvrtc, NvrtcStatus};
pub use ptxas::KernelResources;
pub use queue::CompileQueue;

/// The default target: the H100.
pub const DEFAULT_ARCH: &str = "sm_90a";

/// Where compiles are cached.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CacheSetting {
    /// `$XDG_CACHE_HOME/evoengineer/cubins`, else `~/.cache/evoengineer/cubins`.
    #[default]
    Default,
    Dir(PathBuf),
    Off,
}

/// How to find and run the compilers. `Default` finds everything by itself.
#[derive(Clone, Debug)]
pub struct CompilerSettings {
    /// nvcc to use; else `$EVOENGINEER_NVCC`, `PATH`, `/usr/local/cuda`, the wheels.
    pub nvcc: Option<PathBuf>,
    /// Host C++ compiler for nvcc (`-ccbin`); else `$EVOENGINEER_NVCC_CCBIN`, else nvcc's
    /// default (`g++` on `PATH`).
    pub ccbin: Option<PathBuf>,
    /// libnvrtc (the file or its directory); else `$EVOENGINEER_NVRTC`, the loader's path,
    /// `/usr/local/cuda/lib64`, the wheels.
    pub nvrtc: Option<PathBuf>,
    /// CUDA include directory for NVRTC; else found beside libnvrtc.
    pub cuda_include: Option<PathBuf>,
    pub cache: CacheSetting,
    /// Parallel compiles; 0: one per CPU core.
    pub jobs: usize,
    /// Device limits; `None`: those of the job's arch ([`ResourceLimits::for_arch`]).
    pub limits: Option<ResourceLimits>,
    /// Flags added after the task's (and part of the cache key).
    pub extra_flags: Vec<String>,
    /// Use this compiler whatever the task says.
    pub compiler: Option<Compiler>,
    /// A compile running longer is killed and the candidate rejected (nvcc only: NVRTC runs
    /// in-process and cannot be interrupted).
    pub timeout: Option<Duration>,
}

impl Default for CompilerSettings {
    fn default() -> Self {
        CompilerSettings {
            nvcc: None,
            ccbin: None,
            nvrtc: None,
            cuda_include: None,
            cache: CacheSetting::Default,
            jobs: 0,
            limits: None,
            extra_flags: Vec::new(),
            compiler: None,
            timeout: Some(Duration::from_secs(600)),
        }
    }
}

impl CompilerSettings {
    /// The number of parallel compiles.
    pub fn workers(&self) -> usize {
        if self.jobs > 0 {
            self.jobs
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }
    }
}

/// Everything one compile needs.
#[derive(Clone, Debug, PartialEq)]
pub struct CompileJob {
    /// The source text (the task's file, or a variant of it).
    pub source: String,
    /// The file name the compiler sees and messages use (`kernel.cu`).
    pub file_name: String,
    /// Directory for `#include "…"` (the task's directory); `-I` for the compiler.
    pub include_dir: Option<PathBuf>,
    /// `kernel.entry`: an `extern "C"` name, a C++ name, or a mangled symbol.
    pub entry: String,
    pub compiler: Compiler,
    /// `sm_90a`, `sm_80`, …
    pub arch: String,
    /// `-DNAME=VALUE`, knobs first, then shape parameters.
    pub defines: Vec<(String, String)>,
    /// The task's flags.
    pub flags: Vec<String>,
    /// The launch, for the threads/registers/shared memory checks; `None` skips them.
    pub launch: Option<LaunchDims>,
    pub max_spill_bytes: u64,
}

impl CompileJob {
    /// The job for `config` of `task`'s kernel on `shape`, compiling `source` (the text of a
    /// variant) or, when `None`, the task's own file.
    ///
    /// A launch that cannot be evaluated for this config is a rejection of the candidate; a
    /// task without a kernel, an unreadable source or a shape lacking a `shape_defines`
    /// parameter is a setup error.
    pub fn for_candidate(
        task: &Task,
        config: &Config,
        shape: &Shape,
        arch: &str,
        source: Option<&str>,
    ) -> Result<CompileJob, CompileError> {
        let spec = task.kernel.as_ref().ok_or_else(|| {
            CompileError::Setup(format!(
                "task `{}` has no [kernel] section: nothing to compile",
                task.name
            ))
        })?;
        let path = &spec.launch.source;
        let text = match source {
            Some(s) => s.to_string(),
            None => std::fs::read_to_string(path)
                .map_err(|e| CompileError::Setup(format!("cannot read {}: {e}", path.display())))?,
        };
        let knobs = task.space.knobs();
        if config.values().len() != knobs.len() {
            return Err(CompileError::Setup(format!(
                "the config has {} values for {} knobs",
                config.values().len(),
                knobs.len()
            )));
        }
        let mut defines: Vec<(String, String)> = knobs
            .iter()
            .zip(config.values())
            .map(|(k, v)| (k.name.clone(), v.to_string()))
            .collect();
        for name in &spec.shape_defines {
            let v = shape.params.get(name).ok_or_else(|| {
                CompileError::Setup(format!(
                    "kernel.shape_defines names `{name}`, which shape `{}` does not define",
                    shape.name
                ))
            })?;
            defines.push((name.clone(), v.to_string()));
        }
        let launch = launch_dims(&spec.launch, &task.space, config, shape).map_err(|e| {
            CompileError::rejected(
                RejectReason::LaunchDims,
                format!("the launch cannot be computed for this config: {e}"),
                None,
            )
        })?;
        Ok(CompileJob {
            source: text,
            file_name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "kernel.cu".into()),
            include_dir: path.parent().map(Path::to_path_buf),
            entry: spec.launch.entry.clone(),
            compiler: spec.compiler,
            arch: arch.to_string(),
            defines,
            flags: spec.flags.clone(),
            launch: Some(launch),
            max_spill_bytes: spec.max_spill_bytes,
        })
    }
}

/// A kernel that passed the compile gate.
#[derive(Clone, Debug, PartialEq)]
pub struct Compiled {
    pub cubin: Vec<u8>,
    /// The entry's symbol, for `cuModuleGetFunction`.
    pub entry: String,
    pub resources: KernelResources,
    pub launch: Option<LaunchDims>,
    /// For the evaluation: `smem_bytes` is static plus dynamic shared memory.
    pub report: CompileReport,
    /// `nvcc 13.0, V13.0.88` or `nvrtc 13.0`.
    pub toolchain: String,
    /// The cache key (sha256 hex).
    pub key: String,
    /// Answered from the cache (`report.compile_s` is then the original compile's).
    pub cached: bool,
    /// The compiler's output: ptxas's report, warnings.
    pub log: String,
}

/// Why a candidate was turned away, with what is known about it.
#[derive(Clone, Debug, PartialEq)]
pub struct Rejection {
    pub reason: RejectReason,
    pub message: String,
    /// What the compiler reported, when it got that far.
    pub report: Option<CompileReport>,
    pub resources: Option<KernelResources>,
    pub key: Option<String>,
    pub cached: bool,
}

/// Why a compile gave no kernel to run.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The candidate's fault: an `Outcome::CompileError`.
    #[error("{}", .0.message)]
    Rejected(Box<Rejection>),
    /// No working compiler: the evaluation cannot go on.
    #[error("{0}")]
    Toolchain(String),
    /// The task or the settings are wrong (unreadable source, an option the compiler
    /// refuses, a bad arch).
    #[error("{0}")]
    Setup(String),
}

impl CompileError {
    fn rejected(
        reason: RejectReason,
        message: String,
        report: Option<CompileReport>,
    ) -> CompileError {
        CompileError::Rejected(Box::new(Rejection {
            reason,
            message,
            report,
            resources: None,
            key: None,
            cached: false,
        }))
    }

    pub fn rejection(&self) -> Option<&Rejection> {
        match self {
            CompileError::Rejected(r) => Some(r),
            _ => None,
        }
    }

    /// A rejection as the candidate's evaluation; anything else as a failure of the
    /// evaluator.
    pub fn into_evaluation(self) -> Result<Evaluation, EvalError> {
        match self {
            CompileError::Rejected(r) => Ok(Evaluation {
                compile: r.report.clone(),
                ..Evaluation::failed(Outcome::CompileError, r.message)
            }),
            other => Err(EvalError::Other(other.to_string())),
        }
    }
}

/// Compiles jobs; holds the located compilers and the cache. Shared between threads.
pub struct CompileGate {
    settings: CompilerSettings,
    nvcc: OnceLock<Result<Nvcc, String>>,
    nvrtc: OnceLock<Result<Nvrtc, String>>,
    cache: Option<CubinCache>,
}

/// The compiler output kept with a result.
const MAX_LOG_CHARS: usize = 20_000;

impl CompileGate {
    pub fn new(settings: CompilerSettings) -> CompileGate {
        let cache = match &settings.cache {
            CacheSetting::Off => None,
            CacheSetting::Dir(d) => Some(CubinCache::new(d.clone())),
            CacheSetting::Default => CubinCache::default_dir().map(CubinCache::new),
        };
        CompileGate {
            settings,
            nvcc: OnceLock::new(),
            nvrtc: OnceLock::new(),
            cache,
        }
    }

    pub fn settings(&self) -> &CompilerSettings {
        &self.settings
    }

    pub fn cache_dir(&self) -> Option<&Path> {
        self.cache.as_ref().map(CubinCache::dir)
    }

    fn nvcc(&self) -> Result<&Nvcc, CompileError> {
        self.nvcc
            .get_or_init(|| {
                Nvcc::locate(
                    self.settings.nvcc.as_deref(),
                    self.settings.ccbin.as_deref(),
                )
            })
            .as_ref()
            .map_err(|e| CompileError::Toolchain(e.clone()))
    }

    fn nvrtc(&self) -> Result<&Nvrtc, CompileError> {
        self.nvrtc
            .get_or_init(|| {
                Nvrtc::load(
                    self.settings.nvrtc.as_deref(),
                    self.settings.cuda_include.as_deref(),
                )
            })
            .as_ref()
            .map_err(|e| CompileError::Toolchain(e.clone()))
    }

    /// The compiler a job with `compiler` will use (the settings may override it).
    pub fn effective_compiler(&self, compiler: Compiler) -> Compiler {
        self.settings.compiler.unwrap_or(compiler)
    }

    /// The toolchain's name and version (`nvcc 13.0, V13.0.88`, `nvrtc 13.0`), finding it
    /// first if need be.
    pub fn toolchain(&self, compiler: Compiler) -> Result<String, CompileError> {
        Ok(match self.effective_compiler(compiler) {
            Compiler::Nvcc => self.nvcc()?.toolchain.clone(),
            Compiler::Nvrtc => self.nvrtc()?.toolchain.clone(),
        })
    }

    /// The include directories NVRTC compiles with (after loading it).
    pub fn nvrtc_include_dirs(&self) -> Result<Vec<PathBuf>, CompileError> {
        Ok(self.nvrtc()?.include_dirs.clone())
    }

    /// Compiles one job (or finds it in the cache) and checks it against the limits.
    pub fn compile(&self, job: &CompileJob) -> Result<Compiled, CompileError> {
        check_arch(&job.arch)?;
        let compiler = self.effective_compiler(job.compiler);
        let mut flags = job.flags.clone();
        flags.extend(self.settings.extra_flags.iter().cloned());
        let (identity, toolchain) = match compiler {
            Compiler::Nvcc => {
                let n = self.nvcc()?;
                (n.identity.clone(), n.toolchain.clone())
            }
            Compiler::Nvrtc => {
                let n = self.nvrtc()?;
                (n.identity.clone(), n.toolchain.clone())
            }
        };
        let key = cache_key(job, compiler, &identity, &flags);
        let cached = self.cache.as_ref().and_then(|c| c.get(&key));
        let (record, cubin, was_cached) = match cached {
            Some((record, cubin)) => (record, cubin, true),
            None => {
                let (record, cubin) = match compiler {
                    Compiler::Nvcc => self.run_nvcc(job, &flags, &key, &toolchain)?,
                    Compiler::Nvrtc => self.run_nvrtc(job, &flags, &key, &toolchain)?,
                };
                if let Some(c) = &self.cache {
                    if let Err(e) = c.put(&record, &cubin) {
                        tracing::warn!(
                            "cannot write the cubin cache in {}: {e}",
                            c.dir().display()
                        );
                    }
                }
                (record, cubin, false)
            }
        };
        let (entry, resources, cubin_sha256) = match record.result {
            CachedResult::Refused { reason, message } => {
                return Err(CompileError::Rejected(Box::new(Rejection {
                    reason,
                    message,
                    report: Some(CompileReport {
                        compile_s: Some(record.compile_s),
                        ..CompileReport::default()
                    }),
                    resources: None,
                    key: Some(key),
                    cached: was_cached,
                })));
            }
            CachedResult::Compiled {
                entry,
                resources,
                cubin_sha256,
            } => (entry, resources, cubin_sha256),
        };
        let report = CompileReport {
            registers: Some(resources.registers),
            smem_bytes: Some(
                resources.static_smem_bytes + job.launch.map(|l| u64::from(l.smem)).unwrap_or(0),
            ),
            spill_bytes: Some(resources.spill_bytes()),
            stack_frame_bytes: Some(resources.stack_frame_bytes),
            cubin_sha256: Some(cubin_sha256),
            compile_s: Some(record.compile_s),
        };
        if let Some(launch) = &job.launch {
            let limits = self
                .settings
                .limits
                .unwrap_or_else(|| ResourceLimits::for_arch(&job.arch));
            if let Err((reason, message)) =
                gate::check(&resources, launch, job.max_spill_bytes, &limits)
            {
                return Err(CompileError::Rejected(Box::new(Rejection {
                    reason,
                    message,
                    report: Some(report),
                    resources: Some(resources),
                    key: Some(key),
                    cached: was_cached,
                })));
            }
        }
        Ok(Compiled {
            cubin,
            entry,
            resources,
            launch: job.launch,
            report,
            toolchain,
            key,
            cached: was_cached,
            log: record.log,
        })
    }

    /// Compiles every job, `settings.jobs` at a time; results in the order of `jobs`.
    pub fn compile_many(&self, jobs: &[CompileJob]) -> Vec<Result<Compiled, CompileError>> {
        queue::compile_many(self, jobs)
    }

    fn run_nvcc(
        &self,
        job: &CompileJob,
        flags: &[String],
        key: &str,
        toolchain: &str,
    ) -> Result<(cache::CacheRecord, Vec<u8>), CompileError> {
        let nvcc = self.nvcc()?;
        let args = nvcc.args(&job.arch, job.include_dir.as_deref(), &job.defines, flags);
        let run = nvcc
            .compile(&job.source, &job.file_name, &args, self.settings.timeout)
            .map_err(CompileError::Toolchain)?;
        if run.timed_out {
            return Err(CompileError::rejected(
                RejectReason::CompileTimeout,
                format!(
                    "nvcc ran longer than {:.0} s and was stopped",
                    self.settings.timeout.unwrap_or_default().as_secs_f64()
                ),
                None,
            ));
        }
        if run
            .output
            .contains("Failed to preprocess host compiler properties")
        {
            return Err(CompileError::Toolchain(format!(
                "nvcc cannot run its host compiler (install g++, or set EVOENGINEER_NVCC_CCBIN): {}",
                excerpt(&run.output)
            )));
        }
        let log = truncate(&run.output, MAX_LOG_CHARS);
        let refused =
            |reason, message| refused_record(key, toolchain, run.seconds, &log, reason, message);
        let cubin = match (run.status, &run.cubin) {
            (Some(0), Some(c)) => c.clone(),
            (Some(0), None) => {
                return Err(CompileError::Toolchain(format!(
                    "nvcc succeeded but wrote no cubin: {}",
                    excerpt(&run.output)
                )));
            }
            // A signal (out of memory, say) may not happen again: rejected, not cached.
            (None, _) => {
                return Err(CompileError::rejected(
                    RejectReason::CompilerError,
                    format!("nvcc was killed by a signal: {}", excerpt(&run.output)),
                    None,
                ));
            }
            (Some(s), _) => {
                return refused(
                    RejectReason::CompilerError,
                    format!("nvcc failed (exit status {s}): {}", excerpt(&run.output)),
                );
            }
        };
        let report = ptxas::parse(&run.output);
        let symbol = match entry::resolve(&job.entry, &report.entry_names()) {
            Ok(s) => s,
            Err(message) => return refused(RejectReason::EntryNotFound, message),
        };
        let result = compiled_result(&report, symbol, &job.arch, &cubin)?;
        Ok((
            CubinCache::record(key, toolchain, run.seconds, &log, result),
            cubin,
        ))
    }

    fn run_nvrtc(
        &self,
        job: &CompileJob,
        flags: &[String],
        key: &str,
        toolchain: &str,
    ) -> Result<(cache::CacheRecord, Vec<u8>), CompileError> {
        let nvrtc = self.nvrtc()?;
        let mut options = vec![
            format!("--gpu-architecture={}", job.arch),
            "--ptxas-options=-v".to_string(),
        ];
        if let Some(d) = &job.include_dir {
            options.push(format!("-I{}", d.display()));
        }
        options.extend(nvrtc.include_options());
        options.extend(job.defines.iter().map(|(k, v)| format!("-D{k}={v}")));
        options.extend(flags.iter().cloned());
        let run = nvrtc
            .compile(&job.source, &job.file_name, &job.entry, &options)
            .map_err(CompileError::Toolchain)?;
        let log = truncate(&run.log, MAX_LOG_CHARS);
        let refused =
            |reason, message| refused_record(key, toolchain, run.seconds, &log, reason, message);
        match &run.status {
            NvrtcStatus::Success => {}
            NvrtcStatus::Compilation => {
                return refused(
                    RejectReason::CompilerError,
                    format!("nvrtc failed: {}", excerpt(&run.log)),
                );
            }
            NvrtcStatus::InvalidOption => {
                return Err(CompileError::Setup(format!(
                    "nvrtc refused an option ({}); kernel.flags must be NVRTC options when \
                     compiler = \"nvrtc\" (NVRTC has no -O3, for one); options: {}",
                    excerpt(&run.log),
                    options.join(" ")
                )));
            }
            NvrtcStatus::Other(code) => {
                return Err(CompileError::Toolchain(format!(
                    "nvrtc failed with {code}: {}",
                    excerpt(&run.log)
                )));
            }
        }
        let Some(cubin) = run.cubin.clone() else {
            return Err(CompileError::Setup(format!(
                "nvrtc produced no cubin for {} (a real architecture such as sm_90a is needed)",
                job.arch
            )));
        };
        let report = ptxas::parse(&run.log);
        let symbol = match &run.lowered_name {
            Some(s) if report.entry(s, None).is_some() => s.clone(),
            _ => match entry::resolve(&job.entry, &report.entry_names()) {
                Ok(s) => s,
                Err(message) => return refused(RejectReason::EntryNotFound, message),
            },
        };
        let result = compiled_result(&report, symbol, &job.arch, &cubin)?;
        Ok((
            CubinCache::record(key, toolchain, run.seconds, &log, result),
            cubin,
        ))
    }
}

/// A compile the gate refuses (the compiler said no, or the entry is missing): recorded in the
/// cache with its log, and no cubin.
fn refused_record(
    key: &str,
    toolchain: &str,
    seconds: f64,
    log: &str,
    reason: RejectReason,
    message: String,
) -> Result<(cache::CacheRecord, Vec<u8>), CompileError> {
    Ok((
        CubinCache::record(
            key,
            toolchain,
            seconds,
            log,
            CachedResult::Refused { reason, message },
        ),
        Vec::new(),
    ))
}

/// The resources ptxas reported for `symbol`.
/// A compile that produced a cubin, as the cache keeps it: the entry, its resources, the hash.
fn compiled_result(
    report: &ptxas::PtxasReport,
    symbol: String,
    arch: &str,
    cubin: &[u8],
) -> Result<CachedResult, CompileError> {
    let resources = entry_resources(report, &symbol, arch)?;
    Ok(CachedResult::Compiled {
        entry: symbol,
        resources,
        cubin_sha256: sha256_hex(cubin),
    })
}

fn entry_resources(
    report: &ptxas::PtxasReport,
    symbol: &str,
    arch: &str,
) -> Result<KernelResources, CompileError> {
    match report.entry(symbol, Some(arch)) {
        Some(e) if e.has_usage => Ok(e.resources.clone()),
        _ => Err(CompileError::Toolchain(format!(
            "ptxas printed no resource usage for `{symbol}` (is `-v` reaching ptxas?)"
        ))),
    }
}

/// `sm_<digits>[a|f]`.
fn check_arch(arch: &str) -> Result<(), CompileError> {
    let ok = arch.strip_prefix("sm_").is_some_and(|cc| {
        let digits = cc.trim_end_matches(['a', 'f']);
        !digits.is_empty()
            && digits.len() + 1 >= cc.len()
            && digits.bytes().all(|b| b.is_ascii_digit())
    });
    if ok {
        Ok(())
    } else {
        Err(CompileError::Setup(format!(
            "`{arch}` is not a GPU architecture of the form sm_90a, sm_90, sm_80 (a cubin needs a real architecture)"
        )))
    }
}

/// The cache key of `job` compiled by `compiler` (`identity`: name, version) with `flags`.
fn cache_key(job: &CompileJob, compiler: Compiler, identity: &str, flags: &[String]) -> String {
    let mut h = KeyHasher::new();
    h.field(match compiler {
        Compiler::Nvcc => "nvcc",
        Compiler::Nvrtc => "nvrtc",
    })
    .field(identity)
    .field(&job.arch)
    .field(&job.entry)
    .field(job.defines.len().to_string());
    for (k, v) in &job.defines {
        h.field(k).field(v);
    }
    h.field(flags.len().to_string());
    for f in flags {
        h.field(f);
    }
    h.field(&job.file_name).field(&job.source);
    let side = job
        .include_dir
        .as_deref()
        .map(|d| side_files(d, &job.file_name))
        .unwrap_or_default();
    h.field(side.len().to_string());
    for (name, digest) in side {
        h.field(name).field(digest);
    }
    h.finish()
}

/// Files in `dir` a source may include (`.h .hpp .cuh .inc .cu`, not `own`), by name, with
/// their sha256: a change to a header changes the key.
fn side_files(dir: &Path, own: &str) -> Vec<(String, String)> {
    const EXTS: [&str; 7] = ["h", "hh", "hpp", "hxx", "cuh", "inc", "cu"];
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, String)> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| EXTS.contains(&e))
        })
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_string();
            if name == own {
                return None;
            }
            Some((name, sha256_hex(&std::fs::read(&p).ok()?)))
        })
        .collect();
    out.sort();
    out
}

/// The compiler's error lines: from the first line that says `error` (or `fatal`), without
/// ptxas's resource report, at most 30 lines and 3000 characters.
pub fn excerpt(output: &str) -> String {
    let lines: Vec<&str> = output
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.contains("ptxas info") && !l.contains("bytes stack frame"))
        .collect();
    let start = lines
        .iter()
        .position(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("error") || l.contains("fatal")
        })
        .unwrap_or(0);
    let mut kept: Vec<&str> = Vec::new();
    for l in &lines[start..] {
        if l.is_empty() && kept.last().is_none_or(|p| p.is_empty()) {
            continue;
        }
        kept.push(l);
    }
    while kept.last().is_some_and(|l| l.is_empty()) {
        kept.pop();
    }
    let total = kept.len();
    let mut text = kept.iter().take(30).copied().collect::<Vec<_>>().join("\n");
    if total > 30 {
        text.push_str(&format!("\n… ({} more lines)", total - 30));
    }
    if text.trim().is_empty() {
        return "the compiler printed nothing".to_string();
    }
    truncate(&text, 3000)
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} more bytes)", &text[..end], text.len() - end)
}

#[cfg(test)]
mod tests;
