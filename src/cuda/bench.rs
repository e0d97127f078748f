//! The timing loop of the performance gate.
//!
//! One sample, all on the worker's single stream:
//!
//! ```text
//! host t0 · ev0 · [poison outputs, restore inout buffers] · [L2 flush: memset of 2×L2]
//!         · ev1 · kernel · ev2 · cuCtxSynchronize · host t1
//! ```
//!
//! * The sample is ev1→ev2: only the kernel. The flush is queued right before ev1 and keeps
//!   the GPU busy (tens of μs for 2×50 MB) while the host queues ev1, the launch and ev2, so
//!   host launch latency does not leak into the interval.
//! * Each sample has its own event pair recording (the same three events, re-recorded after
//!   the previous sample completed).
//! * **Device-wide sync, and where.** After ev2 the host waits with `cuCtxSynchronize`, which
//!   waits for all work of the context on every stream, so nothing a sample started can
//!   overlap the next one. The sync is *outside* the ev1→ev2 interval on purpose: putting a
//!   host-side sync inside it (ev2 recorded after the host returns from the sync) would add the
//!   host's wake-up and submission latency, several μs, to every sample and swamp small
//!   kernels. It would also buy nothing here: the peers' "other stream" cheat needs host code,
//!   and a candidate is one kernel that we launch; a device-side launch (which would need
//!   `-rdc` and cudadevrt) is a child grid, which the parent grid waits for before it counts
//!   as complete. As a check on the sync we still measure the *tail*: host wall time t0→t1
//!   minus the GPU's own ev0→ev2 span, i.e. submission and wake-up overhead plus any work that
//!   outlived ev2. It is normally ~10–30 μs; the worker flags a p50 tail above
//!   max(500 μs, p50 kernel time).
//! * Warm-up runs the same samples, untimed, for at least `warmup_ms` of wall time (and at
//!   least 3 samples). Its samples estimate the cost of one sample; if `iterations` samples
//!   would exceed `budget_ms`, fewer are taken (never fewer than `min_iterations`).
//! * Launches rotate among the input sets (each with its own parameter list), so a kernel
//!   that caches results between calls sees different inputs.
//! * After every sample a hook of the caller runs (the GPU idle, the launch's outputs still in
//!   place): the worker checks outputs there, applies the stopping rule and racing
//!   (`eval::protocol`), and may end the loop before `iterations`.

use std::time::Instant;

use super::{CudaError, DeviceBuffer, Dims, Events, Gpu, Kernel, Param};

/// Something done before each launch, outside the timed interval.
#[derive(Debug)]
pub enum Prep<'a> {
    /// Fill with a byte (poison an output).
    Fill(&'a DeviceBuffer, u8),
    /// Copy `src` into `dst` (restore an inout buffer's initial values).
    Copy {
        dst: &'a DeviceBuffer,
        src: &'a DeviceBuffer,
    },
}

/// What to time.
pub struct Plan<'a> {
    pub kernel: &'a Kernel,
    pub dims: Dims,
    /// One parameter list per input set.
    pub sets: Vec<Vec<Param>>,
    /// Per input set: what happens before each of its launches.
    pub prep: Vec<Vec<Prep<'a>>>,
    pub warmup_ms: f64,
    /// Timed samples at most.
    pub iterations: u32,
    pub min_iterations: u32,
    /// Wall-time budget of the timed samples, ms.
    pub budget_ms: f64,
}

/// What the loop measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Measured {
    /// ev1→ev2 of each timed sample, μs.
    pub samples_us: Vec<f64>,
    /// Host wall time minus the GPU span of each timed sample, μs.
    pub tail_us: Vec<f64>,
    pub warmup_samples: u32,
    pub warmup_ms: f64,
    /// The input set of the last timed launch (its outputs are still in the output buffers).
    pub last_set: usize,
    pub flush_bytes: usize,
    /// Whether the caller stopped the loop before its limit.
    pub stopped_early: bool,
}

/// One sample just taken, as the caller's hook sees it (the launch's outputs are still in
/// place, and the GPU is idle).
#[derive(Clone, Copy, Debug)]
pub struct Sampled {
    /// Index among the timed samples (warm-up samples count from 0 too).
    pub index: usize,
    pub set: usize,
    pub kernel_us: f64,
    pub warmup: bool,
    /// The loop's own limit (iterations or budget) ends it after this sample.
    pub last: bool,
}

/// What the hook wants after a timed sample (after a warm-up sample it is not asked).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Go,
    Stop,
}

/// How many samples fit the budget, given the measured cost of one (ms).
pub fn iterations_within(budget_ms: f64, per_sample_ms: f64, wanted: u32, at_least: u32) -> u32 {
    if per_sample_ms.is_nan() || budget_ms.is_nan() || per_sample_ms <= 0.0 || budget_ms <= 0.0 {
        return wanted.max(1);
    }
    let fit = (budget_ms / per_sample_ms).floor();
    let fit = if fit >= u32::MAX as f64 {
        u32::MAX
    } else {
        fit as u32
    };
    wanted.min(fit).max(at_least.min(wanted)).max(1)
}

struct Sample {
    kernel_us: f64,
    tail_us: f64,
    wall_ms: f64,
}

fn sample(gpu: &mut Gpu, plan: &Plan, set: usize, ev: &Events) -> Result<Sample, CudaError> {
    let t0 = Instant::now();
    gpu.record(ev, 0)?;
    for p in &plan.prep[set] {
        match p {
            Prep::Fill(buf, byte) => gpu.fill(buf, *byte)?,
            Prep::Copy { dst, src } => gpu.copy(dst, src)?,
        }
    }
    gpu.flush_l2()?;
    gpu.record(ev, 1)?;
    gpu.launch(plan.kernel, &plan.dims, &plan.sets[set])?;
    gpu.record(ev, 2)?;
    gpu.synchronize()?;
    let wall_ms = t0.elapsed().as_secs_f64() * 1e3;
    let kernel_ms = gpu.elapsed_ms(ev, 1, 2)?;
    let span_ms = gpu.elapsed_ms(ev, 0, 2)?;
    Ok(Sample {
        kernel_us: kernel_ms * 1e3,
        tail_us: ((wall_ms - span_ms) * 1e3).max(0.0),
        wall_ms,
    })
}

/// Warms up, then times until the plan's limit or until `after` (called after every sample,
/// warm-up included) says stop. Any driver error ends it (the caller decides what it means).
pub fn run(
    gpu: &mut Gpu,
    plan: &Plan,
    after: &mut dyn FnMut(&Gpu, Sampled) -> Result<Flow, CudaError>,
) -> Result<Measured, CudaError> {
    let sets = plan.sets.len();
    if sets == 0 || plan.prep.len() != sets {
        return Err(CudaError::Invalid(
            "a timing plan needs at least one input set".into(),
        ));
    }
    gpu.prepare(plan.kernel, &plan.dims)?;
    let ev = gpu.events()?;

    let start = Instant::now();
    let mut warm = 0u32;
    let mut warm_wall_ms = 0.0;
    while warm < 3 || start.elapsed().as_secs_f64() * 1e3 < plan.warmup_ms {
        let set = warm as usize % sets;
        let s = sample(gpu, plan, set, &ev)?;
        after(
            gpu,
            Sampled {
                index: warm as usize,
                set,
                kernel_us: s.kernel_us,
                warmup: true,
                last: false,
            },
        )?;
        warm += 1;
        warm_wall_ms += s.wall_ms;
        if warm >= 1_000_000 {
            break;
        }
    }
    let warmup_ms = start.elapsed().as_secs_f64() * 1e3;
    let per_sample_ms = warm_wall_ms / warm as f64;
    let n = iterations_within(
        plan.budget_ms,
        per_sample_ms,
        plan.iterations,
        plan.min_iterations,
    ) as usize;

    let mut m = Measured {
        warmup_samples: warm,
        warmup_ms,
        flush_bytes: gpu.flush_bytes(),
        ..Measured::default()
    };
    for i in 0..n {
        let set = i % sets;
        let s = sample(gpu, plan, set, &ev)?;
        m.samples_us.push(s.kernel_us);
        m.tail_us.push(s.tail_us);
        m.last_set = set;
        let flow = after(
            gpu,
            Sampled {
                index: i,
                set,
                kernel_us: s.kernel_us,
                warmup: false,
                last: i + 1 == n,
            },
        )?;
        if flow == Flow::Stop {
            m.stopped_early = i + 1 < n;
            break;
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_limits_iterations() {
        assert_eq!(iterations_within(5000.0, 1.0, 100, 10), 100);
        assert_eq!(iterations_within(5000.0, 100.0, 100, 10), 50);
        assert_eq!(iterations_within(5000.0, 1000.0, 100, 10), 10);
        assert_eq!(iterations_within(5000.0, 1000.0, 5, 10), 5);
        assert_eq!(iterations_within(5000.0, 0.0, 100, 10), 100);
        assert_eq!(iterations_within(0.0, 1.0, 100, 10), 100);
        assert_eq!(iterations_within(1.0, 1e9, 100, 0), 1);
    }
}
