//! `runs`, `show` and `export`: what the store holds.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::ValueEnum;
use evoengineer::search::verify::ShapesPassed;
use evoengineer::store::{RunRecord, Store};
use evoengineer::task::Task;
use serde_json::json;

use super::{us, DbArg};

#[derive(clap::Args)]
pub struct RunsArgs {
    #[command(flatten)]
    db: DbArg,
    /// One JSON array instead of a table
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct ShowArgs {
    /// The run's id, as `evoengineer runs` lists it
    run_id: i64,
    #[command(flatten)]
    db: DbArg,
    /// One JSON object instead of text
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// A landscape: one JSON object per candidate, readable by `tune --replay`
    Jsonl,
    /// One row per candidate, one column per knob
    Csv,
}

#[derive(clap::Args)]
pub struct ExportArgs {
    /// The run's id, as `evoengineer runs` lists it
    run_id: i64,
    #[arg(long, value_enum, default_value = "jsonl")]
    format: Format,
    /// Write here instead of standard output
    #[arg(long, short, value_name = "FILE")]
    out: Option<PathBuf>,
    #[command(flatten)]
    db: DbArg,
}

pub fn list(a: RunsArgs) -> anyhow::Result<ExitCode> {
    let store = a.db.open()?;
    let runs = store.list_runs()?;
    if a.json {
        let rows: Vec<_> = runs
            .iter()
            .map(|r| {
                json!({
                    "run_id": r.id, "created_at": r.created_at, "task": r.task, "shape": r.shape,
                    "variant": r.variant.as_str(), "seed": r.seed, "status": r.status.to_string(),
                    "stopped_by": r.stopped_by.map(|s| s.as_str()), "evaluations": r.evaluations,
                    "best_p50_us": r.best_p50_us, "elapsed_s": r.elapsed_s,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    if runs.is_empty() {
        println!("no runs in {}", store.path().display());
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:>4}  {:<20} {:<12} {:<10} {:<8} {:>6} {:>5}  {:<10} {:<10} {:>10}",
        "id",
        "created",
        "task",
        "shape",
        "variant",
        "seed",
        "evals",
        "status",
        "stopped",
        "best us"
    );
    for r in runs {
        println!(
            "{:>4}  {:<20} {:<12} {:<10} {:<8} {:>6} {:>5}  {:<10} {:<10} {:>10}",
            r.id,
            r.created_at,
            r.task,
            r.shape,
            r.variant.as_str(),
            r.seed,
            r.evaluations,
            r.status.as_str(),
            r.stopped_by.map(|s| s.as_str()).unwrap_or("-"),
            us(r.best_p50_us)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn load(store: &Store, run_id: i64) -> anyhow::Result<(Task, RunRecord)> {
    let dir = store.run_task_dir(run_id)?;
    let task = Task::load(&dir)
        .with_context(|| format!("run {run_id} was made on the task in {}", dir.display()))?;
    let record = store.load_run(run_id, &task.space)?;
    Ok((task, record))
}

pub fn show(a: ShowArgs) -> anyhow::Result<ExitCode> {
    let store = a.db.open()?;
    let (task, rec) = load(&store, a.run_id)?;
    let config = |e: &evoengineer::search::Elite| {
        e.candidate
            .as_ref()
            .map(|c| match &c.source {
                evoengineer::candidate::SourceRef::Base => task.space.display(&c.config),
                v => format!("{v} {}", task.space.display(&c.config)),
            })
            .unwrap_or_else(|| e.key.clone())
    };
    // Code evolution counts model calls against --llm-calls: one per trial after the first
    // (the task's own kernel).
    let calls = rec
        .settings
        .llm
        .as_ref()
        .map(|l| evoengineer::search::CallsMade {
            made: rec.trials.len().saturating_sub(1),
            limit: l.calls,
        });
    let why = match rec.row.stopped_by {
        Some(r) => r.describe(&rec.settings.limits, calls),
        None => format!(
            "not stopped ({}); resume with `evoengineer tune --resume {}`",
            rec.row.status, a.run_id
        ),
    };
    let phases = evoengineer::report::phases::PhaseSummary::of(
        &rec.trials,
        rec.row.elapsed_s,
        rec.evaluator.starts_with("replay:"),
    );
    // The shapes each elite was found correct at (timed at the run's).
    let shapes = |e: &evoengineer::search::Elite| {
        ShapesPassed::of(&task, &rec.trials, &e.key, &rec.row.shape)
    };
    if a.json {
        let elite = |e: &evoengineer::search::Elite| {
            json!({
                "key": e.key,
                "config": e.candidate.as_ref().map(|c| task.space.to_json(&c.config)),
                "p50_us": e.p50_us, "p90_us": e.p90_us,
                "registers": e.registers, "smem_bytes": e.smem_bytes,
                "shapes": shapes(e),
            })
        };
        let mut best = f64::INFINITY;
        let trajectory: Vec<_> = rec
            .trials
            .iter()
            .map(|t| {
                if let Some(p) = t.evaluation.p50_us() {
                    best = best.min(p);
                }
                json!({
                    "seq": t.seq, "key": t.key, "outcome": t.evaluation.outcome,
                    "p50_us": t.evaluation.p50_us(), "best_p50_us": best.is_finite().then_some(best),
                    "reused": t.reused, "wall_s": t.wall_s, "elapsed_s": t.elapsed_s,
                    // The search's profile (a new elite), else one taken with the evaluation.
                    "bottleneck": t.profile.as_ref().or(t.evaluation.profile.as_ref()).and_then(|p| p.bottleneck),
                    "message": t.evaluation.message,
                    "verified": t.evaluation.verified(),
                    "phases": t.evaluation.phases,
                    "profile_s": t.profile.as_ref().and_then(|p| p.profile_s),
                })
            })
            .collect();
        let mut out = json!({
            "run_id": a.run_id, "task": rec.row.task, "shape": rec.row.shape,
            "variant": rec.settings.variant.as_str(), "seed": rec.settings.seed,
            "settings": rec.settings, "status": rec.row.status.to_string(),
            "stopped_by": rec.row.stopped_by.map(|s| s.as_str()), "why": why,
            "evaluations": rec.trials.len(), "elapsed_s": rec.row.elapsed_s,
            "device": rec.environment.device, "toolchain": rec.environment.toolchain,
            "evaluator": rec.evaluator, "command_line": rec.command_line,
            "winner": rec.elites.first().map(elite),
            "elites": rec.elites.iter().map(elite).collect::<Vec<_>>(),
            "phases": phases,
            "trajectory": trajectory,
        });
        if let Some(c) = calls {
            out["llm_calls"] = json!({ "made": c.made, "limit": c.limit });
        }
        // Code evolution: every proposal with its lineage (the answers themselves stay in the
        // store: `sources.answer`).
        let sources = store.run_sources(a.run_id)?;
        if !sources.is_empty() {
            out["sources"] = sources
                .iter()
                .map(|s| {
                    json!({
                        "hash": s.hash, "call": s.call, "operator": s.operator,
                        "parents": s.parents, "model": s.model, "prompt_hash": s.prompt_hash,
                        "notes": s.notes, "usage": s.usage, "rejection": s.rejection,
                        "code_bytes": s.code.len(), "created_at": s.created_at,
                    })
                })
                .collect::<Vec<_>>()
                .into();
        }
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    let s = &rec.settings;
    println!(
        "run {}: task {} shape {}, variant {}, seed {}",
        a.run_id, rec.row.task, rec.row.shape, s.variant, s.seed
    );
    println!(
        "  evaluator {} on {} ({})",
        rec.evaluator, rec.environment.device, rec.environment.toolchain
    );
    println!(
        "  {} evaluations in {:.1} s; {why}",
        rec.trials.len(),
        rec.row.elapsed_s.unwrap_or(0.0)
    );
    for line in phases.text() {
        println!("  {line}");
    }
    match rec.elites.first() {
        Some(w) => println!(
            "winner: p50 {:.2} us, p90 {:.2} us  {}",
            w.p50_us,
            w.p90_us,
            config(w)
        ),
        None => println!("winner: none (no candidate passed every gate)"),
    }
    for (i, e) in rec.elites.iter().enumerate() {
        println!(
            "  elite {}: p50 {:>10.2} us  regs {:>4}  smem {:>7}  {}",
            i + 1,
            e.p50_us,
            e.registers
                .map(|r| r.to_string())
                .unwrap_or_else(|| "-".into()),
            e.smem_bytes
                .map(|r| r.to_string())
                .unwrap_or_else(|| "-".into()),
            config(e)
        );
        println!("           correct at: {}", shapes(e).describe());
    }
    let sources = store.run_sources(a.run_id)?;
    if !sources.is_empty() {
        let rejected = sources.iter().filter(|s| s.rejection.is_some()).count();
        println!(
            "code evolution: {} sources proposed ({rejected} turned away before compiling), {}",
            sources.len(),
            source_tokens(&sources)
        );
        for s in &sources {
            let parents: Vec<String> = s
                .parents
                .iter()
                .map(|p| p.chars().take(12).collect())
                .collect();
            println!(
                "  call {:>3}  {:<9}  src:{}  from {}{}",
                s.call.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
                s.operator.as_deref().unwrap_or("-"),
                &s.hash[..12.min(s.hash.len())],
                parents.join(" + "),
                s.rejection
                    .as_deref()
                    .map(|r| format!("  turned away: {}", r.chars().take(100).collect::<String>()))
                    .unwrap_or_default()
            );
        }
    }
    println!("trajectory:");
    println!(
        "  {:>4}  {:<14} {:>10} {:>10}  {:<9}  candidate",
        "seq", "outcome", "p50 us", "best us", "class"
    );
    let mut best = f64::INFINITY;
    for t in &rec.trials {
        let p = t.evaluation.p50_us();
        let improved = p.is_some_and(|p| p < best);
        if let Some(p) = p {
            best = best.min(p);
        }
        println!(
            "  {:>4}  {:<14} {:>10} {:>10}{} {:<9}  {}{}",
            t.seq,
            t.evaluation.outcome.as_str(),
            us(p),
            us(best.is_finite().then_some(best)),
            if improved { "*" } else { " " },
            t.profile
                .as_ref()
                .or(t.evaluation.profile.as_ref())
                .and_then(|p| p.bottleneck)
                .map(|b| b.as_str())
                .unwrap_or("-"),
            t.key,
            if t.reused { "  (reused)" } else { "" }
        );
        if let Some(m) = trial_note(t) {
            println!("        note: {m}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The note `show` prints under a trial: why a model-written source was turned away, a
/// suspect speedup (`REVIEW:`), or the shape a candidate was found wrong at.
fn trial_note(t: &evoengineer::search::Trial) -> Option<String> {
    let e = &t.evaluation;
    let m = e.message.as_deref()?;
    let variant = matches!(
        t.candidate.source,
        evoengineer::candidate::SourceRef::Variant(_)
    );
    let wrong_elsewhere = e.verified().iter().any(|c| !c.passed());
    (m.starts_with("REVIEW") || wrong_elsewhere || (variant && e.p50_us().is_none()))
        .then(|| m.chars().take(200).collect())
}

pub fn export(a: ExportArgs) -> anyhow::Result<ExitCode> {
    let store = a.db.open()?;
    let (task, _) = load(&store, a.run_id)?;
    let records = store.export_records(a.run_id, &task.space)?;
    let mut out: Box<dyn Write> = match &a.out {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    match a.format {
        Format::Jsonl => {
            for r in &records {
                writeln!(out, "{}", serde_json::to_string(r)?)?;
            }
        }
        Format::Csv => {
            let knobs: Vec<&str> = task.space.knobs().iter().map(|k| k.name.as_str()).collect();
            writeln!(
                out,
                "seq,candidate,shape,outcome,p50_us,p90_us,registers,smem_bytes,spill_bytes,max_abs_err,bottleneck,{}",
                knobs.join(",")
            )?;
            for (i, r) in records.iter().enumerate() {
                let opt = |v: Option<String>| v.unwrap_or_default();
                let seq = r
                    .extra
                    .get("seq")
                    .and_then(|v| v.as_u64())
                    .unwrap_or(i as u64);
                let key = r
                    .extra
                    .get("candidate")
                    .and_then(|v| v.as_str())
                    .unwrap_or("");
                let values: Vec<String> = knobs
                    .iter()
                    .map(|k| r.config.get(*k).map(|v| v.to_string()).unwrap_or_default())
                    .collect();
                writeln!(
                    out,
                    "{seq},{},{},{},{},{},{},{},{},{},{},{}",
                    csv_field(key),
                    csv_field(r.shape.as_deref().unwrap_or("")),
                    r.outcome.as_str(),
                    opt(r.p50_us.map(|v| v.to_string())),
                    opt(r.p90_us.map(|v| v.to_string())),
                    opt(r.registers.map(|v| v.to_string())),
                    opt(r.smem_bytes.map(|v| v.to_string())),
                    opt(r.spill_bytes.map(|v| v.to_string())),
                    opt(r.max_abs_err.map(|v| v.to_string())),
                    opt(r.bottleneck.map(|b| b.as_str().to_string())),
                    values.join(",")
                )?;
            }
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The tokens the proposals of a run reported (prompt + completion where a server gave no
/// total). A source proposed again keeps its first record, so a repeated call's tokens are not
/// in it; `tune` counts every call.
fn source_tokens(sources: &[evoengineer::store::SourceRecord]) -> String {
    let reported: Vec<_> = sources.iter().filter_map(|s| s.usage).collect();
    if reported.is_empty() {
        return "no token counts reported".to_string();
    }
    let sum = |f: fn(&evoengineer::llm::Usage) -> u64| reported.iter().map(f).sum::<u64>();
    format!(
        "{} tokens ({} prompt + {} completion)",
        sum(|u| u.total()),
        sum(|u| u.prompt_tokens),
        sum(|u| u.completion_tokens)
    )
}
