//! A study as Markdown, ready to paste into `bench/search.md`.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::{PeerArm, ScoreStats, Study};

/// An evaluation count: whole numbers plain, interpolated ones with one decimal, "never" as —.
pub(crate) fn count(v: f64) -> String {
    if !v.is_finite() {
        "—".into()
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// Microseconds with three significant figures or more.
pub(crate) fn us(v: f64) -> String {
    if !v.is_finite() {
        "none".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.1} μs")
    } else if v.abs() >= 10.0 {
        format!("{v:.2} μs")
    } else {
        format!("{v:.3} μs")
    }
}

fn pct(fraction: f64) -> String {
    format!("{:.0}%", fraction * 100.0)
}

fn reasons(m: &BTreeMap<String, usize>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Markdown: where the numbers come from, then three tables (evaluations to the optimum,
/// best found at the checkpoints, default-settings behaviour).
pub fn markdown(s: &Study) -> String {
    let mut o = String::new();
    let spec = &s.spec;
    let _ = writeln!(o, "### Search study: {}, shape `{}`\n", s.task, s.shape);
    if let Some(cmd) = &s.command_line {
        let _ = writeln!(o, "- command: `{cmd}`");
    }
    let _ = writeln!(
        o,
        "- landscape: `{}` (sha256 `{}`): {} records for shape `{}`, {} `ok`",
        s.landscape.path.display(),
        &s.landscape.sha256[..s.landscape.sha256.len().min(12)],
        s.landscape.records,
        s.shape,
        s.landscape.ok
    );
    if let Some(n) = s.space_size {
        let _ = writeln!(o, "- space: {n} valid configs");
    }
    let _ = writeln!(
        o,
        "- optimum: {} ({})",
        us(s.optimum.p50_us),
        s.optimum
            .keys
            .iter()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        o,
        "- {} seeds per arm (0..{}), budget {} evaluations; date {}",
        spec.seeds,
        spec.seeds.saturating_sub(1),
        spec.budget,
        s.date
    );
    let _ = writeln!(
        o,
        "- trajectory runs: patience 0 (never converge), so every run is comparable at every \
         evaluation count; default runs: each variant's defaults, patience {}, same budget",
        spec.patience
    );
    let near = format!("{:.0}%", spec.near * 100.0);

    let _ = writeln!(
        o,
        "\n#### Evaluations to first reach the optimum, and to come within {near} of it\n"
    );
    let _ = writeln!(
        o,
        "| arm | reached optimum | median | p90 | within {near} | median | p90 |"
    );
    let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|");
    for a in &s.arms {
        let t = &a.trajectory;
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} |",
            a.arm.name(),
            pct(t.reached_optimum),
            count(t.to_optimum_median),
            count(t.to_optimum_p90),
            pct(t.reached_near),
            count(t.to_near_median),
            count(t.to_near_p90)
        );
    }
    let _ = writeln!(
        o,
        "\nA run that never gets there within the budget counts as infinitely many evaluations; \
         — means at least half (median) or a tenth (p90) of the runs never got there. \
         Quantiles interpolate between ranks."
    );

    let _ = writeln!(
        o,
        "\n#### Best p50 found after N evaluations (median over seeds; × the optimum)\n"
    );
    let mut head = String::from("| arm |");
    let mut rule = String::from("|---|");
    for n in &spec.checkpoints {
        let _ = write!(head, " after {n} |");
        rule.push_str("---:|");
    }
    let _ = writeln!(o, "{head} evaluations used (median) | stopped by |");
    let _ = writeln!(o, "{rule}---:|---|");
    for a in &s.arms {
        let t = &a.trajectory;
        let mut row = format!("| {} |", a.arm.name());
        for c in &t.at {
            if c.median_best_p50_us.is_finite() {
                let _ = write!(row, " {} ({:.3}×) |", us(c.median_best_p50_us), c.ratio);
            } else {
                row.push_str(" none |");
            }
        }
        let _ = writeln!(
            o,
            "{row} {} | {} |",
            count(t.evaluations_median),
            reasons(&t.stopped_by)
        );
    }

    let _ = writeln!(
        o,
        "\n#### Default settings (patience {}, budget {})\n",
        spec.patience, spec.budget
    );
    let _ = writeln!(
        o,
        "| arm | evaluations until stop (median) | p90 | stops holding the optimum | median final p50 | median gap to optimum | stopped by |"
    );
    let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---|");
    for a in &s.arms {
        let d = &a.default;
        let gap = if d.median_gap_pct.is_finite() {
            format!("{:+.2}%", d.median_gap_pct)
        } else {
            "—".into()
        };
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} |",
            a.arm.name(),
            count(d.evaluations_median),
            count(d.evaluations_p90),
            pct(d.reached_optimum),
            us(d.median_final_p50_us),
            gap,
            reasons(&d.stopped_by)
        );
    }
    scores(&mut o, s);
    o
}

/// `+0.52 ± 0.08 (85%)`.
fn score_cell(s: Option<&ScoreStats>) -> String {
    match s {
        Some(s) => format!("{:+.2} ± {:.2} ({})", s.mean, s.ci95, pct(s.beats_random)),
        None => "—".into(),
    }
}

fn score_at(scores: &[ScoreStats], n: usize) -> Option<&ScoreStats> {
    scores.iter().find(|s| s.evaluations == n)
}

/// Every arm's and peer's score against random search at each checkpoint.
fn scores(o: &mut String, s: &Study) {
    let Some(random) = &s.random else {
        let _ = writeln!(
            o,
            "\nNo score against random search: the space is too large to list every valid config."
        );
        return;
    };
    let _ = writeln!(
        o,
        "\n#### Score against random search (0 = random search's median best, 1 = the optimum)\n"
    );
    let mut head = String::from("| arm |");
    let mut rule = String::from("|---|");
    for (n, r) in s.spec.checkpoints.iter().zip(&random.median_best_us) {
        let _ = write!(head, " after {n} (random: {}) |", us(*r));
        rule.push_str("---:|");
    }
    let _ = writeln!(o, "{head}\n{rule}");
    let rows = s
        .arms
        .iter()
        .map(|a| (a.arm.name(), &a.scores))
        .chain(s.peers.iter().map(|p| (p.name(), &p.scores)));
    for (name, sc) in rows {
        let mut row = format!("| {name} |");
        for &n in &s.spec.checkpoints {
            let _ = write!(row, " {} |", score_cell(score_at(sc, n)));
        }
        let _ = writeln!(o, "{row}");
    }
    let _ = writeln!(
        o,
        "\nMean score over runs ± the half-width of its 95 % confidence interval (1.96 standard \
         errors), and the fraction of runs that beat random search's median. Random search's \
         median best is exact, computed from all {} valid configs (those without a time count \
         as drawn). Peers' runs count at the checkpoint equal to their budget.",
        random.configs
    );
}

/// Several studies' scores against random search: per arm (and peer), the mean over
/// landscapes of its mean score at each checkpoint, and on how many landscapes it beats random
/// search; then the mean score per landscape at each checkpoint.
pub fn score_overview(studies: &[Study]) -> String {
    let mut o = String::new();
    let scored: Vec<&Study> = studies.iter().filter(|s| s.random.is_some()).collect();
    let Some(first) = scored.first() else {
        return o;
    };
    let checkpoints = &first.spec.checkpoints;
    let mut names: Vec<String> = Vec::new();
    for s in &scored {
        for n in s
            .arms
            .iter()
            .map(|a| a.arm.name())
            .chain(s.peers.iter().map(PeerArm::name))
        {
            if !names.contains(&n) {
                names.push(n);
            }
        }
    }
    let lookup = |s: &Study, name: &str, n: usize| -> Option<f64> {
        let sc = s
            .arms
            .iter()
            .find(|a| a.arm.name() == name)
            .map(|a| &a.scores)
            .or_else(|| s.peers.iter().find(|p| p.name() == name).map(|p| &p.scores))?;
        score_at(sc, n).map(|x| x.mean)
    };
    let _ = writeln!(
        o,
        "### Score against random search, over {} landscapes\n",
        scored.len()
    );
    let _ = writeln!(
        o,
        "Per landscape, the mean score of its runs (0 = random search's median best, 1 = the \
         optimum); here the mean of those over the landscapes, and on how many landscapes the \
         mean beats random search (> 0).\n"
    );
    let mut head = String::from("| arm |");
    let mut rule = String::from("|---|");
    for n in checkpoints {
        let _ = write!(head, " mean after {n} | beats random |");
        rule.push_str("---:|---:|");
    }
    let _ = writeln!(o, "{head}\n{rule}");
    for name in &names {
        let mut row = format!("| {name} |");
        for &n in checkpoints {
            let v: Vec<f64> = scored.iter().filter_map(|s| lookup(s, name, n)).collect();
            if v.is_empty() {
                row.push_str(" — | — |");
                continue;
            }
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            let wins = v.iter().filter(|&&x| x > 0.0).count();
            let _ = write!(row, " {mean:+.3} | {wins}/{} |", v.len());
        }
        let _ = writeln!(o, "{row}");
    }
    for &n in checkpoints {
        let _ = writeln!(o, "\n#### Mean score per landscape after {n} evaluations\n");
        let mut head = String::from("| arm |");
        let mut rule = String::from("|---|");
        for s in &scored {
            let _ = write!(head, " {} |", s.task);
            rule.push_str("---:|");
        }
        let _ = writeln!(o, "{head}\n{rule}");
        for name in &names {
            let mut row = format!("| {name} |");
            for s in &scored {
                match lookup(s, name, n) {
                    Some(x) => {
                        let _ = write!(row, " {x:+.2} |");
                    }
                    None => row.push_str(" — |"),
                }
            }
            let _ = writeln!(o, "{row}");
        }
    }
    o
}

/// Several studies side by side: per arm and task, the median evaluations to come within
/// `near` of the optimum and to reach it, with the fraction of runs that did. `skipped` lists
/// tasks left out, each with why.
pub fn overview(studies: &[Study], skipped: &[(String, String)]) -> String {
    let mut o = String::new();
    let near = studies
        .first()
        .map(|s| format!("{:.0}%", s.spec.near * 100.0))
        .unwrap_or_else(|| "2%".into());
    let _ = writeln!(
        o,
        "### Search study, every task: evaluations to come within {near} of the optimum / to reach it\n"
    );
    if !studies.is_empty() {
        let _ = writeln!(
            o,
            "Median over seeds (fraction of runs that got there within the budget); — when half \
             the runs or more never did. Details per task below.\n"
        );
        let mut head = String::from("| arm |");
        let mut rule = String::from("|---|");
        for s in studies {
            let _ = write!(
                head,
                " {} ({} correct configs): within {near} | optimum |",
                s.task, s.landscape.ok
            );
            rule.push_str("---:|---:|");
        }
        let _ = writeln!(o, "{head}\n{rule}");
        let names: Vec<String> = studies[0].arms.iter().map(|a| a.arm.name()).collect();
        for name in names {
            let mut row = format!("| {name} |");
            for s in studies {
                match s.arms.iter().find(|a| a.arm.name() == name) {
                    Some(a) => {
                        let t = &a.trajectory;
                        let _ = write!(
                            row,
                            " {} ({}) | {} ({}) |",
                            count(t.to_near_median),
                            pct(t.reached_near),
                            count(t.to_optimum_median),
                            pct(t.reached_optimum)
                        );
                    }
                    None => row.push_str(" | |"),
                }
            }
            let _ = writeln!(o, "{row}");
        }
    }
    for (task, why) in skipped {
        let _ = writeln!(o, "\n- **{task}: not studied** — {why}");
    }
    o
}
