//! Elite preservation: the top K correct candidates by median latency.
//!
//! Ranking: lower p50; ties broken by fewer registers, then less shared memory, then the
//! candidate key (so the order is total and runs are reproducible). With `diverse`, the set
//! prefers candidates of different macro variants and fills up with the rest only when there
//! are fewer than K macro variants among the correct candidates.
//!
//! The set is a set of keys: a candidate's key (`Candidate::key`: its source, `base` or
//! `src:<sha256 of the text>`, and its knob values) enters at most once. The first correct
//! measurement of a key is the one that counts: offering the key again (the same source
//! proposed twice by a model, a measurement reused from the store, a re-measurement with
//! another p50) changes nothing, whether the key is a member or only in the pool. Keeping the
//! better of repeated timings instead would favour lucky, noisy ones, and would make the set
//! depend on how often a candidate happened to be proposed.

use std::cmp::Ordering;
use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::candidate::Candidate;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Elite {
    pub key: String,
    #[serde(skip)]
    pub candidate: Option<Candidate>,
    pub p50_us: f64,
    pub p90_us: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registers: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smem_bytes: Option<u64>,
    /// Values of the macro knobs, for `diverse`.
    #[serde(skip)]
    pub macro_key: Vec<i64>,
}

impl Elite {
    /// The elite a correct evaluation makes of a candidate (`None` without a p50 and p90):
    /// the one builder of the search and of a run loaded back from the store. `macros`: the
    /// indices of the macro knobs.
    pub fn of(
        key: &str,
        candidate: &crate::candidate::Candidate,
        evaluation: &crate::eval::Evaluation,
        macros: &[usize],
    ) -> Option<Elite> {
        Some(Elite {
            key: key.to_string(),
            candidate: Some(candidate.clone()),
            p50_us: evaluation.p50_us()?,
            p90_us: evaluation.p90_us()?,
            registers: evaluation.registers(),
            smem_bytes: evaluation.smem_bytes(),
            macro_key: macros.iter().map(|&i| candidate.config.0[i]).collect(),
        })
    }

    fn rank(&self, other: &Elite) -> Ordering {
        self.p50_us
            .total_cmp(&other.p50_us)
            .then(
                self.registers
                    .unwrap_or(u32::MAX)
                    .cmp(&other.registers.unwrap_or(u32::MAX)),
            )
            .then(
                self.smem_bytes
                    .unwrap_or(u64::MAX)
                    .cmp(&other.smem_bytes.unwrap_or(u64::MAX)),
            )
            .then_with(|| self.key.cmp(&other.key))
    }
}

#[derive(Clone, Debug)]
pub struct EliteSet {
    k: usize,
    diverse: bool,
    /// Every correct candidate seen, best first; one entry per key.
    pool: Vec<Elite>,
    /// The keys in `pool`.
    keys: HashSet<String>,
    members: Vec<Elite>,
}

impl EliteSet {
    pub fn new(k: usize, diverse: bool) -> EliteSet {
        assert!(k >= 1, "an elite set holds at least one candidate");
        EliteSet {
            k,
            diverse,
            pool: Vec::new(),
            keys: HashSet::new(),
            members: Vec::new(),
        }
    }

    pub fn k(&self) -> usize {
        self.k
    }

    /// Best first.
    pub fn members(&self) -> &[Elite] {
        &self.members
    }

    pub fn best(&self) -> Option<&Elite> {
        self.members.first()
    }

    pub fn contains(&self, key: &str) -> bool {
        self.members.iter().any(|e| e.key == key)
    }

    /// Whether offering `e` now would make it a member, without offering it: the search
    /// checks a candidate at the task's other shapes only then. A key offered before never
    /// enters again; and a candidate that does not enter when offered never becomes a member
    /// later (members are the top of the pool, and the pool only gains better candidates).
    pub fn would_enter(&self, e: &Elite) -> bool {
        if self.keys.contains(&e.key) {
            return false;
        }
        if !self.diverse {
            return self.members.len() < self.k
                || self
                    .members
                    .last()
                    .is_some_and(|last| e.rank(last) == Ordering::Less);
        }
        let mut probe = self.clone();
        probe.offer(e.clone());
        probe.contains(&e.key)
    }

    /// `elites = top_k(elites ∪ {e})`. Returns whether the set of members changed: never when
    /// `e.key` was offered before (the first measurement of a key stands, see the module).
    pub fn offer(&mut self, e: Elite) -> bool {
        if !self.keys.insert(e.key.clone()) {
            return false;
        }
        let at = self
            .pool
            .binary_search_by(|x| x.rank(&e))
            .unwrap_or_else(|i| i);
        self.pool.insert(at, e);
        let before: Vec<String> = self.members.iter().map(|m| m.key.clone()).collect();
        self.members = self.select();
        before
            != self
                .members
                .iter()
                .map(|m| m.key.clone())
                .collect::<Vec<_>>()
    }

    fn select(&self) -> Vec<Elite> {
        if !self.diverse {
            return self.pool.iter().take(self.k).cloned().collect();
        }
        let mut chosen: Vec<&Elite> = Vec::new();
        for e in &self.pool {
            if chosen.len() == self.k {
                break;
            }
            if !chosen.iter().any(|c| c.macro_key == e.macro_key) {
                chosen.push(e);
            }
        }
        for e in &self.pool {
            if chosen.len() == self.k {
                break;
            }
            if !chosen.iter().any(|c| c.key == e.key) {
                chosen.push(e);
            }
        }
        chosen.sort_by(|a, b| a.rank(b));
        chosen.into_iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn e(key: &str, p50: f64, regs: Option<u32>, mac: i64) -> Elite {
        Elite {
            key: key.into(),
            candidate: None,
            p50_us: p50,
            p90_us: p50,
            registers: regs,
            smem_bytes: None,
            macro_key: vec![mac],
        }
    }

    #[test]
    fn keeps_top_k_best_first() {
        let mut s = EliteSet::new(2, false);
        assert!(s.offer(e("a", 5.0, None, 0)));
        assert!(s.offer(e("b", 3.0, None, 0)));
        assert!(!s.offer(e("c", 9.0, None, 0)));
        assert!(s.offer(e("d", 1.0, None, 0)));
        let keys: Vec<_> = s.members().iter().map(|m| m.key.as_str()).collect();
        assert_eq!(keys, ["d", "b"]);
    }

    #[test]
    fn ties_go_to_fewer_registers() {
        let mut s = EliteSet::new(1, false);
        s.offer(e("a", 2.0, Some(128), 0));
        assert!(s.offer(e("b", 2.0, Some(64), 0)));
        assert_eq!(s.best().unwrap().key, "b");
    }

    #[test]
    fn diverse_prefers_other_macro_variants() {
        let mut s = EliteSet::new(2, true);
        s.offer(e("a", 1.0, None, 0));
        s.offer(e("b", 2.0, None, 0));
        s.offer(e("c", 3.0, None, 1));
        let keys: Vec<_> = s.members().iter().map(|m| m.key.as_str()).collect();
        assert_eq!(keys, ["a", "c"]);
        // With one macro variant only, it fills up with the rest.
        let mut s = EliteSet::new(2, true);
        s.offer(e("a", 1.0, None, 0));
        s.offer(e("b", 2.0, None, 0));
        assert_eq!(s.members().len(), 2);
    }

    #[test]
    fn a_key_offered_again_changes_nothing() {
        let mut s = EliteSet::new(3, false);
        assert!(s.offer(e("a", 5.0, None, 0)));
        assert!(s.offer(e("b", 3.0, None, 0)));
        // The same key again, as measured (a reused measurement), faster and slower.
        assert!(!s.offer(e("a", 5.0, None, 0)));
        assert!(!s.offer(e("a", 1.0, None, 0)));
        assert!(!s.offer(e("b", 9.0, Some(1), 0)));
        let got: Vec<_> = s
            .members()
            .iter()
            .map(|m| (m.key.as_str(), m.p50_us))
            .collect();
        assert_eq!(got, [("b", 3.0), ("a", 5.0)]);
        // A key in the pool but not a member (K = 1) is a repeat too.
        let mut s = EliteSet::new(1, true);
        assert!(s.offer(e("a", 1.0, None, 0)));
        assert!(!s.offer(e("b", 2.0, None, 1)));
        assert!(!s.offer(e("b", 0.5, None, 1)));
        assert_eq!(s.best().unwrap().key, "a");
        assert_eq!(s.pool.len(), 2);
    }

    /// One offer: a key out of a few (so they repeat), a p50 out of a few (so ranks tie),
    /// registers, a macro variant.
    fn arb_offer() -> impl Strategy<Value = Elite> {
        (
            0u8..8,
            prop::sample::select(vec![1.0, 2.0, 2.5, 3.0, 7.0]),
            prop::option::of(prop::sample::select(vec![32u32, 64, 128])),
            0i64..3,
        )
            .prop_map(|(k, p50, regs, mac)| e(&format!("k{k}"), p50, regs, mac))
    }

    fn no_repeats(keys: impl Iterator<Item = String>) -> bool {
        let mut seen = HashSet::new();
        keys.into_iter().all(|k| seen.insert(k))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

        /// Random offers with repeated keys, some with another p50 (a re-measurement): no key
        /// twice in the members or the pool, members best first and at most K, a repeated key
        /// never changes the members, and each key keeps its first measurement.
        #[test]
        fn the_elite_set_is_a_set(
            offers in prop::collection::vec(arb_offer(), 0..40),
            k in 1usize..5,
            diverse in any::<bool>(),
        ) {
            let mut s = EliteSet::new(k, diverse);
            let mut first: Vec<Elite> = Vec::new();
            let mut left_out: HashSet<String> = HashSet::new();
            for o in offers {
                let before = s.members().to_vec();
                let repeat = first.iter().any(|f| f.key == o.key);
                if !repeat {
                    first.push(o.clone());
                }
                let enters = s.would_enter(&o);
                let key = o.key.clone();
                let changed = s.offer(o);
                prop_assert_eq!(enters, s.contains(&key) && !repeat);
                if !repeat && !enters {
                    left_out.insert(key);
                }
                // What did not enter when it was offered never enters later.
                prop_assert!(s.members().iter().all(|m| !left_out.contains(&m.key)));
                if repeat {
                    prop_assert!(!changed);
                    prop_assert_eq!(&before, s.members());
                }
                let m = s.members();
                prop_assert!(no_repeats(m.iter().map(|x| x.key.clone())));
                prop_assert!(no_repeats(s.pool.iter().map(|x| x.key.clone())));
                prop_assert!(m.windows(2).all(|w| w[0].rank(&w[1]) == Ordering::Less));
                prop_assert_eq!(m.len(), k.min(first.len()));
                for x in m.iter().chain(&s.pool) {
                    prop_assert_eq!(Some(x), first.iter().find(|f| f.key == x.key));
                }
                if !diverse {
                    let mut want = first.clone();
                    want.sort_by(|a, b| a.rank(b));
                    want.truncate(k);
                    prop_assert_eq!(&want[..], m);
                }
            }
        }
    }
}
