//! Scale-out: several GPUs (simulated by replayed landscapes whose answers come back in a
//! scrambled order), the store on PostgreSQL, and external workers draining a run through it,
//! one of them killed mid-run; model-written sources measured by workers, and a broken run
//! beside a healthy one on the same queue.

mod common;
#[path = "support/postgres.rs"]
mod postgres_server;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{evo, repo};
use evoengineer::candidate::Candidate;
use evoengineer::eval::replay::ReplayEvaluator;
use evoengineer::eval::{Environment, EvalError, Evaluation, Evaluator};
use evoengineer::insight::Profile;
use evoengineer::scale::pool::{GpuPool, SendEvaluator};
use evoengineer::search::{self, NoJournal, Settings, Variant, WallClock};
use evoengineer::task::{Shape, Task};
use rand::{RngExt, SeedableRng};

fn gemm() -> PathBuf {
    repo().join("tasks/gemm_bf16")
}

fn landscape() -> PathBuf {
    gemm().join("landscapes/h100-mission.jsonl")
}

/// A replay that takes a random while (0-4 ms) to answer, so a pool's answers finish in a
/// different order every time.
struct Scrambled {
    inner: ReplayEvaluator,
    rng: rand_chacha::ChaCha8Rng,
}

impl Evaluator for Scrambled {
    fn environment(&self) -> Environment {
        self.inner.environment()
    }
    fn evaluate(&mut self, c: &Candidate, shape: &Shape) -> Result<Evaluation, EvalError> {
        std::thread::sleep(Duration::from_micros(self.rng.random_range(0..4000)));
        self.inner.evaluate(c, shape)
    }
    fn profile(&mut self, c: &Candidate, shape: &Shape) -> Result<Option<Profile>, EvalError> {
        self.inner.profile(c, shape)
    }
}

fn keys_of_pool_run(task: &Task, settings: &Settings, gpus: u32, noise: u64) -> Vec<String> {
    let members: Vec<(u32, SendEvaluator)> = (0..gpus)
        .map(|g| {
            let s = Scrambled {
                inner: ReplayEvaluator::load(&landscape(), task).unwrap(),
                rng: rand_chacha::ChaCha8Rng::seed_from_u64(noise * 100 + g as u64),
            };
            (g, Box::new(s) as SendEvaluator)
        })
        .collect();
    let mut pool = GpuPool::new(members).unwrap();
    let r = search::run(
        task,
        task.default_shape(),
        settings,
        &mut pool,
        &mut NoJournal,
        vec![],
        &WallClock::new(Duration::ZERO),
    )
    .unwrap();
    r.trials.iter().map(|t| t.key.clone()).collect()
}

#[test]
fn completion_order_does_not_change_what_the_search_proposes() {
    let task = Task::load(&gemm()).unwrap();
    for variant in [Variant::Full, Variant::Random, Variant::Insight] {
        let mut settings = Settings::new(variant, 7);
        settings.limits.budget = 40;
        settings.batch = 4;
        // One GPU answering in order is the reference.
        let reference = {
            let mut r = ReplayEvaluator::load(&landscape(), &task).unwrap();
            search::run(
                &task,
                task.default_shape(),
                &settings,
                &mut r,
                &mut NoJournal,
                vec![],
                &WallClock::new(Duration::ZERO),
            )
            .unwrap()
            .trials
            .iter()
            .map(|t| t.key.clone())
            .collect::<Vec<_>>()
        };
        assert!(reference.len() >= 8, "{variant}: {}", reference.len());
        let unique: std::collections::HashSet<_> = reference.iter().collect();
        assert_eq!(unique.len(), reference.len(), "{variant}: a config repeats");
        for noise in 0..3 {
            assert_eq!(
                keys_of_pool_run(&task, &settings, 4, noise),
                reference,
                "{variant}, noise {noise}: 4 scrambled GPUs changed the run"
            );
        }
    }
}

#[test]
fn tune_on_several_gpus_records_each_trial_s_gpu() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("runs.db");
    let out = evo()
        .arg("tune")
        .arg(gemm())
        .arg("--replay")
        .arg(landscape())
        .args([
            "--seed", "3", "--budget", "24", "--gpus", "0,2,5", "--json", "--db",
        ])
        .arg(&db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let conn = rusqlite::Connection::open(&db).unwrap();
    let gpus: Vec<Option<i64>> = conn
        .prepare("SELECT gpu FROM trials ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(gpus.len(), 24);
    assert!(
        gpus.iter().all(|g| matches!(g, Some(0 | 2 | 5))),
        "{gpus:?}"
    );
    let settings: String = conn
        .query_row("SELECT settings_json FROM runs", [], |r| r.get(0))
        .unwrap();
    assert!(settings.contains("\"batch\":3"), "{settings}");
}

/// `tune --json` on `db`; the printed object.
fn tune(db: &str, extra: &[&str]) -> serde_json::Value {
    let out = evo()
        .arg("tune")
        .arg(gemm())
        .arg("--replay")
        .arg(landscape())
        .args([
            "--variant",
            "full",
            "--seed",
            "5",
            "--budget",
            "30",
            "--json",
            "--db",
            db,
        ])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// (candidate, outcome, p50) of each trial of a run, from `export`.
fn exported(db: &str, run_id: i64) -> Vec<(String, String, Option<f64>)> {
    let out = evo()
        .args([
            "export",
            &run_id.to_string(),
            "--format",
            "jsonl",
            "--db",
            db,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["candidate"].as_str().unwrap().to_string(),
                v["outcome"].as_str().unwrap().to_string(),
                v["p50_us"].as_f64(),
            )
        })
        .collect()
}

/// The summary but for the run id and the baselines (a replay's come from beside its
/// landscape, which only a local replay loads).
fn without_run_id(mut v: serde_json::Value) -> serde_json::Value {
    for k in ["run_id", "baselines", "speedups"] {
        v.as_object_mut().unwrap().remove(k);
    }
    v
}

#[test]
fn postgres_and_sqlite_stores_give_the_same_run() {
    let Some(pg) = postgres_server::start("postgres_and_sqlite_stores_give_the_same_run") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lite = dir.path().join("runs.db");
    let lite = lite.to_str().unwrap();
    for batch in ["1", "4"] {
        let a = tune(lite, &["--batch", batch]);
        let b = tune(&pg.url, &["--batch", batch]);
        assert_eq!(
            without_run_id(a.clone()),
            without_run_id(b.clone()),
            "batch {batch}"
        );
        let (ra, rb) = (a["run_id"].as_i64().unwrap(), b["run_id"].as_i64().unwrap());
        assert_eq!(exported(lite, ra), exported(&pg.url, rb), "batch {batch}");
    }
    // A second run on PostgreSQL reuses the first's measurements, as on SQLite.
    let again = tune(&pg.url, &[]);
    let shown = evo()
        .args([
            "show",
            &again["run_id"].to_string(),
            "--json",
            "--db",
            &pg.url,
        ])
        .output()
        .unwrap();
    assert!(
        shown.status.success(),
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    let mut c = pg.client();
    let reused: i64 = c
        .query_one(
            "SELECT count(*) FROM trials WHERE run_id = $1 AND reused = 1",
            &[&again["run_id"].as_i64().unwrap()],
        )
        .unwrap()
        .get(0);
    assert!(reused > 0, "no measurement reused on PostgreSQL");
    let runs = evo().args(["runs", "--db", &pg.url]).output().unwrap();
    assert!(runs.status.success());
    assert_eq!(
        String::from_utf8_lossy(&runs.stdout)
            .lines()
            .filter(|l| l.contains("gemm_bf16"))
            .count(),
        3,
        "{}",
        String::from_utf8_lossy(&runs.stdout)
    );
}

fn worker(url: &str, name: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_evoengineer"))
        .args(["worker", "--db", url, "--replay"])
        .arg(landscape())
        .args([
            "--lease",
            "1s",
            "--idle-exit",
            "30s",
            "--delay-ms",
            "120",
            "--name",
            name,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn external_workers_drain_a_run_and_one_killed_mid_run_changes_nothing() {
    let Some(pg) = postgres_server::start(
        "external_workers_drain_a_run_and_one_killed_mid_run_changes_nothing",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let lite = dir.path().join("local.db");
    // The same search measured here, one batch at a time.
    let local = tune(lite.to_str().unwrap(), &["--batch", "6"]);

    let mut coordinator = Command::new(env!("CARGO_BIN_EXE_evoengineer"))
        .arg("tune")
        .arg(gemm())
        .arg("--replay")
        .arg(landscape())
        .args([
            "--variant",
            "full",
            "--seed",
            "5",
            "--budget",
            "30",
            "--json",
            "--batch",
            "6",
        ])
        .args(["--external-workers", "--db", &pg.url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut workers: Vec<Child> = ["w0", "w1", "w2"]
        .iter()
        .map(|n| worker(&pg.url, n))
        .collect();

    // Kill w0 while it holds a claim.
    let mut c = pg.client();
    let mut victim: Option<i64> = None;
    wait_for("w0 to claim a candidate", Duration::from_secs(60), || {
        let row = c
            .query_opt(
                "SELECT id FROM work WHERE worker = 'w0' AND status = 'claimed' LIMIT 1",
                &[],
            )
            .ok()
            .flatten();
        victim = row.map(|r| r.get(0));
        victim.is_some()
    });
    workers[0].kill().unwrap(); // SIGKILL
    workers[0].wait().unwrap();
    let victim = victim.unwrap();

    let out = {
        let start = Instant::now();
        loop {
            if let Some(_status) = coordinator.try_wait().unwrap() {
                break coordinator.wait_with_output().unwrap();
            }
            assert!(
                start.elapsed() < Duration::from_secs(180),
                "the run never finished"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    for w in &mut workers[1..] {
        let _ = w.kill();
        let _ = w.wait();
    }
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let remote: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        without_run_id(remote.clone()),
        without_run_id(local.clone())
    );
    let run_id = remote["run_id"].as_i64().unwrap();
    assert_eq!(
        exported(&pg.url, run_id),
        exported(lite.to_str().unwrap(), local["run_id"].as_i64().unwrap()),
        "the external workers' run differs from the local one"
    );

    // Every candidate measured exactly once into the run.
    let trials: i64 = c
        .query_one("SELECT count(*) FROM trials WHERE run_id = $1", &[&run_id])
        .unwrap()
        .get(0);
    assert_eq!(trials, 30);
    let distinct: i64 = c
        .query_one(
            "SELECT count(DISTINCT candidate_key) FROM trials WHERE run_id = $1",
            &[&run_id],
        )
        .unwrap()
        .get(0);
    assert_eq!(distinct, 30);
    let rows = c
        .query(
            "SELECT w.status, w.result_json IS NOT NULL, count(t.seq)
             FROM work w LEFT JOIN trials t ON t.run_id = w.run_id
                AND t.candidate_key = w.candidate_key
             WHERE w.run_id = $1 AND w.kind = 'evaluate'
             GROUP BY w.id, w.status, w.result_json",
            &[&run_id],
        )
        .unwrap();
    assert_eq!(rows.len(), 30, "one queued evaluation per trial");
    for r in &rows {
        let (status, has_result, n): (String, bool, i64) = (r.get(0), r.get(1), r.get(2));
        assert_eq!((status.as_str(), has_result, n), ("done", true, 1));
    }
    // The killed worker's candidate was taken over after its lease expired.
    let (worker, attempts, status): (String, i64, String) = {
        let r = c
            .query_one(
                "SELECT worker, attempts, status FROM work WHERE id = $1",
                &[&victim],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!(status, "done");
    assert_ne!(worker, "w0", "a killed worker's claim cannot finish");
    assert!(attempts >= 2, "attempts {attempts}");
    let gpus_null: i64 = c
        .query_one(
            "SELECT count(*) FROM work WHERE run_id = $1 AND worker = 'w0' AND status = 'claimed'",
            &[&run_id],
        )
        .unwrap()
        .get(0);
    assert_eq!(gpus_null, 0);
}

/// A worker replaying `landscape`, its stderr in `log`.
fn logged_worker(url: &str, name: &str, landscape: &Path, idle_exit: &str, log: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_evoengineer"))
        .args(["worker", "--db", url, "--replay"])
        .arg(landscape)
        .args(["--lease", "2s", "--idle-exit", idle_exit, "--name", name])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// A stand-in model: reads the request, answers one fixed softmax variant.
fn model_script(dir: &Path) -> PathBuf {
    let p = dir.join("model.sh");
    std::fs::write(
        &p,
        r#"#!/bin/sh
cat > /dev/null
cat <<'ANSWER'
Use fewer threads per row.

```cuda
#include <cuda_bf16.h>
extern "C" __global__ void softmax_bf16_kernel(const __nv_bfloat16* X, __nv_bfloat16* Y, int ROWS, int COLS) {}
```
ANSWER
"#,
    )
    .unwrap();
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    p
}

/// `tune TASK --external-workers --json` on `db` with `extra`, started.
fn coordinator(task: &Path, db: &str, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_evoengineer"))
        .arg("tune")
        .arg(task)
        .args(["--json", "--external-workers", "--db", db])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The output of a started command, once it ends (within `limit`).
fn finished(mut child: Child, what: &str, limit: Duration) -> std::process::Output {
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        assert!(start.elapsed() < limit, "{what} never finished");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn log_of(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// (source, result) of each evaluation queued for a run.
fn queued(c: &mut postgres::Client, run_id: i64) -> Vec<(String, serde_json::Value)> {
    c.query(
        "SELECT source, result_json FROM work WHERE run_id = $1 AND kind = 'evaluate' ORDER BY id",
        &[&run_id],
    )
    .unwrap()
    .iter()
    .map(|r| {
        let json: Option<String> = r.get(1);
        (
            r.get(0),
            serde_json::from_str(json.as_deref().unwrap_or("null")).unwrap(),
        )
    })
    .collect()
}

/// A coordinator as [`coordinator`] starts it, once the queue holds `items` items (its first
/// batch); and its run id.
fn queued_coordinator(
    c: &mut postgres::Client,
    task: &Path,
    db: &str,
    extra: &[&str],
    items: i64,
) -> (Child, i64) {
    let child = coordinator(task, db, extra);
    // (The coordinator creates the schema: until then there is no `work` table.)
    wait_for("a run's first batch", Duration::from_secs(60), || {
        c.query_one("SELECT count(*) FROM work", &[])
            .map_or(0, |r| r.get::<_, i64>(0))
            >= items
    });
    let run_id = c.query_one("SELECT max(id) FROM runs", &[]).unwrap().get(0);
    (child, run_id)
}

/// Stops a worker; whether it was still running.
fn stop(mut w: Child) -> bool {
    let running = w.try_wait().unwrap().is_none();
    let _ = w.kill();
    let _ = w.wait();
    running
}

/// `landscape` with every line naming source `hash`, in `path`.
fn variant_landscape(landscape: &Path, hash: &str, path: &Path) {
    let lines: Vec<String> = std::fs::read_to_string(landscape)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["source"] = format!("src:{hash}").into();
            v.to_string()
        })
        .collect();
    std::fs::write(path, lines.join("\n")).unwrap();
}

#[test]
fn queue_workers_measure_model_written_sources() {
    let Some(pg) = postgres_server::start("queue_workers_measure_model_written_sources") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let task = repo().join("tasks/softmax_bf16");
    let landscape = task.join("landscapes/h100-mission.jsonl");

    // Code evolution, measured by a worker: the model's source reaches it through the store.
    let log = tmp.path().join("llm-worker.log");
    let w = logged_worker(&pg.url, "llm-worker", &landscape, "60s", &log);
    let script = model_script(tmp.path());
    let out = finished(
        coordinator(
            &task,
            &pg.url,
            &[
                "--replay",
                landscape.to_str().unwrap(),
                "--variant",
                "insight",
                "--llm",
                &format!("command:{}", script.display()),
                "--llm-calls",
                "2",
            ],
        ),
        "the code-evolution run",
        Duration::from_secs(120),
    );
    let still_running = stop(w);
    assert!(
        out.status.success(),
        "{}\nworker: {}",
        String::from_utf8_lossy(&out.stderr),
        log_of(&log)
    );
    assert!(still_running, "the worker exited: {}", log_of(&log));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["evaluations"], 3, "the task's kernel and two calls");
    let run_id = v["run_id"].as_i64().unwrap();
    let store = evoengineer::store::Store::open_location(&pg.url).unwrap();
    let sources = store.run_sources(run_id).unwrap();
    assert_eq!(sources.len(), 1, "{sources:?}");
    let hash = sources[0].hash.clone();
    let mut c = pg.client();
    let rows = queued(&mut c, run_id);
    assert!(
        rows.iter().any(|(s, _)| *s == format!("src:{hash}")),
        "{rows:?}"
    );
    for (source, result) in &rows {
        assert!(result.get("failed").is_none(), "{source}: {result}");
        // A replay has no measurement of a model-written source: it answers `missing`, once
        // the worker has read the source from the store.
        let expected = if source == "base" { "ok" } else { "missing" };
        assert_eq!(result["outcome"], expected, "{source}: {result}");
    }

    // Knob tuning of that source with --source: the worker's landscape names it (as an export
    // of a GPU run of it would), so its answers are the variant's.
    let variant = tmp.path().join("variant.jsonl");
    variant_landscape(&landscape, &hash, &variant);
    let log = tmp.path().join("source-worker.log");
    let w = logged_worker(&pg.url, "source-worker", &variant, "60s", &log);
    let out = finished(
        coordinator(
            &task,
            &pg.url,
            &[
                "--replay",
                landscape.to_str().unwrap(),
                "--variant",
                "random",
                "--budget",
                "6",
                "--batch",
                "3",
                "--source",
                &hash[..12],
            ],
        ),
        "the --source run",
        Duration::from_secs(120),
    );
    let still_running = stop(w);
    assert!(
        out.status.success(),
        "{}\nworker: {}",
        String::from_utf8_lossy(&out.stderr),
        log_of(&log)
    );
    assert!(still_running, "the worker exited: {}", log_of(&log));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["evaluations"], 6);
    assert_eq!(v["winner"]["source"], format!("src:{hash}"));
    let run_id = v["run_id"].as_i64().unwrap();
    let rows = queued(&mut c, run_id);
    assert_eq!(rows.len(), 6);
    assert!(
        rows.iter()
            .all(|(s, r)| *s == format!("src:{hash}") && r.get("failed").is_none()),
        "{rows:?}"
    );
}

#[test]
fn a_broken_run_fails_alone_and_the_healthy_run_beside_it_finishes() {
    let Some(pg) =
        postgres_server::start("a_broken_run_fails_alone_and_the_healthy_run_beside_it_finishes")
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let lite = tmp.path().join("local.db");
    let local = tune(lite.to_str().unwrap(), &["--batch", "6"]);
    let mut c = pg.client();
    let landscape = landscape();
    let replay = ["--replay", landscape.to_str().unwrap()];

    // A run whose task folder is gone once its first batch is queued.
    let copy = tmp.path().join("gemm_copy");
    std::fs::create_dir(&copy).unwrap();
    for f in ["task.toml", "kernel.cu", "reference.cu"] {
        std::fs::copy(gemm().join(f), copy.join(f)).unwrap();
    }
    let mut extra = replay.to_vec();
    extra.extend(["--budget", "8", "--batch", "4"]);
    let (gone, gone_id) = queued_coordinator(&mut c, &copy, &pg.url, &extra, 4);
    std::fs::remove_dir_all(&copy).unwrap();

    // A run of a model-written source that is gone from the store once its batch is queued.
    let hash = "5e".repeat(32);
    evoengineer::store::Store::open_location(&pg.url)
        .unwrap()
        .put_source(&evoengineer::store::SourceRecord {
            hash: hash.clone(),
            code: std::fs::read_to_string(gemm().join("kernel.cu")).unwrap(),
            parents: vec!["base".into()],
            ..Default::default()
        })
        .unwrap();
    extra.extend(["--source", &hash]);
    let (unknown, unknown_id) = queued_coordinator(&mut c, &gemm(), &pg.url, &extra, 8);
    c.execute("DELETE FROM sources WHERE hash = $1", &[&hash])
        .unwrap();

    // A healthy run beside them, and one worker for all three.
    let mut extra = replay.to_vec();
    extra.extend([
        "--variant",
        "full",
        "--seed",
        "5",
        "--budget",
        "30",
        "--batch",
        "6",
    ]);
    let healthy = coordinator(&gemm(), &pg.url, &extra);
    let log = tmp.path().join("worker.log");
    let w = logged_worker(&pg.url, "w", &landscape, "4s", &log);

    let limit = Duration::from_secs(180);
    let gone = finished(gone, "the run without its task folder", limit);
    let unknown = finished(unknown, "the run without its source", limit);
    let healthy = finished(healthy, "the healthy run", limit);
    let worker = finished(w, "the worker", Duration::from_secs(60));
    let log = log_of(&log);

    let text = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).to_string();
    assert!(
        healthy.status.success(),
        "{}\nworker: {log}",
        text(&healthy)
    );
    let remote: serde_json::Value = serde_json::from_slice(&healthy.stdout).unwrap();
    assert_eq!(without_run_id(remote), without_run_id(local));

    assert!(!gone.status.success());
    let e = text(&gone);
    assert!(
        e.contains("cannot load its task from")
            && e.contains(copy.to_str().unwrap())
            && e.contains(&format!("--resume {gone_id}")),
        "{e}"
    );
    assert!(!unknown.status.success());
    let e = text(&unknown);
    assert!(
        e.contains(&format!("src:{hash} is not in the store")),
        "{e}"
    );
    for id in [gone_id, unknown_id] {
        let status: String = c
            .query_one("SELECT status FROM runs WHERE id = $1", &[&id])
            .unwrap()
            .get(0);
        assert_eq!(status, "failed", "run {id}");
        let rows = queued(&mut c, id);
        assert!(
            rows.iter().all(|(_, r)| r["failed"]
                .as_str()
                .is_some_and(|m| m.starts_with("worker w: "))),
            "run {id}: {rows:?}"
        );
    }

    // The worker went on after them, and said what it could not run.
    assert!(worker.status.success(), "{log}");
    assert!(log.contains("recorded as failed"), "{log}");
    assert!(log.contains("items could not be run here"), "{log}");
}
