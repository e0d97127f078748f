//! When a search stops: whichever rule fires first.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// `--budget` evaluations were made.
    Budget,
    /// The elite set did not change for `--patience` evaluations.
    Converged,
    /// `--time-limit` passed.
    TimeLimit,
    /// Nothing left to propose: every valid config was evaluated, or the strategy's
    /// neighbourhoods and samples found nothing new.
    Exhausted,
    /// Code evolution: `--llm-calls` model calls were made.
    Calls,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Budget => "budget",
            StopReason::Converged => "converged",
            StopReason::TimeLimit => "time_limit",
            StopReason::Exhausted => "exhausted",
            StopReason::Calls => "calls",
        }
    }

    pub fn parse(s: &str) -> Option<StopReason> {
        [
            StopReason::Budget,
            StopReason::Converged,
            StopReason::TimeLimit,
            StopReason::Exhausted,
            StopReason::Calls,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// The model calls of a code-evolution run: made, and the most it may make (`--llm-calls`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallsMade {
    pub made: usize,
    pub limit: usize,
}

impl StopReason {
    /// Why a run stopped, in words, against the limit that fired: `stopped by budget: 100
    /// evaluations made` for a knob search; for code evolution (`calls`: its model calls) the
    /// calls made against `--llm-calls`, `stopped: 6 of 6 model calls made`, whatever the
    /// record says (runs recorded before `calls` existed say `budget`).
    pub fn describe(self, limits: &Limits, calls: Option<CallsMade>) -> String {
        match (self, calls) {
            (StopReason::Budget | StopReason::Calls, Some(c)) => {
                format!("stopped: {} of {} model calls made", c.made, c.limit)
            }
            (StopReason::TimeLimit, Some(c)) => format!(
                "stopped by time limit after {} of {} model calls",
                c.made, c.limit
            ),
            (StopReason::Calls, None) => "stopped: every model call made".to_string(),
            (StopReason::Budget, None) => {
                format!("stopped by budget: {} evaluations made", limits.budget)
            }
            (StopReason::Converged, _) => format!(
                "stopped by convergence: the elite set did not change for {} evaluations",
                limits.patience
            ),
            (StopReason::TimeLimit, None) => "stopped by time limit".to_string(),
            (StopReason::Exhausted, _) => {
                "stopped by exhaustion: nothing new left to propose".to_string()
            }
        }
    }
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// Evaluations at most.
    pub budget: usize,
    /// Evaluations without a change of the elite set before the search counts as converged.
    pub patience: usize,
    pub time_limit: Option<Duration>,
}

impl Limits {
    /// The first rule that fires, given the state of the search.
    pub fn check(
        &self,
        evaluations: usize,
        unchanged_for: usize,
        may_converge: bool,
        elapsed: Duration,
    ) -> Option<StopReason> {
        if evaluations >= self.budget {
            Some(StopReason::Budget)
        } else if self.time_limit.is_some_and(|t| elapsed >= t) {
            Some(StopReason::TimeLimit)
        } else if may_converge && self.patience > 0 && unchanged_for >= self.patience {
            Some(StopReason::Converged)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rule_fires() {
        let l = Limits {
            budget: 10,
            patience: 3,
            time_limit: Some(Duration::from_secs(60)),
        };
        let s = Duration::from_secs;
        assert_eq!(l.check(10, 0, true, s(0)), Some(StopReason::Budget));
        assert_eq!(l.check(5, 0, true, s(60)), Some(StopReason::TimeLimit));
        assert_eq!(l.check(5, 3, true, s(1)), Some(StopReason::Converged));
        assert_eq!(l.check(5, 3, false, s(1)), None);
        assert_eq!(l.check(5, 2, true, s(59)), None);
    }

    #[test]
    fn code_evolution_stops_are_told_in_model_calls() {
        let l = Limits {
            budget: 100,
            patience: 3,
            time_limit: None,
        };
        let c = Some(CallsMade { made: 6, limit: 6 });
        assert_eq!(
            StopReason::Calls.describe(&l, c),
            "stopped: 6 of 6 model calls made"
        );
        // A record from before `calls` existed says `budget`: still told in calls.
        assert_eq!(
            StopReason::Budget.describe(&l, c),
            "stopped: 6 of 6 model calls made"
        );
        assert_eq!(
            StopReason::TimeLimit.describe(&l, Some(CallsMade { made: 2, limit: 6 })),
            "stopped by time limit after 2 of 6 model calls"
        );
        assert_eq!(
            StopReason::Budget.describe(&l, None),
            "stopped by budget: 100 evaluations made"
        );
    }

    #[test]
    fn names_round_trip() {
        for r in ["budget", "converged", "time_limit", "exhausted", "calls"] {
            assert_eq!(StopReason::parse(r).unwrap().as_str(), r);
        }
    }
}
