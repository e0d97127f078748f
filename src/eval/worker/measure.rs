//! One evaluation inside the worker: correctness trials, then timing (see
//! `docs/gpu-evaluator.md`). Every launch's inputs are verified untouched after it, its outputs
//! are poisoned before it, and its outputs are checked against the reference: every
//! correctness launch, and the timed launches [`crate::eval::protocol::CheckPlan`] picks.
//! Buffers lie at random offsets drawn per evaluation, so their addresses say nothing a
//! kernel could use to tell launches apart.

use std::time::Instant;

use super::check::{differ_host, Checker};
use super::data::{
    alloc_buffers, alloc_each, load_reference, make_trial, mib, param_list, ptr, Buffers,
    DataCache, References, TrialData,
};
use super::server::{
    cand, evaluator, evaluator_msg, progress, Fail, MEMORY_MARGIN, TIMING_TRIAL_BASE,
};
use super::{BenchInfo, EvalRequest, EvalResponse, TimingParams};
use crate::cuda::bench::{self, Flow, Plan, Prep, Sampled};
use crate::cuda::{Gpu, Kernel};
use crate::eval::compare::{self, short, Errors, Worst};
use crate::eval::inputs::{self, ArgSpec};
use crate::eval::protocol::{self, CheckPlan, Next};
use crate::eval::{stats, Outcome};
use crate::task::{ArgRole, Tolerance};

/// What one evaluation works with.
struct Run<'a> {
    args: &'a [ArgSpec],
    checker: Option<&'a Checker>,
    tolerance: &'a Tolerance,
}

impl Run<'_> {
    /// Puts a trial's initial values into `bufs` (a copy on the device when the trial is kept
    /// there, else an upload).
    fn place_inputs(&self, gpu: &Gpu, d: &TrialData, bufs: &Buffers) -> Result<(), Fail> {
        for (i, a) in self.args.iter().enumerate() {
            let (Some(bytes), Some(Some(dst))) = (&d.inputs[i], bufs.get(i)) else {
                continue;
            };
            let kept = d.device.as_ref().and_then(|dv| dv.inputs[i].as_ref());
            match kept {
                Some(src) => gpu.copy(dst, src),
                None => gpu.upload(dst, bytes),
            }
            .map_err(evaluator(format!("cannot put `{}` in place", a.name)))?;
        }
        Ok(())
    }

    fn poison_outputs(&self, gpu: &Gpu, main: &Buffers) -> Result<(), Fail> {
        for (i, a) in self.args.iter().enumerate() {
            if let (ArgRole::Output, Some(Some(buf))) = (a.role, main.get(i)) {
                gpu.fill(buf, inputs::poison_byte(a.dtype))
                    .map_err(evaluator(format!("cannot poison `{}`", a.name)))?;
            }
        }
        Ok(())
    }

    /// The outputs in `main` against the trial's reference: on the GPU when both the checker
    /// and the trial's device copy are there, else on the host.
    fn check_outputs(&self, gpu: &Gpu, d: &TrialData, main: &Buffers) -> Result<Errors, Fail> {
        let mut trial = Errors::default();
        for (i, a) in self.args.iter().enumerate() {
            if !a.is_output() {
                continue;
            }
            let Some(Some(buf)) = main.get(i) else {
                return Err(evaluator_msg(format!("no device buffer for `{}`", a.name)));
            };
            let kept = d.device.as_ref().and_then(|dv| dv.reference[i].as_ref());
            let e = match (self.checker, kept, &d.reference[i]) {
                (Some(c), Some(r), _) => c
                    .compare(gpu, &a.name, buf, a.dtype, r, a.len)
                    .map_err(evaluator(format!("cannot compare `{}` on the GPU", a.name)))?,
                (_, _, reference) => {
                    let out = gpu
                        .download(buf)
                        .map_err(evaluator(format!("cannot read `{}` back", a.name)))?;
                    match reference {
                        Some(r) => compare::compare(&a.name, &out, a.dtype, r),
                        None => compare::check_only(&a.name, &out, a.dtype),
                    }
                }
            };
            trial.pool(&e);
        }
        Ok(trial)
    }

    /// Whether the kernel wrote to an input buffer of `bufs` (which were given the trial's
    /// initial values): the message saying so, or `None`.
    fn inputs_changed(
        &self,
        gpu: &Gpu,
        d: &TrialData,
        bufs: &Buffers,
    ) -> Result<Option<String>, Fail> {
        for (i, a) in self.args.iter().enumerate() {
            let (ArgRole::Input, Some(initial), Some(Some(buf))) =
                (a.role, &d.inputs[i], bufs.get(i))
            else {
                continue;
            };
            let kept = d.device.as_ref().and_then(|dv| dv.inputs[i].as_ref());
            let diff = match (self.checker, kept) {
                (Some(c), Some(src)) => c
                    .differ(gpu, buf, src, initial.len() as u64)
                    .map_err(evaluator(format!("cannot verify `{}` on the GPU", a.name)))?,
                _ => {
                    let now = gpu
                        .download(buf)
                        .map_err(evaluator(format!("cannot read `{}` back", a.name)))?;
                    differ_host(&now, initial)
                }
            };
            if let Some((count, first)) = diff {
                return Ok(Some(format!(
                    "the kernel wrote to its input `{}` ({count} bytes changed, the first at byte {first}); \
                     inputs are read-only",
                    a.name
                )));
            }
        }
        Ok(None)
    }
}

/// An `incorrect` answer with what is known so far.
fn incorrect(message: String, worst: &Worst, kernel: &Kernel, correctness_s: f64) -> EvalResponse {
    let mut r = EvalResponse::failed(Outcome::Incorrect, message);
    r.correctness = Some(worst.report());
    r.kernel = Some(kernel.attrs.clone());
    r.correctness_s = Some(correctness_s);
    r
}

pub fn eval_on(
    gpu: &mut Gpu,
    references: &mut References,
    data: &mut DataCache,
    checker: Option<&Checker>,
    req: &EvalRequest,
) -> Result<EvalResponse, Fail> {
    let started = Instant::now();
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
    let mut plan = CheckPlan::new(
        req.seed,
        &req.kernel.cubin.to_string_lossy(),
        req.timing.as_ref().map_or(0.5, |t| t.check_fraction),
    );
    let (main, ref_out) = alloc_buffers(gpu, args, reference.is_some(), Some(plan.rng()))?;
    let params = param_list(args, |i| ptr(&main, i))?;
    let run = Run {
        args,
        checker,
        tolerance: &req.tolerance,
    };

    // Correctness: fresh inputs every trial, outputs poisoned before every launch, inputs
    // verified untouched after it.
    let mut worst = Worst::default();
    for t in 0..req.trials.max(1) as u64 {
        let d = data.get(gpu, t, || {
            make_trial(gpu, args, req.seed, t, reference, &main, &ref_out)
        })?;
        run.place_inputs(gpu, &d, &main)?;
        run.poison_outputs(gpu, &main)?;
        gpu.launch(&kernel, &req.kernel.dims, &params)
            .map_err(cand("the launch failed"))?;
        gpu.synchronize().map_err(cand("the kernel failed"))?;
        progress();
        let errors = run.check_outputs(gpu, &d, &main)?;
        worst.add_trial(&errors);
        let elapsed = started.elapsed().as_secs_f64();
        if let Err(why) = compare::verdict(&errors, run.tolerance) {
            let message = format!("trial {t}: {why} ({})", errors.notes.join("; "));
            return Ok(incorrect(message, &worst, &kernel, elapsed));
        }
        if let Some(why) = run.inputs_changed(gpu, &d, &main)? {
            return Ok(incorrect(
                format!("trial {t}: {why}"),
                &worst,
                &kernel,
                elapsed,
            ));
        }
    }
    let correctness_s = started.elapsed().as_secs_f64();
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
    if let Some(tp) = &req.timing {
        let timing_started = Instant::now();
        let sets = TimingSets::new(
            gpu, &run, data, req, tp, reference, &main, &ref_out, &mut plan,
        )?;
        let verdict = time(
            gpu, &run, &kernel, req, tp, &sets, &main, &mut plan, &mut notes,
        )?;
        response.timing_s = Some(timing_started.elapsed().as_secs_f64());
        match verdict {
            Timed::Wrong(message) => {
                let mut r = incorrect(message, &worst, &kernel, correctness_s);
                r.timing_s = response.timing_s;
                return Ok(r);
            }
            Timed::Done {
                timing,
                bench,
                slower,
            } => {
                if slower {
                    response.outcome = Outcome::Slower;
                }
                response.timing = Some(timing);
                response.bench = Some(bench);
            }
        }
    }
    response.message = (!notes.is_empty()).then(|| notes.join("; "));
    Ok(response)
}

/// The input sets the timed launches rotate among, each in its own buffers.
struct TimingSets {
    data: Vec<std::sync::Arc<TrialData>>,
    bufs: Vec<Buffers>,
}

impl TimingSets {
    #[allow(clippy::too_many_arguments)]
    fn new(
        gpu: &Gpu,
        run: &Run,
        data: &mut DataCache,
        req: &EvalRequest,
        tp: &TimingParams,
        reference: Option<(&Kernel, &super::KernelRef)>,
        main: &Buffers,
        ref_out: &Buffers,
        plan: &mut CheckPlan,
    ) -> Result<TimingSets, Fail> {
        let args = run.args;
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
        let mut out = TimingSets {
            data: Vec::new(),
            bufs: Vec::new(),
        };
        for k in 0..sets {
            let trial = TIMING_TRIAL_BASE + k;
            let d = data.get(gpu, trial, || {
                make_trial(gpu, args, req.seed, trial, reference, main, ref_out)
            })?;
            let bufs = alloc_each(
                gpu,
                args,
                |a| a.has_initial_values().then(|| a.bytes()),
                Some(plan.rng()),
            )?;
            run.place_inputs(gpu, &d, &bufs)?;
            out.data.push(d);
            out.bufs.push(bufs);
        }
        Ok(out)
    }
}

/// How timing ended.
enum Timed {
    /// A checked launch was wrong, or inputs were written: the message.
    Wrong(String),
    Done {
        timing: crate::eval::Timing,
        bench: BenchInfo,
        slower: bool,
    },
}

/// The timing loop's plan: per input set, its parameters and what precedes each launch
/// (outputs poisoned, inout buffers restored).
fn bench_plan<'a>(
    run: &Run,
    kernel: &'a Kernel,
    req: &EvalRequest,
    tp: &TimingParams,
    sets: &'a TimingSets,
    main: &'a Buffers,
) -> Result<Plan<'a>, Fail> {
    let args = run.args;
    let mut set_params = Vec::new();
    let mut prep = Vec::new();
    for bufs in &sets.bufs {
        set_params.push(param_list(args, |i| {
            if args[i].role == ArgRole::Input {
                ptr(bufs, i)
            } else {
                ptr(main, i)
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
    Ok(Plan {
        kernel,
        dims: req.kernel.dims,
        sets: set_params,
        prep,
        warmup_ms: tp.warmup_ms,
        iterations: tp.iterations.max(1),
        min_iterations: tp.min_iterations,
        budget_ms: tp.budget_ms,
    })
}

/// The timing of the samples, the p50 of the host-side tail, and the notes on them.
fn summarize(
    measured: &bench::Measured,
    tp: &TimingParams,
    slower: bool,
    (clock_before, clock_after): (Option<u32>, Option<u32>),
    notes: &mut Vec<String>,
) -> Result<(crate::eval::Timing, f64), Fail> {
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
    if slower {
        notes.push(format!(
            "raced out after {} launches: its fastest, {} μs, is more than {}% above the K-th elite's p50 ({} μs)",
            measured.samples_us.len(),
            short(measured.samples_us.iter().copied().fold(f64::INFINITY, f64::min)),
            short(tp.race_margin * 100.0),
            short(tp.bar_us.unwrap_or(0.0))
        ));
    }
    Ok((timing, tail_p50))
}

#[allow(clippy::too_many_arguments)]
fn time(
    gpu: &mut Gpu,
    run: &Run,
    kernel: &Kernel,
    req: &EvalRequest,
    tp: &TimingParams,
    sets: &TimingSets,
    main: &Buffers,
    plan: &mut CheckPlan,
    notes: &mut Vec<String>,
) -> Result<Timed, Fail> {
    let bench_plan = bench_plan(run, kernel, req, tp, sets, main)?;
    let clock_before = gpu.sm_clock_mhz();
    let mut samples: Vec<f64> = Vec::new();
    let mut wrong: Option<String> = None;
    let mut failed: Option<Fail> = None;
    let mut stopped = "limit";
    let mut slower = false;
    let mut after = |gpu: &Gpu, s: Sampled| -> Result<Flow, crate::cuda::CudaError> {
        progress();
        if s.warmup {
            return Ok(Flow::Go);
        }
        samples.push(s.kernel_us);
        let next = protocol::next(&samples, tp, tp.bar_us);
        if plan.check(s.kernel_us, s.last || next != Next::Go) {
            match run.check_outputs(gpu, &sets.data[s.set], main) {
                Ok(errors) => {
                    if let Err(why) = compare::verdict(&errors, run.tolerance) {
                        wrong = Some(format!(
                            "timed launch {} (input set {}) is wrong: {why} ({}); the kernel may keep results \
                             between launches or tell launches apart",
                            s.index,
                            s.set,
                            errors.notes.join("; ")
                        ));
                        return Ok(Flow::Stop);
                    }
                }
                Err(f) => {
                    failed = Some(f);
                    return Ok(Flow::Stop);
                }
            }
        }
        Ok(match next {
            Next::Go => Flow::Go,
            Next::Enough => {
                stopped = "stable";
                Flow::Stop
            }
            Next::Slower => {
                stopped = "slower";
                slower = true;
                Flow::Stop
            }
        })
    };
    let measured =
        bench::run(gpu, &bench_plan, &mut after).map_err(cand("a timed launch failed"))?;
    let checked = plan.checked();
    if let Some(f) = failed {
        return Err(f);
    }
    if let Some(w) = wrong {
        return Ok(Timed::Wrong(w));
    }
    if stopped == "limit" && samples.len() < tp.iterations.max(1) as usize {
        stopped = "budget";
    }
    let clock_after = gpu.sm_clock_mhz();
    for (d, bufs) in sets.data.iter().zip(&sets.bufs) {
        if let Some(why) = run.inputs_changed(gpu, d, bufs)? {
            return Ok(Timed::Wrong(format!("during timing: {why}")));
        }
    }
    let (timing, tail_p50) = summarize(&measured, tp, slower, (clock_before, clock_after), notes)?;
    let bench = BenchInfo {
        iterations: measured.samples_us.len() as u32,
        checked,
        stopped: stopped.to_string(),
        warmup_samples: measured.warmup_samples,
        warmup_ms: measured.warmup_ms,
        input_sets: sets.bufs.len() as u32,
        flush_bytes: measured.flush_bytes as u64,
        tail_p50_us: tail_p50,
    };
    Ok(Timed::Done {
        timing,
        bench,
        slower,
    })
}
