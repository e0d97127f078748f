//! Elite preservation: the top K correct candidates by median latency.
//!
//! Ranking: lower p50; ties broken by fewer registers, then less shared memory, then the
//! candidate key (so the order is total and runs are reproducible). With `diverse`, the set
//! prefers candidates of different macro variants and fills up with the rest only when there
//! are fewer than K macro variants among the correct candidates.

use std::cmp::Ordering;

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
    /// Every correct candidate seen, best first.
    pool: Vec<Elite>,
    members: Vec<Elite>,
}

impl EliteSet {
    pub fn new(k: usize, diverse: bool) -> EliteSet {
        assert!(k >= 1, "an elite set holds at least one candidate");
        EliteSet {
            k,
            diverse,
            pool: Vec::new(),
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

    /// `elites = top_k(elites ∪ {e})`. Returns whether the set of members changed.
    pub fn offer(&mut self, e: Elite) -> bool {
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
}
