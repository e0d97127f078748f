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
//! The run stops after [`LlmSettings::calls`] calls ([`StopReason::Calls`]) or at the time
//! limit; [`Evolution::run_counted`] also gives the calls made and the tokens their answers
//! reported ([`CallTally`]). A source proposed again (the same text: the same hash, and at the
//! same knobs the same key) is the same candidate: the elite set keeps its first measurement.
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
use super::{Answer, ChatRequest, LlmError, Provider, ProviderConfig, Usage};
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

/// The model calls of a run, counted against `--llm-calls`, and the tokens their answers
/// reported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallTally {
    /// Calls made (a failed call counts; so does a resumed run's recorded call).
    pub made: usize,
    /// The most the run may make (`--llm-calls`).
    pub limit: usize,
    /// Calls whose answer reported token counts (`usage`). A resumed call whose source was
    /// first proposed by another call has no record of its own and counts as not reported.
    pub with_usage: usize,
    /// The reported counts, summed; `total_tokens` sums [`Usage::total`].
    pub usage: Usage,
}

impl CallTally {
    fn count(&mut self, usage: Option<Usage>) {
        self.made += 1;
        if let Some(u) = usage {
            self.with_usage += 1;
            self.usage.prompt_tokens += u.prompt_tokens;
            self.usage.completion_tokens += u.completion_tokens;
            self.usage.total_tokens += u.total();
        }
    }
}

/// What stays fixed over a run's calls.
struct Fixed {
    entry: String,
    base_code: String,
    base_p50: Option<f64>,
    dctx: DefenceContext,
    macros: Vec<usize>,
    /// The task's other verification shapes: a source must be correct there too before it
    /// may become an elite (`search::verify`).
    verify: Vec<Shape>,
}

/// What the loop keeps between calls.
struct State {
    codes: HashMap<String, String>,
    notes: HashMap<String, String>,
    history: Vec<String>,
    profiles: HashMap<String, Profile>,
    trials: Vec<Trial>,
    elites: EliteSet,
    tally: CallTally,
}

/// What a run measures with and records to.
struct Io<'x> {
    evaluator: &'x mut dyn Evaluator,
    journal: &'x mut dyn Journal,
    book: &'x mut dyn SourceBook,
    clock: &'x dyn Clock,
}

/// One call's pick: the operator, its parents and the elites as they were.
struct Pick {
    op: Operator,
    parents: Vec<Elite>,
    members: Vec<Elite>,
}

/// A model's answer, read: the source (if one was found), its notes, why it was turned away
/// (if it was), and the note of a source the preprocessed pass could not check.
struct Proposal {
    code: Option<String>,
    notes: Option<String>,
    rejection: Option<String>,
    unchecked: Option<String>,
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
        self.run_counted(evaluator, journal, book, resume, clock)
            .map(|(r, _)| r)
    }

    /// [`Evolution::run`], with the calls made and the tokens reported. It stops with
    /// [`StopReason::Calls`] once `--llm-calls` calls are made.
    pub fn run_counted(
        &self,
        evaluator: &mut dyn Evaluator,
        journal: &mut dyn Journal,
        book: &mut dyn SourceBook,
        resume: Vec<Trial>,
        clock: &dyn Clock,
    ) -> Result<(SearchResult, CallTally), SearchError> {
        let task = self.task;
        let space = &task.space;
        let spec = task.kernel.as_ref().ok_or_else(|| {
            SearchError::Setup(format!("task `{}` has no [kernel] section", task.name))
        })?;
        let base_code = std::fs::read_to_string(&spec.launch.source).map_err(|e| {
            SearchError::Setup(format!("cannot read {}: {e}", spec.launch.source.display()))
        })?;
        if let Some(why) = self.preprocessor.unavailable_reason() {
            tracing::warn!(
                "model-written sources are not checked after preprocessing (the static defences' second pass needs nvcc): {why}"
            );
        }
        let mut fixed = Fixed {
            entry: spec.launch.entry.clone(),
            base_code: base_code.clone(),
            base_p50: None,
            dctx: DefenceContext::for_task(task),
            macros: space.layer_indices(Layer::Macro),
            verify: task.verification_shapes(self.shape),
        };
        let mut rng = ChaCha8Rng::seed_from_u64(self.settings.seed);
        let mut st = State {
            codes: HashMap::from([("base".to_string(), base_code)]),
            notes: HashMap::new(),
            history: Vec::new(),
            profiles: HashMap::new(),
            trials: Vec::new(),
            elites: EliteSet::new(self.settings.effective_elites(), false),
            tally: CallTally {
                limit: self.llm.calls,
                ..CallTally::default()
            },
        };
        let mut io = Io {
            evaluator,
            journal,
            book,
            clock,
        };
        let mut resume = VecDeque::from(resume);

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
                let (e, reused) = self.measure(&base, io.evaluator, io.journal)?;
                (e, reused, None)
            }
        };
        self.finish_trial(
            &mut st, &fixed, base, evaluation, reused, recorded, started, &mut io,
        )?;
        fixed.base_p50 = st.trials.last().and_then(|t| t.evaluation.p50_us()); // as concluded

        let stopped_by = loop {
            let call = st.trials.len() - 1;
            if call >= self.llm.calls {
                break StopReason::Calls;
            }
            if resume.is_empty() {
                if let Some(limit) = self.settings.limits.time_limit {
                    if io.clock.elapsed() >= limit {
                        break StopReason::TimeLimit;
                    }
                }
            }
            let pick = self.pick(call, &mut rng, &st.elites);
            let config = pick
                .parents
                .first()
                .and_then(|p| p.candidate.as_ref())
                .map(|c| c.config.clone())
                .unwrap_or_else(|| space.default_config());
            let started = Instant::now();
            let (candidate, evaluation, reused, recorded) = match resume.pop_front() {
                Some(rec) => {
                    self.recall(&rec, call, &mut st, &mut io)?;
                    let (c, e) = (rec.candidate.clone(), rec.evaluation.clone());
                    (c, e, rec.reused, Some(rec))
                }
                None => {
                    let (c, e, reused) =
                        self.call_model(call, &pick, config, &fixed, &mut st, &mut io)?;
                    (c, e, reused, None)
                }
            };
            self.finish_trial(
                &mut st, &fixed, candidate, evaluation, reused, recorded, started, &mut io,
            )?;
            self.note_history(&mut st, call, pick.op);
        };

        let tally = st.tally;
        let result = step::finish(st.trials, &st.elites, stopped_by, resume.len(), io.clock)?;
        Ok((result, tally))
    }

    /// The operator and parents of call `call`. The same draws every call, so a resumed run
    /// chooses as the first one did.
    fn pick(&self, call: usize, rng: &mut ChaCha8Rng, elites: &EliteSet) -> Pick {
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
        Pick {
            op,
            parents,
            members,
        }
    }

    /// A resumed run's recorded call: its source read back from the book, its tokens counted
    /// if the book's record is this call's own.
    fn recall(
        &self,
        rec: &Trial,
        call: usize,
        st: &mut State,
        io: &mut Io,
    ) -> Result<(), SearchError> {
        let mut usage = None;
        if let SourceRef::Variant(h) = &rec.candidate.source {
            if let Some(s) = io.book.get(h)? {
                if !s.code.is_empty() {
                    io.evaluator.register_source(h, &s.code);
                    st.codes.insert(h.clone(), s.code.clone());
                }
                if let Some(n) = s.notes {
                    st.notes.insert(h.clone(), n);
                }
                if s.call == Some(call as i64) && s.run_id == self.run_id {
                    usage = s.usage;
                }
            }
        }
        st.tally.count(usage);
        Ok(())
    }

    /// One model call: the prompt, the answer, the source read out of it and stored with its
    /// lineage, and its evaluation (a `compile_error` when it was turned away).
    fn call_model(
        &self,
        call: usize,
        pick: &Pick,
        config: Config,
        fixed: &Fixed,
        st: &mut State,
        io: &mut Io,
    ) -> Result<(Candidate, Evaluation, bool), SearchError> {
        let request = self.prompt(pick, fixed, st)?;
        let prompt_hash = sha256_hex(format!("{}\0{}", request.system, request.user).as_bytes());
        let answer = self.provider.complete(&request);
        let (answer_text, model, usage) = match &answer {
            Ok(a) => (Some(a.text.clone()), Some(a.model.clone()), a.usage),
            Err(_) => (None, Some(self.provider.model()), None),
        };
        st.tally.count(usage);
        let Proposal {
            code,
            notes,
            rejection,
            unchecked,
        } = self.read(&answer, fixed, &config);
        let op = pick.op;
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
        let parent_hashes: Vec<String> = if pick.parents.is_empty() {
            vec!["base".into()]
        } else {
            pick.parents
                .iter()
                .map(|p| match p.candidate.as_ref().map(|c| &c.source) {
                    Some(SourceRef::Variant(h)) => h.clone(),
                    _ => "base".into(),
                })
                .collect()
        };
        io.book.put(&SourceRecord {
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
        // A source proposed before is the same candidate again (at the same knobs: the same
        // key), so the elite set keeps it once.
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
                io.evaluator.register_source(&hash, c);
                self.measure(&candidate, io.evaluator, io.journal)?
            }
            (None, None) => unreachable!("no code without a rejection"),
        };
        if let Some(note) = unchecked {
            evaluation.message = Some(match evaluation.message.take() {
                Some(m) => format!("{m}; {note}"),
                None => note,
            });
        }
        if let (Some(p), Some(b)) = (evaluation.p50_us(), fixed.base_p50) {
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
        Ok((candidate, evaluation, reused))
    }

    /// The prompt of one call, for the run's variant.
    fn prompt(&self, pick: &Pick, fixed: &Fixed, st: &State) -> Result<ChatRequest, SearchError> {
        let shown = |e: &Elite, label: String| Shown {
            code: e
                .candidate
                .as_ref()
                .map(|c| self.code_of(st, &c.source))
                .unwrap_or_default(),
            p50_us: Some(e.p50_us),
            label,
        };
        let parent_shown: Vec<Shown> = if pick.parents.is_empty() {
            vec![Shown {
                code: fixed.base_code.clone(),
                p50_us: fixed.base_p50,
                label: "the task's kernel".into(),
            }]
        } else {
            pick.parents
                .iter()
                .enumerate()
                .map(|(i, p)| shown(p, format!("parent {}", i + 1)))
                .collect()
        };
        let insight_of = pick.parents.first().or(pick.members.first());
        let profile = insight_of.and_then(|p| st.profiles.get(&p.key));
        let insights = Insights {
            bottleneck: profile
                .and_then(|p| p.bottleneck)
                .map(|b| b.as_str().to_string()),
            metrics: profile.map(|p| p.metrics.clone()).unwrap_or_default(),
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
            task: self.task,
            shape: self.shape,
            variant: self.settings.variant,
            operator: pick.op,
            base_code: &fixed.base_code,
            base_p50_us: fixed.base_p50,
            parents: parent_shown,
            elites: pick
                .members
                .iter()
                .enumerate()
                .map(|(i, e)| shown(e, format!("elite {}", i + 1)))
                .collect(),
            insights,
        };
        prompt::build(self.templates, &input).map_err(SearchError::Setup)
    }

    /// The source out of an answer, through both passes of the static defences.
    fn read(&self, answer: &Result<Answer, LlmError>, fixed: &Fixed, config: &Config) -> Proposal {
        let turned_away = |code, notes, why: String| Proposal {
            code,
            notes,
            rejection: Some(why),
            unchecked: None,
        };
        let text = match answer {
            Ok(a) => &a.text,
            Err(e) => return turned_away(None, None, format!("call failed: {e}")),
        };
        match extract::extract(text, &fixed.entry) {
            Err(r) => turned_away(None, None, r.to_string()),
            Ok(ex) => match self.defend(&ex.code, &fixed.dctx, config) {
                Err(r) => turned_away(Some(ex.code), Some(ex.notes), r.to_string()),
                Ok(unchecked) => Proposal {
                    code: Some(ex.code),
                    notes: Some(ex.notes),
                    rejection: None,
                    unchecked,
                },
            },
        }
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

    /// Notes the last trial, as concluded (found wrong at another shape, say), for the
    /// prompts' history.
    fn note_history(&self, st: &mut State, call: usize, op: Operator) {
        let Some(Trial {
            candidate: c,
            evaluation: e,
            ..
        }) = st.trials.last()
        else {
            return;
        };
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
        st: &mut State,
        fixed: &Fixed,
        candidate: Candidate,
        evaluation: Evaluation,
        reused: bool,
        recorded: Option<Trial>,
        started: Instant,
        io: &mut Io,
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
            st.trials.len(),
            &mut st.elites,
            &fixed.macros,
            self.settings.insights,
            &mut step::Sinks {
                shape: self.shape,
                verify: &fixed.verify,
                evaluator: io.evaluator,
                journal: io.journal,
                clock: io.clock,
            },
        )?;
        // The profile taken as it entered the elites, else one that came with the evaluation.
        if let Some(p) = trial.profile.as_ref().or(trial.evaluation.profile.as_ref()) {
            st.profiles.insert(key, p.clone());
        }
        st.trials.push(trial);
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
                // As a server that sends no total.
                usage: Some(Usage {
                    prompt_tokens: 10,
                    completion_tokens: 5,
                    total_tokens: 0,
                }),
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
        let (r, asked, _) = run_with(variant_, answers, calls, resume, book, &mut NoJournal);
        (r, asked)
    }

    fn run_with(
        variant_: Variant,
        answers: &[String],
        calls: usize,
        resume: Vec<Trial>,
        book: &mut HashMap<String, SourceRecord>,
        journal: &mut dyn Journal,
    ) -> (SearchResult, usize, CallTally) {
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
        .run_counted(
            &mut ReadP50::default(),
            journal,
            book,
            resume,
            &WallClock::new(std::time::Duration::ZERO),
        )
        .unwrap();
        let asked = provider.asked.borrow().len();
        (r.0, asked, r.1)
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

    /// Remembers every correct measurement and offers it again, as the store does for a key
    /// measured before.
    #[derive(Default)]
    struct Reusing {
        measured: HashMap<String, Evaluation>,
        reused: usize,
    }

    impl Journal for Reusing {
        fn reuse(&mut self, key: &str) -> Result<Option<Evaluation>, JournalError> {
            let e = self.measured.get(key).cloned();
            self.reused += usize::from(e.is_some());
            Ok(e)
        }
        fn trial(&mut self, t: &Trial, _: &[Elite]) -> Result<(), JournalError> {
            if t.evaluation.p50_us().is_some() {
                self.measured
                    .entry(t.key.clone())
                    .or_insert(t.evaluation.clone());
            }
            Ok(())
        }
    }

    fn elite_keys(r: &SearchResult) -> Vec<String> {
        r.elites.iter().map(|e| e.key.clone()).collect()
    }

    #[test]
    fn the_same_source_proposed_twice_is_one_elite() {
        // Calls 0 and 1 answer the same source (at the same knobs: the same key); call 2 a
        // faster one. Measured again, or reused from the journal, it enters the set once.
        let answers = [variant(80), variant(80), variant(70)];
        for reusing in [false, true] {
            let mut journal = Reusing::default();
            let mut none = NoJournal;
            let journal: &mut dyn Journal = if reusing { &mut journal } else { &mut none };
            let (r, _, _) = run_with(
                Variant::Full,
                &answers,
                3,
                vec![],
                &mut HashMap::new(),
                journal,
            );
            assert_eq!(r.trials[1].key, r.trials[2].key);
            assert_eq!(r.trials[2].reused, reusing);
            let keys = elite_keys(&r);
            assert_eq!(keys.len(), 3, "{keys:?}");
            assert_eq!(
                keys.iter().collect::<std::collections::HashSet<_>>().len(),
                3,
                "{keys:?}"
            );
            let p50s: Vec<f64> = r.elites.iter().map(|e| e.p50_us).collect();
            assert_eq!(p50s, [70.0, 80.0, 100.0]);
        }
    }

    #[test]
    fn calls_and_tokens_are_counted_against_the_limit() {
        let answers = [variant(80), "FAIL".to_string(), variant(70), variant(70)];
        let mut book = HashMap::new();
        let (r, asked, tally) = run_with(
            Variant::Full,
            &answers,
            4,
            vec![],
            &mut book,
            &mut NoJournal,
        );
        assert_eq!(asked, 4);
        assert_eq!(r.stopped_by, StopReason::Calls);
        // The failed call counts as a call, without tokens; the totals are prompt +
        // completion (the scripted answers send no total).
        let want = CallTally {
            made: 4,
            limit: 4,
            with_usage: 3,
            usage: Usage {
                prompt_tokens: 30,
                completion_tokens: 15,
                total_tokens: 45,
            },
        };
        assert_eq!(tally, want);
        // Resumed after call 1: the recorded calls count, with the tokens their own records
        // hold; call 3 repeats call 2's source, whose record is call 2's, so resuming after
        // call 3 leaves call 3's tokens unknown.
        let (_, asked, resumed) = run_with(
            Variant::Full,
            &answers[2..],
            4,
            r.trials[..3].to_vec(),
            &mut book,
            &mut NoJournal,
        );
        assert_eq!(asked, 2);
        assert_eq!(resumed, want);
        let (_, asked, resumed) = run_with(
            Variant::Full,
            &answers,
            4,
            r.trials.clone(),
            &mut book,
            &mut NoJournal,
        );
        assert_eq!(asked, 0);
        assert_eq!(resumed.made, 4);
        assert_eq!(resumed.with_usage, 2);
        assert_eq!(resumed.usage.total_tokens, 30);
    }

    #[test]
    fn usage_without_a_total_is_prompt_plus_completion() {
        let body = |usage: &str| {
            format!(
                r#"{{"model":"m","choices":[{{"message":{{"content":"x"}}}}],"usage":{usage}}}"#
            )
        };
        let usage = |u: &str| crate::llm::parse_completion(&body(u), "m").unwrap().2;
        let want = Some(Usage {
            prompt_tokens: 600,
            completion_tokens: 300,
            total_tokens: 900,
        });
        assert_eq!(
            usage(r#"{"prompt_tokens":600,"completion_tokens":300}"#),
            want
        );
        assert_eq!(
            usage(r#"{"prompt_tokens":600,"completion_tokens":300,"total_tokens":0}"#),
            want
        );
        assert_eq!(usage(r#"{"input_tokens":600,"output_tokens":300}"#), want);
        assert_eq!(
            usage(r#"{"prompt_tokens":600,"completion_tokens":300,"total_tokens":950}"#)
                .unwrap()
                .total_tokens,
            950
        );
        assert_eq!(usage("{}"), None);
    }
}
