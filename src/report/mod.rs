//! A run as one self-contained HTML page: inline CSS and inline SVG charts, no script, nothing
//! fetched from anywhere.
//!
//! The charts (each a `<figure id=...>` with an `<svg>` and a `<figcaption>`): best p50 and
//! the elites against evaluations (`fig-progress`), every candidate's p50 by macro variant
//! (`fig-macro`), each knob's effect (`fig-knobs`), registers and shared memory against p50
//! (`fig-resources`), the bottleneck class along the run (`fig-bottleneck`). Then the winner
//! (config, the figures of each gate, speedups), for a run with model-written sources the code
//! evolution (`lineage`: the tree from the task's kernel and each source's diff), where the
//! run's time went (`fig-time`: phases summed, [`phases::PhaseSummary`]) and the whole
//! trajectory as a table.
//!
//! Baseline timings (PyTorch and the like) are not in the store yet; [`render`] takes them as
//! [`BaselineTiming`]s, which `report --baselines FILE` reads with [`load_baselines`].

mod charts;
mod lineage;
pub mod phases;
pub mod svg;

use std::fmt::Write;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::candidate::SourceRef;
use crate::eval::Outcome;
use crate::search::verify::ShapesPassed;
use crate::search::{Elite, Trial};
use crate::space::{Layer, Space};
use crate::store::{RunRecord, SourceRecord};
use crate::task::Task;
pub use charts::FIGURES;
use svg::escape;

/// The time of a reference implementation at the run's shape.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct BaselineTiming {
    pub name: String,
    pub p50_us: f64,
    #[serde(default)]
    pub p90_us: Option<f64>,
    /// The shape it was timed at; `None`: any.
    #[serde(default)]
    pub shape: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot read baselines {}: {source}", path.display())]
    ReadBaselines {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: {message} (expected one JSON object per line with `name` and `p50_us`, optional `p90_us` and `shape`)", path.display())]
    BadBaseline {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("cannot write the report to {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Reads baseline timings: JSON Lines of `{"name", "p50_us", "p90_us"?, "shape"?}`.
pub fn load_baselines(path: &Path) -> Result<Vec<BaselineTiming>, ReportError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReportError::ReadBaselines {
        path: path.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let b: BaselineTiming =
            serde_json::from_str(line).map_err(|e| ReportError::BadBaseline {
                path: path.to_path_buf(),
                line: i + 1,
                message: e.to_string(),
            })?;
        if !(b.p50_us.is_finite() && b.p50_us > 0.0) {
            return Err(ReportError::BadBaseline {
                path: path.to_path_buf(),
                line: i + 1,
                message: format!("p50_us {} is not a positive time", b.p50_us),
            });
        }
        out.push(b);
    }
    Ok(out)
}

/// Microseconds, three significant figures or more.
pub fn fmt_us(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.1} μs")
    } else if v.abs() >= 10.0 {
        format!("{v:.2} μs")
    } else {
        format!("{v:.3} μs")
    }
}

/// What the charts look at.
pub(crate) struct Run<'a> {
    pub space: &'a Space,
    pub trials: &'a [Trial],
    /// The elite set after each trial.
    pub history: &'a [Vec<Elite>],
    pub elites: &'a [Elite],
}

impl Run<'_> {
    pub fn config_text(&self, t: &Trial) -> String {
        let c = self.space.display(&t.candidate.config);
        match &t.candidate.source {
            SourceRef::Base => c,
            s => format!("{s} {c}"),
        }
    }

    pub fn winner_key(&self) -> Option<&str> {
        self.elites.first().map(|e| e.key.as_str())
    }

    /// The failure outcomes that occur in the run, in a fixed order.
    pub fn failure_outcomes(&self) -> Vec<Outcome> {
        [
            Outcome::CompileError,
            Outcome::Incorrect,
            Outcome::RuntimeError,
            Outcome::Timeout,
            Outcome::Missing,
        ]
        .into_iter()
        .filter(|o| self.trials.iter().any(|t| t.evaluation.outcome == *o))
        .collect()
    }
}

const CSS: &str = r#"
:root { --ink: #1d2430; --muted: #5d6776; --line: #d8dde5; --accent: #1f5fbf; }
* { box-sizing: border-box; }
body { margin: 0; background: #f5f6f8; color: var(--ink);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 24px 48px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 32px 0 12px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 15px; margin: 0 0 8px; }
.sub { color: var(--muted); margin: 0 0 16px; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12.5px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 16px 0; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 10px 14px; min-width: 150px; }
.card .k { color: var(--muted); font-size: 12px; }
.card .v { font-size: 20px; font-weight: 600; }
figure { background: #fff; border: 1px solid var(--line); border-radius: 6px; margin: 16px 0; padding: 14px 14px 10px; }
figure svg { display: block; max-width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: 12.5px; margin-top: 6px; }
table { border-collapse: collapse; background: #fff; margin: 8px 0 16px; }
th, td { border: 1px solid var(--line); padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #eef1f5; font-weight: 600; vertical-align: bottom; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
th.vh { vertical-align: bottom; padding: 6px 3px; }
th.vh span { writing-mode: vertical-rl; transform: rotate(180deg); white-space: nowrap; font-weight: 600; font-size: 12px; }
td.knob { text-align: center; font-variant-numeric: tabular-nums; }
.scroll { overflow-x: auto; }
tr.improved td { background: #eaf2ff; }
tr.failed td { color: #8a5a5a; }
table.meta th { width: 160px; vertical-align: top; }
.gates th { vertical-align: top; }
.gates { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
.gates table { min-width: 300px; }
.pass { color: #1e7b34; font-weight: 600; }
.fail { color: #b3261e; font-weight: 600; }
footer { color: var(--muted); font-size: 12px; margin-top: 32px; }
/* charts */
svg text { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif; fill: var(--ink); }
.grid { stroke: #e9ecf1; stroke-width: 1; }
.axis { stroke: #5d6776; stroke-width: 1; }
.tick { stroke: #5d6776; stroke-width: 1; }
.ticklabel { font-size: 11px; fill: #5d6776; }
.axistitle { font-size: 12px; font-weight: 600; }
.legend { font-size: 11.5px; }
.note { font-size: 10.5px; fill: #5d6776; }
.empty { font-size: 13px; fill: #5d6776; }
.emptypanel { fill: #fafbfc; stroke: var(--line); }
.paneltitle { font-size: 12px; font-weight: 600; }
.colhead { font-size: 11px; fill: #5d6776; }
.cell { font-size: 11.5px; font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.rowband { fill: #f4f6f9; }
.cand { fill: #8795a8; fill-opacity: 0.55; stroke: none; }
.rowbest { fill: #1f5fbf; stroke: none; }
.winner { fill: #ffb000; stroke: #1d2430; stroke-width: 1.5; }
.improve { fill: #1f5fbf; stroke: #fff; stroke-width: 1.5; }
.best { fill: none; stroke: #1f5fbf; stroke-width: 2.5; }
.elite2 { fill: none; stroke: #6e9be0; stroke-width: 1.5; stroke-dasharray: 6 3; }
.elite3 { fill: none; stroke: #8aaee6; stroke-width: 1.5; stroke-dasharray: 2 3; }
.baseline { stroke: #c0392b; stroke-width: 1.5; stroke-dasharray: 8 4; }
.baselinelabel { font-size: 11px; fill: #c0392b; }
.median { fill: #1f5fbf; }
.medianline { fill: none; stroke: #1f5fbf; stroke-width: 1; stroke-opacity: 0.6; }
.o-compile_error { stroke: #8e44ad; stroke-width: 2; fill: none; }
.o-incorrect { stroke: #d35400; stroke-width: 2; fill: none; }
.o-runtime_error { stroke: #c0392b; stroke-width: 2; fill: none; }
.o-timeout { stroke: #2c3e50; stroke-width: 2; fill: none; }
.o-missing { stroke: #a0a7b1; stroke-width: 2; fill: none; }
.b-compute { fill: #4e79a7; }
.b-memory { fill: #f28e2b; }
.b-occupancy { fill: #e15759; }
.b-balanced { fill: #59a14f; }
.b-none { fill: #e6e9ee; }
.profiledmark { fill: #1d2430; }
"#;

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

fn row(o: &mut String, k: &str, v: &str) {
    let _ = writeln!(o, "<tr><th>{}</th><td>{}</td></tr>", escape(k), v);
}

/// The report of run `run_id`. `baselines` for other shapes than the run's are ignored.
/// `sources` are the run's model-written sources (the store's `run_sources`); with any, the
/// report has a "Code evolution" section: their lineage tree from the task's kernel and each
/// one's diff against its first parent.
pub fn render(
    task: &Task,
    run_id: i64,
    rec: &RunRecord,
    sources: &[SourceRecord],
    baselines: &[BaselineTiming],
    generated_at: &str,
) -> String {
    let baselines: Vec<BaselineTiming> = baselines
        .iter()
        .filter(|b| b.shape.as_deref().is_none_or(|s| s == rec.row.shape))
        .cloned()
        .collect();
    let run = Run {
        space: &task.space,
        trials: &rec.trials,
        history: &rec.elite_history,
        elites: &rec.elites,
    };
    let s = &rec.settings;
    let winner = rec.elites.first();
    let winner_trial = winner.and_then(|w| rec.trials.iter().find(|t| t.key == w.key));
    let default_config = task.space.default_config();
    let default_p50 = rec
        .trials
        .iter()
        .find(|t| t.candidate.source == SourceRef::Base && t.candidate.config == default_config)
        .and_then(|t| t.evaluation.p50_us());

    let mut o = String::new();
    let title = format!("Run {run_id}: {} · shape {}", rec.row.task, rec.row.shape);
    let _ = write!(
        o,
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{}</title>\n<style>{CSS}{}{}</style>\n</head>\n<body>\n<main>\n",
        escape(&format!("evoengineer · {title}")),
        phases::CSS,
        lineage::CSS
    );
    let _ = writeln!(o, "<header><h1>{}</h1>", escape(&title));
    let shape_desc = task
        .shape(&rec.row.shape)
        .map(|sh| sh.describe())
        .unwrap_or_default();
    let _ = writeln!(
        o,
        "<p class=\"sub\">{} — variant <b>{}</b>, seed {}, {} evaluations, {}; {} on {}</p></header>",
        escape(&task.description),
        escape(s.variant.as_str()),
        s.seed,
        rec.trials.len(),
        escape(&stop_words(rec)),
        escape(&shape_desc),
        escape(&rec.environment.device),
    );

    // Summary cards.
    o.push_str("<section class=\"cards\">\n");
    let card = |o: &mut String, k: &str, v: &str| {
        let _ = writeln!(
            o,
            "<div class=\"card\"><div class=\"k\">{}</div><div class=\"v\">{}</div></div>",
            escape(k),
            escape(v)
        );
    };
    match winner {
        Some(w) => {
            card(&mut o, "winner p50", &fmt_us(w.p50_us));
            card(&mut o, "winner p90", &fmt_us(w.p90_us));
            if let Some(d) = default_p50 {
                card(
                    &mut o,
                    "speedup over the default config",
                    &format!("{:.2}×", d / w.p50_us),
                );
            }
            for b in &baselines {
                card(
                    &mut o,
                    &format!("speedup over {}", b.name),
                    &format!("{:.2}×", b.p50_us / w.p50_us),
                );
            }
        }
        None => card(&mut o, "winner", "none passed every gate"),
    }
    let failed = rec
        .trials
        .iter()
        .filter(|t| t.evaluation.p50_us().is_none())
        .count();
    card(
        &mut o,
        "evaluations (failed a gate)",
        &format!("{} ({failed})", rec.trials.len()),
    );
    o.push_str("</section>\n");

    // Charts.
    o.push_str("<h2 id=\"charts\">Charts</h2>\n");
    o.push_str(&charts::progress(&run, &baselines));
    o.push_str(&charts::macro_variants(&run));
    o.push_str(&charts::knobs(&run));
    o.push_str(&charts::resources(&run));
    o.push_str(&charts::bottleneck(&run));

    // The winner, and each elite with the shapes it was found correct at.
    let shapes = elite_shapes(task, rec);
    o.push_str("<h2 id=\"winner\">Winner</h2>\n");
    match (winner, winner_trial) {
        (Some(w), Some(t)) => winner_section(&mut o, task, w, t, default_p50, &baselines, &shapes),
        (Some(w), None) => {
            let _ = writeln!(
                o,
                "<p>p50 {} — its trial is not in this run's record.</p>",
                escape(&fmt_us(w.p50_us))
            );
        }
        _ => o.push_str("<p>No candidate passed every gate: there is no winner.</p>\n"),
    }
    elites_table(&mut o, &run, &shapes);

    // Code evolution, for a run with model-written sources.
    if !sources.is_empty() {
        let base_code = task
            .kernel
            .as_ref()
            .and_then(|k| std::fs::read_to_string(&k.launch.source).ok());
        o.push_str(&lineage::section(
            sources,
            &rec.trials,
            base_code.as_deref(),
        ));
    }

    // Run details.
    o.push_str("<h2 id=\"run\">Run</h2>\n<table class=\"meta\">\n");
    row(
        &mut o,
        "task",
        &escape(&format!("{} ({})", rec.row.task, rec.task_dir.display())),
    );
    row(
        &mut o,
        "shape",
        &escape(&format!("{} {}", rec.row.shape, shape_desc)),
    );
    row(
        &mut o,
        "settings",
        &escape(&format!(
            "variant {}, seed {}, budget {}, patience {}, time limit {}, elites K {}, micro per elite {}, insights {}, two-layer {}, diverse {}",
            s.variant,
            s.seed,
            if s.limits.budget == usize::MAX { "none".to_string() } else { s.limits.budget.to_string() },
            s.limits.patience,
            s.limits.time_limit.map(|t| format!("{:.0} s", t.as_secs_f64())).unwrap_or_else(|| "none".into()),
            s.effective_elites(),
            s.micro_per_elite,
            s.insights,
            s.two_layer,
            s.diverse
        )),
    );
    row(&mut o, "status", &escape(&rec.row.status.to_string()));
    row(&mut o, "stopped", &escape(&stop_words(rec)));
    row(
        &mut o,
        "elapsed",
        &escape(
            &rec.row
                .elapsed_s
                .map(|e| format!("{e:.1} s"))
                .unwrap_or_else(|| "-".into()),
        ),
    );
    row(
        &mut o,
        "evaluator",
        &format!("<code>{}</code>", escape(&rec.evaluator)),
    );
    row(&mut o, "device", &escape(&rec.environment.device));
    row(&mut o, "toolchain", &escape(&rec.environment.toolchain));
    row(
        &mut o,
        "command",
        &format!("<code>{}</code>", escape(&rec.command_line)),
    );
    row(
        &mut o,
        "created / finished",
        &escape(&format!(
            "{} / {}",
            rec.row.created_at,
            rec.row.finished_at.as_deref().unwrap_or("-")
        )),
    );
    row(
        &mut o,
        "kernel hash",
        &format!("<code>{}</code>", escape(&rec.kernel_hash)),
    );
    o.push_str("</table>\n");

    // Where the time went.
    o.push_str("<h2 id=\"time\">Time by phase</h2>\n");
    let replayed = rec.evaluator.starts_with("replay:");
    o.push_str(&phases::PhaseSummary::of(&rec.trials, rec.row.elapsed_s, replayed).html());

    // Trajectory.
    o.push_str("<h2 id=\"trajectory\">Trajectory</h2>\n");
    trajectory_table(&mut o, &run);

    let _ = writeln!(
        o,
        "<footer>evoengineer {} report of run {run_id}, generated {}. Times are medians (p50) and 90th percentiles (p90) of timed launches, in μs.</footer>\n</main>\n</body>\n</html>",
        env!("CARGO_PKG_VERSION"),
        escape(generated_at)
    );
    o
}

/// Per elite, the shapes it was found correct at: the run's (where it was timed), then the
/// task's other verification shapes it passed ([`ShapesPassed`]).
fn elite_shapes(task: &Task, rec: &RunRecord) -> Vec<String> {
    rec.elites
        .iter()
        .map(|e| ShapesPassed::of(task, &rec.trials, &e.key, &rec.row.shape).describe())
        .collect()
}

/// The winner `w`, the trial that made it an elite `t`; `shapes`: per elite, where it was
/// found correct (the winner's first).
fn winner_section(
    o: &mut String,
    task: &Task,
    w: &Elite,
    t: &Trial,
    default_p50: Option<f64>,
    baselines: &[BaselineTiming],
    shapes: &[String],
) {
    let space = &task.space;
    let _ = writeln!(
        o,
        "<p>Evaluation {} of the run, source <code>{}</code>: p50 <b>{}</b>, p90 {}.</p>",
        t.seq + 1,
        escape(&t.candidate.source.to_string()),
        escape(&fmt_us(w.p50_us)),
        escape(&fmt_us(w.p90_us))
    );
    let _ = writeln!(
        o,
        "<p>Correct at: <span class=\"shapes\">{}</span>.</p>",
        escape(shapes.first().map(String::as_str).unwrap_or("-"))
    );
    o.push_str("<h3>Config</h3>\n<table><tr><th>knob</th><th>value</th><th>default</th><th>layer</th></tr>\n");
    for (k, v) in space.knobs().iter().zip(t.candidate.config.values()) {
        let _ = writeln!(
            o,
            "<tr><td><code>{}</code></td><td class=\"num\"><b>{}</b></td><td class=\"num\">{}</td><td>{}</td></tr>",
            escape(&k.name),
            v,
            k.default,
            match k.layer {
                Layer::Macro => "macro",
                Layer::Micro => "micro",
            }
        );
    }
    o.push_str("</table>\n<h3>Gates</h3>\n<div class=\"gates\">\n");
    let e = &t.evaluation;
    // Compile.
    o.push_str(
        "<table><tr><th colspan=\"2\">compile <span class=\"pass\">passed</span></th></tr>\n",
    );
    match &e.compile {
        Some(c) => {
            row(o, "registers / thread", &opt(c.registers));
            row(
                o,
                "shared memory / block",
                &opt(c.smem_bytes.map(|b| format!("{b} B"))),
            );
            row(o, "spills", &opt(c.spill_bytes.map(|b| format!("{b} B"))));
            row(
                o,
                "stack frame",
                &opt(c.stack_frame_bytes.map(|b| format!("{b} B"))),
            );
            row(
                o,
                "compile time",
                &opt(c.compile_s.map(|s| format!("{s:.2} s"))),
            );
            row(
                o,
                "cubin sha256",
                &opt(c
                    .cubin_sha256
                    .as_deref()
                    .map(|h| format!("<code>{}</code>", escape(&h[..h.len().min(16)])))),
            );
        }
        None => row(o, "report", "not recorded"),
    }
    o.push_str("</table>\n");
    // Correctness.
    o.push_str(
        "<table><tr><th colspan=\"2\">correctness <span class=\"pass\">passed</span></th></tr>\n",
    );
    let tol = &task.tolerance;
    let with_tol = |v: f64, t: Option<f64>| match t {
        Some(t) => format!("{v:.3e} (tolerance {t})"),
        None => format!("{v:.3e}"),
    };
    match &e.correctness {
        Some(c) => {
            row(o, "trials", &c.trials.to_string());
            row(
                o,
                "max abs error",
                &escape(&with_tol(c.max_abs_err, tol.max_abs_err)),
            );
            row(
                o,
                "mean abs error",
                &escape(&opt(c.mean_abs_err.map(|v| with_tol(v, tol.mean_abs_err)))),
            );
            row(
                o,
                "relative L2 error",
                &escape(&opt(c.rel_l2_err.map(|v| with_tol(v, tol.rel_l2_err)))),
            );
            row(o, "RMSE", &opt(c.rmse.map(|v| format!("{v:.3e}"))));
            row(
                o,
                "NaNs / unwritten",
                &format!("{} / {}", c.nan_count, c.unwritten_count),
            );
        }
        None => row(o, "report", "not recorded"),
    }
    o.push_str("</table>\n");
    // Timing.
    o.push_str("<table><tr><th colspan=\"2\">timing</th></tr>\n");
    match &e.timing {
        Some(tm) => {
            row(o, "p50", &escape(&fmt_us(tm.p50_us)));
            row(o, "p90", &escape(&fmt_us(tm.p90_us)));
            row(o, "min", &escape(&opt(tm.min_us.map(fmt_us))));
            row(
                o,
                "mean ± std",
                &escape(&match (tm.mean_us, tm.std_us) {
                    (Some(m), Some(s)) => format!("{} ± {}", fmt_us(m), fmt_us(s)),
                    (Some(m), None) => fmt_us(m),
                    _ => "-".into(),
                }),
            );
            row(o, "samples", &tm.samples_us.len().to_string());
            if tm.sm_clock_mhz_before.is_some() || tm.sm_clock_mhz_after.is_some() {
                row(
                    o,
                    "SM clock before / after",
                    &escape(&format!(
                        "{} / {} MHz{}",
                        opt(tm.sm_clock_mhz_before),
                        opt(tm.sm_clock_mhz_after),
                        if tm.clock_dropped { " (dropped)" } else { "" }
                    )),
                );
            }
        }
        None => row(o, "report", "not recorded"),
    }
    o.push_str("</table>\n</div>\n");
    // Speedups.
    o.push_str("<h3>Speedups</h3>\n");
    if default_p50.is_none() && baselines.is_empty() {
        o.push_str("<p>None known: the default config was not timed in this run and no baseline timings were given (<code>report --baselines FILE</code>).</p>\n");
        return;
    }
    o.push_str("<table><tr><th>against</th><th>its p50</th><th>speedup</th></tr>\n");
    if let Some(d) = default_p50 {
        let _ = writeln!(
            o,
            "<tr><td>the task's default config</td><td class=\"num\">{}</td><td class=\"num\"><b>{:.2}×</b></td></tr>",
            escape(&fmt_us(d)),
            d / w.p50_us
        );
    }
    for b in baselines {
        let _ = writeln!(
            o,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\"><b>{:.2}×</b></td></tr>",
            escape(&b.name),
            escape(&fmt_us(b.p50_us)),
            b.p50_us / w.p50_us
        );
    }
    o.push_str("</table>\n");
}

/// Header cells of the knob columns: names written upwards.
fn knob_heads(o: &mut String, space: &Space) {
    for k in space.knobs() {
        let _ = write!(
            o,
            "<th class=\"vh\" title=\"{0}\"><span>{0}</span></th>",
            escape(&k.name)
        );
    }
}

fn knob_cells(o: &mut String, values: &[i64]) {
    for v in values {
        let _ = write!(o, "<td class=\"knob\">{v}</td>");
    }
}

/// `shapes`: per elite, the shapes it was found correct at ([`ShapesPassed::describe`]).
fn elites_table(o: &mut String, run: &Run, shapes: &[String]) {
    if run.elites.is_empty() {
        return;
    }
    o.push_str("<h3>Final elites</h3>\n<div class=\"scroll\"><table><tr><th>rank</th><th>p50</th><th>p90</th><th>regs</th><th>smem (B)</th><th>correct at</th>");
    knob_heads(o, run.space);
    o.push_str("</tr>\n");
    for (i, e) in run.elites.iter().enumerate() {
        let _ = write!(
            o,
            "<tr><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>",
            i + 1,
            escape(&fmt_us(e.p50_us)),
            escape(&fmt_us(e.p90_us)),
            opt(e.registers),
            opt(e.smem_bytes),
        );
        let _ = write!(
            o,
            "<td class=\"shapes\">{}</td>",
            escape(shapes.get(i).map(String::as_str).unwrap_or("-"))
        );
        match &e.candidate {
            Some(c) => knob_cells(o, c.config.values()),
            None => {
                let _ = write!(
                    o,
                    "<td colspan=\"{}\"><code>{}</code></td>",
                    run.space.knobs().len(),
                    escape(&e.key)
                );
            }
        }
        o.push_str("</tr>\n");
    }
    o.push_str("</table></div>\n");
}

fn trajectory_table(o: &mut String, run: &Run) {
    let sources = run
        .trials
        .iter()
        .any(|t| t.candidate.source != SourceRef::Base);
    o.push_str("<div class=\"scroll\"><table class=\"trajectory\"><tr><th>#</th><th>outcome</th><th>p50</th><th>p90</th><th>best so far</th><th>regs</th><th>smem (B)</th><th>class</th>");
    if sources {
        o.push_str("<th>source</th>");
    }
    knob_heads(o, run.space);
    o.push_str("<th>note</th></tr>\n");
    let mut best = f64::INFINITY;
    for t in run.trials {
        let e = &t.evaluation;
        let p = e.p50_us();
        let improved = p.is_some_and(|p| p < best);
        if let Some(p) = p {
            best = best.min(p);
        }
        let class = t
            .profile
            .as_ref()
            .and_then(|p| p.bottleneck)
            .or_else(|| e.profile.as_ref().and_then(|p| p.bottleneck));
        let mut note = Vec::new();
        if improved {
            note.push("new best".to_string());
        }
        if t.profiled {
            note.push("profiled".to_string());
        }
        if t.reused {
            note.push("reused".to_string());
        }
        if let Some(m) = &e.message {
            note.push(m.clone());
        }
        let _ = write!(
            o,
            "<tr{}><td class=\"num\">{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td>",
            if improved {
                " class=\"improved\""
            } else if p.is_none() {
                " class=\"failed\""
            } else {
                ""
            },
            t.seq + 1,
            e.outcome,
            p.map(fmt_us).unwrap_or_else(|| "-".into()),
            if p.is_some() {
                e.p90_us().map(fmt_us).unwrap_or_else(|| "-".into())
            } else {
                "-".into()
            },
            if best.is_finite() {
                fmt_us(best)
            } else {
                "-".into()
            },
            opt(e.registers()),
            opt(e.smem_bytes()),
            opt(class.map(|c| c.as_str())),
        );
        if sources {
            let _ = write!(
                o,
                "<td><code>{}</code></td>",
                escape(&t.candidate.source.to_string())
            );
        }
        knob_cells(o, t.candidate.config.values());
        let _ = writeln!(o, "<td>{}</td></tr>", escape(&note.join("; ")));
    }
    o.push_str("</table></div>\n");
}

/// Writes `html` to `dir/report.html`, creating `dir`; returns the file's path.
pub fn write(dir: &Path, html: &str) -> Result<PathBuf, ReportError> {
    let path = dir.join("report.html");
    std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::write(&path, html))
        .map_err(|source| ReportError::Write {
            path: path.clone(),
            source,
        })?;
    Ok(path)
}

/// Why the run stopped, in the words `show` uses (for code evolution: the model calls made
/// against `--llm-calls`, one per trial after the task's own kernel).
fn stop_words(rec: &crate::store::RunRecord) -> String {
    let calls = rec.settings.llm.as_ref().map(|l| crate::search::CallsMade {
        made: rec.trials.len().saturating_sub(1),
        limit: l.calls,
    });
    match rec.row.stopped_by {
        Some(r) => r.describe(&rec.settings.limits, calls),
        None => format!("not stopped ({})", rec.row.status),
    }
}

#[cfg(test)]
mod tests;
