//! The code-evolution loop: a language model proposes kernel sources, every proposal passes the
//! same gates as any candidate.
//!
//! Trial 0 is the task's own kernel at its default knobs (the reference point for speedups).
//! Then each model call is one trial: an operator is chosen (`init` first, then `mutation` of an
//! elite, or `crossover` of two elites with probability [`LlmSettings::crossover_rate`]), the
//! prompt is built for the run's variant (Free: I1 + the best code; Insight: + I3; Full: + I2 +
//! I3, see [`super::prompt`]), the model answers, the source is extracted and statically checked
//! ([`super::extract`], [`super::defence`]: as written, then as nvcc preprocesses it with the
//! knob values it is compiled with) and stored with its lineage; a proposal that got
//! that far is evaluated as `Candidate { source: Variant(sha256 of code), config: parent's }`.
//! A failed call, an empty or malformed answer or a statically rejected source is recorded as a
//! `compile_error` trial whose message says why: the run goes on and the call counts. A
//! proposal the preprocessed pass could not check (no nvcc) says so in its trial's message.
//!
//! A correct variant more than [`LlmSettings::suspect_speedup`] times faster than the task's
//! kernel gets a `REVIEW:` note in its message (shown by `show`): such speedups are more often
//! a hole in the harness than a discovery.
//!
//! Resuming: the recorded trials are replayed (their sources read back from the store), the
//! random choices drawn again in the same order, and the calls go on from the first unrecorded
//! one; no recorded call is asked again.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::defence::{self, DefenceContext, Preprocessed, Preprocessor};
use super::extract;
use super::prompt::{self, Insights, Operator, PromptInput, Shown, Templates};
use super::{Provider, ProviderConfig};
use crate::candidate::{Candidate, SourceRef};
use crate::eval::compile::CompileJob;
use crate::eval::{Evaluation, Evaluator, Outcome};
use crate::insight::Profile;
use crate::search::step;
use crate::search::{
    Clock, Elite, EliteSet, Journal, JournalError, SearchError, SearchResult, Settings, StopReason,
    Trial,
};
use crate::space::{Config, Layer};
use crate::store::SourceRecord;
use crate::task::{sha256_hex, Shape, Task};

/// Code evolution's settings, recorded with the run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LlmSettings {
    pub provider: ProviderConfig,
    /// Model calls (each is one trial).
    pub calls: usize,
    /// Probability of crossover once there are two elites.
    pub crossover_rate: f64,
    /// Speedups over the task's kernel above this get a review note.
    pub suspect_speedup: f64,
    /// Earlier proposals summarised in I3.
    pub history: usize,
}

impl LlmSettings {
    pub fn new(provider: ProviderConfig, calls: usize) -> LlmSettings {
        LlmSettings {
            provider,
            calls,
            crossover_rate: 0.25,
            suspect_speedup: 10.0,
            history: 4,
        }
    }
}

/// Where proposals are kept (the store; a map in tests).
pub trait SourceBook {
    fn put(&mut self, rec: &SourceRecord) -> Result<(), JournalError>;
    fn get(&mut self, hash: &str) -> Result<Option<SourceRecord>, JournalError>;
}

impl SourceBook for &crate::store::Store {
    fn put(&mut self, rec: &SourceRecord) -> Result<(), JournalError> {
        self.put_source(rec)
            .map(|_| ())
            .map_err(|e| JournalError(e.to_string()))
    }
    fn get(&mut self, hash: &str) -> Result<Option<SourceRecord>, JournalError> {
        self.source(hash).map_err(|e| JournalError(e.to_string()))
    }
}

impl SourceBook for HashMap<String, SourceRecord> {
    fn put(&mut self, rec: &SourceRecord) -> Result<(), JournalError> {
        self.entry(rec.hash.clone()).or_insert_with(|| rec.clone());
        Ok(())
    }
    fn get(&mut self, hash: &str) -> Result<Option<SourceRecord>, JournalError> {
        Ok(HashMap::get(self, hash).cloned())
    }
}

/// Everything a code-evolution run needs besides the evaluator and the records.
pub struct Evolution<'a> {
    pub task: &'a Task,
    pub shape: &'a Shape,
    pub settings: &'a Settings,
    pub llm: &'a LlmSettings,
    pub provider: &'a dyn Provider,
    pub templates: &'a Templates,
    /// Recorded with every source.
    pub run_id: Option<i64>,
    /// The static defences' second pass: nvcc's preprocessor as the compile runs it (or why
    /// there is none: then every proposal's trial says it was not checked after preprocessing).
    pub preprocessor: &'a Preprocessor,
}

/// The sha256 a source is stored under.
pub fn source_hash(code: &str) -> String {
    sha256_hex(code.as_bytes())
}

struct State {
    codes: HashMap<String, String>,
    notes: HashMap<String, String>,
    history: Vec<String>,
    profiles: HashMap<String, Profile>,
}

impl Evolution<'_> {
    /// Runs the loop to the end of its calls (or the time limit).
    pub fn run(
        &self,
        evaluator: &mut dyn Evaluator,
        journal: &mut dyn Journal,
        book: &mut dyn SourceBook,
        resume: Vec<Trial>,
        clock: &dyn Clock,
    ) -> Result<SearchResult, SearchError> {
        let task = self.task;
        let space = &task.space;
        let spec = task.kernel.as_ref().ok_or_else(|| {
            SearchError::Setup(format!("task `{}` has no [kernel] section", task.name))
        })?;
        let entry = spec.launch.entry.clone();
        let base_code = std::fs::read_to_string(&spec.launch.source).map_err(|e| {
            SearchError::Setup(format!("cannot read {}: {e}", spec.launch.source.display()))
        })?;
        let dctx = DefenceContext::for_task(task);
        if let Some(why) = self.preprocessor.unavailable_reason() {
            tracing::warn!(
                "model-written sources are not checked after preprocessing (the static defences' second pass needs nvcc): {why}"
            );
        }
        let macros = space.layer_indices(Layer::Macro);
        let mut rng = ChaCha8Rng::seed_from_u64(self.settings.seed);
        let mut elites = EliteSet::new(self.settings.effective_elites(), false);
        let mut trials: Vec<Trial> = Vec::new();
        let mut resume = VecDeque::from(resume);
        let mut st = State {
            codes: HashMap::from([("base".to_string(), base_code.clone())]),
            notes: HashMap::new(),
            history: Vec::new(),
            profiles: HashMap::new(),
        };

        // Trial 0: the task's own kernel at its defaults.
        let base = Candidate::base(space.default_config());
        let started = Instant::now();
        let (evaluation, reused, recorded) = match resume.pop_front() {
            Some(rec) => {
                if rec.candidate != base {
                    return Err(SearchError::Resume(format!(
                        "trial 0 of the record is {}, not the task's kernel at its defaults",
                        rec.key
                    )));
                }
                (rec.evaluation.clone(), rec.reused, Some(rec))
            }
            None => {
                let (e, reused) = self.measure(&base, evaluator, journal)?;
                (e, reused, None)
            }
        };
        let base_p50 = evaluation.p50_us();
        self.finish_trial(
            base,
            evaluation,
            reused,
            recorded,
            started,
            &mut trials,
            &mut elites,
            &macros,
            &mut st,
            evaluator,
            journal,
            clock,
        )?;

        let stopped_by = loop {
            let call = trials.len() - 1;
            if call >= self.llm.calls {
                break StopReason::Budget;
            }
            if resume.is_empty() {
                if let Some(limit) = self.settings.limits.time_limit {
                    if clock.elapsed() >= limit {
                        break StopReason::TimeLimit;
                    }
                }
            }
            // The same draws every call, so a resumed run chooses as the first one did.
            let r: f64 = rng.random();
            let pick: u64 = rng.random();
            let members: Vec<Elite> = elites.members().to_vec();
            let op = if call == 0 || members.is_empty() {
                Operator::Init
            } else if members.len() >= 2 && r < self.llm.crossover_rate {
                Operator::Crossover
            } else {
                Operator::Mutation
            };
            let full = self.settings.variant == crate::search::Variant::Full;
            let n = members.len().max(1);
            let a = if full { (pick as usize) % n } else { 0 };
            let parents: Vec<Elite> = match op {
                Operator::Init => vec![],
                Operator::Mutation => vec![members[a].clone()],
                Operator::Crossover => {
                    let b = if full {
                        (a + 1 + ((pick >> 32) as usize) % (n - 1)) % n
                    } else {
                        1
                    };
                    let (a, b) = if full { (a, b) } else { (0, 1) };
                    vec![members[a].clone(), members[b].clone()]
                }
            };
            let config = parents
                .first()
                .and_then(|p| p.candidate.as_ref())
                .map(|c| c.config.clone())
                .unwrap_or_else(|| space.default_config());
            let started = Instant::now();

            if let Some(rec) = resume.pop_front() {
                if let SourceRef::Variant(h) = &rec.candidate.source {
                    if let Some(s) = book.get(h)? {
                        if !s.code.is_empty() {
                            evaluator.register_source(h, &s.code);
                            st.codes.insert(h.clone(), s.code.clone());
                        }
                        if let Some(n) = s.notes {
                            st.notes.insert(h.clone(), n);
                        }
                    }
                }
                let (e, reused) = (rec.evaluation.clone(), rec.reused);
                let c = rec.candidate.clone();
                self.note_history(&mut st, call, op, &c, &e);
                self.finish_trial(
                    c,
                    e,
                    reused,
                    Some(rec),
                    started,
                    &mut trials,
                    &mut elites,
                    &macros,
                    &mut st,
                    evaluator,
                    journal,
                    clock,
                )?;
                continue;
            }

            let shown = |e: &Elite, label: String| Shown {
                code: e
                    .candidate
                    .as_ref()
                    .map(|c| self.code_of(&st, &c.source))
                    .unwrap_or_default(),
                p50_us: Some(e.p50_us),
                label,
            };
            let parent_shown: Vec<Shown> = if parents.is_empty() {
                vec![Shown {
                    code: base_code.clone(),
                    p50_us: base_p50,
                    label: "the task's kernel".into(),
                }]
            } else {
                parents
                    .iter()
                    .enumerate()
                    .map(|(i, p)| shown(p, format!("parent {}", i + 1)))
                    .collect()
            };
            let insight_of = parents.first().or(members.first());
            let insights = Insights {
                bottleneck: insight_of
                    .and_then(|p| st.profiles.get(&p.key))
                    .and_then(|p| p.bottleneck)
                    .map(|b| b.as_str().to_string()),
                metrics: insight_of
                    .and_then(|p| st.profiles.get(&p.key))
                    .map(|p| p.metrics.clone())
                    .unwrap_or_default(),
                registers: insight_of.and_then(|p| p.registers),
                smem_bytes: insight_of.and_then(|p| p.smem_bytes),
                history: st
                    .history
                    .iter()
                    .rev()
                    .take(self.llm.history)
                    .rev()
                    .cloned()
                    .collect(),
            };
            let input = PromptInput {
                task,
                shape: self.shape,
                variant: self.settings.variant,
                operator: op,
                base_code: &base_code,
                base_p50_us: base_p50,
                parents: parent_shown,
                elites: members
                    .iter()
                    .enumerate()
                    .map(|(i, e)| shown(e, format!("elite {}", i + 1)))
                    .collect(),
                insights,
            };
            let request = prompt::build(self.templates, &input).map_err(SearchError::Setup)?;
            let prompt_hash =
                sha256_hex(format!("{}\0{}", request.system, request.user).as_bytes());
            let answer = self.provider.complete(&request);
            let (answer_text, model, usage, failure) = match &answer {
                Ok(a) => (Some(a.text.clone()), Some(a.model.clone()), a.usage, None),
                Err(e) => (None, Some(self.provider.model()), None, Some(e.to_string())),
            };
            let mut unchecked = None;
            let (code, notes, rejection) = match (&answer_text, failure) {
                (_, Some(f)) => (None, None, Some(format!("call failed: {f}"))),
                (Some(text), None) => match extract::extract(text, &entry) {
                    Err(r) => (None, None, Some(r.to_string())),
                    Ok(ex) => match self.defend(&ex.code, &dctx, &config) {
                        Err(r) => (Some(ex.code), Some(ex.notes), Some(r.to_string())),
                        Ok(note) => {
                            unchecked = note;
                            (Some(ex.code), Some(ex.notes), None)
                        }
                    },
                },
                (None, None) => (None, None, Some("no answer".into())),
            };
            let hash = match &code {
                Some(c) => source_hash(c),
                None => sha256_hex(
                    format!(
                        "no code\0{}\0{prompt_hash}\0{}\0{}",
                        op.as_str(),
                        answer_text.as_deref().unwrap_or(""),
                        rejection.as_deref().unwrap_or("")
                    )
                    .as_bytes(),
                ),
            };
            let parent_hashes: Vec<String> = if parents.is_empty() {
                vec!["base".into()]
            } else {
                parents
                    .iter()
                    .map(|p| match p.candidate.as_ref().map(|c| &c.source) {
                        Some(SourceRef::Variant(h)) => h.clone(),
                        _ => "base".into(),
                    })
                    .collect()
            };
            book.put(&SourceRecord {
                hash: hash.clone(),
                code: code.clone().unwrap_or_default(),
                parents: parent_hashes,
                operator: Some(op.as_str().into()),
                model,
                prompt_hash: Some(prompt_hash),
                answer: answer_text,
                run_id: self.run_id,
                call: Some(call as i64),
                notes: notes.clone(),
                usage,
                rejection: rejection.clone(),
                created_at: String::new(),
            })?;
            if let Some(c) = &code {
                st.codes.insert(hash.clone(), c.clone());
            }
            if let Some(n) = notes {
                st.notes.insert(hash.clone(), n);
            }
            let candidate = Candidate {
                source: SourceRef::Variant(hash.clone()),
                config,
            };
            let (mut evaluation, reused) = match (&rejection, &code) {
                (Some(r), _) => (
                    Evaluation::failed(
                        Outcome::CompileError,
                        format!("rejected before compiling: {r}"),
                    ),
                    false,
                ),
                (None, Some(c)) => {
                    evaluator.register_source(&hash, c);
                    self.measure(&candidate, evaluator, journal)?
                }
                (None, None) => unreachable!("no code without a rejection"),
            };
            if let Some(note) = unchecked {
                evaluation.message = Some(match evaluation.message.take() {
                    Some(m) => format!("{m}; {note}"),
                    None => note,
                });
            }
            if let (Some(p), Some(b)) = (evaluation.p50_us(), base_p50) {
                let speedup = b / p;
                if speedup > self.llm.suspect_speedup {
                    let note = format!(
                        "REVIEW: {speedup:.1}x faster than the task's kernel at its defaults (over {}x): check this source before trusting it",
                        self.llm.suspect_speedup
                    );
                    evaluation.message = Some(match evaluation.message.take() {
                        Some(m) => format!("{note}; {m}"),
                        None => note,
                    });
                }
            }
            self.note_history(&mut st, call, op, &candidate, &evaluation);
            self.finish_trial(
                candidate,
                evaluation,
                reused,
                None,
                started,
                &mut trials,
                &mut elites,
                &macros,
                &mut st,
                evaluator,
                journal,
                clock,
            )?;
        };

        step::finish(trials, &elites, stopped_by, resume.len(), clock)
    }

    /// Both passes of the static defences on `code`, as it will be compiled with `config`;
    /// a note when the second (preprocessed) pass could not run.
    fn defend(
        &self,
        code: &str,
        dctx: &DefenceContext,
        config: &Config,
    ) -> Result<Option<String>, defence::Rejection> {
        defence::check(code, dctx)?;
        let pp = self.preprocessor;
        let checked =
            match CompileJob::for_candidate(self.task, config, self.shape, pp.arch(), Some(code)) {
                Ok(job) => defence::check_preprocessed(&job, dctx, pp)?,
                Err(e) => Preprocessed::NotChecked(e.to_string()),
            };
        Ok(match checked {
            Preprocessed::Checked => None,
            Preprocessed::NotChecked(why) => Some(format!(
                "not checked after preprocessing ({})",
                super::excerpt(&why, 200)
            )),
        })
    }

    fn code_of(&self, st: &State, source: &SourceRef) -> String {
        let key = match source {
            SourceRef::Base => "base",
            SourceRef::Variant(h) => h.as_str(),
        };
        st.codes.get(key).cloned().unwrap_or_default()
    }

    fn note_history(
        &self,
        st: &mut State,
        call: usize,
        op: Operator,
        c: &Candidate,
        e: &Evaluation,
    ) {
        let result = match e.p50_us() {
            Some(p) => format!("correct, p50 {p:.2} us"),
            None => format!(
                "{}{}",
                e.outcome,
                e.message
                    .as_deref()
                    .map(|m| format!(" ({})", super::excerpt(m, 160)))
                    .unwrap_or_default()
            ),
        };
        let notes = match &c.source {
            SourceRef::Variant(h) => st
                .notes
                .get(h)
                .map(|n| format!("; idea: {}", super::excerpt(n, 300)))
                .unwrap_or_default(),
            SourceRef::Base => String::new(),
        };
        st.history
            .push(format!("call {call} ({}): {result}{notes}", op.as_str()));
    }

    /// Reuses a stored measurement or evaluates.
    fn measure(
        &self,
        c: &Candidate,
        evaluator: &mut dyn Evaluator,
        journal: &mut dyn Journal,
    ) -> Result<(Evaluation, bool), SearchError> {
        let key = c.key(&self.task.space);
        if let Some(e) = journal.reuse(&key)? {
            return Ok((e, true));
        }
        Ok((evaluator.evaluate(c, self.shape)?, false))
    }

    #[allow(clippy::too_many_arguments)]
    fn finish_trial(
        &self,
        candidate: Candidate,
        evaluation: Evaluation,
        reused: bool,
        recorded: Option<Trial>,
        started: Instant,
        trials: &mut Vec<Trial>,
        elites: &mut EliteSet,
        macros: &[usize],
        st: &mut State,
        evaluator: &mut dyn Evaluator,
        journal: &mut dyn Journal,
        clock: &dyn Clock,
    ) -> Result<(), SearchError> {
        let key = candidate.key(&self.task.space);
        let (trial, _) = step::conclude(
            step::Measured {
                candidate,
                key: key.clone(),
                evaluation,
                reused,
                recorded,
                started,
                gpu: None,
            },
            trials.len(),
            elites,
            macros,
            self.settings.insights,
            &mut step::Sinks {
                shape: self.shape,
                evaluator,
                journal,
                clock,
            },
        )?;
        // The profile taken as it entered the elites, else one that came with the evaluation.
        if let Some(p) = trial.profile.as_ref().or(trial.evaluation.profile.as_ref()) {
            st.profiles.insert(key, p.clone());
        }
        trials.push(trial);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The loop's logic with a scripted model and an evaluator that neither compiles nor
    //! measures (its p50 is read from a `// P=NN` comment in the source): operators, lineage,
    //! the review note, determinism and resume. The real compile path is in tests/llm_loop.rs.

    use std::cell::RefCell;
    use std::path::Path;

    use super::*;
    use crate::eval::{Environment, EvalError, Timing};
    use crate::llm::{Answer, ChatRequest, LlmError, ProviderSpec};
    use crate::search::{NoJournal, Variant, WallClock};

    #[derive(Debug)]
    struct Scripted {
        answers: Vec<String>,
        asked: RefCell<Vec<ChatRequest>>,
    }

    impl Provider for Scripted {
        fn describe(&self) -> String {
            "scripted".into()
        }
        fn model(&self) -> String {
            "scripted".into()
        }
        fn complete(&self, r: &ChatRequest) -> Result<Answer, LlmError> {
            let mut asked = self.asked.borrow_mut();
            asked.push(r.clone());
            let text = self.answers[(asked.len() - 1).min(self.answers.len() - 1)].clone();
            if text == "FAIL" {
                return Err(LlmError::Call("scripted failure".into()));
            }
            Ok(Answer {
                text,
                model: "scripted".into(),
                usage: None,
                attempts: 1,
            })
        }
    }

    #[derive(Default)]
    struct ReadP50 {
        sources: HashMap<String, String>,
    }

    impl Evaluator for ReadP50 {
        fn environment(&self) -> Environment {
            Environment::default()
        }
        fn register_source(&mut self, hash: &str, code: &str) {
            self.sources.insert(hash.into(), code.into());
        }
        fn evaluate(&mut self, c: &Candidate, _: &Shape) -> Result<Evaluation, EvalError> {
            let p50 = match &c.source {
                SourceRef::Base => 100.0,
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
                timing: Some(Timing {
                    p50_us: p50,
                    p90_us: p50,
                    ..Timing::default()
                }),
                ..Evaluation::failed(Outcome::Ok, "fake")
            })
        }
        fn profile(&mut self, _: &Candidate, _: &Shape) -> Result<Option<Profile>, EvalError> {
            Ok(None)
        }
    }

    fn variant(p: u32) -> String {
        format!(
            "idea {p}\n```cuda\n// P={p}\nextern \"C\" __global__ void softmax_bf16_kernel() {{}}\n```\n"
        )
    }

    fn run(
        variant_: Variant,
        answers: &[String],
        calls: usize,
        resume: Vec<Trial>,
        book: &mut HashMap<String, SourceRecord>,
    ) -> (SearchResult, usize) {
        let task =
            Task::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tasks/softmax_bf16")).unwrap();
        let mut llm = LlmSettings::new(
            ProviderConfig::new(ProviderSpec::parse("command:unused").unwrap()),
            calls,
        );
        llm.crossover_rate = 1.0;
        let mut settings = Settings::new(variant_, 3);
        settings.llm = Some(llm.clone());
        let provider = Scripted {
            answers: answers.to_vec(),
            asked: RefCell::new(vec![]),
        };
        let templates = Templates::builtin();
        let r = Evolution {
            task: &task,
            shape: task.default_shape(),
            settings: &settings,
            llm: &llm,
            provider: &provider,
            templates: &templates,
            run_id: None,
            preprocessor: &Preprocessor::unavailable("none in this test"),
        }
        .run(
            &mut ReadP50::default(),
            &mut NoJournal,
            book,
            resume,
            &WallClock::new(std::time::Duration::ZERO),
        )
        .unwrap();
        let asked = provider.asked.borrow().len();
        (r, asked)
    }

    #[test]
    fn operators_lineage_review_and_failures() {
        let answers = [
            variant(80),
            variant(70),
            "FAIL".to_string(),
            variant(60),
            variant(5),
        ];
        let mut book = HashMap::new();
        let (r, asked) = run(Variant::Full, &answers, 5, vec![], &mut book);
        assert_eq!(asked, 5);
        assert_eq!(r.trials.len(), 6);
        assert_eq!(
            r.trials[0].candidate,
            Candidate::base(r.trials[0].candidate.config.clone())
        );
        let by_call = |c: i64| book.values().find(|s| s.call == Some(c)).unwrap().clone();
        assert_eq!(by_call(0).operator.as_deref(), Some("init"));
        assert_eq!(by_call(0).parents, ["base"]);
        // The task's kernel is an elite too: from call 1 on there are two, and with crossover
        // rate 1 every call crosses two of them over.
        let c1 = by_call(1);
        assert_eq!(c1.operator.as_deref(), Some("crossover"));
        assert_eq!(c1.parents.len(), 2);
        assert!(c1.parents.contains(&"base".to_string()));
        assert!(c1.parents.contains(&by_call(0).hash));
        let c3 = by_call(3);
        assert_eq!(c3.operator.as_deref(), Some("crossover"));
        assert_eq!(c3.parents.len(), 2);
        assert!(by_call(2)
            .rejection
            .as_deref()
            .unwrap()
            .contains("scripted failure"));
        assert_eq!(r.trials[3].evaluation.outcome, Outcome::CompileError);
        let review = r.trials[5].evaluation.message.as_deref().unwrap();
        assert!(review.starts_with("REVIEW: 20.0x"), "{review}");
        // The second pass could not run, and the trial says so.
        assert_eq!(
            r.trials[4].evaluation.message.as_deref(),
            Some(
                "fake; not checked after preprocessing (nvcc is not available: none in this test)"
            )
        );
        assert_eq!(r.winner().unwrap().p50_us, 5.0);
    }

    #[test]
    fn same_seed_same_answers_same_run_and_resume_asks_only_the_rest() {
        let answers: Vec<String> = [90, 70, 60, 65, 50, 55].into_iter().map(variant).collect();
        let keys = |r: &SearchResult| r.trials.iter().map(|t| t.key.clone()).collect::<Vec<_>>();
        let mut book = HashMap::new();
        let (a, _) = run(Variant::Full, &answers, 6, vec![], &mut book);
        let (b, _) = run(Variant::Full, &answers, 6, vec![], &mut HashMap::new());
        assert_eq!(keys(&a), keys(&b));
        // Resume after call 2 (trials 0..=3 recorded): calls 3..5 are asked, nothing else.
        let (c, asked) = run(
            Variant::Full,
            &answers[3..],
            6,
            a.trials[..4].to_vec(),
            &mut book,
        );
        assert_eq!(asked, 3);
        assert_eq!(keys(&c), keys(&a));
    }

    #[test]
    fn free_keeps_one_best_and_never_crosses_over() {
        let answers: Vec<String> = [90, 70, 60, 65].into_iter().map(variant).collect();
        let mut book = HashMap::new();
        let (r, _) = run(Variant::Free, &answers, 4, vec![], &mut book);
        assert_eq!(r.elites.len(), 1);
        assert!(book
            .values()
            .all(|s| s.operator.as_deref() != Some("crossover")));
    }
}
