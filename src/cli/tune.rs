//! `evoengineer tune`: validate the flags, pick the evaluator, run the search, record it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use evoengineer::eval::compile::DEFAULT_ARCH;
use evoengineer::eval::replay::ReplayEvaluator;
use evoengineer::eval::{Environment, Evaluator};
use evoengineer::llm::defence::Preprocessor;
use evoengineer::llm::evolve::{CallTally, Evolution, LlmSettings};
use evoengineer::llm::prompt::Templates;
use evoengineer::llm::{ProviderConfig, ProviderSpec};
use evoengineer::search::{self, Elite, SearchResult, Settings, Variant, WallClock};
use evoengineer::store::{NewRun, Store};
use evoengineer::task::Task;
use serde_json::json;

use super::progress::Progress;
use super::{DbArg, VariantArg};

#[derive(clap::Args)]
#[command(
    after_help = "Termination: whichever comes first of --budget evaluations, --patience \
evaluations without a change of the elite set (not during Full's first layer, never for grid \
and random), --time-limit, and an exhausted space. A run killed at any point resumes with \
--resume RUN_ID, losing at most the candidate in flight.

The default strategy is surrogate (Bayesian optimisation over the knobs): on twelve \
benchmark_hub landscapes it beats random search, every Kernel Tuner 1.5 strategy and the \
seed's full, which is kept under its name (bench/search.md).

Examples:
  evoengineer tune tasks/gemm_bf16
      on the GPU if there is one, else on the task's recorded landscape
  evoengineer tune tasks/gemm_bf16 --budget 32 --json
      at most 32 evaluations; one JSON object at the end
  evoengineer tune tasks/sdpa_fp8 --variant full
      the seed's two-layer search with insights
  evoengineer tune tasks/x --replay tasks/x/landscapes/a100-mission.jsonl
      replay a recorded or imported landscape
  evoengineer tune --resume 3
      finish an interrupted run"
)]
pub struct TuneArgs {
    /// The task folder (holding task.toml); not needed with --resume
    #[arg(value_name = "TASK_DIR", required_unless_present = "resume")]
    task_dir: Option<PathBuf>,

    /// Search strategy [default: surrogate; with --llm: full]
    #[arg(long, value_enum)]
    variant: Option<VariantArg>,

    /// Evaluations at most [default: 100; grid: no limit]
    #[arg(long, value_name = "N")]
    budget: Option<usize>,

    /// Elite set size K (full)
    #[arg(long, value_name = "K", default_value_t = 3)]
    elites: usize,

    /// Micro variants proposed per elite and generation (full)
    #[arg(long, value_name = "N", default_value_t = 4)]
    micro_per_elite: usize,

    /// Stop when the elite set is unchanged for this many evaluations (0: never)
    #[arg(long, value_name = "M", default_value_t = 10)]
    patience: usize,

    /// Wall-clock limit, e.g. 90s, 30m, 4h, "1h 30m"
    #[arg(long, value_name = "DURATION")]
    time_limit: Option<String>,

    /// Seed of every random choice the search makes
    #[arg(long, default_value_t = 0)]
    seed: u64,

    /// Problem shape to tune for [default: the task's first]
    #[arg(long, value_name = "NAME")]
    shape: Option<String>,

    /// Prefer elites of different macro variants (full)
    #[arg(long)]
    diverse: bool,

    /// Ablation: no profiling, proposals not ordered by bottleneck class
    #[arg(long)]
    no_insights: bool,

    /// Ablation: one layer, every knob varied around the elites (full)
    #[arg(long)]
    no_two_layer: bool,

    /// Answer from a recorded landscape (JSON Lines) instead of the GPU
    #[arg(long, value_name = "FILE")]
    replay: Option<PathBuf>,

    /// Code evolution: a language model writes kernel variants. openai:BASE_URL#MODEL (any
    /// OpenAI-compatible chat-completions endpoint), command:PROGRAM (request JSON on stdin,
    /// answer on stdout) or command-text:PROGRAM (plain text). --variant picks the prompts:
    /// free (task + best code), insight (+ profiling insights), full (+ elites' code)
    #[arg(long, value_name = "PROVIDER_SPEC")]
    llm: Option<String>,

    /// Model calls of a code-evolution run (each one trial)
    #[arg(long, value_name = "N", default_value_t = 20, requires = "llm")]
    llm_calls: usize,

    /// Environment variable holding the API key (its name is recorded, never the key)
    #[arg(long, value_name = "NAME", requires = "llm")]
    llm_key_env: Option<String>,

    /// Per-call timeout of the model, e.g. 90s, 5m
    #[arg(long, value_name = "DURATION", default_value = "5m", requires = "llm")]
    llm_timeout: String,

    /// Sampling temperature sent to the model
    #[arg(long, value_name = "T", requires = "llm")]
    llm_temperature: Option<f64>,

    /// Answer length limit sent to the model (max_tokens)
    #[arg(long, value_name = "N", requires = "llm")]
    llm_max_tokens: Option<u64>,

    /// Search the knobs of a model-written source from the store (its sha256, or a unique
    /// prefix) instead of the task's kernel
    #[arg(long, value_name = "HASH", conflicts_with = "llm")]
    source: Option<String>,

    /// Continue a run that was interrupted; its settings come from the store (with --llm
    /// SPEC: the model spec again, for the base URL's credentials, which are not stored)
    #[arg(long, value_name = "RUN_ID", conflicts_with_all = [
        "variant", "budget", "elites", "micro_per_elite", "patience", "time_limit", "seed",
        "shape", "diverse", "no_insights", "no_two_layer", "replay", "source", "batch",
        "external_workers"
    ])]
    resume: Option<i64>,

    #[command(flatten)]
    db: DbArg,

    /// Also write the run's HTML report into DIR (DIR/report.html)
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,

    /// Print one JSON object at the end instead of a summary
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    gpu: super::gpu::GpuArgs,

    /// Time every correct candidate in full: no racing (by default timing stops early for a
    /// candidate whose fastest launches are clearly slower than the K-th elite; it is recorded
    /// as `slower`)
    #[arg(long)]
    no_race: bool,

    /// Testing aid: sleep this long in every replayed evaluation
    #[arg(long, hide = true, value_name = "MS")]
    replay_delay_ms: Option<u64>,

    #[command(flatten)]
    scale: ScaleArgs,
}

/// Several GPUs, or external workers.
#[derive(clap::Args)]
struct ScaleArgs {
    /// Measure on these GPUs of this host, one worker process each: `all` or a list such as
    /// 0,2,3. Candidates go to whichever GPU is free; each trial records its GPU. With
    /// --replay, each listed GPU is a copy of the landscape (to try the dispatch)
    #[arg(long, value_name = "all|LIST")]
    gpus: Option<String>,

    /// Candidates proposed and measured together [default: 1; the number of GPUs with
    /// --gpus; 8 with --external-workers]. Each batch is proposed from the state at its start
    /// and concluded in proposal order: the same seed and batch give the same run, whichever
    /// GPU or worker finishes first
    #[arg(long, value_name = "N")]
    batch: Option<usize>,

    /// Measure nothing here: enqueue each batch in the store (--db postgres://..., or a SQLite
    /// file for workers on this host) for `evoengineer worker` processes on any hosts, wait
    /// for them, and conclude in order. With --replay the landscape names the run's device;
    /// the workers need their own --replay
    #[arg(long, conflicts_with = "gpus")]
    external_workers: bool,
}

pub fn run(a: TuneArgs) -> anyhow::Result<ExitCode> {
    let store = a.db.open()?;
    let command_line = std::env::args().collect::<Vec<_>>().join(" ");

    // Settings, task, shape and evaluator: from the flags, or from the record.
    let (run_id, task, shape_name, settings, evaluator_desc, resume, offset) = match a.resume {
        Some(id) => {
            let row = store.run_row(id)?;
            let task_dir = store.run_task_dir(id)?;
            let task = Task::load(&task_dir).with_context(|| {
                format!("run {id} was made on the task in {}", task_dir.display())
            })?;
            if let Some(dir) = &a.task_dir {
                if Task::load(dir)?.manifest != task.manifest {
                    bail!(
                        "run {id} is of the task in {}, not {}",
                        task_dir.display(),
                        dir.display()
                    );
                }
            }
            let record = store.load_run(id, &task.space)?;
            if record.kernel_hash != task.source_hash {
                bail!("the task's manifest or kernel source changed since run {id} started; start a new run");
            }
            let offset = record.trials.last().map(|t| t.elapsed_s).unwrap_or(0.0);
            let settings = resumed_settings(record.settings, a.llm.as_deref(), id)?;
            store.reopen_run(id)?;
            (
                Some(id),
                task,
                row.shape,
                settings,
                record.evaluator,
                record.trials,
                offset,
            )
        }
        None => {
            let dir = a
                .task_dir
                .as_ref()
                .expect("clap requires TASK_DIR without --resume");
            let task = Task::load(dir)?;
            let mut settings = settings_from(&a)?;
            if let Some(prefix) = &a.source {
                let src = store.find_source(prefix)?.with_context(|| {
                    format!(
                        "no model-written source {prefix} in {}",
                        store.path().display()
                    )
                })?;
                settings.source = Some(src.hash);
            }
            let shape = match &a.shape {
                Some(s) => s.clone(),
                None => task.default_shape().name.clone(),
            };
            let desc = match &a.replay {
                Some(p) => format!("replay:{}", absolute(p).display()),
                None => "cuda".to_string(),
            };
            let desc = match a.scale.external_workers {
                true => format!("external:{desc}"),
                false => desc,
            };
            (None, task, shape, settings, desc, vec![], 0.0)
        }
    };
    let shape = super::shape(&task, Some(&shape_name))?;

    let (mut backend, evaluator_desc) =
        make_evaluator(&evaluator_desc, &task, shape, &a, settings.seed)?;
    if let Some(hash) = &settings.source {
        let src = store
            .source(hash)?
            .with_context(|| format!("source {hash} is not in the store"))?;
        backend.evaluator().register_source(hash, &src.code);
    }
    let env = backend.evaluator().environment();
    let external = matches!(backend, Backend::External(_));
    let run_id = match run_id {
        Some(id) => id,
        None => store.create_run(&NewRun {
            task: task.name.clone(),
            task_dir: absolute(&task.dir),
            shape: shape.name.clone(),
            kernel_hash: task.source_hash.clone(),
            settings: settings.clone(),
            evaluator: evaluator_desc.clone(),
            environment: env.clone(),
            command_line,
        })?,
    };
    if let Backend::External(q) = &mut backend {
        q.attach(run_id);
    }
    if !a.json {
        eprintln!(
            "run {run_id}: task {} shape {} ({}), variant {}, seed {}, {}, on {}",
            task.name,
            shape.name,
            shape.describe(),
            settings.variant,
            settings.seed,
            // Code evolution stops after --llm-calls model calls; --budget plays no part.
            match &settings.llm {
                Some(l) => format!("{} model calls", l.calls),
                None if settings.limits.budget == usize::MAX => "budget none".to_string(),
                None => format!("budget {}", settings.limits.budget),
            },
            env.device
        );
    }
    if external && !a.json {
        eprintln!(
            "run {run_id}: batches of {} go to the store's work queue; measure them with `evoengineer worker --db {}` on any hosts",
            settings.batch,
            evoengineer::secrets::redact(&a.db.db)
        );
    }
    let journal = store.journal(run_id, &task.space, &task.source_hash, &shape.name, &env)?;
    let clock = WallClock::new(Duration::from_secs_f64(offset));
    let mut calls = None;
    let result = match &settings.llm {
        None => {
            let mut progress = Progress::new(journal, settings.limits.budget, resume.len());
            let r = search::run(
                &task,
                shape,
                &settings,
                backend.evaluator(),
                &mut progress,
                resume,
                &clock,
            );
            progress.finish();
            r
        }
        Some(llm) => {
            let provider = llm.provider.build()?;
            let templates = Templates::load(&task.dir)?;
            if !a.json {
                eprintln!(
                    "code evolution: {} calls to {} (prompts: {}; templates from files: {})",
                    llm.calls,
                    provider.describe(),
                    settings.variant,
                    if templates.from_files.is_empty() {
                        "none".to_string()
                    } else {
                        templates.from_files.join(", ")
                    }
                );
                if matches!(backend, Backend::Replay(_)) {
                    eprintln!("note: a replayed landscape has no measurements of model-written sources: they are recorded as missing");
                }
            }
            let preprocessor = preprocessor(&a, settings.seed, &env);
            let mut progress = Progress::new(journal, llm.calls + 1, resume.len());
            let mut book: &Store = &store;
            let r = Evolution {
                task: &task,
                shape,
                settings: &settings,
                llm,
                provider: provider.as_ref(),
                templates: &templates,
                run_id: Some(run_id),
                preprocessor: &preprocessor,
            }
            .run_counted(
                backend.evaluator(),
                &mut progress,
                &mut book,
                resume,
                &clock,
            );
            progress.finish();
            r.map(|(r, tally)| {
                calls = Some(tally);
                r
            })
        }
    };
    let result = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = store.fail_run(run_id, &e.to_string());
            return Err(anyhow::Error::new(e).context(format!(
                "run {run_id} failed (resume it with --resume {run_id})"
            )));
        }
    };
    store.finish_run(run_id, &result)?;

    // PyTorch baselines, on the same GPU, inputs and protocol.
    let mut baselines = store.baselines(run_id)?;
    if let Backend::Replay(r) = &backend {
        // Baselines timed in the run that recorded the landscape, shipped beside it.
        let side = r.path().with_extension("baselines.jsonl");
        if baselines.is_empty() && side.is_file() {
            let recorded: Vec<_> = evoengineer::report::load_baselines(&side)?
                .into_iter()
                .filter(|b| b.shape.as_deref().is_none_or(|s| s == shape.name))
                .map(|b| evoengineer::eval::baseline::BaselineResult {
                    name: b.name,
                    p50_us: Some(b.p50_us),
                    p90_us: b.p90_us,
                    ..Default::default()
                })
                .collect();
            store.record_baselines(run_id, &recorded)?;
            baselines = recorded;
        }
    }
    if let Backend::Cuda(ev) = &backend {
        if baselines.is_empty() && !task.baselines.is_empty() {
            if !a.json {
                eprintln!("timing the PyTorch baselines...");
            }
            let run = ev.baselines(shape)?;
            if let Some(note) = &run.note {
                eprintln!("note: {note}");
            }
            store.record_baselines(run_id, &run.results)?;
            baselines = run.results;
        }
    }

    if let Some(dir) = &a.report {
        let path = super::report::write_report(&store, run_id, dir, None)?;
        eprintln!("report: {}", path.display());
    }
    if a.json {
        let mut out = summary_json(run_id, &task, shape, &settings, &result, calls.as_ref());
        if !baselines.is_empty() {
            let p50 = result.winner().map(|w| w.p50_us);
            out["baselines"] = serde_json::to_value(&baselines)?;
            out["speedups"] = super::gpu::speedups(p50, &baselines).into();
        }
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_summary(run_id, &task, &settings, &result, calls.as_ref());
        super::gpu::print_baselines(result.winner().map(|w| w.p50_us), &baselines, shape.flops());
    }
    Ok(ExitCode::SUCCESS)
}

/// A resumed run's settings. The store keeps no credentials of a model's base URL: `--llm
/// SPEC` gives them again, and must be the recorded spec once its secrets are hidden.
fn resumed_settings(
    mut settings: Settings,
    spec: Option<&str>,
    run_id: i64,
) -> anyhow::Result<Settings> {
    let Some(llm) = settings.llm.as_mut() else {
        if spec.is_some() {
            bail!("run {run_id} is not a code-evolution run: --llm does not go with --resume");
        }
        return Ok(settings);
    };
    let recorded = llm.provider.spec.to_string();
    match spec {
        None if recorded.contains(evoengineer::secrets::MASK) => bail!(
            "run {run_id} called {recorded}, whose credentials the store does not keep: resume it with --llm and the whole spec again"
        ),
        None => {}
        Some(spec) => {
            let given = ProviderSpec::parse(spec)?;
            if evoengineer::secrets::redact(&given.to_string()) != recorded {
                bail!("with --resume, --llm only gives again the credentials the store does not keep; run {run_id} called {recorded}");
            }
            llm.provider.spec = given;
        }
    }
    Ok(settings)
}

fn settings_from(a: &TuneArgs) -> anyhow::Result<Settings> {
    let variant: Variant = match (a.variant, &a.llm) {
        (Some(v), _) => v.into(),
        (None, Some(_)) => Variant::Full,
        (None, None) => Variant::Surrogate,
    };
    let mut s = Settings::new(variant, a.seed);
    s.limits.budget = match (a.budget, variant) {
        (Some(0), _) => bail!("--budget must be at least 1"),
        (Some(b), _) => b,
        // The grid's budget is the whole space: it stops by exhausting it.
        (None, Variant::Grid) => usize::MAX,
        (None, _) => 100,
    };
    if a.elites == 0 {
        bail!("--elites must be at least 1");
    }
    if a.micro_per_elite == 0 {
        bail!("--micro-per-elite must be at least 1");
    }
    s.elites = a.elites;
    s.micro_per_elite = a.micro_per_elite;
    s.limits.patience = a.patience;
    s.limits.time_limit = a
        .time_limit
        .as_deref()
        .map(|t| {
            humantime::parse_duration(t).with_context(|| {
                format!("--time-limit `{t}`: expected a duration such as 90s, 30m or 4h")
            })
        })
        .transpose()?;
    s.diverse = a.diverse;
    s.race = !a.no_race;
    s.timing = Some(a.gpu.timing().describe());
    s.batch = match (a.scale.batch, &a.scale.gpus) {
        (Some(0), _) => bail!("--batch must be at least 1"),
        (Some(n), _) => n,
        (None, _) if a.scale.external_workers => 8,
        (None, Some(spec)) => gpu_list(spec)?.len(),
        (None, None) => 1,
    };
    if let Some(spec) = &a.llm {
        if !matches!(variant, Variant::Full | Variant::Insight | Variant::Free) {
            bail!("--llm works with --variant full, insight or free (they pick the prompts)");
        }
        if a.llm_calls == 0 {
            bail!("--llm-calls must be at least 1");
        }
        let mut cfg = ProviderConfig::new(ProviderSpec::parse(spec)?);
        cfg.key_env = a.llm_key_env.clone();
        cfg.timeout = humantime::parse_duration(&a.llm_timeout).with_context(|| {
            format!(
                "--llm-timeout `{}`: expected a duration such as 90s or 5m",
                a.llm_timeout
            )
        })?;
        cfg.temperature = a.llm_temperature;
        cfg.max_tokens = a.llm_max_tokens;
        // Fail now, not after the first evaluation, on a missing key variable.
        cfg.build()?;
        s.llm = Some(LlmSettings::new(cfg, a.llm_calls));
    }
    if a.no_insights {
        s.insights = false;
    }
    if a.no_two_layer {
        s.two_layer = false;
    }
    Ok(s)
}

/// What answers the search: a landscape, or the GPU; several GPUs, or external workers.
#[allow(clippy::large_enum_variant)] // one per run
enum Backend {
    Replay(ReplayEvaluator),
    Cuda(evoengineer::eval::cuda::CudaEvaluator),
    Pool(evoengineer::scale::pool::GpuPool),
    External(evoengineer::scale::remote::QueueEvaluator),
}

impl Backend {
    fn evaluator(&mut self) -> &mut dyn Evaluator {
        match self {
            Backend::Replay(r) => r,
            Backend::Cuda(c) => c,
            Backend::Pool(p) => p,
            Backend::External(q) => q,
        }
    }
}

fn gpu_list(spec: &str) -> anyhow::Result<Vec<u32>> {
    evoengineer::scale::pool::parse_gpus(spec, super::worker::gpu_count).map_err(anyhow::Error::msg)
}

fn make_evaluator(
    desc: &str,
    task: &Task,
    shape: &evoengineer::task::Shape,
    a: &TuneArgs,
    seed: u64,
) -> anyhow::Result<(Backend, String)> {
    if let Some(inner) = desc.strip_prefix("external:") {
        let q = super::worker::coordinator(inner, task, &a.db.db)?;
        return Ok((Backend::External(q), desc.to_string()));
    }
    let gpus = a.scale.gpus.as_deref().map(gpu_list).transpose()?;
    let delay = a.replay_delay_ms.map(Duration::from_millis);
    if let Some(path) = desc.strip_prefix("replay:") {
        if a.gpu.profile_all() {
            bail!("--profile-all needs the GPU: a replayed landscape answers with the profiles it was recorded with");
        }
        if let Some(gpus) = &gpus {
            let pool = super::worker::pool(gpus, |_| {
                Ok(Box::new(super::worker::replay(
                    Path::new(path),
                    task,
                    delay,
                )?))
            })?;
            return Ok((Backend::Pool(pool), desc.to_string()));
        }
        let r = super::worker::replay(Path::new(path), task, delay)?;
        return Ok((Backend::Replay(r), desc.to_string()));
    }
    if evoengineer::eval::cuda::gpu_present() {
        if let Some(gpus) = &gpus {
            let pool = super::worker::pool(gpus, |g| {
                let mut o = a.gpu.options(seed);
                o.gpu = Some(g);
                Ok(Box::new(super::gpu::start(task, o)?))
            })?;
            return Ok((Backend::Pool(pool), desc.to_string()));
        }
        let ev = super::gpu::start(task, a.gpu.options(seed))?;
        return Ok((Backend::Cuda(ev), desc.to_string()));
    }
    // No GPU: a recorded run of this task and shape, if the task ships one.
    let recorded = recorded_landscapes(task);
    let fit = recorded.iter().find(|p| {
        p.file_stem()
            .and_then(|s| s.to_str())
            .is_some_and(|s| s.ends_with(&format!("-{}", shape.name)))
    });
    match fit {
        Some(p) => {
            eprintln!(
                "note: no GPU on this machine: replaying the recorded run {} instead",
                p.display()
            );
            let desc = format!("replay:{}", absolute(p).display());
            make_evaluator(&desc, task, shape, a, seed)
        }
        None => {
            let hint = match recorded.first() {
                Some(p) => format!(
                    "; replay a recorded run instead:\n  evoengineer tune {} --replay {}",
                    task.dir.display(),
                    p.display()
                ),
                None => String::new(),
            };
            bail!("no GPU on this machine and no --replay given{hint}")
        }
    }
}

/// The static defences' second pass, with the nvcc and the arch the candidates are compiled
/// with: `--arch`, else the last word of the evaluator's toolchain (`nvcc 13.0, V13.0.88
/// sm_90a`) when it is an arch, else the default.
fn preprocessor(a: &TuneArgs, seed: u64, env: &Environment) -> Preprocessor {
    let opts = a.gpu.options(seed);
    let arch = opts
        .arch
        .clone()
        .or_else(|| {
            env.toolchain
                .split_whitespace()
                .last()
                .filter(|w| w.starts_with("sm_"))
                .map(str::to_string)
        })
        .unwrap_or_else(|| DEFAULT_ARCH.to_string());
    Preprocessor::new(&opts.compiler, &arch)
}

/// Landscapes shipped with the task (`landscapes/*.jsonl`), sorted.
pub fn recorded_landscapes(task: &Task) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(task.dir.join("landscapes"))
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

fn elite_json(task: &Task, e: &Elite) -> serde_json::Value {
    let config = e
        .candidate
        .as_ref()
        .map(|c| serde_json::Value::Object(task.space.to_json(&c.config)))
        .unwrap_or(serde_json::Value::Null);
    let mut v = json!({ "config": config, "p50_us": e.p50_us, "p90_us": e.p90_us });
    if let Some(source @ evoengineer::candidate::SourceRef::Variant(_)) =
        e.candidate.as_ref().map(|c| &c.source)
    {
        v["source"] = source.tag().into();
    }
    v
}

/// The object `tune --json` prints. Nothing in it depends on time, so two runs of the same
/// search print the same object but for `run_id`.
fn summary_json(
    run_id: i64,
    task: &Task,
    shape: &evoengineer::task::Shape,
    s: &Settings,
    r: &SearchResult,
    calls: Option<&CallTally>,
) -> serde_json::Value {
    let mut v = json!({
        "run_id": run_id,
        "task": task.name,
        "shape": shape.name,
        "variant": s.variant.as_str(),
        "seed": s.seed,
        "evaluations": r.trials.len(),
        "stopped_by": r.stopped_by.as_str(),
        "winner": r.winner().map(|w| elite_json(task, w)),
        "elites": r.elites.iter().map(|e| elite_json(task, e)).collect::<Vec<_>>(),
        "trials": r.trials.iter().map(|t| json!({
            "seq": t.seq,
            "key": t.key,
            "outcome": t.evaluation.outcome.as_str(),
            "p50_us": t.evaluation.timing.as_ref().map(|x| x.p50_us),
        })).collect::<Vec<_>>(),
    });
    // Code evolution: the model calls made against --llm-calls and the tokens reported.
    if let Some(c) = calls {
        v["llm"] = json!({
            "calls": c.made, "calls_limit": c.limit, "calls_with_usage": c.with_usage,
            "prompt_tokens": c.usage.prompt_tokens,
            "completion_tokens": c.usage.completion_tokens,
            "total_tokens": c.usage.total_tokens,
        });
    }
    v
}

fn print_summary(
    run_id: i64,
    task: &Task,
    s: &Settings,
    r: &SearchResult,
    calls: Option<&CallTally>,
) {
    let failed = r
        .trials
        .iter()
        .filter(|t| t.evaluation.p50_us().is_none())
        .count();
    let reused = r.trials.iter().filter(|t| t.reused).count();
    let made = calls.map(|c| evoengineer::search::CallsMade {
        made: c.made,
        limit: c.limit,
    });
    println!(
        "run {run_id}: {} evaluations ({failed} failed a gate, {reused} reused from earlier runs), {}",
        r.trials.len(),
        r.stopped_by.describe(&s.limits, made)
    );
    if let Some(c) = calls {
        println!("code evolution: {}", tally_text(c));
    }
    match r.winner() {
        Some(w) => {
            let config = w
                .candidate
                .as_ref()
                .map(|c| described(task, c))
                .unwrap_or_default();
            println!(
                "winner: p50 {:.2} us, p90 {:.2} us  {config}",
                w.p50_us, w.p90_us
            );
            for (i, e) in r.elites.iter().enumerate().skip(1) {
                let config = e
                    .candidate
                    .as_ref()
                    .map(|c| described(task, c))
                    .unwrap_or_default();
                println!("elite {}: p50 {:.2} us  {config}", i + 1, e.p50_us);
            }
        }
        None => println!("no candidate passed every gate: there is no winner"),
    }
    let review = r
        .trials
        .iter()
        .filter(|t| {
            t.evaluation
                .message
                .as_deref()
                .is_some_and(|m| m.starts_with("REVIEW"))
        })
        .count();
    if review > 0 {
        println!("{review} candidates are flagged for review (suspect speedups): see `evoengineer show {run_id}`");
    }
    if s.variant != Variant::Grid {
        println!("details: evoengineer show {run_id}");
    }
}

/// `6 of 6 model calls made, 900 tokens (600 prompt + 300 completion)`, saying which calls
/// reported no token counts.
fn tally_text(c: &CallTally) -> String {
    let calls = format!("{} of {} model calls made", c.made, c.limit);
    if c.with_usage == 0 {
        return format!("{calls}, no token counts reported");
    }
    let u = &c.usage;
    let unreported = match c.made - c.with_usage {
        0 => String::new(),
        n => format!("; {n} calls reported none"),
    };
    format!(
        "{calls}, {} tokens ({} prompt + {} completion){unreported}",
        u.total_tokens, u.prompt_tokens, u.completion_tokens
    )
}

/// A candidate's config, with its source when it is a model-written variant.
fn described(task: &Task, c: &evoengineer::candidate::Candidate) -> String {
    match &c.source {
        evoengineer::candidate::SourceRef::Base => task.space.display(&c.config),
        v => format!("{v} {}", task.space.display(&c.config)),
    }
}
