//! Correct on every shape, end to end without a GPU: runs made through the library with an
//! evaluator whose fastest candidates are fitted to the run's shape (correct at `mission`,
//! wrong at `tail`), recorded in a store, then read back by `show --json`, `show` and `report`.
//! One run searches knobs, one evolves code with a scripted model.

mod common;

use std::cell::Cell;
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use common::{evo, repo};
use evoengineer::candidate::{Candidate, SourceRef};
use evoengineer::eval::{
    CorrectnessReport, Environment, EvalError, Evaluation, Evaluator, Outcome, ShapeCheck, Timing,
};
use evoengineer::insight::Profile;
use evoengineer::llm::defence::Preprocessor;
use evoengineer::llm::evolve::{Evolution, LlmSettings};
use evoengineer::llm::prompt::Templates;
use evoengineer::llm::{Answer, ChatRequest, LlmError, Provider, ProviderConfig, ProviderSpec};
use evoengineer::search::{self, Settings, Variant, WallClock};
use evoengineer::store::{NewRun, Store};
use evoengineer::task::{Shape, Task};
use serde_json::Value;

const TASK: &str = r#"
[task]
name = "fitted"

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

/// Knob candidates with A = 4, and sources marked `OVERFIT`, are fitted to `mission`.
/// Latency: 100 - 10·A + B for knobs; `// P=NN` in a source.
#[derive(Default)]
struct Fitted {
    /// Code evolution: the task's own kernel takes 100 us and is honest.
    evolution: bool,
    sources: HashMap<String, String>,
    checks: Cell<usize>,
}

impl Fitted {
    fn overfit(&self, c: &Candidate) -> bool {
        match &c.source {
            SourceRef::Base => !self.evolution && c.config.values()[0] == 4,
            SourceRef::Variant(h) => self.sources[h].contains("OVERFIT"),
        }
    }
}

impl Evaluator for Fitted {
    fn environment(&self) -> Environment {
        Environment {
            device: "fitted".into(),
            toolchain: "none".into(),
        }
    }

    fn register_source(&mut self, hash: &str, code: &str) {
        self.sources.insert(hash.into(), code.into());
    }

    fn evaluate(&mut self, c: &Candidate, _: &Shape) -> Result<Evaluation, EvalError> {
        let p50 = match &c.source {
            SourceRef::Base if self.evolution => 100.0,
            SourceRef::Base => {
                let v = c.config.values();
                100.0 - 10.0 * v[0] as f64 + v[1] as f64
            }
            SourceRef::Variant(h) => {
                let code = &self.sources[h];
                let at = code.find("// P=").expect("P= marker") + 5;
                code[at..]
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap()
            }
        };
        Ok(Evaluation {
            correctness: Some(CorrectnessReport {
                trials: 5,
                ..CorrectnessReport::default()
            }),
            timing: Some(Timing {
                p50_us: p50,
                p90_us: p50,
                ..Timing::default()
            }),
            ..Evaluation::failed(Outcome::Ok, "fitted")
        })
    }

    fn verify(
        &mut self,
        c: &Candidate,
        shapes: &[Shape],
    ) -> Result<Option<Vec<ShapeCheck>>, EvalError> {
        self.checks.set(self.checks.get() + 1);
        let mut out = Vec::new();
        for s in shapes {
            let wrong = self.overfit(c) && s.name == "tail";
            out.push(ShapeCheck {
                shape: s.name.clone(),
                outcome: if wrong {
                    Outcome::Incorrect
                } else {
                    Outcome::Ok
                },
                message: wrong.then(|| "1203 output elements were never written".into()),
            });
            if wrong {
                break;
            }
        }
        Ok(Some(out))
    }

    fn profile(&mut self, _: &Candidate, _: &Shape) -> Result<Option<Profile>, EvalError> {
        Ok(None)
    }
}

fn new_run(task: &Task, settings: &Settings) -> NewRun {
    NewRun {
        task: task.name.clone(),
        task_dir: task.dir.clone(),
        shape: task.default_shape().name.clone(),
        kernel_hash: task.source_hash.clone(),
        settings: settings.clone(),
        evaluator: "fitted".into(),
        environment: Fitted::default().environment(),
        command_line: "evoengineer tune fitted".into(),
    }
}

fn show_json(db: &Path, id: i64) -> Value {
    let out = evo()
        .args(["show", &id.to_string(), "--json", "--db"])
        .arg(db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn show_text(db: &Path, id: i64) -> String {
    let out = evo()
        .args(["show", &id.to_string(), "--db"])
        .arg(db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn shapes_of(elite: &Value) -> (Vec<&str>, Vec<&str>) {
    let list = |k: &str| -> Vec<&str> {
        elite["shapes"][k]
            .as_array()
            .unwrap_or_else(|| panic!("no shapes.{k} in {elite}"))
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect()
    };
    (list("passed"), list("not_verified"))
}

#[test]
fn a_knob_search_keeps_fitted_candidates_out_and_says_where_elites_passed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("task.toml"), TASK).unwrap();
    let task = Task::load(dir.path()).unwrap();
    let db = dir.path().join("runs.db");
    let store = Store::open(&db).unwrap();
    let mut settings = Settings::new(Variant::Full, 3);
    settings.limits.patience = 100;
    let id = store.create_run(&new_run(&task, &settings)).unwrap();
    let mut journal = store
        .journal(
            id,
            &task.space,
            &task.source_hash,
            "mission",
            &Fitted::default().environment(),
        )
        .unwrap();
    let mut ev = Fitted::default();
    let r = search::run(
        &task,
        task.default_shape(),
        &settings,
        &mut ev,
        &mut journal,
        vec![],
        &WallClock::new(Duration::ZERO),
    )
    .unwrap();
    store.finish_run(id, &r).unwrap();
    assert!(ev.checks.get() > 0);

    let j = show_json(&db, id);
    // The honest fastest wins (A = 3, B = 1: 71 us); the fitted ones (61, 62 us) are no elites.
    assert_eq!(j["winner"]["p50_us"], 71.0);
    assert_eq!(j["winner"]["config"]["A"], 3);
    let elites = j["elites"].as_array().unwrap();
    assert_eq!(elites.len(), 3);
    for e in elites {
        assert_ne!(e["config"]["A"], 4, "{e}");
        assert_eq!(shapes_of(e), (vec!["mission", "tail", "wide"], vec![]));
    }
    let fitted: Vec<&Value> = j["trajectory"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["key"].as_str().unwrap().contains("A=4"))
        .collect();
    assert_eq!(fitted.len(), 2);
    for t in &fitted {
        assert_eq!(t["outcome"], "incorrect");
        assert_eq!(
            t["message"],
            "correct at `mission` but incorrect at `tail`: 1203 output elements were never written; fitted"
        );
        assert_eq!(t["verified"][0]["shape"], "tail");
        assert_eq!(t["verified"][0]["outcome"], "incorrect");
    }

    let text = show_text(&db, id);
    assert!(text.contains("correct at: mission, tail, wide"), "{text}");
    assert!(
        text.contains("note: correct at `mission` but incorrect at `tail`"),
        "{text}"
    );

    let out_dir = dir.path().join("report");
    let out = evo()
        .args(["report", &id.to_string(), "--db"])
        .arg(&db)
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(out_dir.join("report.html")).unwrap();
    assert!(html.contains("<th>correct at</th>"), "no column");
    assert_eq!(
        html.matches("<td class=\"shapes\">mission, tail, wide</td>")
            .count(),
        3
    );
    assert!(html.contains("Correct at: <span class=\"shapes\">mission, tail, wide</span>"));
}

#[test]
fn a_replayed_run_says_its_elites_were_not_verified_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let land = common::write_landscape(dir.path());
    let db = dir.path().join("runs.db");
    let out = evo()
        .arg("tune")
        .arg(common::seed_task())
        .arg("--replay")
        .arg(&land)
        .arg("--db")
        .arg(&db)
        .args([
            "--variant",
            "random",
            "--seed",
            "2",
            "--budget",
            "10",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j = show_json(&db, 1);
    let (passed, not_verified) = shapes_of(&j["winner"]);
    assert_eq!(passed, ["mission"]);
    assert!(!not_verified.is_empty() && !not_verified.contains(&"mission"));
    let text = show_text(&db, 1);
    assert!(
        text.contains("correct at: mission; not verified at"),
        "{text}"
    );
}

#[derive(Debug)]
struct Scripted {
    answers: Vec<String>,
    asked: Cell<usize>,
    /// The user message of each call.
    prompts: std::cell::RefCell<Vec<String>>,
}

impl Provider for Scripted {
    fn describe(&self) -> String {
        "scripted".into()
    }
    fn model(&self) -> String {
        "scripted".into()
    }
    fn complete(&self, r: &ChatRequest) -> Result<Answer, LlmError> {
        self.prompts.borrow_mut().push(r.user.clone());
        let n = self.asked.get();
        self.asked.set(n + 1);
        Ok(Answer {
            text: self.answers[n.min(self.answers.len() - 1)].clone(),
            model: "scripted".into(),
            usage: None,
            attempts: 1,
        })
    }
}

fn answer(marker: &str) -> String {
    format!(
        "an idea\n```cuda\n// {marker}\nextern \"C\" __global__ void softmax_bf16_kernel() {{}}\n```\n"
    )
}

#[test]
fn code_evolution_keeps_a_source_fitted_to_the_mission_shape_out() {
    let dir = tempfile::tempdir().unwrap();
    let task = Task::load(&repo().join("tasks/softmax_bf16")).unwrap();
    assert_eq!(task.verify_shapes, ["mission", "tail", "wide"]);
    let db = dir.path().join("runs.db");
    let store = Store::open(&db).unwrap();
    let llm = LlmSettings::new(
        ProviderConfig::new(ProviderSpec::parse("command:unused").unwrap()),
        2,
    );
    let mut settings = Settings::new(Variant::Full, 3);
    settings.llm = Some(llm.clone());
    let id = store.create_run(&new_run(&task, &settings)).unwrap();
    let mut journal = store
        .journal(
            id,
            &task.space,
            &task.source_hash,
            "mission",
            &Fitted::default().environment(),
        )
        .unwrap();
    // The fitted source is faster (50 us) than the honest one (80 us) and the kernel (100 us).
    let provider = Scripted {
        answers: vec![answer("P=50 OVERFIT"), answer("P=80")],
        asked: Cell::new(0),
        prompts: Default::default(),
    };
    let mut ev = Fitted {
        evolution: true,
        ..Fitted::default()
    };
    let mut book = &store;
    let r = Evolution {
        task: &task,
        shape: task.default_shape(),
        settings: &settings,
        llm: &llm,
        provider: &provider,
        templates: &Templates::builtin(),
        run_id: Some(id),
        preprocessor: &Preprocessor::unavailable("none in this test"),
    }
    .run(
        &mut ev,
        &mut journal,
        &mut book,
        vec![],
        &WallClock::new(Duration::ZERO),
    )
    .unwrap();
    store.finish_run(id, &r).unwrap();
    assert_eq!(r.trials.len(), 3);
    let fitted = &r.trials[1].evaluation;
    assert_eq!(fitted.outcome, Outcome::Incorrect);
    assert!(
        fitted
            .message
            .as_deref()
            .unwrap()
            .starts_with("correct at `mission` but incorrect at `tail`: "),
        "{:?}",
        fitted.message
    );
    // The model hears of it as the run concluded it.
    let second = &provider.prompts.borrow()[1];
    assert!(
        second.contains("incorrect (correct at `mission` but incorrect at `tail`"),
        "{second}"
    );
    let p50s: Vec<f64> = r.elites.iter().map(|e| e.p50_us).collect();
    assert_eq!(p50s, [80.0, 100.0]);
    assert!(r.winner().unwrap().key.starts_with("src:"));

    let j = show_json(&db, id);
    assert_eq!(j["winner"]["p50_us"], 80.0);
    for e in j["elites"].as_array().unwrap() {
        assert_eq!(shapes_of(e), (vec!["mission", "tail", "wide"], vec![]));
    }
    assert_eq!(j["trajectory"][1]["outcome"], "incorrect");
}
