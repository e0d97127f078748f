//! What follows one evaluation, the same for the knob search and for code evolution: offer the
//! candidate to the elite set, record the trial, and profile it if it entered the elites with
//! insights on. And how a finished loop becomes a [`SearchResult`].

use std::time::Instant;

use crate::candidate::Candidate;
use crate::eval::{Evaluation, Evaluator};
use crate::task::Shape;

use super::{Clock, Elite, EliteSet, Journal, SearchError, SearchResult, StopReason, Trial};

/// One evaluation, measured now (`recorded: None`) or taken from a resumed run's record.
pub struct Measured {
    pub candidate: Candidate,
    pub key: String,
    pub evaluation: Evaluation,
    pub reused: bool,
    pub recorded: Option<Trial>,
    pub started: Instant,
    /// The GPU that measured it, when there are several.
    pub gpu: Option<u32>,
}

/// Where a step reports and what it may call.
pub struct Sinks<'a> {
    /// The run's shape.
    pub shape: &'a Shape,
    /// The task's other verification shapes ([`crate::task::Task::verification_shapes`]): a
    /// candidate must pass correctness at each before it may become an elite.
    pub verify: &'a [Shape],
    pub evaluator: &'a mut dyn Evaluator,
    pub journal: &'a mut dyn Journal,
    pub clock: &'a dyn Clock,
}

/// Offers `m` to the elites, records it, profiles it if it entered the elite set and
/// `insights` is on. Returns the trial (numbered `seq`) and whether the elite set changed.
/// A candidate that would enter the elite set is first checked at the task's other
/// verification shapes ([`super::verify`]); one that fails there is recorded `incorrect` and
/// not offered. A trial replayed from a resumed run's record is not checked again.
/// A key offered before (a source a model proposed again, a measurement reused from the store
/// of a candidate already seen) is recorded as a trial but leaves the elite set as it was: the
/// first measurement of a key stands ([`EliteSet::offer`]).
pub fn conclude(
    m: Measured,
    seq: usize,
    elites: &mut EliteSet,
    macros: &[usize],
    insights: bool,
    s: &mut Sinks,
) -> Result<(Trial, bool), SearchError> {
    let Measured {
        candidate,
        key,
        mut evaluation,
        reused,
        recorded,
        started,
        gpu,
    } = m;
    let mut changed = false;
    if let Some(elite) = Elite::of(&key, &candidate, &evaluation, macros) {
        let eligible = recorded.is_some()
            || s.verify.is_empty()
            || !elites.would_enter(&elite)
            || super::verify::at_other_shapes(
                &mut *s.evaluator,
                &candidate,
                &mut evaluation,
                s.shape,
                s.verify,
            )?;
        if eligible {
            changed = elites.offer(elite);
        }
    }
    let mut trial = Trial {
        seq,
        candidate: candidate.clone(),
        key: key.clone(),
        evaluation,
        reused,
        wall_s: match &recorded {
            Some(r) => r.wall_s,
            None => started.elapsed().as_secs_f64(),
        },
        elapsed_s: match &recorded {
            Some(r) => r.elapsed_s,
            None => s.clock.elapsed().as_secs_f64(),
        },
        profiled: false,
        profile: None,
    };
    if recorded.is_none() {
        s.journal.trial_on(&trial, elites.members(), gpu)?;
    }
    if insights && changed && elites.contains(&key) {
        let (profile, fresh) = match &recorded {
            Some(r) if r.profiled => (r.profile.clone(), false),
            _ => match s.journal.reuse_profile(&key)? {
                // Taken in an earlier run: its ncu time was not spent in this one.
                Some(p) => (
                    p.map(|p| crate::insight::Profile {
                        profile_s: None,
                        ..p
                    }),
                    true,
                ),
                None => (s.evaluator.profile(&candidate, s.shape)?, true),
            },
        };
        trial.profiled = true;
        trial.profile = profile;
        if fresh {
            s.journal.profiled(&trial)?;
        }
    }
    Ok((trial, changed))
}

/// The result of a finished loop; an error if a resumed record holds trials it never reached.
pub fn finish(
    trials: Vec<Trial>,
    elites: &EliteSet,
    stopped_by: StopReason,
    left_in_record: usize,
    clock: &dyn Clock,
) -> Result<SearchResult, SearchError> {
    if left_in_record > 0 {
        return Err(SearchError::Resume(format!(
            "the search stopped ({stopped_by}) after {} trials, but the record holds {left_in_record} more: the settings changed since the run started",
            trials.len(),
        )));
    }
    Ok(SearchResult {
        elapsed_s: trials
            .last()
            .map(|t| t.elapsed_s)
            .unwrap_or(0.0)
            .max(clock.elapsed().as_secs_f64()),
        trials,
        elites: elites.members().to_vec(),
        stopped_by,
    })
}
