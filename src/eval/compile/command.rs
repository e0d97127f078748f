//! `evoengineer compile`: compile configs of a task and report what the compiler said.

use serde::Serialize;

use super::{CompileError, CompileGate, CompileJob, CompilerSettings, RejectReason};
use crate::candidate::Candidate;
use crate::space::Config;
use crate::task::{Shape, Task};

/// One config's compile, as `evoengineer compile --json` prints it. Every key is always
/// present (`null` when unknown).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CompileRow {
    /// Knob name to value.
    pub config: serde_json::Map<String, serde_json::Value>,
    /// The candidate's key, `base|K=V,...`.
    pub key: String,
    /// Passed the compile gate.
    pub ok: bool,
    /// Why not, when not.
    pub reason: Option<RejectReason>,
    pub registers: Option<u32>,
    /// Static plus dynamic shared memory per block, bytes.
    pub smem_bytes: Option<u64>,
    /// Spill stores plus spill loads, bytes.
    pub spill_bytes: Option<u64>,
    pub stack_frame_bytes: Option<u64>,
    pub cubin_sha256: Option<String>,
    pub compile_s: Option<f64>,
    /// Answered from the cubin cache (`compile_s` is the original compile's).
    pub cached: bool,
    /// The entry's symbol (for `cuModuleGetFunction`).
    pub entry: Option<String>,
    /// The cubin cache key.
    pub cache_key: Option<String>,
    pub error: Option<String>,
}

/// Compiles each config of `task`'s kernel for `shape` and `arch`, in parallel, rows in the
/// order of `configs`.
///
/// A config the gate rejects is a row with `ok: false`; a missing or broken compiler, or a
/// task that cannot be compiled at all, is an `Err` (checked before anything is compiled).
pub fn compile_command(
    task: &Task,
    configs: &[Config],
    shape: &Shape,
    arch: &str,
    settings: &CompilerSettings,
) -> Result<Vec<CompileRow>, CompileError> {
    let gate = CompileGate::new(settings.clone());
    let spec = task.kernel.as_ref().ok_or_else(|| {
        CompileError::Setup(format!(
            "task `{}` has no [kernel] section: nothing to compile",
            task.name
        ))
    })?;
    gate.toolchain(spec.compiler)?;
    super::check_arch(arch)?;

    let mut rows: Vec<Option<CompileRow>> = Vec::with_capacity(configs.len());
    let mut jobs = Vec::new();
    let mut slots = Vec::new();
    for (i, config) in configs.iter().enumerate() {
        match CompileJob::for_candidate(task, config, shape, arch, None) {
            Ok(job) => {
                jobs.push(job);
                slots.push(i);
                rows.push(None);
            }
            Err(CompileError::Rejected(r)) => {
                rows.push(Some(row(task, config, Err(CompileError::Rejected(r)))));
            }
            Err(e) => return Err(e),
        }
    }
    for (slot, result) in slots.into_iter().zip(gate.compile_many(&jobs)) {
        if let Err(e @ (CompileError::Toolchain(_) | CompileError::Setup(_))) = result {
            return Err(e);
        }
        rows[slot] = Some(row(task, &configs[slot], result));
    }
    Ok(rows
        .into_iter()
        .map(|r| r.expect("every row filled"))
        .collect())
}

fn row(task: &Task, config: &Config, result: Result<super::Compiled, CompileError>) -> CompileRow {
    let mut row = CompileRow {
        config: task.space.to_json(config),
        key: Candidate::base(config.clone()).key(&task.space),
        ok: false,
        reason: None,
        registers: None,
        smem_bytes: None,
        spill_bytes: None,
        stack_frame_bytes: None,
        cubin_sha256: None,
        compile_s: None,
        cached: false,
        entry: None,
        cache_key: None,
        error: None,
    };
    let report = match result {
        Ok(c) => {
            row.ok = true;
            row.cached = c.cached;
            row.entry = Some(c.entry);
            row.cache_key = Some(c.key);
            Some(c.report)
        }
        Err(CompileError::Rejected(r)) => {
            row.reason = Some(r.reason);
            row.error = Some(r.message);
            row.cached = r.cached;
            row.cache_key = r.key;
            r.report
        }
        Err(e) => {
            row.error = Some(e.to_string());
            None
        }
    };
    if let Some(r) = report {
        row.registers = r.registers;
        row.smem_bytes = r.smem_bytes;
        row.spill_bytes = r.spill_bytes;
        row.stack_frame_bytes = r.stack_frame_bytes;
        row.cubin_sha256 = r.cubin_sha256;
        row.compile_s = r.compile_s;
    }
    row
}
