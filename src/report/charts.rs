//! The report's charts, each an `<svg>` inside a `<figure id=...>` with a caption.

use std::collections::BTreeMap;

use super::svg::{escape, Anchor, Frame, Plot, Scale, Svg};
use super::{fmt_us, BaselineTiming, Run};
use crate::eval::Outcome;
use crate::insight::Bottleneck;
use crate::space::Layer;
use crate::study::stats::median;

/// Width of every chart, px.
pub const WIDTH: f64 = 1020.0;

/// Figure ids, in page order.
pub const FIGURES: [&str; 5] = [
    "fig-progress",
    "fig-macro",
    "fig-knobs",
    "fig-resources",
    "fig-bottleneck",
];

fn figure(id: &str, title: &str, svg: String, caption: &str) -> String {
    format!(
        "<figure id=\"{}\">\n<h3>{}</h3>\n{}\n<figcaption>{}</figcaption>\n</figure>\n",
        escape(id),
        escape(title),
        svg,
        escape(caption)
    )
}

/// A legend entry's mark.
enum Mark {
    Line(&'static str),
    Dot(&'static str),
    Cross(String),
    Swatch(String),
}

/// The width of a legend entry, px (11.5 px text, about 6.4 px a character).
fn entry_width(label: &str) -> f64 {
    28.0 + 6.4 * label.chars().count() as f64 + 18.0
}

/// Packs entries into lines no wider than `max_x - x0`; returns each line's entries.
fn legend_lines(items: &[(Mark, String)], x0: f64, max_x: f64) -> Vec<Vec<&(Mark, String)>> {
    let mut lines: Vec<Vec<&(Mark, String)>> = vec![vec![]];
    let mut x = x0;
    for item in items {
        let w = entry_width(&item.1);
        if x + w > max_x && !lines.last().unwrap().is_empty() {
            lines.push(vec![]);
            x = x0;
        }
        lines.last_mut().unwrap().push(item);
        x += w;
    }
    lines
}

/// Height of a legend, px.
fn legend_height(items: &[(Mark, String)], x0: f64) -> f64 {
    legend_lines(items, x0, WIDTH - 10.0).len() as f64 * LEGEND_LINE
}

const LEGEND_LINE: f64 = 18.0;

/// Legend entries from (x0, y) on, wrapped before the right edge of the chart.
fn legend(svg: &mut Svg, x0: f64, y: f64, items: &[(Mark, String)]) {
    for (i, line) in legend_lines(items, x0, WIDTH - 10.0).iter().enumerate() {
        let y = y + i as f64 * LEGEND_LINE;
        let mut x = x0;
        for (mark, label) in line.iter().map(|e| (&e.0, &e.1)) {
            match mark {
                Mark::Line(c) => svg.line(x, y - 4.0, x + 22.0, y - 4.0, c),
                Mark::Dot(c) => svg.circle(x + 11.0, y - 4.0, 4.0, c, None),
                Mark::Cross(c) => svg.cross(x + 11.0, y - 4.0, 3.5, c, None),
                Mark::Swatch(c) => svg.rect(x + 3.0, y - 10.0, 16.0, 12.0, c, None),
            }
            svg.text(x + 28.0, y, Anchor::Start, "legend", label);
            x += entry_width(label);
        }
    }
}

/// `s` cut to `n` characters, with an ellipsis if cut.
fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n - 1).chain(['…']).collect()
    }
}

fn outcome_class(o: Outcome) -> String {
    format!("o-{}", o.as_str())
}

fn class_of(b: Option<Bottleneck>) -> String {
    match b {
        Some(b) => format!("b-{}", b.as_str()),
        None => "b-none".into(),
    }
}

/// The scale of latencies `v` (and baselines), with a little room.
fn p50_scale(values: impl Iterator<Item = f64>, ticks: usize) -> Option<Scale> {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    lo.is_finite().then(|| Scale::fit(lo, hi, ticks))
}

fn empty_chart(height: f64, message: &str) -> String {
    let mut svg = Svg::new(WIDTH, height);
    svg.text(WIDTH / 2.0, height / 2.0, Anchor::Middle, "empty", message);
    svg.finish(message)
}

/// Best p50 and the elites against evaluations, every correct candidate as a dot, failures
/// as a rug along the bottom, baselines as horizontal lines.
pub fn progress(run: &Run, baselines: &[BaselineTiming]) -> String {
    let title = "Best p50 and the elites against evaluations";
    let n = run.trials.len();
    let ok: Vec<(f64, f64)> = run
        .trials
        .iter()
        .filter_map(|t| t.evaluation.p50_us().map(|p| ((t.seq + 1) as f64, p)))
        .collect();
    let Some(y) = p50_scale(
        ok.iter()
            .map(|p| p.1)
            .chain(baselines.iter().map(|b| b.p50_us)),
        6,
    ) else {
        return figure(
            FIGURES[0],
            title,
            empty_chart(120.0, "no candidate passed every gate: nothing to plot"),
            "No correct candidate in this run.",
        );
    };
    let k = run.history.iter().map(Vec::len).max().unwrap_or(0);
    let failures = run.trials.iter().any(|t| t.evaluation.p50_us().is_none());
    let mut items = vec![
        (Mark::Line("best"), "best p50".to_string()),
        (Mark::Line("elite2"), "2nd elite".to_string()),
        (Mark::Line("elite3"), "3rd+ elite".to_string()),
        (Mark::Dot("improve"), "new best".to_string()),
        (Mark::Dot("cand"), "correct candidate".to_string()),
    ];
    if k < 3 {
        items.retain(|(m, _)| !matches!(m, Mark::Line("elite3")));
    }
    if k < 2 {
        items.retain(|(m, _)| !matches!(m, Mark::Line("elite2")));
    }
    for o in run.failure_outcomes() {
        items.push((Mark::Cross(outcome_class(o)), o.as_str().to_string()));
    }
    if !baselines.is_empty() {
        items.push((Mark::Line("baseline"), "baseline".to_string()));
    }
    let top = 14.0 + legend_height(&items, 80.0) + 12.0;
    // The data above, a strip for the failures below it, then the x axis.
    let strip = if failures { 20.0 } else { 0.0 };
    let mut svg = Svg::new(WIDTH, top + 300.0 + strip + 50.0);
    let plot = Plot {
        frame: Frame {
            left: 80.0,
            top,
            width: WIDTH - 80.0 - 190.0,
            height: 300.0,
        },
        x: Scale::linear_nice(0.0, n.max(1) as f64, 10),
        y,
    };
    let with_strip = Plot {
        frame: Frame {
            height: 300.0 + strip,
            ..plot.frame
        },
        ..plot
    };
    svg.x_axis(&with_strip, "evaluations");
    svg.y_axis(&plot, "p50 (μs)");
    if failures {
        svg.line(
            plot.frame.left,
            plot.bottom(),
            plot.right(),
            plot.bottom(),
            "tick",
        );
        svg.text(
            plot.frame.left - 7.0,
            plot.bottom() + strip / 2.0 + 4.0,
            Anchor::End,
            "note",
            "failed",
        );
    }

    // Every correct candidate.
    for t in run.trials {
        if let Some(p) = t.evaluation.p50_us() {
            let tip = format!("#{} {}: {}", t.seq + 1, run.config_text(t), fmt_us(p));
            svg.circle(
                plot.px((t.seq + 1) as f64),
                plot.py(p),
                2.8,
                "cand",
                Some(&tip),
            );
        }
    }
    // Failures: crosses in the strip under the data.
    for t in run.trials {
        if t.evaluation.p50_us().is_none() {
            let tip = format!(
                "#{} {}: {}",
                t.seq + 1,
                run.config_text(t),
                t.evaluation.outcome
            );
            svg.cross(
                plot.px((t.seq + 1) as f64),
                plot.bottom() + 10.0,
                3.0,
                &outcome_class(t.evaluation.outcome),
                Some(&tip),
            );
        }
    }
    // Elites, worst rank first so the best is drawn on top.
    let x_end = n as f64;
    for rank in (0..k).rev() {
        let pts: Vec<(f64, f64)> = run
            .history
            .iter()
            .enumerate()
            .filter_map(|(seq, e)| e.get(rank).map(|e| ((seq + 1) as f64, e.p50_us)))
            .collect();
        let px: Vec<(f64, f64)> = super::svg::step_points(&pts, x_end)
            .into_iter()
            .map(|(x, y)| (plot.px(x), plot.py(y)))
            .collect();
        let class = match rank {
            0 => "best",
            1 => "elite2",
            _ => "elite3",
        };
        svg.polyline(&px, class);
    }
    // Where the best improved.
    let mut best = f64::INFINITY;
    for t in run.trials {
        if let Some(p) = t.evaluation.p50_us() {
            if p < best {
                best = p;
                let tip = format!("new best at evaluation {}: {}", t.seq + 1, fmt_us(p));
                svg.circle(
                    plot.px((t.seq + 1) as f64),
                    plot.py(p),
                    4.5,
                    "improve",
                    Some(&tip),
                );
            }
        }
    }
    // Baselines.
    let (ylo, yhi) = plot.y.domain();
    for b in baselines {
        if b.p50_us < ylo || b.p50_us > yhi {
            continue;
        }
        let yb = plot.py(b.p50_us);
        svg.line(plot.frame.left, yb, plot.right(), yb, "baseline");
        svg.text(
            plot.right() + 6.0,
            yb + 4.0,
            Anchor::Start,
            "baselinelabel",
            &format!("{} {}", short(&b.name, 22), fmt_us(b.p50_us)),
        );
    }
    legend(&mut svg, plot.frame.left, 22.0, &items);
    let caption = format!(
        "The best p50 so far (thick step line) and the other elites (K = {k}) after each of the {n} evaluations; every correct candidate is a dot, failed candidates are crosses in the strip below, coloured by outcome.{} y axis {}.",
        if baselines.is_empty() {
            " No baseline timings were given for this run."
        } else {
            " Dashed red lines: baselines."
        },
        if plot.y.is_log() { "logarithmic" } else { "linear" }
    );
    figure(FIGURES[0], title, svg.finish(title), &caption)
}

/// The p50 of every candidate, one row per macro variant, best row first; failures in a
/// column of their own.
pub fn macro_variants(run: &Run) -> String {
    let title = "p50 of every candidate, by macro variant";
    let space = run.space;
    let mut macros = space.layer_indices(Layer::Macro);
    if macros.is_empty() {
        macros = (0..space.knobs().len()).collect();
    }
    // Group the trials.
    let mut groups: BTreeMap<Vec<i64>, Vec<usize>> = BTreeMap::new();
    for (i, t) in run.trials.iter().enumerate() {
        let key = macros.iter().map(|&m| t.candidate.config.0[m]).collect();
        groups.entry(key).or_default().push(i);
    }
    let best_of = |idx: &Vec<usize>| {
        idx.iter()
            .filter_map(|&i| run.trials[i].evaluation.p50_us())
            .fold(f64::INFINITY, f64::min)
    };
    let mut rows: Vec<(Vec<i64>, Vec<usize>)> = groups.into_iter().collect();
    rows.sort_by(|a, b| best_of(&a.1).total_cmp(&best_of(&b.1)).then(a.0.cmp(&b.0)));
    const MAX_ROWS: usize = 40;
    let hidden = rows.len().saturating_sub(MAX_ROWS);
    rows.truncate(MAX_ROWS);

    let Some(x) = p50_scale(run.trials.iter().filter_map(|t| t.evaluation.p50_us()), 8) else {
        return figure(
            FIGURES[1],
            title,
            empty_chart(120.0, "no candidate passed every gate: nothing to plot"),
            "No correct candidate in this run.",
        );
    };

    // Label columns: one per macro knob, headed by its name at an angle.
    let cols: Vec<f64> = macros
        .iter()
        .map(|&m| {
            let widest = space.knobs()[m]
                .values
                .iter()
                .map(|v| v.to_string().len())
                .max()
                .unwrap_or(1);
            (widest as f64 * 7.5 + 14.0).max(30.0)
        })
        .collect();
    let longest = macros
        .iter()
        .map(|&m| space.knobs()[m].name.chars().count())
        .max()
        .unwrap_or(4) as f64;
    let header = (longest * 6.6 * 0.64 + 24.0).max(50.0);
    let row_h = 20.0;
    let labels_w: f64 = cols.iter().sum::<f64>() + 14.0;
    let fail_w = 170.0;
    let top = header + 8.0;
    let mut items = vec![
        (Mark::Dot("cand"), "candidate".to_string()),
        (
            Mark::Dot("rowbest"),
            "best of its macro variant".to_string(),
        ),
        (Mark::Dot("winner"), "winner".to_string()),
    ];
    for o in run.failure_outcomes() {
        items.push((Mark::Cross(outcome_class(o)), o.as_str().to_string()));
    }
    let legend_h = legend_height(&items, labels_w + 20.0);
    let height = top + rows.len() as f64 * row_h + 50.0 + legend_h;
    let mut svg = Svg::new(WIDTH, height);
    let plot = Plot {
        frame: Frame {
            left: labels_w + 20.0,
            top,
            width: WIDTH - labels_w - 20.0 - fail_w - 20.0,
            height: rows.len() as f64 * row_h,
        },
        x,
        y: Scale::Linear {
            lo: 0.0,
            hi: rows.len().max(1) as f64,
        },
    };
    // Row bands first, then the axis over them.
    for (r, _) in rows.iter().enumerate() {
        if r % 2 == 0 {
            svg.rect(
                8.0,
                top + r as f64 * row_h,
                WIDTH - 16.0,
                row_h,
                "rowband",
                None,
            );
        }
    }
    svg.x_axis(&plot, "p50 (μs)");
    // Column headers.
    let mut cx = 10.0;
    for (c, &m) in macros.iter().enumerate() {
        let mid = cx + cols[c] / 2.0;
        svg.text_rotated(
            mid,
            top - 6.0,
            -40.0,
            Anchor::Start,
            "colhead",
            &space.knobs()[m].name,
        );
        cx += cols[c];
    }
    let fail_left = plot.right() + 24.0;
    svg.text(fail_left, top - 8.0, Anchor::Start, "colhead", "failed");
    svg.line(
        fail_left - 10.0,
        top,
        fail_left - 10.0,
        plot.bottom(),
        "axis",
    );

    let winner = run.winner_key();
    let mut last: Option<(f64, f64, String)> = None;
    for (r, (values, idx)) in rows.iter().enumerate() {
        let yc = top + (r as f64 + 0.5) * row_h;
        let mut cx = 10.0;
        for (c, v) in values.iter().enumerate() {
            svg.text(
                cx + cols[c] / 2.0,
                yc + 4.0,
                Anchor::Middle,
                "cell",
                &v.to_string(),
            );
            cx += cols[c];
        }
        let row_best = best_of(idx);
        let mut failed = 0usize;
        for (j, &i) in idx.iter().enumerate() {
            let t = &run.trials[i];
            let tip = format!(
                "#{} {}: {}",
                t.seq + 1,
                run.config_text(t),
                match t.evaluation.p50_us() {
                    Some(p) => fmt_us(p),
                    None => t.evaluation.outcome.to_string(),
                }
            );
            match t.evaluation.p50_us() {
                Some(p) => {
                    let jitter = ((j % 3) as f64 - 1.0) * 3.0;
                    let class = if winner == Some(t.key.as_str()) {
                        "winner"
                    } else if p == row_best {
                        "rowbest"
                    } else {
                        "cand"
                    };
                    if class == "winner" {
                        last = Some((plot.px(p), yc + jitter, tip));
                    } else {
                        svg.circle(plot.px(p), yc + jitter, 3.6, class, Some(&tip));
                    }
                }
                None => {
                    svg.cross(
                        fail_left + 5.0 + failed as f64 * 10.0,
                        yc,
                        3.5,
                        &outcome_class(t.evaluation.outcome),
                        Some(&tip),
                    );
                    failed += 1;
                }
            }
        }
    }
    // The winner on top of the dots around it.
    if let Some((x, y, tip)) = last {
        svg.circle(x, y, 4.5, "winner", Some(&tip));
    }
    legend(&mut svg, plot.frame.left, height - legend_h + 10.0, &items);
    let caption = format!(
        "Each row is one macro variant (values of the macro knobs on the left), best first; each dot one candidate of it (its micro knobs differ), crosses on the right the candidates that failed a gate.{}",
        if hidden > 0 {
            format!(" {hidden} more macro variants, slower, are not shown.")
        } else {
            String::new()
        }
    );
    figure(FIGURES[1], title, svg.finish(title), &caption)
}

/// For each knob and value, the median p50 of the correct candidates with that value.
pub fn knobs(run: &Run) -> String {
    let title = "Each knob's effect";
    let space = run.space;
    let Some(y) = p50_scale(run.trials.iter().filter_map(|t| t.evaluation.p50_us()), 4) else {
        return figure(
            FIGURES[2],
            title,
            empty_chart(120.0, "no candidate passed every gate: nothing to plot"),
            "No correct candidate in this run.",
        );
    };
    let per_row = 4usize;
    let knobs = space.knobs();
    let rows = knobs.len().div_ceil(per_row).max(1);
    let (pw, ph) = (WIDTH / per_row as f64, 230.0);
    let mut svg = Svg::new(WIDTH, rows as f64 * ph + 30.0);
    for (ki, knob) in knobs.iter().enumerate() {
        let (col, row) = (ki % per_row, ki / per_row);
        let (ox, oy) = (col as f64 * pw, 30.0 + row as f64 * ph);
        let nv = knob.values.len().max(1);
        let plot = Plot {
            frame: Frame {
                left: ox + 64.0,
                top: oy + 30.0,
                width: pw - 64.0 - 16.0,
                height: ph - 30.0 - 60.0,
            },
            x: Scale::Linear {
                lo: 0.0,
                hi: nv as f64,
            },
            y,
        };
        svg.y_axis(&plot, if col == 0 { "p50 (μs)" } else { "" });
        svg.line(
            plot.frame.left,
            plot.bottom(),
            plot.right(),
            plot.bottom(),
            "axis",
        );
        let layer = match knob.layer {
            Layer::Macro => "macro",
            Layer::Micro => "micro",
        };
        svg.text(
            plot.frame.left + plot.frame.width / 2.0,
            oy + 16.0,
            Anchor::Middle,
            "paneltitle",
            &format!("{} ({layer})", knob.name),
        );
        let mut medians = Vec::new();
        for (vi, v) in knob.values.iter().enumerate() {
            let xc = plot.px(vi as f64 + 0.5);
            let p50s: Vec<f64> = run
                .trials
                .iter()
                .filter(|t| t.candidate.config.0[ki] == *v)
                .filter_map(|t| t.evaluation.p50_us())
                .collect();
            let failed = run
                .trials
                .iter()
                .filter(|t| t.candidate.config.0[ki] == *v && t.evaluation.p50_us().is_none())
                .count();
            for (j, p) in p50s.iter().enumerate() {
                let jitter = ((j * 7) % 11) as f64 - 5.0;
                svg.circle(xc + jitter * 1.6, plot.py(*p), 2.4, "cand", None);
            }
            svg.line(xc, plot.bottom(), xc, plot.bottom() + 4.0, "tick");
            svg.text(
                xc,
                plot.bottom() + 17.0,
                Anchor::Middle,
                "ticklabel",
                &v.to_string(),
            );
            svg.text(
                xc,
                plot.bottom() + 31.0,
                Anchor::Middle,
                "note",
                &if failed > 0 {
                    format!("n={} ({failed}✗)", p50s.len())
                } else {
                    format!("n={}", p50s.len())
                },
            );
            if let Some(m) = median(&p50s) {
                medians.push((xc, plot.py(m)));
                svg.rect(
                    xc - 14.0,
                    plot.py(m) - 1.5,
                    28.0,
                    3.0,
                    "median",
                    Some(&format!(
                        "{}={v}: median {} over {}",
                        knob.name,
                        fmt_us(m),
                        p50s.len()
                    )),
                );
            }
        }
        svg.polyline(&medians, "medianline");
    }
    legend(
        &mut svg,
        64.0,
        16.0,
        &[
            (
                Mark::Swatch("median".into()),
                "median p50 of candidates with that value".to_string(),
            ),
            (Mark::Dot("cand"), "one correct candidate".to_string()),
        ],
    );
    let caption = "One panel per knob: each dot a correct candidate with that value, the bar the median p50 among them (lower is faster); n counts correct candidates, ✗ those that failed a gate. The values were not varied independently: a median mixes whatever the search tried with that value.";
    figure(FIGURES[2], title, svg.finish(title), caption)
}

/// Registers and shared memory against p50.
pub fn resources(run: &Run) -> String {
    let title = "Registers and shared memory against p50";
    let with = |f: &dyn Fn(&crate::search::Trial) -> Option<f64>| -> Vec<(f64, f64, bool, String)> {
        run.trials
            .iter()
            .filter_map(|t| {
                let p = t.evaluation.p50_us()?;
                let x = f(t)?;
                let tip = format!("#{} {}: {}", t.seq + 1, run.config_text(t), fmt_us(p));
                Some((x, p, run.winner_key() == Some(t.key.as_str()), tip))
            })
            .collect()
    };
    let regs = with(&|t| t.evaluation.registers().map(f64::from));
    let smem = with(&|t| t.evaluation.smem_bytes().map(|b| b as f64 / 1024.0));
    let y = p50_scale(regs.iter().chain(&smem).map(|p| p.1), 5);
    let mut svg = Svg::new(WIDTH, 330.0);
    let pw = WIDTH / 2.0;
    let panels = [
        (
            regs,
            "registers per thread",
            "no candidate reported its register count",
        ),
        (
            smem,
            "shared memory per block (KiB)",
            "no candidate reported its shared memory",
        ),
    ];
    for (i, (pts, xt, none)) in panels.iter().enumerate() {
        let ox = i as f64 * pw;
        let frame = Frame {
            left: ox + 80.0,
            top: 20.0,
            width: pw - 80.0 - 30.0,
            height: 250.0,
        };
        let (Some(y), false) = (y, pts.is_empty()) else {
            svg.rect(
                frame.left,
                frame.top,
                frame.width,
                frame.height,
                "emptypanel",
                None,
            );
            svg.text(
                frame.left + frame.width / 2.0,
                frame.top + frame.height / 2.0,
                Anchor::Middle,
                "empty",
                none,
            );
            continue;
        };
        let (lo, hi) = pts
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
                (lo.min(p.0), hi.max(p.0))
            });
        let plot = Plot {
            frame,
            x: Scale::linear_nice(lo, hi, 6),
            y,
        };
        svg.axes(&plot, xt, if i == 0 { "p50 (μs)" } else { "" });
        for (x, p, win, tip) in pts {
            svg.circle(
                plot.px(*x),
                plot.py(*p),
                if *win { 5.0 } else { 3.2 },
                if *win { "winner" } else { "cand" },
                Some(tip),
            );
        }
    }
    let caption = "Each correct candidate with the compiler's figures: registers per thread (left) and shared memory per block (right, static plus dynamic) against its p50; the ringed dot is the winner. Candidates without these figures are left out.";
    figure(FIGURES[3], title, svg.finish(title), caption)
}

/// The bottleneck class along the run.
pub fn bottleneck(run: &Run) -> String {
    let title = "Bottleneck class along the run";
    let n = run.trials.len();
    let mut svg = Svg::new(WIDTH, 190.0);
    let plot = Plot {
        frame: Frame {
            left: 80.0,
            top: 40.0,
            width: WIDTH - 80.0 - 190.0,
            height: 90.0,
        },
        x: Scale::linear_nice(0.0, n.max(1) as f64, 10),
        y: Scale::Linear { lo: 0.0, hi: 1.0 },
    };
    svg.x_axis(&plot, "evaluations");
    let band_h = 30.0;
    let rows = [
        (plot.frame.top + 6.0, "candidate"),
        (plot.frame.top + 6.0 + band_h + 12.0, "best so far"),
    ];
    for (y0, label) in rows {
        svg.text(
            plot.frame.left - 8.0,
            y0 + band_h / 2.0 + 4.0,
            Anchor::End,
            "legend",
            label,
        );
    }
    let class_of_trial = |t: &crate::search::Trial| {
        t.profile
            .as_ref()
            .and_then(|p| p.bottleneck)
            .or_else(|| t.evaluation.profile.as_ref().and_then(|p| p.bottleneck))
    };
    let classes: BTreeMap<&str, Option<Bottleneck>> = run
        .trials
        .iter()
        .map(|t| (t.key.as_str(), class_of_trial(t)))
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    let mut profiled = 0;
    for (i, t) in run.trials.iter().enumerate() {
        let (x0, x1) = (plot.px(i as f64 + 0.5), plot.px(i as f64 + 1.5));
        let c = class_of_trial(t);
        seen.insert(c);
        let tip = format!(
            "#{} {}: {}",
            t.seq + 1,
            run.config_text(t),
            c.map(|b| b.as_str()).unwrap_or("no profile")
        );
        svg.rect(x0, rows[0].0, x1 - x0, band_h, &class_of(c), Some(&tip));
        if t.profiled {
            profiled += 1;
            svg.rect(x0, rows[0].0 - 5.0, x1 - x0, 3.0, "profiledmark", None);
        }
        let best = run.history.get(i).and_then(|e| e.first());
        if let Some(b) = best {
            let c = classes.get(b.key.as_str()).copied().flatten();
            seen.insert(c);
            let tip = format!(
                "after #{}: best {} is {}",
                t.seq + 1,
                fmt_us(b.p50_us),
                c.map(|b| b.as_str()).unwrap_or("not profiled")
            );
            svg.rect(x0, rows[1].0, x1 - x0, band_h, &class_of(c), Some(&tip));
        }
    }
    let mut items: Vec<(Mark, String)> = Bottleneck::ALL
        .iter()
        .filter(|b| seen.contains(&Some(**b)))
        .map(|b| (Mark::Swatch(class_of(Some(*b))), b.as_str().to_string()))
        .collect();
    if seen.contains(&None) {
        items.push((Mark::Swatch("b-none".into()), "no profile".to_string()));
    }
    if profiled > 0 {
        items.push((
            Mark::Swatch("profiledmark".into()),
            "profiled as a new elite".to_string(),
        ));
    }
    legend(&mut svg, plot.frame.left, 20.0, &items);
    let caption = "Top band: the bottleneck class of each candidate, where a profile exists (taken when it entered the elite set, or recorded with its measurement); the marks above it are the candidates profiled as new elites. Bottom band: the class of the best candidate so far, which orders the insight-guided proposals.";
    figure(FIGURES[4], title, svg.finish(title), caption)
}
