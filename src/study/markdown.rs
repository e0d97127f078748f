//! A study as Markdown, ready to paste into `bench/search.md`.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::Study;

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
