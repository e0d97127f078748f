//! A smoke test of the GPU side, for a machine with a GPU, `nvcc`, and optionally `ncu` and
//! PyTorch: `cargo run --release --example gpu_smoke [OUT_DIR]`.
//!
//! It builds small kernels with nvcc (a correct one, a wrong one, one that leaves outputs
//! unwritten, one that faults, one that hangs, one that caches its result, one with 64 KB of
//! dynamic shared memory, one that printf's) and takes each through a real worker (this same
//! binary, run as `gpu_smoke worker`), then profiles the correct one with ncu and times a
//! PyTorch baseline. It prints one line per case and exits non-zero if a case's outcome is not
//! the expected one.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use evoengineer::eval::baseline::{run_baselines, BaselineOptions};
use evoengineer::eval::inputs::{ArgSpec, Scalar};
use evoengineer::eval::profile::{ProfileOutcome, Profiler};
use evoengineer::eval::worker::{
    worker_command, Dims, EvalRequest, KernelRef, RunOnceRequest, TimingParams, WorkerHandle,
};
use evoengineer::eval::Outcome;
use evoengineer::insight::InsightRules;
use evoengineer::task::{ArgKind, ArgRole, Baseline, DType, Init, Tolerance};

const N: u64 = 1 << 24;

const SOURCE: &str = r#"
#include <cuda_bf16.h>
#include <cstdio>
#define IDX int i = blockIdx.x * blockDim.x + threadIdx.x; if (i >= n) return;
#define F(x) __bfloat162float(x)
extern "C" __global__ void ref(const __nv_bfloat16* a, const __nv_bfloat16* b, float* o, int n) {
  IDX o[i] = 2.f * F(a[i]) + F(b[i]);
}
extern "C" __global__ void good(const __nv_bfloat16* a, const __nv_bfloat16* b, __nv_bfloat16* o, int n) {
  IDX o[i] = __float2bfloat16(2.f * F(a[i]) + F(b[i]));
}
extern "C" __global__ void wrong(const __nv_bfloat16* a, const __nv_bfloat16* b, __nv_bfloat16* o, int n) {
  IDX o[i] = __float2bfloat16(F(a[i]) + F(b[i]));
}
extern "C" __global__ void partial(const __nv_bfloat16* a, const __nv_bfloat16* b, __nv_bfloat16* o, int n) {
  IDX if (i % 1000 == 7) return; o[i] = __float2bfloat16(2.f * F(a[i]) + F(b[i]));
}
extern "C" __global__ void fault(const __nv_bfloat16* a, const __nv_bfloat16* b, __nv_bfloat16* o, int n) {
  IDX o[i + (1ll << 38)] = a[i];
}
__device__ volatile int forever = 1;
extern "C" __global__ void hang(const __nv_bfloat16* a, const __nv_bfloat16* b, __nv_bfloat16* o, int n) {
  while (forever) { __nanosleep(1000); }
}
__device__ int cached_done = 0;
extern "C" __global__ void cached(const __nv_bfloat16* a, const __nv_bfloat16* b, __nv_bfloat16* o, int n) {
  if (cached_done) return;
  IDX o[i] = __float2bfloat16(2.f * F(a[i]) + F(b[i]));
  if (i == n - 1) cached_done = 1;
}
extern "C" __global__ void smem(const __nv_bfloat16* a, const __nv_bfloat16* b, __nv_bfloat16* o, int n) {
  extern __shared__ float buf[];
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  buf[threadIdx.x * 64] = i < n ? 2.f * F(a[i]) + F(b[i]) : 0.f;
  __syncthreads();
  if (i < n) o[i] = __float2bfloat16(buf[threadIdx.x * 64]);
}
extern "C" __global__ void chatty(const __nv_bfloat16* a, const __nv_bfloat16* b, __nv_bfloat16* o, int n) {
  if (blockIdx.x == 0 && threadIdx.x == 0) printf("{\"op\":\"this is a kernel printf, not a response\"}\n");
  IDX o[i] = __float2bfloat16(2.f * F(a[i]) + F(b[i]));
}
"#;

fn args() -> Vec<ArgSpec> {
    let buf = |name: &str, role| ArgSpec {
        name: name.into(),
        kind: ArgKind::Buffer,
        dtype: DType::Bf16,
        role,
        init: Init::default(),
        len: N,
        shape: vec![],
        value: None,
    };
    vec![
        buf("A", ArgRole::Input),
        buf("B", ArgRole::Input),
        buf("O", ArgRole::Output),
        ArgSpec {
            name: "n".into(),
            kind: ArgKind::Scalar,
            dtype: DType::I32,
            role: ArgRole::Input,
            init: Init::default(),
            len: 0,
            shape: vec![],
            value: Some(Scalar::Int(N as i64)),
        },
    ]
}

fn dims(block: u32, smem: u32) -> Dims {
    Dims {
        grid: [(N as u32).div_ceil(block), 1, 1],
        block: [block, 1, 1],
        smem,
    }
}

fn request(cubin: &Path, entry: &str, dims: Dims, timing: bool) -> EvalRequest {
    EvalRequest {
        kernel: KernelRef {
            cubin: cubin.to_path_buf(),
            entry: entry.into(),
            dims,
        },
        reference: Some(KernelRef {
            cubin: cubin.to_path_buf(),
            entry: "ref".into(),
            dims: dims_plain(),
        }),
        args: args(),
        trials: 5,
        seed: 7,
        tolerance: Tolerance {
            max_abs_err: Some(0.06),
            ..Default::default()
        },
        timing: timing.then(TimingParams::default),
        checker: None,
    }
}

fn dims_plain() -> Dims {
    dims(256, 0)
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("worker") {
        return worker_command(&argv[2..]);
    }
    let out_dir = PathBuf::from(
        argv.get(1)
            .cloned()
            .unwrap_or_else(|| "/tmp/gpu_smoke".into()),
    );
    std::fs::create_dir_all(&out_dir).expect("out dir");
    let dir = std::env::temp_dir().join(format!("gpu_smoke_{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cu = dir.join("k.cu");
    std::fs::write(&cu, SOURCE).expect("write source");
    let cubin = dir.join("k.cubin");
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".into());
    let t = Instant::now();
    let status = Command::new(&nvcc)
        .args(["-cubin", "-gencode=arch=compute_90,code=sm_90", "-O3", "-o"])
        .arg(&cubin)
        .arg(&cu)
        .status();
    if !status.as_ref().is_ok_and(|s| s.success()) {
        eprintln!("nvcc failed: {status:?}");
        return ExitCode::FAILURE;
    }
    println!("nvcc: {:.1} s", t.elapsed().as_secs_f64());

    let exe = std::env::current_exe().expect("current exe");
    let mut w = WorkerHandle::with_command(&exe, ["worker"]);
    let t = Instant::now();
    match w.hello(Duration::from_secs(60)) {
        Ok(d) => println!(
            "hello: {} | {:?} ({:.1} s)",
            d.describe(),
            d,
            t.elapsed().as_secs_f64()
        ),
        Err(e) => {
            eprintln!("hello failed: {e}");
            return ExitCode::FAILURE;
        }
    }

    let cases: Vec<(&str, Dims, bool, Outcome, u64)> = vec![
        ("good", dims_plain(), true, Outcome::Ok, 120),
        ("good", dims_plain(), true, Outcome::Ok, 120), // again: cached inputs and reference
        ("wrong", dims_plain(), false, Outcome::Incorrect, 60),
        ("partial", dims_plain(), false, Outcome::Incorrect, 60),
        ("cached", dims_plain(), true, Outcome::Incorrect, 60),
        ("fault", dims_plain(), false, Outcome::RuntimeError, 60),
        ("good", dims_plain(), false, Outcome::Ok, 60), // a fresh worker after the fault
        ("hang", dims_plain(), false, Outcome::Timeout, 15),
        ("good", dims_plain(), false, Outcome::Ok, 60), // a fresh worker after the hang
        ("smem", dims(256, 64 * 1024), true, Outcome::Ok, 120),
        (
            "smem",
            dims(256, 300 * 1024),
            false,
            Outcome::RuntimeError,
            60,
        ), // too much smem
        ("good", dims(2048, 0), false, Outcome::RuntimeError, 60), // too many threads
        ("chatty", dims_plain(), false, Outcome::Ok, 60),
        (
            "missing_entry",
            dims_plain(),
            false,
            Outcome::RuntimeError,
            60,
        ),
    ];
    let mut failed = 0;
    let mut log = String::new();
    for (entry, d, timing, expected, timeout) in cases {
        let t = Instant::now();
        let res = w.eval_response(
            &request(&cubin, entry, d, timing),
            Duration::from_secs(timeout),
        );
        let secs = t.elapsed().as_secs_f64();
        let line = match &res {
            Ok(e) => {
                let ok = e.outcome == expected;
                if !ok {
                    failed += 1;
                }
                let timing = e
                    .timing
                    .as_ref()
                    .map(|t| {
                        format!(
                            " p50 {:.2} us p90 {:.2} us min {:.2} n {} clock {:?}->{:?}",
                            t.p50_us,
                            t.p90_us,
                            t.min_us.unwrap_or(0.0),
                            t.samples_us.len(),
                            t.sm_clock_mhz_before,
                            t.sm_clock_mhz_after
                        )
                    })
                    .unwrap_or_default();
                let corr = e
                    .correctness
                    .as_ref()
                    .map(|c| {
                        format!(
                            " max_abs {:.4} rel_l2 {:.2e} nan {} unwritten {}",
                            c.max_abs_err,
                            c.rel_l2_err.unwrap_or(0.0),
                            c.nan_count,
                            c.unwritten_count
                        )
                    })
                    .unwrap_or_default();
                let bench = e
                    .bench
                    .as_ref()
                    .map(|b| {
                        format!(
                            " [tail p50 {:.1} us, warm-up {} samples in {:.1} ms, {} sets, regs {:?}]",
                            b.tail_p50_us,
                            b.warmup_samples,
                            b.warmup_ms,
                            b.input_sets,
                            e.kernel.as_ref().map(|k| k.registers)
                        )
                    })
                    .unwrap_or_default();
                format!(
                    "{} {entry:<14} {:<14} (want {expected}) {secs:6.2} s{corr}{timing}{bench} | {}",
                    if ok { "PASS" } else { "FAIL" },
                    e.outcome.to_string(),
                    e.message.clone().unwrap_or_default()
                )
            }
            Err(err) => {
                failed += 1;
                format!("FAIL {entry:<14} error {err}")
            }
        };
        println!("{line} [workers started: {}]", w.spawned());
        log.push_str(&line);
        log.push('\n');
        if let Ok(e) = &res {
            log.push_str(&serde_json::to_string(e).unwrap_or_default());
            log.push('\n');
        }
    }
    w.shutdown();

    // Profile the good kernel.
    let t = Instant::now();
    let mut profiler =
        Profiler::new(&exe, InsightRules::default()).with_timeout(Duration::from_secs(120));
    let once = RunOnceRequest {
        kernel: KernelRef {
            cubin: cubin.clone(),
            entry: "good".into(),
            dims: dims_plain(),
        },
        args: args(),
        seed: 7,
        trial: 0,
    };
    match profiler.profile(&once) {
        Ok(ProfileOutcome::Profiled(p)) => println!(
            "PASS profile ({:.1} s): {:?} {:?}",
            t.elapsed().as_secs_f64(),
            p.bottleneck,
            p.metrics
        ),
        Ok(other) => println!("NOTE profile: {other:?}"),
        Err(e) => {
            failed += 1;
            println!("FAIL profile: {e}");
        }
    }

    // A PyTorch baseline on the same inputs.
    let t = Instant::now();
    let run = run_baselines(
        &args(),
        &[
            Baseline {
                name: "torch 2a+b".into(),
                expr: "(2 * A.float() + B.float()).to(torch.bfloat16)".into(),
                setup: None,
            },
            Baseline {
                name: "broken".into(),
                expr: "A @ undefined_name".into(),
                setup: None,
            },
        ],
        7,
        &BaselineOptions::default(),
    );
    println!("baselines ({:.1} s): {run:?}", t.elapsed().as_secs_f64());
    if run.note.is_some() || run.results.first().and_then(|r| r.p50_us).is_none() {
        failed += 1;
    }
    let _ = std::fs::write(out_dir.join("smoke.log"), log);
    let _ = std::fs::remove_dir_all(&dir);
    println!("{failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
