//! Other tools' runs on the same landscapes, scored like ours.
//!
//! A peer file is JSON Lines, one run per line, as `bench/kernel-tuner/kt_sim.py` writes them:
//! `tool`, `strategy`, `cache_sha256` (the sha256 of the Kernel Tuner cache the run replayed),
//! `budget` (evaluations allowed), `seed` and `best_us` (the best time it found, μs; null when
//! nothing it tried was correct). Other fields are ignored. A run counts at the checkpoint equal
//! to its budget, so a strategy that plans for its budget is judged on its own plan. Runs are
//! matched to a study through the landscape's sidecar (`<landscape>.meta.json`, written by
//! `evoengineer import kernel-tuner`), which names the cache's sha256.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{ScoreStats, Study};

/// One run of another tool.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct PeerRun {
    pub tool: String,
    pub strategy: String,
    pub cache_sha256: String,
    pub budget: usize,
    pub seed: u64,
    pub best_us: Option<f64>,
}

/// One strategy of another tool, scored on one landscape.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PeerArm {
    pub tool: String,
    pub strategy: String,
    /// Per checkpoint with runs, in the spec's order.
    pub scores: Vec<ScoreStats>,
}

impl PeerArm {
    /// `kernel_tuner:diff_evo`.
    pub fn name(&self) -> String {
        format!("{}:{}", self.tool, self.strategy)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: line {line}: {message}", path.display())]
    Line {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// Reads a peer file. A line with an `error` field (the run failed) is skipped.
pub fn load(path: &Path) -> Result<Vec<PeerRun>, PeerError> {
    let text = std::fs::read_to_string(path).map_err(|source| PeerError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut runs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |message: String| PeerError::Line {
            path: path.to_path_buf(),
            line: i + 1,
            message,
        };
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(format!("not JSON: {e}")))?;
        if value.get("error").is_some_and(|e| !e.is_null()) {
            continue;
        }
        let run: PeerRun = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
        if run.best_us.is_some_and(|b| !(b.is_finite() && b > 0.0)) {
            return Err(bad(format!(
                "best_us {} is not a positive time",
                run.best_us.unwrap_or_default()
            )));
        }
        runs.push(run);
    }
    Ok(runs)
}

/// The sha256 of the cache a landscape was imported from, read from its sidecar.
pub fn source_sha256(landscape: &Path) -> Option<String> {
    let meta = landscape.with_extension("meta.json");
    let text = std::fs::read_to_string(meta).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("imported_from")?;
    v.get("sha256")?.as_str().map(str::to_string)
}

/// Scores the runs of `runs` that replayed this study's landscape, per tool and strategy, in
/// the order they first appear.
pub fn attach(study: &mut Study, runs: &[PeerRun]) {
    let (Some(sha), Some(baseline)) = (&study.source_sha256, &study.baseline) else {
        return;
    };
    let mine: Vec<&PeerRun> = runs.iter().filter(|r| &r.cache_sha256 == sha).collect();
    let mut arms: Vec<(String, String)> = Vec::new();
    for r in &mine {
        let key = (r.tool.clone(), r.strategy.clone());
        if !arms.contains(&key) {
            arms.push(key);
        }
    }
    study.peers = arms
        .into_iter()
        .map(|(tool, strategy)| {
            let scores = study
                .spec
                .checkpoints
                .iter()
                .filter_map(|&n| {
                    let bests: Vec<Option<f64>> = mine
                        .iter()
                        .filter(|r| r.tool == tool && r.strategy == strategy && r.budget == n)
                        .map(|r| r.best_us)
                        .collect();
                    if bests.is_empty() {
                        return None;
                    }
                    ScoreStats::of(baseline, n, bests)
                })
                .collect();
            PeerArm {
                tool,
                strategy,
                scores,
            }
        })
        .collect();
}
