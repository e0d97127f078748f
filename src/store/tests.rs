use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use rand::{RngExt, SeedableRng};

use super::*;
use crate::eval::{
    CompileReport, CorrectnessReport, EvalError, Evaluation, Evaluator, Outcome, Phases, Timing,
};
use crate::insight::{Bottleneck, Profile};
use crate::search::{self, Journal, JournalError, NoJournal, WallClock};
use crate::space::Config;
use crate::task::{Shape, Task};

const TASK_TOML: &str = r#"
[task]
name = "toy"

[[knob]]
name = "A"
values = [1, 2, 4]
default = 1
layer = "macro"
addresses = ["compute"]

[[knob]]
name = "B"
values = [8, 16, 32]
default = 8
layer = "micro"
addresses = ["memory", "occupancy"]

[[knob]]
name = "C"
values = [0, 1]
default = 0
layer = "micro"
addresses = ["balanced"]

[[shape]]
name = "small"
params = { N = 128 }

[[shape]]
name = "large"
params = { N = 4096 }
"#;

fn toy_task(dir: &Path) -> Task {
    std::fs::write(dir.join("task.toml"), TASK_TOML).unwrap();
    Task::load(dir).unwrap()
}

fn env() -> Environment {
    Environment {
        device: "NVIDIA H100 80GB HBM3 (sm_90)".into(),
        toolchain: "nvcc 12.8 / driver 570.1".into(),
    }
}

/// A deterministic evaluator over the toy space, counting what it is asked.
#[derive(Default)]
struct Toy {
    evaluations: usize,
    profiles: usize,
}

fn toy_evaluation(config: &Config) -> Evaluation {
    let [a, b, c] = config.0[..] else {
        panic!("toy configs have three knobs")
    };
    if a == 4 && b == 32 {
        return Evaluation {
            compile: Some(CompileReport {
                registers: Some(255),
                spill_bytes: Some(512),
                ..CompileReport::default()
            }),
            ..Evaluation::failed(Outcome::CompileError, "too many registers")
        };
    }
    if a == 1 && c == 1 {
        return Evaluation {
            correctness: Some(CorrectnessReport {
                trials: 3,
                max_abs_err: f64::INFINITY,
                nan_count: 7,
                ..CorrectnessReport::default()
            }),
            ..Evaluation::failed(Outcome::Incorrect, "NaN in the output")
        };
    }
    let p50 = 100.0 / a as f64 + b as f64 * 0.37 + c as f64 * 1.1;
    Evaluation {
        outcome: Outcome::Ok,
        message: None,
        compile: Some(CompileReport {
            registers: Some(32 + b as u32),
            smem_bytes: Some(1024 * a as u64),
            spill_bytes: Some(0),
            compile_s: Some(0.25),
            ..CompileReport::default()
        }),
        correctness: Some(CorrectnessReport {
            trials: 3,
            max_abs_err: 0.01 / b as f64,
            ..CorrectnessReport::default()
        }),
        timing: Some(Timing {
            p50_us: p50,
            p90_us: p50 * 1.1,
            samples_us: vec![p50, p50 * 1.05, p50 * 1.1],
            ..Timing::default()
        }),
        profile: None,
        phases: Phases {
            compile_s: Some(0.25),
            wait_s: Some(0.125),
            correctness_s: Some(0.5),
            timing_s: Some(0.75),
            profile_s: None,
            other_s: Some(0.0625),
        },
    }
}

fn toy_profile(config: &Config) -> Option<Profile> {
    // A=2 is profiled where no profiler is.
    (config.0[0] != 2).then(|| Profile {
        metrics: BTreeMap::from([("dram".to_string(), config.0[1] as f64 * 2.5)]),
        bottleneck: Some(if config.0[1] >= 16 {
            Bottleneck::Memory
        } else {
            Bottleneck::Compute
        }),
        profile_s: None,
    })
}

impl Evaluator for Toy {
    fn environment(&self) -> Environment {
        env()
    }

    fn evaluate(&mut self, candidate: &Candidate, _shape: &Shape) -> Result<Evaluation, EvalError> {
        self.evaluations += 1;
        Ok(toy_evaluation(&candidate.config))
    }

    fn profile(
        &mut self,
        candidate: &Candidate,
        _shape: &Shape,
    ) -> Result<Option<Profile>, EvalError> {
        self.profiles += 1;
        Ok(toy_profile(&candidate.config))
    }
}

fn settings() -> Settings {
    let mut s = Settings::new(Variant::Full, 7);
    s.limits.budget = 14;
    s.limits.patience = 100;
    s.elites = 2;
    s.micro_per_elite = 3;
    s
}

fn new_run(task: &Task, settings: &Settings) -> NewRun {
    NewRun {
        task: task.name.clone(),
        task_dir: task.dir.clone(),
        shape: task.default_shape().name.clone(),
        kernel_hash: task.source_hash.clone(),
        settings: settings.clone(),
        evaluator: "toy".into(),
        environment: env(),
        command_line: "evoengineer tune toy --variant full --seed 7".into(),
    }
}

/// Forwards to another journal and keeps the elite sets it is told.
struct Spy<'a, J: Journal> {
    inner: &'a mut J,
    snapshots: Vec<Vec<Elite>>,
    /// Fail (as a killed process would stop) when this many trials were recorded.
    kill_after: Option<usize>,
}

impl<J: Journal> Journal for Spy<'_, J> {
    fn reuse(&mut self, key: &str) -> Result<Option<Evaluation>, JournalError> {
        self.inner.reuse(key)
    }
    fn reuse_profile(&mut self, key: &str) -> Result<Option<Option<Profile>>, JournalError> {
        self.inner.reuse_profile(key)
    }
    fn trial(&mut self, trial: &Trial, elites: &[Elite]) -> Result<(), JournalError> {
        if self.kill_after == Some(self.snapshots.len()) {
            return Err(JournalError("killed".into()));
        }
        self.snapshots.push(elites.to_vec());
        self.inner.trial(trial, elites)
    }
    fn profiled(&mut self, trial: &Trial) -> Result<(), JournalError> {
        self.inner.profiled(trial)
    }
}

fn search(
    task: &Task,
    journal: &mut dyn Journal,
    evaluator: &mut dyn Evaluator,
    resume: Vec<Trial>,
) -> Result<SearchResult, search::SearchError> {
    search::run(
        task,
        task.default_shape(),
        &settings(),
        evaluator,
        journal,
        resume,
        &WallClock::new(Duration::ZERO),
    )
}

/// The parts of a trial that do not depend on time or on the store.
fn essence(t: &Trial) -> (usize, String, String, bool, String) {
    (
        t.seq,
        t.key.clone(),
        format!("{:?}", t.evaluation),
        t.profiled,
        format!("{:?}", t.profile),
    )
}

#[test]
fn a_recorded_search_loads_back_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let task = toy_task(dir.path());
    let db = dir.path().join("runs.db");
    let store = Store::open(&db).unwrap();
    let id = store.create_run(&new_run(&task, &settings())).unwrap();
    let mut journal = store
        .journal(id, &task.space, &task.source_hash, "small", &env())
        .unwrap();
    let mut spy = Spy {
        inner: &mut journal,
        snapshots: vec![],
        kill_after: None,
    };
    let mut toy = Toy::default();
    let result = search(&task, &mut spy, &mut toy, vec![]).unwrap();
    let snapshots = spy.snapshots;
    store.finish_run(id, &result).unwrap();
    assert!(toy.profiles > 0, "the search should have profiled elites");
    assert!(result
        .trials
        .iter()
        .any(|t| t.profiled && t.profile.is_none()));
    assert!(result
        .trials
        .iter()
        .any(|t| t.evaluation.outcome == Outcome::Incorrect));

    let rec = store.load_run(id, &task.space).unwrap();
    // NaN/inf make PartialEq useless on some trials; Debug shows every float.
    assert_eq!(format!("{:?}", rec.trials), format!("{:?}", result.trials));
    assert_eq!(rec.elites, result.elites);
    assert_eq!(rec.elite_history, snapshots);
    assert_eq!(rec.settings, settings());
    assert_eq!(rec.environment, env());
    assert_eq!(rec.kernel_hash, task.source_hash);
    assert_eq!(rec.task_dir, task.dir);
    assert_eq!(rec.evaluator, "toy");
    assert_eq!(
        rec.command_line,
        "evoengineer tune toy --variant full --seed 7"
    );

    let row = &rec.row;
    assert_eq!(row.id, id);
    assert_eq!(row.task, "toy");
    assert_eq!(row.shape, "small");
    assert_eq!(row.variant, Variant::Full);
    assert_eq!(row.seed, 7);
    assert_eq!(row.status, RunStatus::Finished);
    assert_eq!(row.stopped_by, Some(result.stopped_by));
    assert_eq!(row.evaluations, result.trials.len());
    assert_eq!(row.best_p50_us, Some(result.winner().unwrap().p50_us));
    assert_eq!(row.elapsed_s, Some(result.elapsed_s));
    assert!(row.finished_at.is_some());
    assert!(row.created_at.ends_with('Z') && row.created_at.len() == 20);

    // A second run appears in the list, after the first.
    let id2 = store.create_run(&new_run(&task, &settings())).unwrap();
    let runs = store.list_runs().unwrap();
    assert_eq!(runs.iter().map(|r| r.id).collect::<Vec<_>>(), [id, id2]);
    assert_eq!(runs[0], rec.row);
    assert_eq!(runs[1].status, RunStatus::Running);
    assert_eq!(runs[1].evaluations, 0);
    assert_eq!(runs[1].best_p50_us, None);
    assert_eq!(store.run_row(id2).unwrap(), runs[1]);

    // Indexed columns hold the figures.
    let conn = Connection::open(&db).unwrap();
    let (incorrect, err): (i64, f64) = conn
        .query_row(
            "SELECT count(*), max(max_abs_err) FROM trials WHERE run_id = ?1 AND outcome = 'incorrect'",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(incorrect > 0);
    assert_eq!(err, f64::INFINITY);
    let profiled_with_class: i64 = conn
        .query_row(
            "SELECT count(*) FROM trials WHERE run_id = ?1 AND profiled = 1 AND bottleneck IS NOT NULL",
            [id],
            |r| r.get(0),
        )
        .unwrap();
    assert!(profiled_with_class > 0);
}

#[test]
fn a_killed_run_resumes_where_its_record_ends() {
    let dir = tempfile::tempdir().unwrap();
    let task = toy_task(dir.path());
    let db = dir.path().join("runs.db");
    let reference = search(&task, &mut NoJournal, &mut Toy::default(), vec![]).unwrap();
    assert_eq!(reference.trials.len(), 14);

    let id = {
        let store = Store::open(&db).unwrap();
        let id = store.create_run(&new_run(&task, &settings())).unwrap();
        let mut journal = store
            .journal(id, &task.space, &task.source_hash, "small", &env())
            .unwrap();
        let mut spy = Spy {
            inner: &mut journal,
            snapshots: vec![],
            kill_after: Some(6),
        };
        let err = search(&task, &mut spy, &mut Toy::default(), vec![]).unwrap_err();
        assert!(err.to_string().contains("killed"));
        id
        // The connection goes away without finish_run.
    };

    let store = Store::open(&db).unwrap();
    let rec = store.load_run(id, &task.space).unwrap();
    assert_eq!(rec.row.status, RunStatus::Running);
    assert_eq!(rec.row.stopped_by, None);
    assert_eq!(rec.trials.len(), 6);
    assert_eq!(rec.row.evaluations, 6);
    assert_eq!(rec.row.elapsed_s, Some(rec.trials[5].elapsed_s));
    assert_eq!(rec.elites, rec.elite_history[5]);
    for (got, want) in rec.trials.iter().zip(&reference.trials) {
        assert_eq!(essence(got), essence(want));
    }

    store.reopen_run(id).unwrap();
    let mut journal = store
        .journal(id, &task.space, &task.source_hash, "small", &env())
        .unwrap();
    let mut toy = Toy::default();
    let result = search(&task, &mut journal, &mut toy, rec.trials.clone()).unwrap();
    store.finish_run(id, &result).unwrap();
    assert_eq!(
        toy.evaluations,
        14 - 6,
        "recorded trials are not measured again"
    );
    let full = store.load_run(id, &task.space).unwrap();
    assert_eq!(full.trials.len(), 14);
    assert_eq!(
        full.trials.iter().map(essence).collect::<Vec<_>>(),
        reference.trials.iter().map(essence).collect::<Vec<_>>()
    );
    assert_eq!(full.elites, reference.elites);
    assert_eq!(full.row.status, RunStatus::Finished);
}

#[test]
fn a_trial_survives_a_dropped_connection() {
    let dir = tempfile::tempdir().unwrap();
    let task = toy_task(dir.path());
    let db = dir.path().join("runs.db");
    let t0 = manual_trial(
        &task.space,
        0,
        [2, 16, 0],
        toy_evaluation(&Config(vec![2, 16, 0])),
    );
    let elites = [elite(&task.space, &t0)];
    let id = {
        let store = Store::open(&db).unwrap();
        let id = store.create_run(&new_run(&task, &settings())).unwrap();
        let mut j = store
            .journal(id, &task.space, &task.source_hash, "small", &env())
            .unwrap();
        j.trial(&t0, &elites).unwrap();
        id
    };
    let rec = Store::open(&db).unwrap().load_run(id, &task.space).unwrap();
    assert_eq!(rec.row.status, RunStatus::Running);
    assert_eq!(rec.trials, [t0]);
    assert_eq!(rec.elites, elites);
    assert_eq!(rec.elite_history, [elites.to_vec()]);
}

fn manual_trial(space: &Space, seq: usize, config: [i64; 3], evaluation: Evaluation) -> Trial {
    let candidate = Candidate::base(Config(config.to_vec()));
    Trial {
        seq,
        key: candidate.key(space),
        candidate,
        evaluation,
        reused: false,
        wall_s: 0.5,
        elapsed_s: 1.0 + seq as f64,
        profiled: false,
        profile: None,
    }
}

fn elite(space: &Space, t: &Trial) -> Elite {
    elite_of(t, &space.layer_indices(Layer::Macro)).unwrap()
}

#[test]
fn a_key_measured_twice_loads_back_as_its_first_correct_measurement() {
    let dir = tempfile::tempdir().unwrap();
    let task = toy_task(dir.path());
    let store = Store::open(dir.path().join("runs.db")).unwrap();
    let space = &task.space;
    let id = store.create_run(&new_run(&task, &settings())).unwrap();
    let mut j = store
        .journal(id, space, task.source_hash.as_str(), "small", &env())
        .unwrap();
    let config = [2, 16, 0];
    let first = manual_trial(space, 0, config, toy_evaluation(&Config(config.to_vec())));
    let mut again = manual_trial(space, 1, config, toy_evaluation(&Config(config.to_vec())));
    if let Some(t) = again.evaluation.timing.as_mut() {
        t.p50_us *= 0.5;
    }
    let kept = elite(space, &first);
    j.trial(&first, std::slice::from_ref(&kept)).unwrap();
    // The search offered it again: the set did not change (the first measurement stands).
    j.trial(&again, std::slice::from_ref(&kept)).unwrap();
    let rec = store.load_run(id, space).unwrap();
    assert_eq!(rec.elites, std::slice::from_ref(&kept));
    assert_eq!(rec.elite_history, [vec![kept.clone()], vec![kept]]);
}

#[test]
fn measurements_are_reused_only_under_the_same_key() {
    let dir = tempfile::tempdir().unwrap();
    let task = toy_task(dir.path());
    let store = Store::open(dir.path().join("runs.db")).unwrap();
    let space = &task.space;
    let id = store.create_run(&new_run(&task, &settings())).unwrap();
    let hash = task.source_hash.as_str();
    let j = store.journal(id, space, hash, "small", &env()).unwrap();

    let fresh = manual_trial(
        space,
        0,
        [2, 16, 0],
        toy_evaluation(&Config(vec![2, 16, 0])),
    );
    let missing = manual_trial(
        space,
        1,
        [4, 8, 0],
        Evaluation::failed(Outcome::Missing, "not in the landscape"),
    );
    let reused = Trial {
        reused: true,
        ..manual_trial(
            space,
            2,
            [4, 16, 0],
            toy_evaluation(&Config(vec![4, 16, 0])),
        )
    };
    let failed = manual_trial(
        space,
        3,
        [4, 32, 0],
        toy_evaluation(&Config(vec![4, 32, 0])),
    );
    for t in [&fresh, &missing, &reused, &failed] {
        j.record_trial(t, &[]).unwrap();
    }

    assert_eq!(
        j.lookup(&fresh.key).unwrap(),
        Some(fresh.evaluation.clone())
    );
    assert_eq!(
        j.lookup(&failed.key).unwrap(),
        Some(failed.evaluation.clone())
    );
    assert_eq!(
        j.lookup(&missing.key).unwrap(),
        None,
        "a missing outcome is never kept"
    );
    assert_eq!(
        j.lookup(&reused.key).unwrap(),
        None,
        "a reused trial is not a new measurement"
    );
    assert_eq!(j.lookup("base|A=1,B=8,C=0").unwrap(), None);

    // Another run with the same key components finds it; change any one and it does not.
    let other_env = |device: &str, toolchain: &str| Environment {
        device: device.into(),
        toolchain: toolchain.into(),
    };
    let e = env();
    let cases: [(&str, &str, Environment, bool); 5] = [
        (hash, "small", e.clone(), true),
        ("0123abcd", "small", e.clone(), false),
        (hash, "large", e.clone(), false),
        (hash, "small", other_env("NVIDIA H200", &e.toolchain), false),
        (hash, "small", other_env(&e.device, "nvcc 13.0"), false),
    ];
    let id2 = store.create_run(&new_run(&task, &settings())).unwrap();
    for (kernel, shape, env, hit) in cases {
        let mut j2 = store.journal(id2, space, kernel, shape, &env).unwrap();
        let got = j2.reuse(&fresh.key).unwrap();
        assert_eq!(got.is_some(), hit, "{kernel} {shape} {env:?}");
        assert_eq!(
            j2.reuse_profile(&fresh.key).unwrap(),
            None,
            "never profiled"
        );
    }

    // Profiles: "no profiler" is remembered, a real profile replaces it, and "no profiler"
    // never replaces a real one.
    let profile = toy_profile(&Config(vec![4, 16, 0])).unwrap();
    let mut p = Trial {
        profiled: true,
        profile: None,
        ..fresh.clone()
    };
    j.record_profile(&p).unwrap();
    assert_eq!(j.lookup_profile(&fresh.key).unwrap(), Some(None));
    p.profile = Some(profile.clone());
    j.record_profile(&p).unwrap();
    assert_eq!(
        j.lookup_profile(&fresh.key).unwrap(),
        Some(Some(profile.clone()))
    );
    p.profile = None;
    j.record_profile(&p).unwrap();
    assert_eq!(
        j.lookup_profile(&fresh.key).unwrap(),
        Some(Some(profile.clone()))
    );
    // The trial row holds what was said last.
    let rec = store.load_run(id, space).unwrap();
    assert!(rec.trials[0].profiled && rec.trials[0].profile.is_none());
    // A profile of a key never measured (a reused trial, say) is kept too.
    let q = Trial {
        profiled: true,
        profile: Some(profile.clone()),
        ..reused.clone()
    };
    j.record_profile(&q).unwrap();
    assert_eq!(j.lookup_profile(&reused.key).unwrap(), Some(Some(profile)));
    assert_eq!(j.lookup(&reused.key).unwrap(), None);

    // A trial never recorded cannot be profiled.
    let ghost = Trial { seq: 99, ..q };
    assert!(j.record_profile(&ghost).is_err());
}

#[test]
fn a_second_search_reuses_every_measurement() {
    let dir = tempfile::tempdir().unwrap();
    let task = toy_task(dir.path());
    let store = Store::open(dir.path().join("runs.db")).unwrap();
    let mut runs = vec![];
    let mut toys = vec![];
    for _ in 0..2 {
        let id = store.create_run(&new_run(&task, &settings())).unwrap();
        let mut j = store
            .journal(id, &task.space, &task.source_hash, "small", &env())
            .unwrap();
        let mut toy = Toy::default();
        let result = search(&task, &mut j, &mut toy, vec![]).unwrap();
        store.finish_run(id, &result).unwrap();
        runs.push(result);
        toys.push(toy);
    }
    assert_eq!(toys[0].evaluations, 14);
    assert_eq!(toys[1].evaluations, 0);
    assert_eq!(
        toys[1].profiles, 0,
        "profiles and 'no profiler' are reused too"
    );
    assert!(runs[1].trials.iter().all(|t| t.reused));
    assert_eq!(
        runs[0].trials.iter().map(essence).collect::<Vec<_>>(),
        runs[1].trials.iter().map(essence).collect::<Vec<_>>()
    );
}

#[test]
fn a_missing_run_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let task = toy_task(dir.path());
    let db = dir.path().join("runs.db");
    let store = Store::open(&db).unwrap();
    let want = format!("no run 42 in {}", db.display());
    let result = SearchResult {
        trials: vec![],
        elites: vec![],
        stopped_by: StopReason::Budget,
        elapsed_s: 0.0,
    };
    let errors = [
        store.load_run(42, &task.space).unwrap_err(),
        store.run_row(42).unwrap_err(),
        store.finish_run(42, &result).unwrap_err(),
        store.fail_run(42, "x").unwrap_err(),
        store.reopen_run(42).unwrap_err(),
        store.export_records(42, &task.space).unwrap_err(),
        store
            .journal(42, &task.space, "h", "small", &env())
            .err()
            .unwrap(),
    ];
    for e in errors {
        assert!(matches!(e, StoreError::NoRun { run_id: 42, .. }), "{e:?}");
        assert_eq!(e.to_string(), want);
    }
}

#[test]
fn failed_runs_keep_their_message_and_can_be_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let task = toy_task(dir.path());
    let store = Store::open(dir.path().join("runs.db")).unwrap();
    let id = store.create_run(&new_run(&task, &settings())).unwrap();
    store.fail_run(id, "the GPU fell off the bus").unwrap();
    let row = store.run_row(id).unwrap();
    assert_eq!(
        row.status,
        RunStatus::Failed {
            message: "the GPU fell off the bus".into()
        }
    );
    assert_eq!(row.status.to_string(), "failed: the GPU fell off the bus");
    assert!(row.finished_at.is_some());
    store.reopen_run(id).unwrap();
    let row = store.run_row(id).unwrap();
    assert_eq!(row.status, RunStatus::Running);
    assert_eq!(row.finished_at, None);
}

#[test]
fn concurrent_writers_share_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let task = Arc::new(toy_task(dir.path()));
    let db: Arc<PathBuf> = Arc::new(dir.path().join("shared.db"));
    let start = Arc::new(Barrier::new(2));
    let configs = task.space.enumerate(1000).unwrap();
    let threads: Vec<_> = (0..2)
        .map(|w| {
            let (task, db, start, configs) =
                (task.clone(), db.clone(), start.clone(), configs.clone());
            std::thread::spawn(move || {
                start.wait();
                // Both open (and create the schema of) a fresh file at once.
                let store = Store::open(&*db).unwrap();
                let id = store.create_run(&new_run(&task, &settings())).unwrap();
                let mut j = store
                    .journal(id, &task.space, &task.source_hash, "small", &env())
                    .unwrap();
                for seq in 0..200 {
                    // Both writers measure the same keys: their upserts collide.
                    let config = configs[seq % configs.len()].clone();
                    let mut t = manual_trial(
                        &task.space,
                        seq,
                        config.0.clone().try_into().unwrap(),
                        toy_evaluation(&config),
                    );
                    t.wall_s = w as f64;
                    j.trial(&t, &[]).unwrap();
                    if seq % 50 == 0 {
                        assert!(!store.list_runs().unwrap().is_empty());
                    }
                }
                id
            })
        })
        .collect();
    let ids: Vec<i64> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_ne!(ids[0], ids[1]);

    let store = Store::open(&*db).unwrap();
    for id in ids {
        let rec = store.load_run(id, &task.space).unwrap();
        assert_eq!(rec.trials.len(), 200);
        assert_eq!(rec.row.evaluations, 200);
    }
    let check: String = store
        .sqlite()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let mode: String = store
        .sqlite()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn every_float_comes_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let task = toy_task(dir.path());
    let store = Store::open(dir.path().join("runs.db")).unwrap();
    let id = store.create_run(&new_run(&task, &settings())).unwrap();
    let mut j = store
        .journal(id, &task.space, &task.source_hash, "small", &env())
        .unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let mut trials = vec![];
    for seq in 0..20 {
        let mut e = toy_evaluation(&Config(vec![2, 16, 1]));
        let t = e.timing.as_mut().unwrap();
        t.p50_us = rng.random::<f64>() * 1e3;
        t.p90_us = f64::from_bits(rng.random::<u64>() >> 2);
        t.samples_us = (0..50).map(|_| rng.random::<f64>() * 1e-3).collect();
        t.mean_us = Some(0.1 + 0.2);
        t.std_us = Some(f64::MIN_POSITIVE / 3.0);
        let c = e.correctness.as_mut().unwrap();
        c.max_abs_err = f64::MAX;
        c.rel_l2_err = Some(5e-324);
        let mut trial = manual_trial(&task.space, seq, [2, 16, 1], e);
        trial.wall_s = rng.random();
        trial.elapsed_s = rng.random::<f64>() * 1e5;
        j.trial(&trial, &[]).unwrap();
        trials.push(trial);
    }
    assert_eq!(store.load_run(id, &task.space).unwrap().trials, trials);
}

#[test]
fn non_finite_floats_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let task = toy_task(dir.path());
    let store = Store::open(dir.path().join("runs.db")).unwrap();
    let id = store.create_run(&new_run(&task, &settings())).unwrap();
    let mut j = store
        .journal(id, &task.space, &task.source_hash, "small", &env())
        .unwrap();
    let mut e = toy_evaluation(&Config(vec![2, 16, 1]));
    e.outcome = Outcome::Incorrect;
    let c = e.correctness.as_mut().unwrap();
    c.max_abs_err = f64::INFINITY;
    c.mean_abs_err = Some(f64::NAN);
    c.rmse = Some(2.5);
    let t = e.timing.as_mut().unwrap();
    t.p90_us = f64::NEG_INFINITY;
    t.samples_us = vec![1.0, f64::NAN, 3.0, f64::INFINITY];
    e.profile = Some(Profile {
        metrics: BTreeMap::from([("a".into(), f64::NAN), ("b".into(), 1.5)]),
        bottleneck: None,
        profile_s: Some(0.5),
    });
    // Phases come after every older float: a non-finite one among them keeps its place.
    e.phases.timing_s = Some(f64::INFINITY);
    let mut trial = manual_trial(&task.space, 0, [2, 16, 1], e);
    j.trial(&trial, &[]).unwrap();
    trial.profiled = true;
    trial.profile = Some(Profile {
        metrics: BTreeMap::from([("x".into(), f64::INFINITY)]),
        bottleneck: Some(Bottleneck::Occupancy),
        profile_s: Some(f64::NAN),
    });
    j.profiled(&trial).unwrap();

    let rec = store.load_run(id, &task.space).unwrap();
    assert_eq!(format!("{:?}", rec.trials), format!("{:?}", [&trial]));
    let again = j.reuse(&trial.key).unwrap().unwrap();
    assert_eq!(format!("{again:?}"), format!("{:?}", trial.evaluation));
    let profile = j.reuse_profile(&trial.key).unwrap().unwrap();
    assert_eq!(format!("{profile:?}"), format!("{:?}", trial.profile));
}

#[test]
fn export_gives_one_landscape_record_per_trial() {
    let dir = tempfile::tempdir().unwrap();
    let task = toy_task(dir.path());
    let store = Store::open(dir.path().join("runs.db")).unwrap();
    let id = store.create_run(&new_run(&task, &settings())).unwrap();
    let mut j = store
        .journal(id, &task.space, &task.source_hash, "small", &env())
        .unwrap();
    let mut toy = Toy::default();
    let result = search(&task, &mut j, &mut toy, vec![]).unwrap();
    store.finish_run(id, &result).unwrap();

    let records = store.export_records(id, &task.space).unwrap();
    assert_eq!(records.len(), result.trials.len());
    for (r, t) in records.iter().zip(&result.trials) {
        assert_eq!(task.space.from_json(&r.config).unwrap(), t.candidate.config);
        assert_eq!(r.shape.as_deref(), Some("small"));
        assert_eq!(r.source, None);
        assert_eq!(r.outcome, t.evaluation.outcome);
        assert_eq!(r.p50_us, t.evaluation.timing.as_ref().map(|x| x.p50_us));
        assert_eq!(r.registers, t.evaluation.registers());
        assert_eq!(r.bottleneck, t.profile.as_ref().and_then(|p| p.bottleneck));
        assert_eq!(r.extra["device"], env().device.as_str());
        assert_eq!(r.extra["toolchain"], env().toolchain.as_str());
        assert_eq!(r.extra["run_id"], id);
        assert_eq!(r.extra["seq"], t.seq);
        assert_eq!(r.extra["candidate"], t.key.as_str());
        assert_eq!(
            r.extra.get("message").and_then(|m| m.as_str()),
            t.evaluation.message.as_deref()
        );
        // Each record is a valid landscape line.
        let line = serde_json::to_string(r).unwrap();
        let back: LandscapeRecord = serde_json::from_str(&line).unwrap();
        assert_eq!(back.config, r.config);
    }
}

#[test]
fn variant_sources_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let task = toy_task(dir.path());
    let store = Store::open(dir.path().join("runs.db")).unwrap();
    let id = store.create_run(&new_run(&task, &settings())).unwrap();
    let mut j = store
        .journal(id, &task.space, &task.source_hash, "small", &env())
        .unwrap();
    let hash = "ab".repeat(32);
    let candidate = Candidate {
        source: SourceRef::Variant(hash.clone()),
        config: Config(vec![1, 8, 0]),
    };
    let trial = Trial {
        key: candidate.key(&task.space),
        candidate,
        ..manual_trial(
            &task.space,
            0,
            [1, 8, 0],
            toy_evaluation(&Config(vec![1, 8, 0])),
        )
    };
    j.trial(&trial, &[]).unwrap();
    let rec = store.load_run(id, &task.space).unwrap();
    assert_eq!(rec.trials, [trial]);
    let records = store.export_records(id, &task.space).unwrap();
    assert_eq!(records[0].source, Some(format!("src:{hash}")));
}

#[test]
fn sources_with_lineage_round_trip_and_v1_stores_migrate() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("runs.db");
    // A version-1 store, as the previous build left it.
    {
        let conn = Connection::open(&db).unwrap();
        conn.execute_batch(super::schema::CREATE_V1).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
    }
    let store = Store::open(&db).unwrap();
    let rec = SourceRecord {
        hash: "cd".repeat(32),
        code: "__global__ void k() {}".into(),
        parents: vec!["base".into()],
        operator: Some("mutation".into()),
        model: Some("m".into()),
        prompt_hash: Some("ef".repeat(32)),
        answer: Some("```cuda\n...```".into()),
        run_id: Some(7),
        call: Some(2),
        notes: Some("unrolled".into()),
        usage: Some(crate::llm::Usage {
            prompt_tokens: 1,
            completion_tokens: 2,
            total_tokens: 3,
        }),
        rejection: None,
        created_at: String::new(),
    };
    assert!(store.put_source(&rec).unwrap());
    assert!(!store.put_source(&rec).unwrap(), "kept as it was");
    let back = store.source(&rec.hash).unwrap().unwrap();
    assert!(!back.created_at.is_empty());
    assert_eq!(
        SourceRecord {
            created_at: String::new(),
            ..back
        },
        rec
    );
    assert_eq!(store.run_sources(7).unwrap().len(), 1);
    assert!(store.source("00").unwrap().is_none());
}

#[test]
fn a_changed_task_is_reported_on_load() {
    let dir = tempfile::tempdir().unwrap();
    let task = toy_task(dir.path());
    let store = Store::open(dir.path().join("runs.db")).unwrap();
    let id = store.create_run(&new_run(&task, &settings())).unwrap();
    let j = store
        .journal(id, &task.space, &task.source_hash, "small", &env())
        .unwrap();
    let t = manual_trial(
        &task.space,
        0,
        [1, 8, 0],
        toy_evaluation(&Config(vec![1, 8, 0])),
    );
    j.record_trial(&t, &[]).unwrap();

    let other = tempfile::tempdir().unwrap();
    std::fs::write(
        other.path().join("task.toml"),
        TASK_TOML.replace("name = \"C\"", "name = \"D\""),
    )
    .unwrap();
    let changed = Task::load(other.path()).unwrap();
    let err = store.load_run(id, &changed.space).unwrap_err().to_string();
    assert!(err.contains(&format!("run {id}, trial 0")), "{err}");
    assert!(err.contains("does not fit the task's knobs"), "{err}");
}

#[test]
fn schema_versions_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("runs.db");
    drop(Store::open(&db).unwrap());
    {
        let conn = Connection::open(&db).unwrap();
        let v: i32 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
    }
    let err = Store::open(&db).err().unwrap();
    assert!(matches!(err, StoreError::NewerSchema { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains(&format!("newer than version {SCHEMA_VERSION}")),
        "{err}"
    );

    // Reopening a current store is fine; tables are created once.
    let db2 = dir.path().join("again.db");
    drop(Store::open(&db2).unwrap());
    drop(Store::open(&db2).unwrap());

    // Someone else's database is left alone.
    let foreign = dir.path().join("foreign.db");
    Connection::open(&foreign)
        .unwrap()
        .execute_batch("CREATE TABLE notes (text TEXT)")
        .unwrap();
    let err = Store::open(&foreign).err().unwrap();
    assert!(
        err.to_string().contains("is not an evoengineer store"),
        "{err}"
    );

    // A file that is not a database at all.
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![b'x'; 4096]).unwrap();
    let err = Store::open(&junk).err().unwrap();
    assert!(
        err.to_string().contains(&junk.display().to_string()),
        "{err}"
    );
}

/// Set for a child process running [`child_writer`].
const CHILD_DB: &str = "EVOENGINEER_STORE_TEST_DB";
const CHILD_TASK: &str = "EVOENGINEER_STORE_TEST_TASK";
const CHILD_TRIALS: &str = "EVOENGINEER_STORE_TEST_TRIALS";

/// Not a test: the body of a child process the tests below start (and may kill). It records
/// trials into a new run and says `committed SEQ` after each commit.
#[test]
#[ignore = "started as a child process by the multi-process tests"]
fn child_writer() {
    use std::io::Write;
    let (Ok(db), Ok(dir), Ok(n)) = (
        std::env::var(CHILD_DB),
        std::env::var(CHILD_TASK),
        std::env::var(CHILD_TRIALS),
    ) else {
        return;
    };
    let task = Task::load(Path::new(&dir)).unwrap();
    let store = Store::open(&db).unwrap();
    let id = store.create_run(&new_run(&task, &settings())).unwrap();
    let mut j = store
        .journal(id, &task.space, &task.source_hash, "small", &env())
        .unwrap();
    let configs = task.space.enumerate(1000).unwrap();
    let mut out = std::io::stdout().lock();
    writeln!(out, "@@run {id}").unwrap();
    for seq in 0..n.parse::<usize>().unwrap() {
        let config = configs[seq % configs.len()].clone();
        let values: [i64; 3] = config.0.clone().try_into().unwrap();
        let t = manual_trial(&task.space, seq, values, toy_evaluation(&config));
        j.trial(&t, &[]).unwrap();
        writeln!(out, "@@committed {seq}").unwrap();
        out.flush().unwrap();
    }
}

fn spawn_writer(db: &Path, task_dir: &Path, trials: usize) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "store::tests::child_writer",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DB, db)
        .env(CHILD_TASK, task_dir)
        .env(CHILD_TRIALS, trials.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap()
}

/// The run id and the last seq a child said it committed.
fn child_said(text: &str) -> (i64, Option<usize>) {
    let id = text
        .lines()
        .find_map(|l| l.split_once("@@run ").map(|(_, id)| id))
        .expect("the child names its run")
        .trim()
        .parse()
        .unwrap();
    let last = text
        .lines()
        .filter_map(|l| l.split_once("@@committed ").map(|(_, seq)| seq))
        .map(|s| s.trim().parse().unwrap())
        .max();
    (id, last)
}

fn integrity(store: &Store) -> String {
    store
        .sqlite()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn two_processes_write_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let task = toy_task(dir.path());
    let db = dir.path().join("shared.db");
    let children = [
        spawn_writer(&db, dir.path(), 200),
        spawn_writer(&db, dir.path(), 200),
    ];
    let mut ids = vec![];
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "a writer failed: {:?}", out.status);
        let (id, last) = child_said(&String::from_utf8(out.stdout).unwrap());
        assert_eq!(last, Some(199));
        ids.push(id);
    }
    let store = Store::open(&db).unwrap();
    assert_eq!(integrity(&store), "ok");
    for id in ids {
        assert_eq!(store.load_run(id, &task.space).unwrap().trials.len(), 200);
    }
}

#[test]
fn kill_9_loses_at_most_the_trial_in_flight() {
    use std::io::{BufRead, BufReader, Read};
    let dir = tempfile::tempdir().unwrap();
    let task = toy_task(dir.path());
    let db = dir.path().join("killed.db");
    let mut child = spawn_writer(&db, dir.path(), 1_000_000);
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "the child ended early"
        );
        seen.push_str(&line);
        if line.contains("@@committed 100") {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    reader.read_to_string(&mut seen).unwrap();
    let (id, last) = child_said(&seen);
    let last = last.unwrap();

    let store = Store::open(&db).unwrap();
    assert_eq!(integrity(&store), "ok");
    let rec = store.load_run(id, &task.space).unwrap();
    assert_eq!(rec.row.status, RunStatus::Running);
    // Every commit it announced is there; at most one more landed before it died.
    let n = rec.trials.len();
    assert!(
        n == last + 1 || n == last + 2,
        "{n} trials after `committed {last}`"
    );
    assert!(rec.trials.iter().enumerate().all(|(i, t)| t.seq == i));
}

#[test]
fn many_connections_opening_a_new_file_at_once_all_succeed() {
    // Switching a new file to WAL from several connections at once can answer "database is
    // locked" without waiting; `Store::open` must wait and retry instead.
    for round in 0..30 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("fresh-{round}.db"));
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (path, barrier) = (path.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    Store::open(&path).map(|_| ()).map_err(|e| e.to_string())
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap().unwrap();
        }
    }
}

/// The toy evaluator, with what ncu took stamped on each profile (as the GPU evaluator does).
struct TimedToy(Toy);

impl Evaluator for TimedToy {
    fn environment(&self) -> Environment {
        env()
    }

    fn evaluate(&mut self, candidate: &Candidate, shape: &Shape) -> Result<Evaluation, EvalError> {
        self.0.evaluate(candidate, shape)
    }

    fn profile(
        &mut self,
        candidate: &Candidate,
        shape: &Shape,
    ) -> Result<Option<Profile>, EvalError> {
        Ok(self.0.profile(candidate, shape)?.map(|p| Profile {
            profile_s: Some(0.5),
            ..p
        }))
    }
}

#[test]
fn an_exported_run_replays_with_its_profiles_and_phases() {
    let dir = tempfile::tempdir().unwrap();
    let task = toy_task(dir.path());
    let store = Store::open(dir.path().join("runs.db")).unwrap();
    let id = store.create_run(&new_run(&task, &settings())).unwrap();
    let mut j = store
        .journal(id, &task.space, &task.source_hash, "small", &env())
        .unwrap();
    let mut timed = TimedToy(Toy::default());
    let result = search(&task, &mut j, &mut timed, vec![]).unwrap();
    store.finish_run(id, &result).unwrap();
    let with_profile = result.trials.iter().filter(|t| t.profile.is_some()).count();
    assert!(with_profile > 0, "the search should have profiled elites");

    // The summary counts each phase once, and each profile's ncu time.
    let rec = store.load_run(id, &task.space).unwrap();
    let summary = crate::report::phases::PhaseSummary::of(&rec.trials, Some(100.0), false);
    let ok = rec
        .trials
        .iter()
        .filter(|t| t.evaluation.outcome == Outcome::Ok)
        .count();
    assert_eq!(summary.with_phases, ok);
    assert_eq!(summary.without_phases, rec.trials.len() - ok);
    assert_eq!(summary.profiles, with_profile);
    assert_eq!(summary.profile_s, 0.5 * with_profile as f64);
    assert_eq!(summary.compile_s, 0.25 * ok as f64);
    assert_eq!(summary.compile_overlapped_s, 0.125 * ok as f64);
    let sequential = (0.125 + 0.5 + 0.75 + 0.0625) * ok as f64 + summary.profile_s;
    assert!((summary.sequential_s() - sequential).abs() < 1e-9);
    assert!((summary.outside_s.unwrap() - (100.0 - sequential)).abs() < 1e-9);

    // Exported, then replayed: every record's profile and phases come back as recorded.
    let path = dir.path().join("exported.jsonl");
    let text: String = store
        .export_records(id, &task.space)
        .unwrap()
        .iter()
        .map(|r| serde_json::to_string(r).unwrap() + "\n")
        .collect();
    std::fs::write(&path, text).unwrap();
    let mut replay = crate::eval::replay::ReplayEvaluator::load(&path, &task).unwrap();
    let shape = task.default_shape();
    for t in &result.trials {
        let back = replay.evaluate(&t.candidate, shape).unwrap();
        let mut phases = t.evaluation.phases.clone();
        if t.profile.is_some() {
            phases.profile_s = Some(0.5);
        }
        assert_eq!(back.phases, phases, "{}", t.key);
        let profile = replay.profile(&t.candidate, shape).unwrap();
        match &t.profile {
            Some(p) => {
                let got = profile.expect("a profiled trial replays with its profile");
                assert_eq!(got.bottleneck, p.bottleneck, "{}", t.key);
                assert_eq!(got.metrics, p.metrics, "{}", t.key);
                // The time is in the phases, not invented twice.
                assert_eq!(got.profile_s, None);
            }
            None => assert_eq!(profile, None, "{}", t.key),
        }
    }
}
