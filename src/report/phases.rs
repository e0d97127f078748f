//! Where a run's time went, phase by phase, summed over its trials ([`crate::eval::Phases`]):
//! for `show` (text and JSON) and the report (a stacked bar and a table).
//!
//! Only time spent in this run counts: a trial reused from an earlier run's measurement adds
//! nothing but the profile it may have been given now. A replayed run's phases are the ones
//! recorded in its landscape, not time this run spent (`replayed`), so its wall time is not
//! split against them.

use std::fmt::Write;

use serde::Serialize;

use crate::search::Trial;

use super::svg::{escape, Anchor, Svg};

/// A run's phases, summed.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PhaseSummary {
    /// The run's wall time (the search; baselines timed after it are not in it).
    pub wall_s: Option<f64>,
    /// Trials whose phases are summed here.
    pub with_phases: usize,
    /// Trials measured in this run with no phases recorded (recorded before phases existed,
    /// a landscape without them, a config absent from a landscape).
    pub without_phases: usize,
    /// Trials whose measurement was reused from an earlier run.
    pub reused: usize,
    /// The compiles' own time, wherever they ran (in parallel on the compile threads, so this
    /// may exceed the wall time).
    pub compile_s: f64,
    /// Blocked waiting for a compile the compile-ahead queue had not finished.
    pub wait_s: f64,
    pub correctness_s: f64,
    pub timing_s: f64,
    /// Nsight Compute: with the evaluation (`--profile-all`) or for new elites.
    pub profile_s: f64,
    /// Profiles whose time is in `profile_s`.
    pub profiles: usize,
    /// The rest of the evaluations: worker start and inputs, messages, cubin writes.
    pub other_s: f64,
    /// Compile time that did not hold the search up: `compile_s - wait_s`.
    pub compile_overlapped_s: f64,
    /// Wall time outside the phases above: the search itself, the store, reused trials and
    /// any phase not measured. `None` for a replayed run or one without a wall time.
    pub outside_s: Option<f64>,
    /// The phases come from a replayed landscape: the recording's times, not this run's.
    pub replayed: bool,
}

impl PhaseSummary {
    /// Sums the phases of `trials`. `wall_s`: the run's elapsed time; `replayed`: the run
    /// answered from a landscape.
    pub fn of(trials: &[Trial], wall_s: Option<f64>, replayed: bool) -> PhaseSummary {
        let mut s = PhaseSummary {
            wall_s,
            replayed,
            ..PhaseSummary::default()
        };
        for t in trials {
            let p = &t.evaluation.phases;
            if t.reused {
                s.reused += 1;
            } else if p.is_empty() {
                s.without_phases += 1;
            } else {
                s.with_phases += 1;
                s.compile_s += p.compile_s.unwrap_or(0.0);
                s.wait_s += p.wait_s.unwrap_or(0.0);
                s.correctness_s += p.correctness_s.unwrap_or(0.0);
                s.timing_s += p.timing_s.unwrap_or(0.0);
                s.other_s += p.other_s.unwrap_or(0.0);
                if let Some(x) = p.profile_s {
                    s.profile_s += x;
                    s.profiles += 1;
                }
            }
            // A profile taken for the search (a new elite) after the evaluation.
            if let Some(x) = t.profile.as_ref().and_then(|p| p.profile_s) {
                s.profile_s += x;
                s.profiles += 1;
            }
        }
        s.compile_overlapped_s = (s.compile_s - s.wait_s).max(0.0);
        if !replayed {
            s.outside_s = wall_s.map(|w| (w - s.sequential_s()).max(0.0));
        }
        s
    }

    /// Whether any phase was recorded at all.
    pub fn is_empty(&self) -> bool {
        self.with_phases == 0 && self.profiles == 0
    }

    /// The phases that follow each other on the search's thread: waiting, correctness,
    /// timing, profiling, other.
    pub fn sequential_s(&self) -> f64 {
        self.wait_s + self.correctness_s + self.timing_s + self.profile_s + self.other_s
    }

    /// The sequential phases with their names, then what is outside them.
    pub fn parts(&self) -> Vec<(&'static str, f64)> {
        let mut v = vec![
            ("waiting for compiles", self.wait_s),
            ("correctness", self.correctness_s),
            ("timing", self.timing_s),
            ("profiling", self.profile_s),
            ("other", self.other_s),
        ];
        if let Some(o) = self.outside_s {
            v.push(("outside evaluations", o));
        }
        v
    }

    /// The summary as lines of text, for `show`.
    pub fn text(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.is_empty() {
            out.push(format!(
                "time by phase: none recorded ({} trials without phases, {} reused)",
                self.without_phases, self.reused
            ));
            return out;
        }
        let total = if self.replayed {
            self.sequential_s()
        } else {
            self.wall_s.unwrap_or(0.0).max(self.sequential_s())
        };
        let pct = |x: f64| {
            if total > 0.0 {
                format!("{:5.1}%", 100.0 * x / total)
            } else {
                "    -".to_string()
            }
        };
        out.push(if self.replayed {
            format!(
                "time by phase, as recorded in the replayed landscape (not this run's time): {:.1} s over {} trials",
                self.sequential_s(),
                self.with_phases
            )
        } else {
            format!(
                "time by phase: {:.1} s wall; {} trials measured with phases, {} without, {} reused",
                self.wall_s.unwrap_or(0.0),
                self.with_phases,
                self.without_phases,
                self.reused
            )
        });
        for (name, secs) in self.parts() {
            out.push(format!("  {name:<20} {secs:>9.1} s  {}", pct(secs)));
        }
        out.push(format!(
            "  compiling            {:>9.1} s  on the compile threads; {:.1} s of it overlapped GPU work ({})",
            self.compile_s,
            self.compile_overlapped_s,
            if self.compile_s > 0.0 {
                format!("{:.0}%", 100.0 * self.compile_overlapped_s / self.compile_s)
            } else {
                "-".into()
            }
        ));
        if self.profiles > 0 {
            out.push(format!(
                "  ncu: {} profiles, {:.2} s each on average",
                self.profiles,
                self.profile_s / self.profiles as f64
            ));
        }
        out
    }

    /// The summary as HTML: a stacked bar of the wall time and a table.
    pub fn html(&self) -> String {
        let mut o = String::new();
        if self.is_empty() {
            let _ = writeln!(
                o,
                "<p>No phase times recorded for this run ({} trials without phases, {} reused from earlier runs).</p>",
                self.without_phases, self.reused
            );
            return o;
        }
        let parts = self.parts();
        let total: f64 = parts.iter().map(|(_, s)| s).sum();
        let (w, h) = (760.0, 92.0);
        let (left, bar_w) = (10.0, 740.0);
        let mut svg = Svg::new(w, h);
        let mut x = left;
        for (i, (name, secs)) in parts.iter().enumerate() {
            if total <= 0.0 || *secs <= 0.0 {
                continue;
            }
            let width = bar_w * secs / total;
            svg.rect(
                x,
                10.0,
                width,
                28.0,
                &format!("ph-{i}"),
                Some(&format!(
                    "{name}: {secs:.1} s ({:.1}%)",
                    100.0 * secs / total
                )),
            );
            if width > 60.0 {
                svg.text(
                    x + width / 2.0,
                    28.0,
                    Anchor::Middle,
                    "phlabel",
                    &format!("{name} {:.0}%", 100.0 * secs / total),
                );
            }
            x += width;
        }
        // Compiling beside it, on the same scale: the part hidden behind GPU work.
        if total > 0.0 && self.compile_s > 0.0 {
            let scale = bar_w / total;
            let hidden = (self.compile_overlapped_s * scale).min(bar_w);
            let waited = (self.wait_s * scale).min(bar_w - hidden);
            svg.rect(
                left,
                52.0,
                hidden,
                14.0,
                "ph-hidden",
                Some(&format!(
                    "compile overlapped with other work: {:.1} s",
                    self.compile_overlapped_s
                )),
            );
            svg.rect(
                left + hidden,
                52.0,
                waited,
                14.0,
                "ph-0",
                Some(&format!("compile waited for: {:.1} s", self.wait_s)),
            );
            svg.text(
                left,
                82.0,
                Anchor::Start,
                "note",
                &format!(
                    "compiling: {:.1} s on the compile threads{}, {:.1} s of it overlapped GPU work; the search waited {:.1} s",
                    self.compile_s,
                    if self.compile_s * scale > bar_w { " (off the scale)" } else { "" },
                    self.compile_overlapped_s,
                    self.wait_s
                ),
            );
        }
        let _ = writeln!(
            o,
            "<figure id=\"fig-time\">{}<figcaption>{}</figcaption></figure>",
            svg.finish("where the run's time went"),
            escape(&if self.replayed {
                "Phase times as recorded in the replayed landscape (not this run's time)."
                    .to_string()
            } else {
                format!(
                    "Where the run's {:.1} s of wall time went; below, compile time on the compile threads, in light blue the part hidden behind GPU work.",
                    self.wall_s.unwrap_or(0.0)
                )
            })
        );
        o.push_str("<table class=\"meta\">\n");
        for (name, secs) in &parts {
            let _ = writeln!(
                o,
                "<tr><th>{}</th><td class=\"num\">{secs:.1} s</td><td class=\"num\">{}</td></tr>",
                escape(name),
                if total > 0.0 {
                    format!("{:.1}%", 100.0 * secs / total)
                } else {
                    "-".into()
                }
            );
        }
        let _ = writeln!(
            o,
            "<tr><th>compiling</th><td class=\"num\">{:.1} s</td><td>{:.1} s overlapped GPU work</td></tr>",
            self.compile_s, self.compile_overlapped_s
        );
        let _ = writeln!(
            o,
            "<tr><th>trials</th><td class=\"num\">{}</td><td>with phases; {} without, {} reused; {} ncu profiles</td></tr>\n</table>",
            self.with_phases, self.without_phases, self.reused, self.profiles
        );
        o
    }
}

/// CSS classes of the bar's parts.
pub(super) const CSS: &str = r#"
.ph-0 { fill: #a0a7b1; }
.ph-1 { fill: #59a14f; }
.ph-2 { fill: #1f5fbf; }
.ph-3 { fill: #f28e2b; }
.ph-4 { fill: #bab0ac; }
.ph-5 { fill: #e6e9ee; }
.ph-hidden { fill: #8aaee6; }
.phlabel { font-size: 11px; fill: #fff; }
"#;
