//! The `evoengineer` command end to end, on replayed landscapes (no GPU needed).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{repo, seed_task, write_landscape};
use serde_json::Value;

fn evo(_db: &Path) -> Command {
    common::evo()
}

fn tune_json(db: &Path, landscape: &Path, extra: &[&str]) -> Value {
    let out = evo(db)
        .arg("tune")
        .arg(seed_task())
        .arg("--replay")
        .arg(landscape)
        .arg("--db")
        .arg(db)
        .arg("--json")
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tune failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// `show RUN_ID --db DB EXTRA...`: its standard output, after checking it succeeded.
fn show(db: &Path, id: &str, extra: &[&str]) -> String {
    let out = evo(db)
        .args(["show", id, "--db"])
        .arg(db)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "show failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn without_run_id(mut v: Value) -> Value {
    v.as_object_mut().unwrap().remove("run_id");
    v
}

#[test]
fn every_variant_prints_the_same_object_twice_but_for_run_id() {
    let dir = tempfile::tempdir().unwrap();
    let land = write_landscape(dir.path());
    let db = dir.path().join("runs.db");
    for variant in ["surrogate", "full", "insight", "free", "grid", "random"] {
        let a = tune_json(&db, &land, &["--variant", variant, "--seed", "5"]);
        let b = tune_json(&db, &land, &["--variant", variant, "--seed", "5"]);
        assert_ne!(a["run_id"], b["run_id"]);
        for key in [
            "run_id",
            "variant",
            "seed",
            "evaluations",
            "stopped_by",
            "winner",
            "elites",
        ] {
            assert!(a.get(key).is_some(), "{variant}: no `{key}` in {a}");
        }
        assert_eq!(a["variant"], variant);
        assert_eq!(without_run_id(a.clone()), without_run_id(b), "{variant}");
        // The winner is correct and the best of the elites, which are best first.
        let elites = a["elites"].as_array().unwrap();
        assert!(!elites.is_empty() && elites.len() <= 3);
        assert_eq!(a["winner"], elites[0]);
        let p: Vec<f64> = elites
            .iter()
            .map(|e| e["p50_us"].as_f64().unwrap())
            .collect();
        assert!(p.windows(2).all(|w| w[0] <= w[1]), "{variant}: {p:?}");
    }
}

#[test]
fn failures_and_missing_configs_never_win() {
    let dir = tempfile::tempdir().unwrap();
    let land = write_landscape(dir.path());
    let db = dir.path().join("runs.db");
    let v = tune_json(&db, &land, &["--variant", "grid"]);
    assert_eq!(v["evaluations"], 128);
    assert_eq!(v["stopped_by"], "exhausted");
    let text = std::fs::read_to_string(&land).unwrap();
    let best_ok = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["outcome"] == "ok")
        .map(|l| l["p50_us"].as_f64().unwrap())
        .fold(f64::INFINITY, f64::min);
    assert_eq!(v["winner"]["p50_us"].as_f64().unwrap(), best_ok);
    // Every elite is an `ok` line of the landscape.
    for e in v["elites"].as_array().unwrap() {
        let line = text
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|l| l["config"] == e["config"])
            .expect("elite is in the landscape");
        assert_eq!(line["outcome"], "ok");
    }
    // The export says what happened to each.
    let out = evo(&db)
        .args(["export", "1", "--format", "jsonl", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(out.status.success());
    let outcomes: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["outcome"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(outcomes.len(), 128);
    for o in ["ok", "compile_error", "incorrect", "missing"] {
        assert!(outcomes.iter().any(|x| x == o), "no {o}");
    }
}

#[test]
fn an_export_replays_to_the_same_result() {
    let dir = tempfile::tempdir().unwrap();
    let land = write_landscape(dir.path());
    let db = dir.path().join("runs.db");
    let a = tune_json(&db, &land, &["--variant", "grid"]);
    let exported = dir.path().join("exported.jsonl");
    let st = evo(&db)
        .args(["export", "1", "--db"])
        .arg(&db)
        .arg("--out")
        .arg(&exported)
        .status()
        .unwrap();
    assert!(st.success());
    let b = tune_json(&db, &exported, &["--variant", "grid"]);
    assert_eq!(a["winner"], b["winner"]);
    assert_eq!(a["elites"], b["elites"]);
}

#[test]
fn runs_show_and_csv_export() {
    let dir = tempfile::tempdir().unwrap();
    let land = write_landscape(dir.path());
    let db = dir.path().join("runs.db");
    let v = tune_json(&db, &land, &[]);
    let id = v["run_id"].to_string();
    let out = evo(&db).args(["runs", "--db"]).arg(&db).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("sdpa_fp8") && text.contains("finished"),
        "{text}"
    );
    let text = show(&db, &id, &[]);
    assert!(
        text.contains("winner: p50") && text.contains("trajectory") && text.contains("stopped by"),
        "{text}"
    );
    let shown: Value = serde_json::from_str(&show(&db, &id, &["--json"])).unwrap();
    assert_eq!(shown["winner"]["p50_us"], v["winner"]["p50_us"]);
    assert_eq!(
        shown["trajectory"].as_array().unwrap().len(),
        v["evaluations"].as_u64().unwrap() as usize
    );
    let out = evo(&db)
        .args(["export", &id, "--format", "csv", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    assert!(lines.next().unwrap().ends_with("USE_CP_ASYNC_3STAGE"));
    assert_eq!(lines.count(), v["evaluations"].as_u64().unwrap() as usize);
}

#[test]
fn bad_input_gets_a_clear_message_and_a_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let land = write_landscape(dir.path());
    let db = dir.path().join("runs.db");
    let garbage = dir.path().join("garbage.jsonl");
    std::fs::write(
        &garbage,
        "{\"config\": {}, \"outcome\": \"ok\"}\nnot json\n",
    )
    .unwrap();
    let mut cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["tune".into(), "/nonexistent/task".into()],
            "cannot read",
        ),
        (
            vec![
                "tune".into(),
                seed_task().display().to_string(),
                "--replay".into(),
                "/nonexistent.jsonl".into(),
            ],
            "cannot read landscape",
        ),
        (
            vec![
                "tune".into(),
                seed_task().display().to_string(),
                "--replay".into(),
                garbage.display().to_string(),
            ],
            "garbage.jsonl:1",
        ),
        (
            vec![
                "tune".into(),
                seed_task().display().to_string(),
                "--replay".into(),
                land.display().to_string(),
                "--shape".into(),
                "huge".into(),
            ],
            "no shape `huge`",
        ),
        (
            vec![
                "tune".into(),
                seed_task().display().to_string(),
                "--replay".into(),
                land.display().to_string(),
                "--budget".into(),
                "0".into(),
            ],
            "--budget",
        ),
        (
            vec![
                "tune".into(),
                seed_task().display().to_string(),
                "--replay".into(),
                land.display().to_string(),
                "--time-limit".into(),
                "soon".into(),
            ],
            "--time-limit",
        ),
        (vec!["show".into(), "99".into()], "no run 99"),
        (
            vec!["tune".into(), seed_task().display().to_string()],
            "--replay",
        ),
    ];
    // The timing protocol's flags refuse values they cannot mean.
    for (flag, value, want) in [
        ("--timing-ci", "-1", "--timing-ci"),
        ("--timing-ci", "nan", "not a percentage"),
        ("--check-fraction", "2", "not a fraction from 0 to 1"),
        ("--input-sets", "0", "--input-sets"),
        ("--min-iterations", "0", "--min-iterations"),
    ] {
        cases.push((
            vec![
                "tune".into(),
                seed_task().display().to_string(),
                format!("{flag}={value}"),
            ],
            want,
        ));
    }
    for (args, expected) in cases {
        let out = evo(&db).args(&args).arg("--db").arg(&db).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            err.contains(expected),
            "{args:?}: expected `{expected}` in: {err}"
        );
    }
}

#[test]
fn a_killed_run_resumes_to_the_same_result() {
    let dir = tempfile::tempdir().unwrap();
    let land = write_landscape(dir.path());
    let db = dir.path().join("runs.db");
    let reference = tune_json(
        &dir.path().join("ref.db"),
        &land,
        &["--variant", "full", "--seed", "3"],
    );

    let mut child = evo(&db)
        .arg("tune")
        .arg(seed_task())
        .arg("--replay")
        .arg(&land)
        .arg("--db")
        .arg(&db)
        .args([
            "--variant",
            "full",
            "--seed",
            "3",
            "--json",
            "--replay-delay-ms",
            "40",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until some trials are recorded, then kill -9.
    let started = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let out = evo(&db)
            .args(["runs", "--json", "--db"])
            .arg(&db)
            .output()
            .unwrap();
        let runs: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if runs[0]["evaluations"].as_u64().unwrap_or(0) >= 8 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the run never got going"
        );
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let out = evo(&db)
        .args(["runs", "--json", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    let runs: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(runs[0]["status"], "running");
    let done = runs[0]["evaluations"].as_u64().unwrap();
    assert!(
        done < reference["evaluations"].as_u64().unwrap(),
        "finished before the kill"
    );

    let out = evo(&db)
        .args(["tune", "--resume", "1", "--json", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resumed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(resumed["run_id"], 1);
    assert_eq!(without_run_id(resumed), without_run_id(reference));
}

#[test]
fn two_processes_share_one_store() {
    let dir = tempfile::tempdir().unwrap();
    let land = write_landscape(dir.path());
    let db = dir.path().join("runs.db");
    let spawn = |seed: &str| {
        evo(&db)
            .arg("tune")
            .arg(seed_task())
            .arg("--replay")
            .arg(&land)
            .arg("--db")
            .arg(&db)
            .args([
                "--variant",
                "random",
                "--budget",
                "60",
                "--seed",
                seed,
                "--json",
                "--replay-delay-ms",
                "2",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn("1"), spawn("2"));
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = evo(&db)
        .args(["runs", "--json", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    let runs: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(runs.as_array().unwrap().len(), 2);
    for r in runs.as_array().unwrap() {
        assert_eq!(r["status"], "finished");
        assert_eq!(r["evaluations"], 60);
    }
    let conn = rusqlite::Connection::open(&db).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}

#[test]
fn measurements_are_reused_across_runs() {
    let dir = tempfile::tempdir().unwrap();
    let land = write_landscape(dir.path());
    let db = dir.path().join("runs.db");
    tune_json(&db, &land, &["--variant", "grid"]);
    let out = evo(&db)
        .arg("tune")
        .arg(seed_task())
        .arg("--replay")
        .arg(&land)
        .arg("--db")
        .arg(&db)
        .args(["--variant", "full"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("reused from earlier runs"), "{text}");
    assert!(!text.contains(" 0 reused"), "{text}");
}

#[test]
fn help_teaches() {
    let out = common::evo().args(["tune", "--help"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for word in [
        "--variant",
        "--budget",
        "--patience",
        "--time-limit",
        "--resume",
        "--replay",
        "Termination",
    ] {
        assert!(text.contains(word), "no {word} in tune --help");
    }
}

#[test]
fn with_no_gpu_tune_replays_the_recorded_h100_run_and_writes_the_report() {
    if std::path::Path::new("/dev/nvidia0").exists() {
        eprintln!("SKIPPED: this machine has a GPU, so tune would measure instead of replaying");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("runs.db");
    let out = evo(&db)
        .arg("tune")
        .arg(repo().join("tasks/gemm_bf16"))
        .arg("--db")
        .arg(&db)
        .arg("--report")
        .arg(dir.path().join("report"))
        .arg("--json")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("no GPU on this machine: replaying the recorded run"),
        "{err}"
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    // The winner is a real H100 measurement of the landscape, beside the baseline timed with it.
    assert!(v["winner"]["p50_us"].as_f64().unwrap() > 300.0);
    assert!(v["speedups"]["torch.matmul"].as_f64().unwrap() > 0.0);
    let html = std::fs::read_to_string(dir.path().join("report/report.html")).unwrap();
    assert!(html.contains("torch.matmul"));
    // A task with no recorded landscape for the shape says what to do instead.
    let out = evo(&db)
        .arg("tune")
        .arg(seed_task())
        .arg("--db")
        .arg(&db)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no GPU on this machine and no --replay"));
}

#[test]
fn show_sums_the_phases_recorded_in_a_landscape() {
    let dir = tempfile::tempdir().unwrap();
    let land = write_landscape(dir.path());
    // Give every `ok` line recorded phases, one of them a profile's.
    let text = std::fs::read_to_string(&land).unwrap();
    let mut lines = Vec::new();
    let mut ok = 0;
    for line in text.lines() {
        let mut v: Value = serde_json::from_str(line).unwrap();
        if v["outcome"] == "ok" {
            ok += 1;
            v["phases"] = serde_json::json!({
                "compile_s": 2.0, "wait_s": 0.5, "correctness_s": 0.25, "timing_s": 1.0,
                "profile_s": 3.0, "other_s": 0.125
            });
        }
        lines.push(v.to_string());
    }
    let phased = dir.path().join("phased.jsonl");
    std::fs::write(&phased, lines.join("\n") + "\n").unwrap();
    let db = dir.path().join("runs.db");
    let v = tune_json(&db, &phased, &["--variant", "grid"]);
    let id = v["run_id"].to_string();
    let shown: Value = serde_json::from_str(&show(&db, &id, &["--json"])).unwrap();
    let p = &shown["phases"];
    assert_eq!(p["replayed"], true, "{p}");
    assert_eq!(p["with_phases"], ok, "{p}");
    let n = f64::from(ok);
    assert_eq!(p["compile_s"], 2.0 * n);
    assert_eq!(p["wait_s"], 0.5 * n);
    assert_eq!(p["compile_overlapped_s"], 1.5 * n);
    assert_eq!(p["profile_s"], 3.0 * n);
    assert_eq!(p["profiles"], ok);
    // A replay's own wall time is not split against the recording's phases.
    assert_eq!(p["outside_s"], Value::Null);
    let first_ok = shown["trajectory"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["outcome"] == "ok")
        .unwrap();
    assert_eq!(first_ok["phases"]["timing_s"], 1.0);

    let text = show(&db, &id, &[]);
    assert!(
        text.contains("as recorded in the replayed landscape") && text.contains("correctness"),
        "{text}"
    );

    // A landscape without phases: none recorded, said so.
    let v = tune_json(&db, &land, &["--variant", "grid"]);
    let id = v["run_id"].to_string();
    let shown: Value = serde_json::from_str(&show(&db, &id, &["--json"])).unwrap();
    assert_eq!(shown["phases"]["with_phases"], 0);
    assert_eq!(shown["phases"]["without_phases"], shown["evaluations"]);
}

/// The GPU evaluator starts `evoengineer worker` with no arguments and talks JSON lines on its
/// stdin/stdout; the queue worker's options must not make that invocation an argument error
/// (the PostgreSQL merge once required --db there, and every GPU run died at start).
#[test]
fn the_gpu_child_worker_starts_without_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let out = evo(&dir.path().join("unused.db"))
        .arg("worker")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
