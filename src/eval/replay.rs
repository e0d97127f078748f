//! Recorded landscapes, and the evaluator that answers from one.
//!
//! A landscape is JSON Lines: one object per evaluated candidate. `tune --replay` reads it,
//! `export --format jsonl` writes it. Required: `config` (knob name to integer), `outcome`;
//! for `ok` also `p50_us` (and `p90_us`). Optional: `shape` (default: the task's first),
//! `registers`, `smem_bytes`, `spill_bytes`, `max_abs_err`, `bottleneck`, `metrics`, `source`,
//! `phases` (seconds per phase when it was recorded: handed back as they are, never invented).
//! Any other field is kept and ignored.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::candidate::{Candidate, SourceRef};
use crate::eval::{
    CompileReport, CorrectnessReport, Environment, EvalError, Evaluation, Evaluator, Outcome,
    Phases, Timing,
};
use crate::insight::{Bottleneck, InsightRules, Profile};
use crate::task::{Shape, Task};

/// One line of a landscape file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LandscapeRecord {
    pub config: serde_json::Map<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape: Option<String>,
    /// `src:<sha256>` for a source variant; absent for the task's own source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50_us: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p90_us: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registers: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smem_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spill_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_abs_err: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bottleneck: Option<Bottleneck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<BTreeMap<String, f64>>,
    /// Where the recorded evaluation's time went (profiling included), as measured when it was
    /// recorded; a replay hands these back as they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phases: Option<Phases>,
    /// Fields this version does not know: kept, ignored.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl LandscapeRecord {
    /// The record of an evaluation, for export.
    pub fn from_evaluation(
        config: serde_json::Map<String, serde_json::Value>,
        shape: &str,
        source: &SourceRef,
        eval: &Evaluation,
    ) -> LandscapeRecord {
        let compile = eval.compile.clone().unwrap_or_default();
        let profile = eval.profile.clone().unwrap_or_default();
        LandscapeRecord {
            config,
            shape: Some(shape.to_string()),
            source: match source {
                SourceRef::Base => None,
                v @ SourceRef::Variant(_) => Some(v.tag()),
            },
            outcome: eval.outcome,
            p50_us: eval.timing.as_ref().map(|t| t.p50_us),
            p90_us: eval.timing.as_ref().map(|t| t.p90_us),
            registers: compile.registers,
            smem_bytes: compile.smem_bytes,
            spill_bytes: compile.spill_bytes,
            max_abs_err: eval.correctness.as_ref().map(|c| c.max_abs_err),
            bottleneck: profile.bottleneck,
            metrics: (!profile.metrics.is_empty()).then_some(profile.metrics),
            phases: (!eval.phases.is_empty()).then(|| eval.phases.clone()),
            extra: serde_json::Map::new(),
        }
    }

    fn to_evaluation(&self, rules: &InsightRules) -> Evaluation {
        let compile =
            (self.registers.is_some() || self.smem_bytes.is_some() || self.spill_bytes.is_some())
                .then(|| CompileReport {
                    registers: self.registers,
                    smem_bytes: self.smem_bytes,
                    spill_bytes: self.spill_bytes,
                    ..CompileReport::default()
                });
        let correctness = self.max_abs_err.map(|e| CorrectnessReport {
            max_abs_err: e,
            ..CorrectnessReport::default()
        });
        let timing = self.p50_us.map(|p50| Timing {
            p50_us: p50,
            p90_us: self.p90_us.unwrap_or(p50),
            ..Timing::default()
        });
        let metrics = self.metrics.clone().unwrap_or_default();
        let bottleneck = self
            .bottleneck
            .or_else(|| (!metrics.is_empty()).then(|| rules.classify(&metrics)));
        let profile = (bottleneck.is_some() || !metrics.is_empty()).then_some(Profile {
            metrics,
            bottleneck,
            profile_s: None,
        });
        let message = self
            .extra
            .get("message")
            .and_then(|m| m.as_str())
            .map(str::to_string);
        Evaluation {
            outcome: self.outcome,
            message,
            compile,
            correctness,
            timing,
            profile,
            phases: self.phases.clone().unwrap_or_default(),
        }
    }
}

/// Answers candidates from a landscape file.
pub struct ReplayEvaluator {
    path: PathBuf,
    file_sha256: String,
    device: String,
    toolchain: String,
    rules: InsightRules,
    space: crate::space::Space,
    records: HashMap<(String, String), LandscapeRecord>,
    /// Lines whose config did not fit the task's knobs.
    pub skipped: usize,
    /// Lines that named a config and shape already seen (the later one is used).
    pub duplicates: usize,
    /// Optional delay per evaluation, to imitate a slow device in tests.
    pub delay: Option<std::time::Duration>,
}

impl ReplayEvaluator {
    pub fn load(path: &Path, task: &Task) -> Result<ReplayEvaluator, EvalError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            EvalError::Landscape(format!("cannot read landscape {}: {e}", path.display()))
        })?;
        let mut records = HashMap::new();
        let (mut skipped, mut duplicates) = (0, 0);
        let mut device = None;
        let mut toolchain = None;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let rec: LandscapeRecord = serde_json::from_str(line)
                .map_err(|e| EvalError::Landscape(format!("{}:{}: {e}", path.display(), i + 1)))?;
            if rec.outcome == Outcome::Ok && rec.p50_us.is_none_or(|p| !p.is_finite()) {
                return Err(EvalError::Landscape(format!(
                    "{}:{}: outcome `ok` needs a finite `p50_us`",
                    path.display(),
                    i + 1
                )));
            }
            let config = match task.space.from_json(&rec.config) {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!("{}:{}: skipped: {e}", path.display(), i + 1);
                    skipped += 1;
                    continue;
                }
            };
            let source = match rec.source.as_deref() {
                None | Some("base") => SourceRef::Base,
                Some(s) => SourceRef::Variant(
                    s.trim_start_matches(crate::candidate::VARIANT_PREFIX)
                        .to_string(),
                ),
            };
            let shape = rec
                .shape
                .clone()
                .unwrap_or_else(|| task.default_shape().name.clone());
            if device.is_none() {
                device = rec
                    .extra
                    .get("device")
                    .and_then(|v| v.as_str())
                    .map(str::to_string);
                toolchain = rec
                    .extra
                    .get("toolchain")
                    .and_then(|v| v.as_str())
                    .map(str::to_string);
            }
            let key = Candidate { source, config }.key(&task.space);
            if records.insert((shape, key), rec).is_some() {
                duplicates += 1;
            }
        }
        if records.is_empty() {
            return Err(EvalError::Landscape(format!(
                "{} has no line whose config fits the knobs of task `{}` ({} lines skipped)",
                path.display(),
                task.name,
                skipped
            )));
        }
        let file_sha256 = crate::task::sha256_hex(text.as_bytes());
        Ok(ReplayEvaluator {
            path: path.to_path_buf(),
            device: device.unwrap_or_else(|| "unknown device".into()),
            toolchain: toolchain.unwrap_or_else(|| "unknown toolchain".into()),
            file_sha256,
            rules: task.insight,
            space: task.space.clone(),
            records,
            skipped,
            duplicates,
            delay: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The sha256 of the landscape file, in hex.
    pub fn file_sha256(&self) -> &str {
        &self.file_sha256
    }

    /// The records for one shape, with their candidate keys, in no particular order.
    pub fn records_for<'a>(
        &'a self,
        shape: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a LandscapeRecord)> + 'a {
        self.records
            .iter()
            .filter(move |((s, _), _)| s == shape)
            .map(|((_, key), rec)| (key.as_str(), rec))
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn lookup(&self, candidate: &Candidate, shape: &Shape) -> Option<&LandscapeRecord> {
        self.records
            .get(&(shape.name.clone(), candidate.key(&self.space)))
    }
}

impl Evaluator for ReplayEvaluator {
    fn environment(&self) -> Environment {
        // Replayed figures are only ever reused by replays of the same file.
        Environment {
            device: format!("replay:{} ({})", &self.file_sha256[..12], self.device),
            toolchain: self.toolchain.clone(),
        }
    }

    fn evaluate(&mut self, candidate: &Candidate, shape: &Shape) -> Result<Evaluation, EvalError> {
        if let Some(d) = self.delay {
            std::thread::sleep(d);
        }
        Ok(match self.lookup(candidate, shape) {
            Some(rec) => rec.to_evaluation(&self.rules),
            None => Evaluation::failed(
                Outcome::Missing,
                format!(
                    "not in landscape {} for shape `{}`",
                    self.path.display(),
                    shape.name
                ),
            ),
        })
    }

    fn profile(
        &mut self,
        candidate: &Candidate,
        shape: &Shape,
    ) -> Result<Option<crate::insight::Profile>, EvalError> {
        Ok(self
            .lookup(candidate, shape)
            .and_then(|r| r.to_evaluation(&self.rules).profile))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_are_missing_unless_the_landscape_has_their_source() {
        let task = Task::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tasks/softmax_bf16"),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.jsonl");
        let config = r#"{"THREADS_PER_ROW":256,"ROWS_PER_BLOCK":1,"VEC":4}"#;
        let hash = "ab".repeat(32);
        std::fs::write(
            &path,
            format!(
                "{{\"config\":{config},\"outcome\":\"ok\",\"p50_us\":10.0}}\n{{\"config\":{config},\"source\":\"src:{hash}\",\"outcome\":\"ok\",\"p50_us\":8.0}}\n"
            ),
        )
        .unwrap();
        let mut r = ReplayEvaluator::load(&path, &task).unwrap();
        let shape = task.default_shape().clone();
        let config = task.space.default_config();
        let base = r
            .evaluate(&Candidate::base(config.clone()), &shape)
            .unwrap();
        assert_eq!(base.p50_us(), Some(10.0));
        let known = Candidate {
            source: SourceRef::Variant(hash),
            config: config.clone(),
        };
        r.register_source("ignored", "ignored");
        assert_eq!(r.evaluate(&known, &shape).unwrap().p50_us(), Some(8.0));
        let unknown = Candidate {
            source: SourceRef::Variant("cd".repeat(32)),
            config,
        };
        assert_eq!(
            r.evaluate(&unknown, &shape).unwrap().outcome,
            Outcome::Missing
        );
    }
}
