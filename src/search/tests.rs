//! Tests of the search driver and strategies against synthetic landscapes.

use std::cell::Cell;
use std::collections::HashSet;
use std::rc::Rc;
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::eval::{EvalError, Evaluation, Evaluator, Outcome, Timing};
use crate::insight::{Bottleneck, Profile};
use crate::task::{Shape, Task};

/// Loads a task from manifest text.
pub(crate) fn task_from(text: &str) -> Task {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("task.toml"), text).unwrap();
    Task::load(dir.path()).unwrap()
}

pub(crate) fn seed_task() -> Task {
    crate::task::seed_space_task()
}

/// `n` knobs of `v` values each, alternating macro and micro, tagged round-robin.
fn wide_task(n: usize, v: usize) -> Task {
    let classes = ["compute", "memory", "occupancy", "balanced"];
    let mut t = String::from("[task]\nname = \"wide\"\n");
    for i in 0..n {
        let values: Vec<String> = (0..v).map(|x| x.to_string()).collect();
        t += &format!(
            "[[knob]]\nname = \"K{i}\"\nvalues = [{}]\nlayer = \"{}\"\naddresses = [\"{}\"]\n",
            values.join(", "),
            if i % 2 == 0 { "macro" } else { "micro" },
            classes[i % 4]
        );
    }
    t += "[[shape]]\nname = \"mission\"\nparams = { N = 1 }\n";
    task_from(&t)
}

/// A deterministic landscape: latency is a hashed function of the config; some configs fail.
struct Synth {
    space: crate::space::Space,
    fail_rate: u64,
    clock: Option<Rc<Cell<f64>>>,
    evaluations: usize,
    profiles: usize,
    refuse: HashSet<String>,
}

impl Synth {
    fn new(task: &Task, fail_rate: u64) -> Synth {
        Synth {
            space: task.space.clone(),
            fail_rate,
            clock: None,
            evaluations: 0,
            profiles: 0,
            refuse: HashSet::new(),
        }
    }

    fn hash(&self, c: &Candidate) -> u64 {
        let s = c.key(&self.space);
        let mut h: u64 = 0xcbf29ce484222325;
        for b in s.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
        h
    }
}

impl Evaluator for Synth {
    fn environment(&self) -> crate::eval::Environment {
        crate::eval::Environment {
            device: "synthetic".into(),
            toolchain: "none".into(),
        }
    }

    fn evaluate(&mut self, c: &Candidate, _shape: &Shape) -> Result<Evaluation, EvalError> {
        assert!(
            !self.refuse.contains(&c.key(&self.space)),
            "evaluated a candidate that should have been replayed"
        );
        self.evaluations += 1;
        if let Some(clock) = &self.clock {
            clock.set(clock.get() + 1.0);
        }
        let h = self.hash(c);
        if self.fail_rate > 0 && h % 100 < self.fail_rate {
            let outcome = [
                Outcome::CompileError,
                Outcome::Incorrect,
                Outcome::Missing,
                Outcome::RuntimeError,
                Outcome::Timeout,
            ][(h / 100 % 5) as usize];
            return Ok(Evaluation::failed(outcome, "synthetic failure"));
        }
        // A smooth part (sum of values) plus a hashed ripple, so neighbourhoods matter.
        let smooth: i64 = c.config.0.iter().sum();
        let p50 = 100.0 + smooth as f64 * 3.0 + (h % 1000) as f64 / 50.0;
        Ok(Evaluation {
            outcome: Outcome::Ok,
            message: None,
            compile: None,
            correctness: None,
            timing: Some(Timing {
                p50_us: p50,
                p90_us: p50 * 1.1,
                ..Timing::default()
            }),
            profile: None,
            phases: Default::default(),
        })
    }

    fn profile(&mut self, c: &Candidate, _shape: &Shape) -> Result<Option<Profile>, EvalError> {
        self.profiles += 1;
        Ok(Some(Profile {
            metrics: Default::default(),
            bottleneck: Some(Bottleneck::ALL[(self.hash(c) % 4) as usize]),
            profile_s: None,
        }))
    }
}

/// A clock that reads the synthetic evaluator's time.
struct FakeClock(Rc<Cell<f64>>);
impl Clock for FakeClock {
    fn elapsed(&self) -> Duration {
        Duration::from_secs_f64(self.0.get())
    }
}

/// Records the elite set after every trial.
#[derive(Default)]
struct Recorder {
    snapshots: Vec<Vec<Elite>>,
    trials: Vec<Trial>,
}

impl Journal for Recorder {
    fn trial(&mut self, trial: &Trial, elites: &[Elite]) -> Result<(), JournalError> {
        self.trials.push(trial.clone());
        self.snapshots.push(elites.to_vec());
        Ok(())
    }
}

fn run_synth(task: &Task, settings: &Settings, fail_rate: u64) -> (SearchResult, Recorder) {
    let mut ev = Synth::new(task, fail_rate);
    let mut rec = Recorder::default();
    let r = run(
        task,
        task.default_shape(),
        settings,
        &mut ev,
        &mut rec,
        vec![],
        &WallClock::new(Duration::ZERO),
    )
    .unwrap();
    (r, rec)
}

fn keys(r: &SearchResult) -> Vec<String> {
    r.trials.iter().map(|t| t.key.clone()).collect()
}

fn check_invariants(task: &Task, settings: &Settings, r: &SearchResult, rec: &Recorder) {
    let k = settings.effective_elites();
    let mut seen = HashSet::new();
    let mut best = f64::INFINITY;
    for (t, snap) in r.trials.iter().zip(&rec.snapshots) {
        assert!(seen.insert(t.key.clone()), "{} evaluated twice", t.key);
        assert!(
            task.space.is_valid(&t.candidate.config),
            "invalid config {}",
            t.key
        );
        assert!(snap.len() <= k, "{} elites, K = {k}", snap.len());
        for e in snap {
            let trial = r.trials.iter().find(|x| x.key == e.key).unwrap();
            assert_eq!(
                trial.evaluation.outcome,
                Outcome::Ok,
                "elite {} is not correct",
                e.key
            );
        }
        if let Some(b) = snap.first() {
            assert!(
                b.p50_us <= best,
                "best worsened from {best} to {}",
                b.p50_us
            );
            best = b.p50_us;
        }
    }
    // The winner is the best correct trial.
    let ok_best = r
        .trials
        .iter()
        .filter_map(|t| t.evaluation.p50_us())
        .fold(f64::INFINITY, f64::min);
    match r.winner() {
        Some(w) => assert_eq!(w.p50_us, ok_best),
        None => assert!(ok_best.is_infinite()),
    }
    assert!(r.trials.len() <= settings.limits.budget);
}

#[test]
fn every_variant_runs_on_the_seed_space_and_keeps_the_invariants() {
    let task = seed_task();
    for variant in Variant::ALL {
        let mut s = Settings::new(variant, 7);
        s.limits.budget = 60;
        let (r, rec) = run_synth(&task, &s, 20);
        assert!(!r.trials.is_empty(), "{variant}");
        check_invariants(&task, &s, &r, &rec);
    }
}

#[test]
fn grid_covers_the_seed_space_and_finds_the_optimum() {
    let task = seed_task();
    let mut s = Settings::new(Variant::Grid, 1);
    s.limits.budget = 1000;
    let (r, _) = run_synth(&task, &s, 0);
    assert_eq!(r.trials.len(), 128);
    assert_eq!(r.stopped_by, StopReason::Exhausted);
    // Lexicographic order: the first config is all-first-values.
    assert!(r.trials[0].key.ends_with("USE_WARP_SPECIALIZATION=0,USE_PERSISTENT_CTA=0,TILE_M=32,TILE_N=32,NUM_PRODUCER_WARPS=1,USE_FAST_EXP=0,USE_CP_ASYNC_3STAGE=0"));
}

#[test]
fn budget_stops_the_search() {
    let task = seed_task();
    for variant in Variant::ALL {
        let mut s = Settings::new(variant, 3);
        s.limits.budget = 20;
        s.limits.patience = 0; // never converge
        let (r, _) = run_synth(&task, &s, 0);
        assert_eq!(r.trials.len(), 20, "{variant}");
        assert_eq!(r.stopped_by, StopReason::Budget, "{variant}");
    }
}

#[test]
fn convergence_stops_when_the_elites_do_not_change() {
    let task = seed_task();
    let mut s = Settings::new(Variant::Free, 3);
    s.limits.patience = 5;
    let (r, rec) = run_synth(&task, &s, 0);
    assert_eq!(r.stopped_by, StopReason::Converged);
    // The last `patience` trials left the elite set as it was.
    let n = rec.snapshots.len();
    let last: Vec<_> = rec.snapshots[n - 6].iter().map(|e| &e.key).collect();
    for snap in &rec.snapshots[n - 5..] {
        assert_eq!(snap.iter().map(|e| &e.key).collect::<Vec<_>>(), last);
    }
}

#[test]
fn full_does_not_converge_inside_its_first_layer() {
    let task = seed_task();
    let mut s = Settings::new(Variant::Full, 3);
    s.limits.patience = 1;
    let (r, _) = run_synth(&task, &s, 0);
    assert!(
        r.trials.len() >= 16,
        "stopped after {} trials",
        r.trials.len()
    );
}

#[test]
fn full_gets_its_patience_after_the_first_layer() {
    let task = seed_task();
    let mut s = Settings::new(Variant::Full, 3);
    s.limits.patience = 4;
    let (r, rec) = run_synth(&task, &s, 0);
    assert_eq!(r.stopped_by, StopReason::Converged);
    assert!(
        r.trials.len() >= 16 + 4,
        "stopped after {} trials",
        r.trials.len()
    );
    // The last 4 trials left the elites unchanged, and they all come after layer 1.
    let n = rec.snapshots.len();
    assert!(n - 4 >= 16);
}

#[test]
fn time_limit_stops_the_search() {
    let task = seed_task();
    let mut s = Settings::new(Variant::Random, 3);
    s.limits.time_limit = Some(Duration::from_secs(5));
    let time = Rc::new(Cell::new(0.0));
    let mut ev = Synth::new(&task, 0);
    ev.clock = Some(time.clone());
    let r = run(
        &task,
        task.default_shape(),
        &s,
        &mut ev,
        &mut NoJournal,
        vec![],
        &FakeClock(time),
    )
    .unwrap();
    assert_eq!(r.stopped_by, StopReason::TimeLimit);
    assert_eq!(r.trials.len(), 5);
}

#[test]
fn a_small_space_is_exhausted_by_every_variant() {
    let task = wide_task(2, 2);
    for variant in Variant::ALL {
        let mut s = Settings::new(variant, 5);
        s.limits.patience = 0;
        let (r, _) = run_synth(&task, &s, 0);
        assert_eq!(r.trials.len(), 4, "{variant}");
        assert_eq!(r.stopped_by, StopReason::Exhausted, "{variant}");
    }
}

#[test]
fn same_seed_same_sequence_other_seed_other_sequence() {
    let task = seed_task();
    for variant in Variant::ALL {
        let s = Settings::new(variant, 11);
        let (a, _) = run_synth(&task, &s, 10);
        let (b, _) = run_synth(&task, &s, 10);
        assert_eq!(keys(&a), keys(&b), "{variant}");
        assert_eq!(a.stopped_by, b.stopped_by);
    }
    let (a, _) = run_synth(&task, &Settings::new(Variant::Random, 1), 0);
    let (b, _) = run_synth(&task, &Settings::new(Variant::Random, 2), 0);
    assert_ne!(keys(&a), keys(&b));
}

#[test]
fn a_space_too_large_to_list_is_sampled_and_grid_refuses_it() {
    // 12 knobs of 10 values: 10^12 configs.
    let task = wide_task(12, 10);
    assert_eq!(task.space.raw_size(), 1_000_000_000_000);
    for variant in [
        Variant::Full,
        Variant::Insight,
        Variant::Free,
        Variant::Random,
    ] {
        let mut s = Settings::new(variant, 9);
        s.limits.budget = 40;
        let (r, rec) = run_synth(&task, &s, 10);
        assert!(r.trials.len() >= 10, "{variant}: {} trials", r.trials.len());
        check_invariants(&task, &s, &r, &rec);
    }
    let s = Settings::new(Variant::Grid, 9);
    let err = run(
        &task,
        task.default_shape(),
        &s,
        &mut Synth::new(&task, 0),
        &mut NoJournal,
        vec![],
        &WallClock::new(Duration::ZERO),
    )
    .unwrap_err();
    assert!(err.to_string().contains("1.0e12"), "{err}");
}

#[test]
fn constraints_are_respected_by_every_variant() {
    let task = task_from(
        r#"
[[knob]]
name = "A"
values = [1, 2, 4, 8]
layer = "macro"
[[knob]]
name = "B"
values = [1, 2, 4, 8]
layer = "micro"
addresses = ["compute"]
[[knob]]
name = "C"
values = [0, 1]
layer = "micro"
[[constraint]]
expr = "A * B <= 8"
[[shape]]
name = "s"
params = { N = 4 }
"#,
    );
    for variant in Variant::ALL {
        let mut s = Settings::new(variant, 2);
        s.limits.patience = 0;
        let (r, rec) = run_synth(&task, &s, 0);
        check_invariants(&task, &s, &r, &rec);
        // 10 valid (A,B) pairs times 2.
        assert_eq!(r.trials.len(), 20, "{variant}");
    }
}

#[test]
fn failures_never_become_elites() {
    let task = seed_task();
    for variant in Variant::ALL {
        let mut s = Settings::new(variant, 4);
        s.limits.budget = 128;
        let (r, rec) = run_synth(&task, &s, 60);
        assert!(r.trials.iter().any(|t| t.evaluation.outcome != Outcome::Ok));
        check_invariants(&task, &s, &r, &rec);
    }
}

#[test]
fn nothing_correct_means_no_winner() {
    let task = seed_task();
    let (r, _) = run_synth(&task, &Settings::new(Variant::Full, 4), 100);
    assert!(r.winner().is_none());
    assert!(r.elites.is_empty());
}

#[test]
fn full_walks_every_macro_variant_first_with_micro_defaults() {
    let task = seed_task();
    let s = Settings::new(Variant::Full, 8);
    let (r, _) = run_synth(&task, &s, 0);
    let micros = task.space.layer_indices(crate::space::Layer::Micro);
    let first16: HashSet<Vec<i64>> = r.trials[..16]
        .iter()
        .map(|t| {
            for &i in &micros {
                assert_eq!(t.candidate.config.0[i], task.space.knobs()[i].default);
            }
            t.candidate.config.0[..4].to_vec()
        })
        .collect();
    assert_eq!(first16.len(), 16);
    // Then micro variants of elites: macro knobs of an elite, micro knobs changed.
    let t = &r.trials[16];
    assert!(micros
        .iter()
        .any(|&i| t.candidate.config.0[i] != task.space.knobs()[i].default));
}

#[test]
fn insight_profiles_new_bests_and_tries_tagged_knobs_first() {
    let task = seed_task();
    let s = Settings::new(Variant::Insight, 8);
    let mut ev = Synth::new(&task, 0);
    let mut rec = Recorder::default();
    let r = run(
        &task,
        task.default_shape(),
        &s,
        &mut ev,
        &mut rec,
        vec![],
        &WallClock::new(Duration::ZERO),
    )
    .unwrap();
    let bests = rec
        .snapshots
        .windows(2)
        .filter(|w| w[0].first().map(|e| &e.key) != w[1].first().map(|e| &e.key))
        .count()
        + 1;
    assert_eq!(ev.profiles, bests, "one profile per new best");
    // After the first trial (the default, a new best), the next proposal changes one knob
    // tagged with the default's class, if any knob is tagged with it.
    let first = &r.trials[0];
    let class = first.profile.as_ref().and_then(|p| p.bottleneck).unwrap();
    let next = &r.trials[1].candidate.config;
    let changed: Vec<usize> = (0..7)
        .filter(|&i| next.0[i] != first.candidate.config.0[i])
        .collect();
    assert_eq!(changed.len(), 1);
    if task.space.knobs().iter().any(|k| k.addresses(class)) {
        assert!(
            task.space.knobs()[changed[0]].addresses(class),
            "{class}: changed {changed:?}"
        );
    }
}

#[test]
fn free_never_profiles() {
    let task = seed_task();
    let mut ev = Synth::new(&task, 0);
    run(
        &task,
        task.default_shape(),
        &Settings::new(Variant::Free, 1),
        &mut ev,
        &mut NoJournal,
        vec![],
        &WallClock::new(Duration::ZERO),
    )
    .unwrap();
    assert_eq!(ev.profiles, 0);
}

#[test]
fn a_resumed_run_replays_its_record_and_ends_the_same() {
    let task = seed_task();
    for variant in Variant::ALL {
        let s = Settings::new(variant, 21);
        let (full, rec) = run_synth(&task, &s, 15);
        for cut in [0, 1, full.trials.len() / 2, full.trials.len()] {
            let prefix: Vec<Trial> = rec.trials[..cut].to_vec();
            let mut ev = Synth::new(&task, 15);
            ev.refuse = prefix.iter().map(|t| t.key.clone()).collect();
            let resumed = run(
                &task,
                task.default_shape(),
                &s,
                &mut ev,
                &mut NoJournal,
                prefix,
                &WallClock::new(Duration::ZERO),
            )
            .unwrap();
            assert_eq!(keys(&resumed), keys(&full), "{variant} cut at {cut}");
            assert_eq!(resumed.elites, full.elites);
            assert_eq!(resumed.stopped_by, full.stopped_by);
            assert_eq!(ev.evaluations, full.trials.len() - cut);
        }
    }
}

#[test]
fn a_record_that_does_not_match_is_refused() {
    let task = seed_task();
    let s = Settings::new(Variant::Full, 21);
    let (_, rec) = run_synth(&task, &s, 0);
    let other = Settings::new(Variant::Full, 22);
    let mut prefix = rec.trials[..20].to_vec();
    prefix.swap(3, 17);
    let err = run(
        &task,
        task.default_shape(),
        &other,
        &mut Synth::new(&task, 0),
        &mut NoJournal,
        prefix,
        &WallClock::new(Duration::ZERO),
    )
    .unwrap_err();
    assert!(matches!(err, SearchError::Resume(_)), "{err}");
}

#[test]
fn diverse_elites_come_from_different_macro_variants() {
    let task = seed_task();
    let mut s = Settings::new(Variant::Full, 5);
    s.diverse = true;
    let (r, _) = run_synth(&task, &s, 0);
    let macros: HashSet<_> = r
        .elites
        .iter()
        .map(|e| e.candidate.as_ref().unwrap().config.0[..4].to_vec())
        .collect();
    assert_eq!(macros.len(), r.elites.len());
}

fn arb_settings() -> impl Strategy<Value = Settings> {
    (
        prop::sample::select(Variant::ALL.to_vec()),
        any::<u64>(),
        1usize..6,
        1usize..6,
        1usize..80,
        0usize..12,
        any::<bool>(),
    )
        .prop_map(|(variant, seed, k, n, budget, patience, diverse)| {
            let mut s = Settings::new(variant, seed);
            s.elites = k;
            s.micro_per_elite = n;
            s.limits.budget = budget;
            s.limits.patience = patience;
            s.diverse = diverse;
            s
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn invariants_hold_on_random_spaces(
        settings in arb_settings(),
        knobs in 1usize..6,
        values in 1usize..5,
        fail_rate in 0u64..80,
    ) {
        let task = wide_task(knobs, values);
        let (r, rec) = run_synth(&task, &settings, fail_rate);
        check_invariants(&task, &settings, &r, &rec);
        let (again, _) = run_synth(&task, &settings, fail_rate);
        prop_assert_eq!(keys(&r), keys(&again));
    }
}
