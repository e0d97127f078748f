use super::*;
use crate::eval::replay::ReplayEvaluator;
use crate::eval::Environment;
use crate::search::{self, Journal, JournalError, Settings, Variant, WallClock};
use crate::store::{RunRow, RunStatus};

fn seed_task() -> Task {
    crate::task::seed_space_task()
}

/// Records the elite set after each trial, as the store does.
#[derive(Default)]
struct History(Vec<Vec<Elite>>);
impl Journal for History {
    fn trial(&mut self, _t: &Trial, elites: &[Elite]) -> Result<(), JournalError> {
        self.0.push(elites.to_vec());
        Ok(())
    }
}

/// A run of Full on a small landscape: p50 by index, every 5th config a compile error.
fn record(task: &Task) -> RunRecord {
    let dir = tempfile::tempdir().unwrap();
    let mut lines = Vec::new();
    for (i, c) in task.space.enumerate(1 << 20).unwrap().iter().enumerate() {
        let mut o = serde_json::json!({ "config": task.space.to_json(c) });
        if i % 5 == 2 {
            o["outcome"] = "compile_error".into();
        } else {
            o["outcome"] = "ok".into();
            o["p50_us"] = (600.0 - i as f64 + (i % 7) as f64 * 9.0).into();
            o["registers"] = (64 + i % 4 * 32).into();
            o["bottleneck"] = ["compute", "memory"][i % 2].into();
        }
        lines.push(o.to_string());
    }
    let path = dir.path().join("l.jsonl");
    std::fs::write(&path, lines.join("\n")).unwrap();
    let mut replay = ReplayEvaluator::load(&path, task).unwrap();
    let settings = Settings::new(Variant::Full, 1);
    let mut history = History::default();
    let r = search::run(
        task,
        task.default_shape(),
        &settings,
        &mut replay,
        &mut history,
        vec![],
        &WallClock::new(std::time::Duration::ZERO),
    )
    .unwrap();
    RunRecord {
        row: RunRow {
            id: 7,
            created_at: "2026-01-01T00:00:00Z".into(),
            finished_at: None,
            task: task.name.clone(),
            shape: "mission".into(),
            variant: Variant::Full,
            seed: 1,
            status: RunStatus::Finished,
            stopped_by: Some(r.stopped_by),
            evaluations: r.trials.len(),
            best_p50_us: r.winner().map(|w| w.p50_us),
            elapsed_s: Some(1.0),
        },
        task_dir: task.dir.clone(),
        kernel_hash: task.source_hash.clone(),
        settings,
        evaluator: "replay:<l.jsonl>".into(),
        environment: Environment {
            device: "H100 <sim>".into(),
            toolchain: "t & c".into(),
        },
        command_line: "evoengineer tune '<script>alert(1)</script>'".into(),
        trials: r.trials,
        elite_history: history.0,
        elites: r.elites,
    }
}

#[test]
fn a_report_has_every_chart_and_escapes_what_it_shows() {
    let task = seed_task();
    let rec = record(&task);
    let baselines = [
        BaselineTiming {
            name: "torch <sdpa>".into(),
            p50_us: 650.0,
            p90_us: None,
            shape: None,
        },
        BaselineTiming {
            name: "other shape".into(),
            p50_us: 1.0,
            p90_us: None,
            shape: Some("huge".into()),
        },
    ];
    let html = render(&task, 7, &rec, &[], &baselines, "now");
    for id in FIGURES {
        let at = html
            .find(&format!("<figure id=\"{id}\">"))
            .unwrap_or_else(|| panic!("no figure {id}"));
        let fig = &html[at..at + html[at..].find("</figure>").unwrap()];
        assert!(fig.contains("<svg") && fig.contains("</svg>"), "{id}");
        assert!(fig.contains("<figcaption>"), "{id}");
        assert!(
            fig.contains("<circle") || fig.contains("<rect"),
            "{id} draws nothing"
        );
    }
    // Text from the record is escaped, never markup.
    assert!(!html.contains("<script"), "unescaped script");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(html.contains("H100 &lt;sim&gt;"));
    assert!(html.contains("torch &lt;sdpa&gt;"));
    // The baseline of another shape is left out.
    assert!(!html.contains("other shape"));
    // Self-contained: nothing to fetch.
    for bad in ["src=", "href=", "@import", "url("] {
        assert!(!html.contains(bad), "found {bad}");
    }
    // The trajectory table has a row per trial.
    let table = &html[html.find("class=\"trajectory\"").unwrap()..];
    assert_eq!(
        table.matches("<tr").count(),
        rec.trials.len() + 1,
        "header plus one row per trial"
    );
    // The progress chart: one step line per elite rank, a dot per correct candidate.
    let at = html.find("<figure id=\"fig-progress\">").unwrap();
    let fig = &html[at..at + html[at..].find("</figure>").unwrap()];
    assert_eq!(fig.matches("<polyline").count(), 3);
    let ok = rec
        .trials
        .iter()
        .filter(|t| t.evaluation.p50_us().is_some())
        .count();
    assert!(fig.matches("class=\"cand\"").count() > ok);
    assert_eq!(fig.matches("class=\"baselinelabel\"").count(), 1);
}

#[test]
fn a_run_without_a_correct_candidate_still_renders() {
    let task = seed_task();
    let mut rec = record(&task);
    for t in &mut rec.trials {
        t.evaluation = crate::eval::Evaluation::failed(Outcome::Incorrect, "wrong");
    }
    rec.elites.clear();
    for h in &mut rec.elite_history {
        h.clear();
    }
    let html = render(&task, 7, &rec, &[], &[], "now");
    for id in FIGURES {
        assert!(html.contains(&format!("<figure id=\"{id}\">")), "{id}");
    }
    assert!(html.contains("there is no winner"));
}

#[test]
fn baselines_load_from_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("b.jsonl");
    std::fs::write(
        &p,
        "{\"name\": \"cudnn\", \"p50_us\": 456.5, \"shape\": \"mission\"}\n\n{\"name\": \"fa3\", \"p50_us\": 436.3, \"p90_us\": 440}\n",
    )
    .unwrap();
    let b = load_baselines(&p).unwrap();
    assert_eq!(b.len(), 2);
    assert_eq!(b[1].p90_us, Some(440.0));
    std::fs::write(&p, "{\"name\": \"x\"}\n").unwrap();
    let e = load_baselines(&p).unwrap_err().to_string();
    assert!(e.contains(":1:") && e.contains("p50_us"), "{e}");
    std::fs::write(&p, "{\"name\": \"x\", \"p50_us\": -1}\n").unwrap();
    assert!(load_baselines(&p).is_err());
}

/// A source record for the lineage tests.
fn source(hash: &str, code: &str, parent: &str, operator: &str) -> SourceRecord {
    SourceRecord {
        hash: hash.into(),
        code: code.into(),
        parents: vec![parent.into()],
        operator: Some(operator.into()),
        model: Some("gpt <test>".into()),
        run_id: Some(7),
        ..Default::default()
    }
}

#[test]
fn code_evolution_shows_the_lineage_tree_and_diffs() {
    let task = seed_task();
    let mut rec = record(&task);
    let base_code = std::fs::read_to_string(&task.kernel.as_ref().unwrap().launch.source).unwrap();
    let h1 = "a".repeat(64);
    let h2 = "b".repeat(64);
    let code1 = format!("{base_code}\n// first <rewrite> & more\n");
    let code2 = code1.replace("// first <rewrite>", "// second <rewrite>");
    let sources = vec![
        source(&h1, &code1, "base", "rewrite"),
        source(&h2, &code2, &h1, "mutate"),
    ];
    // One passing trial of the first source, 2× faster than the base kernel's best.
    let best_base = rec
        .trials
        .iter()
        .filter_map(|t| t.evaluation.p50_us())
        .min_by(f64::total_cmp)
        .unwrap();
    let mut t = rec
        .trials
        .iter()
        .find(|t| t.evaluation.p50_us() == Some(best_base))
        .unwrap()
        .clone();
    t.candidate.source = SourceRef::Variant(h1.clone());
    t.key = format!("src:{h1}|x");
    t.seq = rec.trials.len();
    if let Some(timing) = t.evaluation.timing.as_mut() {
        timing.p50_us = best_base / 2.0;
    }
    rec.trials.push(t);

    let html = render(&task, 7, &rec, &sources, &[], "now");
    let sec = &html[html
        .find("<h2 id=\"evolution\">Code evolution</h2>")
        .unwrap()..];
    let sec = &sec[..sec.find("<h2 id=\"run\">").unwrap()];
    // The tree: base, then the first source, then the second nested inside it.
    let base_at = sec.find("<b>base</b>").unwrap();
    let first_at = sec
        .find("<code>src:aaaaaaaaaaaa</code></a> rewrite")
        .unwrap();
    let second_at = sec
        .find("<code>src:bbbbbbbbbbbb</code></a> mutate")
        .unwrap();
    assert!(base_at < first_at && first_at < second_at);
    let first_li = &sec[first_at..second_at];
    assert!(first_li.contains("gpt &lt;test&gt;"), "{first_li}");
    assert!(first_li.contains(" ok "), "{first_li}");
    assert!(first_li.contains("speedup 2.00×"), "{first_li}");
    // The second is nested: its <ul> opens inside the first's <li>.
    assert!(first_li.contains("<ul class=\"lineage\">"), "{first_li}");
    assert!(sec[second_at..].contains("not evaluated"));
    // The diffs, escaped: the first against base, the second against the first.
    assert_eq!(sec.matches("<details id=\"diff-").count(), 2);
    assert!(sec.contains("<span class=\"add\">+// first &lt;rewrite&gt; &amp; more</span>"));
    assert!(sec.contains("<span class=\"del\">-// first &lt;rewrite&gt; &amp; more</span>"));
    assert!(sec.contains("<span class=\"add\">+// second &lt;rewrite&gt; &amp; more</span>"));
    assert!(!sec.contains("<rewrite>"));
    // The base kernel's code is the context, not a change, in the first diff.
    let first_diff = &sec[sec.find("<details id=\"diff-aaaa").unwrap()..];
    let first_diff = &first_diff[..first_diff.find("</details>").unwrap()];
    assert!(first_diff.contains("--- base"), "{first_diff}");
    assert!(first_diff.matches("<span class=\"add\">").count() <= 2);

    // A run without sources has no such section.
    let plain = render(&task, 7, &rec, &[], &[], "now");
    assert!(!plain.contains("Code evolution"));
    assert!(!plain.contains("<details"));
}
