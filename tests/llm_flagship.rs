//! The scripted answers of tests/fixtures/llm-gemm/ and tests/fixtures/llm-sdpa/ through `tune
//! --llm "command:scripts/prepared-answers DIR" --replay` on the flagship tasks gemm_bf16 and
//! sdpa_fp8: no GPU and no network. Each folder answers, in order, a source that does not
//! compile, a cheat, a source that compiles but computes the wrong thing and an honest variant
//! (see each folder's README.md for what they do on a GPU).
//!
//! Through the binary: extraction and both passes of the static defences run for real (the
//! second with nvcc's preprocessor), the cheat is recorded `compile_error` naming its rule,
//! the other three are stored unrejected and, as a replay has no measurements of new sources,
//! recorded `missing`. `tune --replay` compiles nothing, so the test then sends each stored
//! source through the real compile gate (nvcc, sm_90a) at the knobs of its trial: the broken
//! one becomes a `compile_error` evaluation carrying nvcc's message, the others compile.
//! Without nvcc the test prints `SKIPPED: nvcc not found` and passes.

use std::path::{Path, PathBuf};
use std::process::Command;

use assert_cmd::cargo::CommandCargoExt;
use evoengineer::candidate::SourceRef;
use evoengineer::eval::compile::{CacheSetting, CompileGate, CompileJob, CompilerSettings};
use evoengineer::eval::Outcome;
use evoengineer::store::Store;
use evoengineer::task::{Compiler, Task};
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A compile gate with nvcc, or `None` after saying SKIPPED.
fn gate_or_skip(cache: &Path, test: &str) -> Option<CompileGate> {
    let gate = CompileGate::new(CompilerSettings {
        cache: CacheSetting::Dir(cache.to_path_buf()),
        ..CompilerSettings::default()
    });
    if let Err(e) = gate.toolchain(Compiler::Nvcc) {
        // Straight to stderr, in one write: libtest captures `eprintln!` of passing tests.
        let line = format!("\nSKIPPED: nvcc not found (run scripts/setup-cuda) [{test}: {e}]\n");
        let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
        return None;
    }
    Some(gate)
}

/// Runs the four scripted answers of `fixtures` on `task` and checks every gate on the way.
fn scripted_answers(task: &str, fixtures: &str, rule: &str, test: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let Some(gate) = gate_or_skip(&tmp.path().join("cubins"), test) else {
        return;
    };
    let task_dir = repo().join("tasks").join(task);
    let answers = repo().join("tests/fixtures").join(fixtures).join("answers");
    let db = tmp.path().join("runs.db");
    let out = Command::cargo_bin("evoengineer")
        .unwrap()
        .current_dir(repo())
        .env("PREPARED_ANSWERS_STATE", tmp.path().join("answers.state"))
        .arg("tune")
        .arg(&task_dir)
        .arg("--replay")
        .arg(task_dir.join("landscapes/h100-mission.jsonl"))
        .arg("--llm")
        .arg(format!(
            "command:scripts/prepared-answers {}",
            answers.display()
        ))
        .args(["--llm-calls", "4", "--json", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["evaluations"], 5, "the task's kernel and four calls");
    assert_eq!(v["stopped_by"], "calls");
    let run_id = v["run_id"].as_i64().unwrap();

    let t = Task::load(&task_dir).unwrap();
    let store = Store::open(&db).unwrap();
    let record = store.load_run(run_id, &t.space).unwrap();
    assert_eq!(record.trials.len(), 5);
    let mut sources = store.run_sources(run_id).unwrap();
    sources.sort_by_key(|s| s.call);
    assert_eq!(sources.len(), 4, "four different answers");
    for (i, s) in sources.iter().enumerate() {
        assert_eq!(s.call, Some(i as i64));
        assert!(!s.code.is_empty(), "call {i}: no code extracted");
        assert!(s.notes.as_deref().is_some_and(|n| !n.is_empty()));
    }
    let message = |i: usize| {
        record.trials[i]
            .evaluation
            .message
            .clone()
            .unwrap_or_default()
    };

    // The cheat (call 1, trial 2): turned away before compiling, naming the rule.
    let cheat = &record.trials[2].evaluation;
    assert_eq!(cheat.outcome, Outcome::CompileError, "{}", message(2));
    assert!(
        message(2).starts_with(&format!("rejected before compiling: {rule}: ")),
        "{}",
        message(2)
    );
    assert!(sources[1].rejection.as_deref().unwrap().starts_with(rule));

    // The others passed both passes of the static defences (the second ran: nvcc is here)
    // and were handed to the evaluator, which as a replay knows nothing of them.
    for (call, trial) in [(0, 1), (2, 3), (3, 4)] {
        let s = &sources[call];
        assert_eq!(s.rejection, None, "call {call}: {:?}", s.rejection);
        let e = &record.trials[trial].evaluation;
        assert_eq!(
            e.outcome,
            Outcome::Missing,
            "call {call}: {}",
            message(trial)
        );
        assert!(
            !message(trial).contains("not checked after preprocessing"),
            "{}",
            message(trial)
        );
        assert_eq!(
            record.trials[trial].candidate.source,
            SourceRef::Variant(s.hash.clone())
        );
    }

    // The compile gate, for real, on each stored source at the knobs of its trial.
    let compile = |call: usize, trial: usize| {
        let config = &record.trials[trial].candidate.config;
        let job = CompileJob::for_candidate(
            &t,
            config,
            t.default_shape(),
            "sm_90a",
            Some(&sources[call].code),
        )
        .unwrap();
        gate.compile(&job)
    };
    let broken = compile(0, 1).expect_err("the broken answer compiled");
    let evaluation = broken.into_evaluation().unwrap();
    assert_eq!(evaluation.outcome, Outcome::CompileError);
    let m = evaluation.message.unwrap();
    assert!(m.contains("nvcc") && m.contains("error"), "{m}");
    for (call, trial) in [(2, 3), (3, 4)] {
        let compiled =
            compile(call, trial).unwrap_or_else(|e| panic!("call {call} does not compile: {e}"));
        assert!(compiled.report.registers.unwrap() > 0, "call {call}");
    }
}

#[test]
fn gemm_scripted_answers_meet_every_gate_without_a_gpu() {
    scripted_answers(
        "gemm_bf16",
        "llm-gemm",
        "dynamic_parallelism",
        "gemm_scripted_answers_meet_every_gate_without_a_gpu",
    );
}

#[test]
fn sdpa_scripted_answers_meet_every_gate_without_a_gpu() {
    scripted_answers(
        "sdpa_fp8",
        "llm-sdpa",
        "reads_reference",
        "sdpa_scripted_answers_meet_every_gate_without_a_gpu",
    );
}
