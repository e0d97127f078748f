//! Code evolution end to end against a local chat-completions server (tests/support), on the
//! task softmax_bf16: answers are real variants of its kernel (loops unrolled further, exp2
//! through `ex2.approx`), plus a malformed answer, an empty one, a call that times out, a 429
//! before a success, a known cheat and a source that does not compile.
//!
//! Every proposal is extracted, statically checked and COMPILED with the real nvcc for sm_90a
//! (the compile gate finds the wheels of `scripts/setup-cuda`; without nvcc the test prints
//! `SKIPPED: nvcc not found` and passes). There is no GPU here, so the evaluator of this test
//! compiles for real and then FAKES THE TIMING: a deterministic function of the source hash
//! (and 5 us for a source marked `FAST_FAKE`, to exercise the >10x review note). Nothing in
//! this test is a measurement; correctness is not checked (no GPU to run the kernels).

#[path = "support/chat_server.rs"]
mod chat_server;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use chat_server::{ChatServer, Reply};
use evoengineer::candidate::{Candidate, SourceRef};
use evoengineer::eval::compile::{
    CacheSetting, CompileError, CompileGate, CompileJob, CompilerSettings,
};
use evoengineer::eval::{Environment, EvalError, Evaluation, Evaluator, Outcome, Timing};
use evoengineer::insight::Profile;
use evoengineer::llm::defence::Preprocessor;
use evoengineer::llm::evolve::{Evolution, LlmSettings};
use evoengineer::llm::prompt::Templates;
use evoengineer::llm::{ProviderConfig, ProviderSpec, Retry};
use evoengineer::search::{Settings, Variant, WallClock};
use evoengineer::store::{NewRun, Store};
use evoengineer::task::{Compiler, Shape, Task};

/// Compiles through the real compile gate, then invents a timing (see the file's comment).
struct CompileThenFakeTime {
    task: Task,
    gate: CompileGate,
    sources: HashMap<String, String>,
    evaluations: usize,
    /// Fail (as a vanished GPU would) on this evaluation, counting from 1.
    fail_at: Option<usize>,
}

impl Evaluator for CompileThenFakeTime {
    fn environment(&self) -> Environment {
        Environment {
            device: "no GPU: timings faked by the test".into(),
            toolchain: "nvcc sm_90a".into(),
        }
    }

    fn register_source(&mut self, hash: &str, code: &str) {
        self.sources.insert(hash.into(), code.into());
    }

    fn evaluate(&mut self, c: &Candidate, shape: &Shape) -> Result<Evaluation, EvalError> {
        self.evaluations += 1;
        if self.fail_at == Some(self.evaluations) {
            return Err(EvalError::Device("the test pulls the plug here".into()));
        }
        let code = match &c.source {
            SourceRef::Base => None,
            SourceRef::Variant(h) => Some(self.sources.get(h).expect("registered").clone()),
        };
        let job =
            CompileJob::for_candidate(&self.task, &c.config, shape, "sm_90a", code.as_deref())
                .map_err(|e| EvalError::Other(e.to_string()))?;
        let compiled = match self.gate.compile(&job) {
            Ok(c) => c,
            Err(e @ CompileError::Rejected(_)) => return e.into_evaluation(),
            Err(e) => return Err(EvalError::Other(e.to_string())),
        };
        // FAKE timing, deterministic: no GPU here.
        let p50 = match (&c.source, code.as_deref()) {
            (SourceRef::Base, _) => 100.0,
            (_, Some(code)) if code.contains("FAST_FAKE") => 5.0,
            (SourceRef::Variant(h), _) => {
                50.0 + f64::from(u8::from_str_radix(&h[..2], 16).unwrap() % 40)
            }
        };
        Ok(Evaluation {
            outcome: Outcome::Ok,
            message: Some("timing faked by the test (no GPU)".into()),
            compile: Some(compiled.report),
            correctness: None,
            timing: Some(Timing {
                p50_us: p50,
                p90_us: p50 * 1.05,
                ..Timing::default()
            }),
            profile: None,
            phases: Default::default(),
        })
    }

    fn profile(&mut self, _: &Candidate, _: &Shape) -> Result<Option<Profile>, EvalError> {
        Ok(None)
    }
}

fn answer(idea: &str, code: &str) -> Reply {
    Reply::completion(&format!("{idea}\n\n```cuda\n{code}```\n"))
}

#[test]
fn code_evolution_against_a_local_endpoint_compiles_stores_and_resumes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let task = Task::load(&root.join("tasks/softmax_bf16")).unwrap();
    let shape = task.default_shape().clone();
    let tmp = tempfile::tempdir().unwrap();
    let gate_settings = CompilerSettings {
        cache: CacheSetting::Dir(tmp.path().join("cubins")),
        ..CompilerSettings::default()
    };
    if let Err(e) = CompileGate::new(gate_settings.clone()).toolchain(Compiler::Nvcc) {
        // Straight to stderr, in one write: libtest captures `eprintln!` of passing tests.
        let line = format!("\nSKIPPED: nvcc not found (run scripts/setup-cuda) [llm_loop: {e}]\n");
        let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
        return;
    }
    let base = std::fs::read_to_string(root.join("tasks/softmax_bf16/kernel.cu")).unwrap();
    let unrolled = base.replace("#pragma unroll 4", "#pragma unroll 8");
    assert_ne!(unrolled, base);
    let ex2 = base.replace(
        "__device__ __forceinline__ float ex2(float x) { return exp2f(x); }",
        "__device__ __forceinline__ float ex2(float x) {\n  float y;\n  asm(\"ex2.approx.ftz.f32 %0, %1;\" : \"=f\"(y) : \"f\"(x));\n  return y;\n}",
    );
    assert_ne!(ex2, base);
    let broken = unrolled.replace(
        "const int group = threadIdx.x / TPR;",
        "const int group = ;",
    );
    let fast = format!("// FAST_FAKE\n{ex2}");
    let cheat =
        std::fs::read_to_string(root.join("tests/fixtures/cheats/cached_results.cu")).unwrap();
    let server = ChatServer::start(vec![
        Reply::status(429, r#"{"error":{"message":"rate limited"}}"#).header("Retry-After", "0"),
        answer("Unroll the streaming loops further.", &unrolled),
        Reply::completion("I would vectorise the loads, but here is no code."),
        Reply::completion(""),
        Reply::completion("too late").delayed(Duration::from_secs(3)),
        Reply::completion("too late again").delayed(Duration::from_secs(3)),
        answer("Use ex2.approx for exp2.", &ex2),
        answer("Cache the results.", &cheat),
        answer("Unroll and simplify.", &broken),
        answer("Everything at once.", &fast),
    ]);

    let mut provider = ProviderConfig::new(
        ProviderSpec::parse(&format!("openai:{}#test-model", server.base_url())).unwrap(),
    );
    provider.timeout = Duration::from_secs(1);
    provider.retry = Retry {
        max_retries: 1,
        base: Duration::from_millis(10),
        max_wait: Duration::from_millis(100),
    };
    let llm = LlmSettings::new(provider.clone(), 8);
    let mut settings = Settings::new(Variant::Full, 7);
    settings.llm = Some(llm.clone());
    let provider = provider.build().unwrap();
    let templates = Templates::load(&task.dir).unwrap();

    let store = Store::open(tmp.path().join("runs.db")).unwrap();
    let env = Environment {
        device: "no GPU: timings faked by the test".into(),
        toolchain: "nvcc sm_90a".into(),
    };
    let run_id = store
        .create_run(&NewRun {
            task: task.name.clone(),
            task_dir: task.dir.clone(),
            shape: shape.name.clone(),
            kernel_hash: task.source_hash.clone(),
            settings: settings.clone(),
            evaluator: "test".into(),
            environment: env.clone(),
            command_line: "test".into(),
        })
        .unwrap();
    // The static defences' second pass, with the compile gate's nvcc.
    let preprocessor = Preprocessor::new(&gate_settings, "sm_90a");
    assert_eq!(preprocessor.unavailable_reason(), None);
    let evolution = Evolution {
        task: &task,
        shape: &shape,
        settings: &settings,
        llm: &llm,
        provider: provider.as_ref(),
        templates: &templates,
        run_id: Some(run_id),
        preprocessor: &preprocessor,
    };
    let evaluator = |fail_at| CompileThenFakeTime {
        task: task.clone(),
        gate: CompileGate::new(gate_settings.clone()),
        sources: HashMap::new(),
        evaluations: 0,
        fail_at,
    };

    // First attempt: the evaluator dies on its third evaluation (the ex2 variant).
    let mut journal = store
        .journal(run_id, &task.space, &task.source_hash, &shape.name, &env)
        .unwrap();
    let mut book = &store;
    let err = evolution
        .run(
            &mut evaluator(Some(3)),
            &mut journal,
            &mut book,
            vec![],
            &WallClock::new(Duration::ZERO),
        )
        .unwrap_err();
    assert!(err.to_string().contains("pulls the plug"), "{err}");
    store.fail_run(run_id, &err.to_string()).unwrap();
    let record = store.load_run(run_id, &task.space).unwrap();
    let outcomes: Vec<_> = record.trials.iter().map(|t| t.evaluation.outcome).collect();
    assert_eq!(
        outcomes,
        [
            Outcome::Ok,           // the task's kernel
            Outcome::Ok,           // unrolled (after a 429)
            Outcome::CompileError, // no code
            Outcome::CompileError, // empty answer
            Outcome::CompileError, // timed out twice
        ]
    );
    let msg = |i: usize| {
        record.trials[i]
            .evaluation
            .message
            .clone()
            .unwrap_or_default()
    };
    assert!(msg(2).contains("no_code"), "{}", msg(2));
    assert!(msg(3).contains("empty_answer"), "{}", msg(3));
    assert!(
        msg(4).contains("call failed") && msg(4).contains("after 2 attempts"),
        "{}",
        msg(4)
    );
    let requests_before = server.count();
    assert_eq!(
        requests_before, 7,
        "429 + 1 + 1 + 1 + 2 timeouts + the ex2 call in flight"
    );

    // Resume: the recorded calls are replayed, not asked again.
    store.reopen_run(run_id).unwrap();
    let mut journal = store
        .journal(run_id, &task.space, &task.source_hash, &shape.name, &env)
        .unwrap();
    let result = evolution
        .run(
            &mut evaluator(None),
            &mut journal,
            &mut book,
            record.trials.clone(),
            &WallClock::new(Duration::ZERO),
        )
        .unwrap();
    store.finish_run(run_id, &result).unwrap();
    assert_eq!(result.trials.len(), 9, "the task's kernel and 8 calls");
    assert_eq!(server.count() - requests_before, 4, "calls 4..7 only");
    let record = store.load_run(run_id, &task.space).unwrap();
    assert_eq!(record.trials.len(), 9);
    // The ex2 answer was in flight when the evaluator died: call 4 got the next one, the cheat.
    let t = &record.trials[5];
    assert_eq!(t.evaluation.outcome, Outcome::CompileError);
    assert!(
        t.evaluation
            .message
            .as_deref()
            .unwrap()
            .contains("persistent_state"),
        "{:?}",
        t.evaluation.message
    );
    // The broken source reached nvcc and was refused there.
    let t = &record.trials[6];
    assert_eq!(t.evaluation.outcome, Outcome::CompileError);
    let m = t.evaluation.message.as_deref().unwrap();
    assert!(
        !m.contains("rejected before compiling") && m.contains("nvcc"),
        "{m}"
    );
    // The fake 20x speedup is flagged for review.
    let t = &record.trials[7];
    assert_eq!(t.evaluation.p50_us(), Some(5.0));
    assert!(t
        .evaluation
        .message
        .as_deref()
        .unwrap()
        .starts_with("REVIEW: 20.0x"));
    assert_eq!(result.winner().unwrap().p50_us, 5.0);
    assert!(
        t.evaluation.compile.as_ref().unwrap().registers.unwrap() > 0,
        "compiled for real"
    );

    // Every proposal is stored with its lineage.
    let sources = store.run_sources(run_id).unwrap();
    // 8 calls + the ex2 call lost in flight, less one: the server repeats its last answer for
    // call 7, the same code as call 6, stored once under its hash.
    assert_eq!(sources.len(), 8);
    let first = &sources[0];
    assert_eq!(first.call, Some(0));
    assert_eq!(first.operator.as_deref(), Some("init"));
    assert_eq!(first.parents, ["base"]);
    assert_eq!(first.code, unrolled);
    assert_eq!(
        first.notes.as_deref(),
        Some("Unroll the streaming loops further.")
    );
    assert_eq!(first.model.as_deref(), Some("test-model"));
    assert_eq!(first.usage.unwrap().total_tokens, 150);
    assert!(first.prompt_hash.as_ref().unwrap().len() == 64);
    assert!(first.answer.as_deref().unwrap().contains("```cuda"));
    assert!(first.rejection.is_none());
    for s in &sources[1..] {
        assert!(
            s.parents.iter().all(|p| p == "base" || p.len() == 64),
            "{:?}",
            s.parents
        );
        assert!(s.operator.is_some());
    }
    let rejected = sources.iter().filter(|s| s.rejection.is_some()).count();
    assert_eq!(rejected, 4, "no code, empty, timeout, cheat");
    // Candidates of variants name their source; the first variant kept the default knobs.
    let t = &record.trials[1];
    assert_eq!(t.candidate.source, SourceRef::Variant(first.hash.clone()));
    assert_eq!(t.candidate.config, task.space.default_config());
    // The prompts carried the task and, for Full, the elites and insights.
    let reqs = server.requests.lock().unwrap();
    let last: serde_json::Value = serde_json::from_str(&reqs.last().unwrap().2).unwrap();
    let user = last["messages"][1]["content"].as_str().unwrap();
    assert!(user.contains("softmax_bf16_kernel"));
    assert!(user.contains("Elite solutions so far (I2)"), "{user}");
    assert!(user.contains("Profiling insights (I3)"));
    assert!(user.contains("Earlier proposals"));
}
