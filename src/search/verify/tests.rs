//! Correct on every shape, without a GPU: an evaluator whose fastest candidates are fitted to
//! the run's shape (correct there, wrong at `tail`), through the knob search, resume and
//! measurements reused from a journal.

use std::collections::HashMap;
use std::time::Duration;

use super::*;
use crate::eval::{Environment, ShapeCheck, Timing};
use crate::insight::Profile;
use crate::search::tests::task_from;
use crate::search::{
    run, Elite, Journal, JournalError, SearchResult, Settings, Variant, WallClock,
};

const TASK: &str = r#"
[[knob]]
name = "A"
values = [1, 2, 3, 4]
[[knob]]
name = "B"
values = [1, 2]
[[shape]]
name = "mission"
params = { N = 1 }
[[shape]]
name = "tail"
params = { N = 2 }
[[shape]]
name = "wide"
params = { N = 3 }
"#;

/// p50 = 100 - 10·A + B: A = 4 is fastest, and fitted to the run's shape: correct there,
/// incorrect at `tail`.
#[derive(Default)]
struct Overfit {
    /// Answer `verify` with `None` (as a replay does).
    blind: bool,
    /// Panic if asked anything (what a resumed run must not do).
    refuse: bool,
    evaluations: usize,
    /// Each `verify` call: the candidate's A and the shapes asked.
    verifies: Vec<(i64, Vec<String>)>,
}

impl Evaluator for Overfit {
    fn environment(&self) -> Environment {
        Environment::default()
    }

    fn evaluate(&mut self, c: &Candidate, _: &Shape) -> Result<Evaluation, EvalError> {
        assert!(!self.refuse, "measured {c:?} again");
        self.evaluations += 1;
        let p50 = 100.0 - 10.0 * c.config.0[0] as f64 + c.config.0[1] as f64;
        Ok(Evaluation {
            outcome: Outcome::Ok,
            message: None,
            compile: None,
            correctness: Some(CorrectnessReport {
                trials: 5,
                max_abs_err: 1e-4,
                ..CorrectnessReport::default()
            }),
            timing: Some(Timing {
                p50_us: p50,
                p90_us: p50 + 1.0,
                ..Timing::default()
            }),
            profile: None,
            phases: Default::default(),
        })
    }

    fn verify(
        &mut self,
        c: &Candidate,
        shapes: &[Shape],
    ) -> Result<Option<Vec<ShapeCheck>>, EvalError> {
        assert!(!self.refuse, "verified {c:?} again");
        let a = c.config.0[0];
        self.verifies
            .push((a, shapes.iter().map(|s| s.name.clone()).collect()));
        if self.blind {
            return Ok(None);
        }
        let mut checks = Vec::new();
        for s in shapes {
            let wrong = a == 4 && s.name == "tail";
            checks.push(ShapeCheck {
                shape: s.name.clone(),
                outcome: if wrong {
                    Outcome::Incorrect
                } else {
                    Outcome::Ok
                },
                message: wrong.then(|| "max_abs_err 0.31 > 0.0005".to_string()),
            });
            if wrong {
                break;
            }
        }
        Ok(Some(checks))
    }

    fn profile(&mut self, _: &Candidate, _: &Shape) -> Result<Option<Profile>, EvalError> {
        Ok(None)
    }
}

/// Keeps every fresh measurement and offers it again, as the store does.
#[derive(Default)]
struct Remember {
    kept: HashMap<String, Evaluation>,
}

impl Journal for Remember {
    fn reuse(&mut self, key: &str) -> Result<Option<Evaluation>, JournalError> {
        Ok(self.kept.get(key).cloned())
    }
    fn trial(&mut self, t: &Trial, _: &[Elite]) -> Result<(), JournalError> {
        if !t.reused {
            self.kept.insert(t.key.clone(), t.evaluation.clone());
        }
        Ok(())
    }
}

fn settings(variant: Variant) -> Settings {
    let mut s = Settings::new(variant, 5);
    s.limits.patience = 100;
    s.elites = 3;
    s
}

fn search(
    task: &Task,
    s: &Settings,
    ev: &mut Overfit,
    journal: &mut dyn Journal,
    resume: Vec<Trial>,
) -> SearchResult {
    run(
        task,
        task.default_shape(),
        s,
        ev,
        journal,
        resume,
        &WallClock::new(Duration::ZERO),
    )
    .unwrap()
}

fn a_of(t: &Trial) -> i64 {
    t.candidate.config.0[0]
}

#[test]
fn a_candidate_wrong_at_another_shape_never_becomes_an_elite() {
    let task = task_from(TASK);
    for variant in [Variant::Grid, Variant::Full, Variant::Random] {
        let mut ev = Overfit::default();
        let r = search(
            &task,
            &settings(variant),
            &mut ev,
            &mut crate::search::NoJournal,
            vec![],
        );
        assert_eq!(r.trials.len(), 8, "{variant}");
        // The honest fastest (A = 3, B = 1) wins; no A = 4 among the elites.
        let w = r.winner().unwrap();
        assert_eq!(w.p50_us, 71.0, "{variant}");
        for e in &r.elites {
            assert_ne!(e.candidate.as_ref().unwrap().config.0[0], 4, "{variant}");
            let t = r.trials.iter().find(|t| t.key == e.key).unwrap();
            let shapes: Vec<_> = t
                .evaluation
                .verified()
                .iter()
                .map(|c| c.shape.as_str())
                .collect();
            assert_eq!(shapes, ["tail", "wide"], "{variant}: {}", e.key);
            assert!(t.evaluation.verified().iter().all(ShapeCheck::passed));
            assert_eq!(
                ShapesPassed::of(&task, &r.trials, &e.key, "mission").describe(),
                "mission, tail, wide"
            );
        }
        // The fitted candidates are recorded incorrect, naming the shape, with their timing.
        let wrong: Vec<&Trial> = r.trials.iter().filter(|t| a_of(t) == 4).collect();
        assert_eq!(wrong.len(), 2);
        for t in &wrong {
            assert_eq!(t.evaluation.outcome, Outcome::Incorrect, "{variant}");
            assert_eq!(
                t.evaluation.message.as_deref(),
                Some("correct at `mission` but incorrect at `tail`: max_abs_err 0.31 > 0.0005")
            );
            assert!(t.evaluation.timing.is_some());
            assert_eq!(t.evaluation.verified().len(), 1);
        }
        // Checked only where a candidate would have entered the elites, and only at the
        // other shapes.
        assert!(ev.verifies.len() <= r.trials.len());
        assert!(ev
            .verifies
            .iter()
            .all(|(_, s)| s == &["tail".to_string(), "wide".to_string()]));
        let checked = r
            .trials
            .iter()
            .filter(|t| !t.evaluation.verified().is_empty())
            .count();
        assert_eq!(checked, ev.verifies.len());
    }
}

#[test]
fn an_evaluator_that_cannot_check_other_shapes_lets_candidates_in() {
    let task = task_from(TASK);
    let mut ev = Overfit {
        blind: true,
        ..Overfit::default()
    };
    let r = search(
        &task,
        &settings(Variant::Grid),
        &mut ev,
        &mut crate::search::NoJournal,
        vec![],
    );
    let w = r.winner().unwrap();
    assert_eq!(w.p50_us, 61.0);
    assert!(!ev.verifies.is_empty());
    assert!(r.trials.iter().all(|t| t.evaluation.outcome == Outcome::Ok));
    assert!(r.trials.iter().all(|t| t.evaluation.verified().is_empty()));
    assert_eq!(
        ShapesPassed::of(&task, &r.trials, &w.key, "mission").describe(),
        "mission; not verified at tail, wide"
    );
}

#[test]
fn a_task_can_name_its_verification_shapes() {
    // Only `wide`: the fitted candidates pass there and win.
    let task = task_from(&format!(
        "[task]\nverify_shapes = [\"mission\", \"wide\"]\n{TASK}"
    ));
    let mut ev = Overfit::default();
    let r = search(
        &task,
        &settings(Variant::Grid),
        &mut ev,
        &mut crate::search::NoJournal,
        vec![],
    );
    assert_eq!(r.winner().unwrap().p50_us, 61.0);
    assert!(ev.verifies.iter().all(|(_, s)| s == &["wide".to_string()]));
    // None but the run's: nothing is checked.
    let task = task_from(&format!("[task]\nverify_shapes = []\n{TASK}"));
    let mut ev = Overfit::default();
    let r = search(
        &task,
        &settings(Variant::Grid),
        &mut ev,
        &mut crate::search::NoJournal,
        vec![],
    );
    assert_eq!(r.winner().unwrap().p50_us, 61.0);
    assert!(ev.verifies.is_empty());
    assert_eq!(
        ShapesPassed::of(&task, &r.trials, &r.winner().unwrap().key, "mission").describe(),
        "mission"
    );
}

#[test]
fn a_resumed_run_replays_the_checks_without_asking_again() {
    let task = task_from(TASK);
    let s = settings(Variant::Full);
    let mut ev = Overfit::default();
    let first = search(&task, &s, &mut ev, &mut crate::search::NoJournal, vec![]);
    let mut refuse = Overfit {
        refuse: true,
        ..Overfit::default()
    };
    let again = search(
        &task,
        &s,
        &mut refuse,
        &mut crate::search::NoJournal,
        first.trials.clone(),
    );
    assert_eq!(again.elites, first.elites);
    assert_eq!(format!("{:?}", again.trials), format!("{:?}", first.trials));
}

#[test]
fn reused_measurements_carry_their_checks_and_are_checked_where_they_lack_them() {
    let task = task_from(TASK);
    let s = settings(Variant::Grid);
    // Measured by an evaluator that could not check: reused ones lack the checks, so the
    // second run checks them, and the fitted candidate is turned away although reused.
    let mut journal = Remember::default();
    let mut blind = Overfit {
        blind: true,
        ..Overfit::default()
    };
    let first = search(&task, &s, &mut blind, &mut journal, vec![]);
    assert_eq!(first.winner().unwrap().p50_us, 61.0);
    let mut ev = Overfit::default();
    let second = search(&task, &s, &mut ev, &mut journal, vec![]);
    assert_eq!(ev.evaluations, 0);
    assert!(second.trials.iter().all(|t| t.reused));
    assert_eq!(second.winner().unwrap().p50_us, 71.0);
    assert!(second
        .trials
        .iter()
        .filter(|t| a_of(t) == 4)
        .all(|t| t.evaluation.outcome == Outcome::Incorrect));
    assert!(!ev.verifies.is_empty());

    // Measured and checked: a later run reuses the checks and asks nothing.
    let mut journal = Remember::default();
    let mut ev = Overfit::default();
    let first = search(&task, &s, &mut ev, &mut journal, vec![]);
    let mut refuse = Overfit {
        refuse: true,
        ..Overfit::default()
    };
    let second = search(&task, &s, &mut refuse, &mut journal, vec![]);
    assert!(second.trials.iter().all(|t| t.reused));
    assert_eq!(second.elites, first.elites);
    let e = &second.elites[0];
    assert_eq!(
        ShapesPassed::of(&task, &second.trials, &e.key, "mission").passed,
        ["mission", "tail", "wide"]
    );
}
