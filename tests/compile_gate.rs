//! The compile gate against the real compilers: nvcc and NVRTC from the CUDA 13.0 wheels
//! (`scripts/setup-cuda`), or any CUDA install the gate finds. No GPU is needed. When a
//! compiler is not found, its tests print a SKIPPED line to stderr and pass.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use evoengineer::eval::compile::{
    compile_command, CacheSetting, CompileError, CompileGate, CompileJob, CompileQueue,
    CompilerSettings, RejectReason,
};
use evoengineer::eval::Outcome;
use evoengineer::space::Config;
use evoengineer::task::{Compiler, Task};

const TASK: &str = r#"
[[knob]]
name = "SCALE"
values = [2, 3]

[[knob]]
name = "WORK"
values = [8, 64]

[[knob]]
name = "BM"
values = [128, 2048]

[[knob]]
name = "SMEM_KB"
values = [0, 300]

[[shape]]
name = "s"
params = { N = 4096, D = 16 }

[kernel]
source = "kernel.cu"
entry = "scale"
compiler = "COMPILER"
flags = [FLAGS]
shape_defines = ["D"]
grid = ["ceil_div(N, BM)"]
block = ["BM"]
shared_mem = "SMEM_KB * 1024"
max_spill_bytes = 0

[[kernel.arg]]
name = "y"
kind = "buffer"
dtype = "f32"
len = "N"
role = "output"

[[kernel.arg]]
name = "x"
kind = "buffer"
dtype = "f32"
len = "N"

[[kernel.arg]]
name = "n"
kind = "scalar"
dtype = "i32"
value = "N"
"#;

/// Uses the CUDA headers (bf16), `<stdint.h>` (which NVRTC lacks), every knob and the shape
/// define `D`; with WORK = 64 it wants more registers than `-maxrregcount=16` gives.
const KERNEL: &str = r#"
#include <cuda_bf16.h>
#include <stdint.h>
#ifndef WORK
#define WORK 8
#endif
extern "C" __global__ void scale(float* y, const float* x, int n) {
  extern __shared__ float dyn[];
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float acc[WORK];
#pragma unroll
  for (int k = 0; k < WORK; ++k) acc[k] = x[(i * 7 + k * 131) % n];
  float s = 0.f;
#pragma unroll
  for (int k = 0; k < WORK; ++k) s += acc[k] * acc[(k * 5 + 3) % WORK] + D;
  uint32_t bits = __float_as_uint(s);
  y[i] = SCALE * __bfloat162float(__float2bfloat16(__uint_as_float(bits)));
  if (SMEM_KB > 0) dyn[threadIdx.x] = s;
}
"#;

/// A C++ template kernel in a namespace: found by `ns::twice<2>`.
const CPP_KERNEL: &str = r#"
namespace ns {
template <int K>
__global__ void twice(float* y, const float* x, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = K * x[i] * SCALE;
}
template __global__ void twice<2>(float*, const float*, int);
template __global__ void twice<4>(float*, const float*, int);
}
"#;

const BROKEN: &str = r#"
extern "C" __global__ void scale(float* y, const float* x, int n) {
  y[0] = x[0] * undefined_scale;
}
"#;

fn make_task(dir: &Path, compiler: Compiler) -> Task {
    let (name, flags) = match compiler {
        Compiler::Nvcc => ("nvcc", r#""-O3""#),
        Compiler::Nvrtc => ("nvrtc", ""),
    };
    let toml = TASK.replace("COMPILER", name).replace("FLAGS", flags);
    std::fs::write(dir.join("task.toml"), toml).unwrap();
    std::fs::write(dir.join("kernel.cu"), KERNEL).unwrap();
    Task::load(dir).unwrap()
}

fn settings(cache: &Path) -> CompilerSettings {
    CompilerSettings {
        cache: CacheSetting::Dir(cache.to_path_buf()),
        jobs: 2,
        ..CompilerSettings::default()
    }
}

/// A gate whose compiler is there, or `None` after saying SKIPPED.
fn gate_or_skip(compiler: Compiler, settings: CompilerSettings, test: &str) -> Option<CompileGate> {
    let gate = CompileGate::new(settings);
    match gate.toolchain(compiler) {
        Ok(_) => Some(gate),
        Err(e) => {
            let what = match compiler {
                Compiler::Nvcc => "nvcc",
                Compiler::Nvrtc => "NVRTC",
            };
            // Straight to stderr, in one write: libtest captures `eprintln!` of passing tests.
            let line =
                format!("\nSKIPPED: {what} not found (run scripts/setup-cuda) [{test}: {e}]\n");
            let _ = std::io::stderr().write_all(line.as_bytes());
            None
        }
    }
}

fn cfg(scale: i64, work: i64, bm: i64, smem_kb: i64) -> Config {
    Config(vec![scale, work, bm, smem_kb])
}

fn job(task: &Task, config: &Config, source: Option<&str>) -> CompileJob {
    CompileJob::for_candidate(task, config, task.default_shape(), "sm_90a", source).unwrap()
}

fn rejection(err: &CompileError) -> &evoengineer::eval::compile::Rejection {
    err.rejection()
        .unwrap_or_else(|| panic!("expected a rejection, got {err}"))
}

/// Both compilers pass the same checks.
fn compiles_and_gates(compiler: Compiler, test: &str) {
    let cache = tempfile::tempdir().unwrap();
    let Some(gate) = gate_or_skip(compiler, settings(cache.path()), test) else {
        return;
    };
    let toolchain = gate.toolchain(compiler).unwrap();
    assert!(
        toolchain.starts_with(if compiler == Compiler::Nvcc {
            "nvcc 13."
        } else {
            "nvrtc 13."
        }),
        "{toolchain}"
    );
    let dir = tempfile::tempdir().unwrap();
    let task = make_task(dir.path(), compiler);

    // Two values of a knob: two different cubins, each with its resource report.
    let a = gate.compile(&job(&task, &cfg(2, 8, 128, 0), None)).unwrap();
    let b = gate.compile(&job(&task, &cfg(3, 8, 128, 0), None)).unwrap();
    for c in [&a, &b] {
        assert!(!c.cached);
        assert_eq!(c.entry, "scale");
        assert_eq!(&c.cubin[..4], b"\x7fELF");
        assert!(c.resources.registers > 0, "{:?}", c.resources);
        assert_eq!(c.report.registers, Some(c.resources.registers));
        assert_eq!(c.report.spill_bytes, Some(0));
        assert!(c.report.compile_s.unwrap() > 0.0);
        assert_eq!(c.toolchain, toolchain);
        assert!(
            c.log
                .contains("Compiling entry function 'scale' for 'sm_90a'"),
            "{}",
            c.log
        );
    }
    assert_ne!(a.report.cubin_sha256, b.report.cubin_sha256);
    assert_ne!(a.key, b.key);

    // The second compile of the same job comes from the cache.
    let again = gate.compile(&job(&task, &cfg(2, 8, 128, 0), None)).unwrap();
    assert!(again.cached);
    assert_eq!(again.cubin, a.cubin);
    assert_eq!(again.report, a.report);
    assert_eq!(again.entry, a.entry);
    // So does a fresh gate on the same directory (another process, say).
    let fresh = CompileGate::new(settings(cache.path()));
    assert!(
        fresh
            .compile(&job(&task, &cfg(2, 8, 128, 0), None))
            .unwrap()
            .cached
    );

    // A compile error: rejected with the compiler's error lines; cached too.
    let err = gate
        .compile(&job(&task, &cfg(2, 8, 128, 0), Some(BROKEN)))
        .unwrap_err();
    let r = rejection(&err);
    assert_eq!(r.reason, RejectReason::CompilerError);
    assert!(r.message.contains("kernel.cu(3): error"), "{}", r.message);
    assert!(r.message.contains("undefined_scale"), "{}", r.message);
    assert!(!r.message.contains("/tmp/"), "{}", r.message);
    assert!(!r.cached);
    let err = gate
        .compile(&job(&task, &cfg(2, 8, 128, 0), Some(BROKEN)))
        .unwrap_err();
    assert!(rejection(&err).cached);
    let eval = err.into_evaluation().unwrap();
    assert_eq!(eval.outcome, Outcome::CompileError);
    assert!(eval.message.unwrap().contains("undefined_scale"));

    // Limits: threads per block, shared memory per block.
    let err = gate
        .compile(&job(&task, &cfg(2, 8, 2048, 0), None))
        .unwrap_err();
    assert_eq!(rejection(&err).reason, RejectReason::ThreadsPerBlock);
    assert!(rejection(&err).report.as_ref().unwrap().registers.unwrap() > 0);
    let err = gate
        .compile(&job(&task, &cfg(2, 8, 128, 300), None))
        .unwrap_err();
    let r = rejection(&err);
    assert_eq!(r.reason, RejectReason::SharedMemory);
    assert!(r.message.contains("307200 dynamic"), "{}", r.message);
    assert_eq!(r.report.as_ref().unwrap().smem_bytes, Some(307_200));

    // Spills: forced with -maxrregcount, rejected at max_spill_bytes = 0.
    let tight = CompileGate::new(CompilerSettings {
        extra_flags: vec![match compiler {
            Compiler::Nvcc => "-maxrregcount=16".into(),
            Compiler::Nvrtc => "--maxrregcount=16".into(),
        }],
        ..settings(cache.path())
    });
    let err = tight
        .compile(&job(&task, &cfg(2, 64, 128, 0), None))
        .unwrap_err();
    let r = rejection(&err);
    assert_eq!(r.reason, RejectReason::Spills, "{}", r.message);
    let res = r.resources.as_ref().unwrap();
    assert!(
        res.spill_store_bytes > 0 && res.spill_load_bytes > 0,
        "{res:?}"
    );
    assert_eq!(
        r.report.as_ref().unwrap().spill_bytes,
        Some(res.spill_bytes())
    );
    assert!(r.message.contains("max_spill_bytes = 0"), "{}", r.message);
    let mut generous = job(&task, &cfg(2, 64, 128, 0), None);
    generous.max_spill_bytes = 1 << 20;
    let ok = tight.compile(&generous).unwrap();
    assert!(ok.cached, "the same compile, only the allowance differs");
    assert!(ok.resources.spill_bytes() > 0);
    // Without the flag the same kernel does not spill.
    let roomy = gate
        .compile(&job(&task, &cfg(2, 64, 128, 0), None))
        .unwrap();
    assert_eq!(roomy.resources.spill_bytes(), 0);
    assert!(roomy.resources.registers > 24);

    // A C++ template entry: the symbol for cuModuleGetFunction is the mangled one.
    let mut cpp = job(&task, &cfg(2, 8, 128, 0), Some(CPP_KERNEL));
    cpp.entry = "ns::twice<4>".into();
    let c = gate.compile(&cpp).unwrap();
    assert_eq!(c.entry, "_ZN2ns5twiceILi4EEEvPfPKfi");
    // An entry that is not there.
    cpp.entry = "ns::thrice".into();
    let err = gate.compile(&cpp).unwrap_err();
    assert!(
        matches!(
            rejection(&err).reason,
            RejectReason::EntryNotFound | RejectReason::CompilerError
        ),
        "{err}"
    );
}

#[test]
fn nvcc_compiles_and_gates() {
    compiles_and_gates(Compiler::Nvcc, "nvcc_compiles_and_gates");
}

#[test]
fn nvrtc_compiles_and_gates() {
    compiles_and_gates(Compiler::Nvrtc, "nvrtc_compiles_and_gates");
}

#[test]
fn nvrtc_refuses_nvcc_options_as_a_setup_error() {
    let cache = tempfile::tempdir().unwrap();
    let Some(gate) = gate_or_skip(
        Compiler::Nvrtc,
        settings(cache.path()),
        "nvrtc_refuses_nvcc_options",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let task = make_task(dir.path(), Compiler::Nvrtc);
    let mut j = job(&task, &cfg(2, 8, 128, 0), None);
    j.flags = vec!["-O3".into()];
    let err = gate.compile(&j).unwrap_err();
    assert!(
        matches!(&err, CompileError::Setup(m) if m.contains("-O3")),
        "{err}"
    );
}

#[test]
fn nvcc_and_nvrtc_keys_differ() {
    let cache = tempfile::tempdir().unwrap();
    let Some(gate) = gate_or_skip(
        Compiler::Nvcc,
        settings(cache.path()),
        "nvcc_and_nvrtc_keys_differ",
    ) else {
        return;
    };
    let Some(_) = gate_or_skip(
        Compiler::Nvrtc,
        settings(cache.path()),
        "nvcc_and_nvrtc_keys_differ",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let task = make_task(dir.path(), Compiler::Nvrtc);
    let j = job(&task, &cfg(2, 8, 128, 0), None);
    let by_nvrtc = gate.compile(&j).unwrap();
    let by_nvcc = gate
        .compile(&CompileJob {
            compiler: Compiler::Nvcc,
            ..j
        })
        .unwrap();
    assert_ne!(by_nvrtc.key, by_nvcc.key);
    assert!(!by_nvcc.cached);
    assert!(by_nvrtc.toolchain.starts_with("nvrtc") && by_nvcc.toolchain.starts_with("nvcc"));
}

#[test]
fn parallel_batch_and_queue() {
    let cache = tempfile::tempdir().unwrap();
    let Some(gate) = gate_or_skip(
        Compiler::Nvcc,
        settings(cache.path()),
        "parallel_batch_and_queue",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let task = make_task(dir.path(), Compiler::Nvcc);
    let configs = [
        cfg(2, 8, 128, 0),
        cfg(3, 8, 128, 0),
        cfg(2, 8, 2048, 0),
        cfg(3, 64, 128, 0),
    ];
    let jobs: Vec<CompileJob> = configs.iter().map(|c| job(&task, c, None)).collect();
    let results = gate.compile_many(&jobs);
    assert_eq!(results.len(), 4);
    for (j, r) in jobs.iter().zip(&results) {
        // Each result is its own job's: compare with a (cached) compile of that job alone.
        let alone = gate.compile(j);
        match (r, alone) {
            (Ok(a), Ok(b)) => assert_eq!(a.report.cubin_sha256, b.report.cubin_sha256),
            (Err(a), Err(b)) => assert_eq!(rejection(a).reason, rejection(&b).reason),
            (a, b) => panic!("{a:?} vs {b:?}"),
        }
    }
    assert_eq!(
        rejection(results[2].as_ref().unwrap_err()).reason,
        RejectReason::ThreadsPerBlock
    );

    let queue: CompileQueue<String> = CompileQueue::with_workers(Arc::new(gate), 2);
    for (i, j) in jobs.iter().enumerate() {
        assert!(queue.submit(format!("c{i}"), j.clone()));
    }
    assert!(!queue.submit("c0".into(), jobs[0].clone()));
    // Taken in another order than submitted.
    for i in [3, 0, 2, 1] {
        let r = queue.take(&format!("c{i}")).unwrap();
        assert_eq!(r.is_ok(), results[i].is_ok());
        if let (Ok(a), Ok(b)) = (&r, &results[i]) {
            assert_eq!(a.cubin, b.cubin);
            assert!(a.cached);
        }
    }
    assert!(queue.take(&"c0".to_string()).is_none());
    assert!(queue.take(&"never".to_string()).is_none());
}

#[test]
fn compile_command_rows() {
    let cache = tempfile::tempdir().unwrap();
    let Some(_) = gate_or_skip(
        Compiler::Nvcc,
        settings(cache.path()),
        "compile_command_rows",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let task = make_task(dir.path(), Compiler::Nvcc);
    let configs = [cfg(2, 8, 128, 0), cfg(2, 8, 128, 300)];
    let rows = compile_command(
        &task,
        &configs,
        task.default_shape(),
        "sm_90a",
        &settings(cache.path()),
    )
    .unwrap();
    assert_eq!(rows.len(), 2);
    let json = serde_json::to_value(&rows).unwrap();
    let first = &json[0];
    assert_eq!(
        first["config"],
        serde_json::json!({"SCALE": 2, "WORK": 8, "BM": 128, "SMEM_KB": 0})
    );
    assert_eq!(first["key"], "base|SCALE=2,WORK=8,BM=128,SMEM_KB=0");
    assert_eq!(first["ok"], true);
    assert_eq!(first["cached"], false);
    assert!(first["registers"].as_u64().unwrap() > 0);
    assert_eq!(first["spill_bytes"], 0);
    assert_eq!(first["cubin_sha256"].as_str().unwrap().len(), 64);
    assert!(first["error"].is_null());
    for key in [
        "smem_bytes",
        "stack_frame_bytes",
        "compile_s",
        "entry",
        "cache_key",
        "reason",
    ] {
        assert!(first.get(key).is_some(), "{key}");
    }
    let second = &json[1];
    assert_eq!(second["ok"], false);
    assert_eq!(second["reason"], "shared_memory");
    assert!(second["error"].as_str().unwrap().contains("shared memory"));

    // Again: every row from the cache.
    let rows = compile_command(
        &task,
        &configs,
        task.default_shape(),
        "sm_90a",
        &settings(cache.path()),
    )
    .unwrap();
    assert!(rows.iter().all(|r| r.cached));

    // A compiler that is not there is an error, not rows.
    let missing = CompilerSettings {
        nvcc: Some("/no/such/nvcc".into()),
        ..settings(cache.path())
    };
    let err =
        compile_command(&task, &configs, task.default_shape(), "sm_90a", &missing).unwrap_err();
    assert!(matches!(err, CompileError::Toolchain(_)), "{err}");
}

/// The worker's own checker kernels compile with either compiler of a task, and the cubin
/// holds both entries (the GPU evaluator compiles them once per run; the worker loads them).
fn checker_compiles(compiler: Compiler, test: &str) {
    let cache = tempfile::tempdir().unwrap();
    let Some(gate) = gate_or_skip(compiler, settings(cache.path()), test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let task = make_task(dir.path(), compiler);
    let j = evoengineer::eval::cuda::checker_job(job(&task, &task.space.default_config(), None));
    let done = gate
        .compile(&j)
        .unwrap_or_else(|e| panic!("the checker does not compile with {compiler:?}: {e}"));
    for entry in [
        evoengineer::eval::worker::CHECKER_COMPARE_ENTRY,
        evoengineer::eval::worker::CHECKER_SAME_ENTRY,
    ] {
        assert!(
            done.cubin
                .windows(entry.len())
                .any(|w| w == entry.as_bytes()),
            "{entry} is not in the cubin"
        );
    }
    assert_eq!(
        done.resources.spill_store_bytes + done.resources.spill_load_bytes,
        0,
        "{}",
        done.log
    );
}

#[test]
fn the_worker_checker_compiles_with_nvcc() {
    checker_compiles(Compiler::Nvcc, "the_worker_checker_compiles_with_nvcc");
}

#[test]
fn the_worker_checker_compiles_with_nvrtc() {
    checker_compiles(Compiler::Nvrtc, "the_worker_checker_compiles_with_nvrtc");
}
