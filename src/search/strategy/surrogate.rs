//! `surrogate`: Bayesian optimisation over the knobs, the default strategy.
//!
//! It starts with the task's default config and a few random ones, then proposes, one at a
//! time, the unevaluated valid config of highest expected improvement under a Gaussian-process
//! model of log run time fitted to everything measured so far ([`crate::search::gp`]). Run
//! times spread over orders of magnitude, and a fit dominated by the slow end says little
//! about the fast end, so targets above the 30th percentile of the correct ones are clipped
//! to it; configs that failed a gate (or that a landscape lacks) count as that value too,
//! which steers the search away from them without inventing a time.
//!
//! Candidates are every valid config when the space can be listed (up to [`POOL_LIMIT`] of
//! them; above that a seeded random [`POOL_LIMIT`] of the list each step), else
//! [`SAMPLED_POOL`] random valid configs plus every one-knob neighbour of the best. Ties go to
//! the earlier candidate, so the same seed and measurements give the same proposals; with
//! several proposals in flight (a batch) each next ask takes the next-best candidate.
//!
//! The measured comparison against the seed's strategies and Kernel Tuner's is in
//! `bench/search.md`.

use std::sync::Arc;

use rand::seq::IndexedRandom;

use super::{Ctx, Strategy};
use crate::eval::Evaluation;
use crate::search::gp::{expected_improvement, Code, Encoder, Posterior};
use crate::space::Config;

/// Configs before the model takes over: the default and random ones.
pub const INITIAL: usize = 4;
/// Targets (log p50) above this quantile of the correct ones are clipped to it.
const CLIP_QUANTILE: f64 = 0.3;
/// Spaces with at most this many knob combinations are listed.
const LIST_LIMIT: u128 = 1 << 22;
/// Listed spaces with more valid configs than this are subsampled per step.
const POOL_LIMIT: usize = 12_000;
/// Candidates drawn per step in a space too large to list.
const SAMPLED_POOL: usize = 2048;
/// Runners-up of each pick offered to the evaluator to compile ahead ([`Strategy::lookahead`]):
/// the next pick is often among them, and its compile is then off the critical path.
const LOOKAHEAD: usize = 4;

pub struct Surrogate {
    encoder: Encoder,
    started: bool,
    designed: bool,
    /// Every valid config, when the space could be listed.
    listing: Option<Arc<Vec<Config>>>,
    /// Measured configs: their codes and log p50 (`None`: no time).
    observed: Vec<(Code, Option<f64>)>,
    /// The last pick's runners-up, best first.
    runners_up: Vec<Config>,
}

impl Surrogate {
    pub fn new(space: &crate::space::Space) -> Surrogate {
        Surrogate {
            encoder: Encoder::new(space),
            started: false,
            designed: false,
            listing: space.listed(LIST_LIMIT).ok(),
            observed: Vec::new(),
            runners_up: Vec::new(),
        }
    }

    /// A random unevaluated config (from the listing when there is one).
    fn random_new(&self, ctx: &mut Ctx, taken: &[Config]) -> Option<Config> {
        if let Some(list) = &self.listing {
            for _ in 0..64 {
                let c = list.choose(ctx.rng)?;
                if ctx.is_new(c) && !taken.contains(c) {
                    return Some(c.clone());
                }
            }
        }
        ctx.any_new(taken)
    }

    /// The initial design: the default config (if not evaluated yet), then random ones.
    fn design(&mut self, ctx: &mut Ctx) -> Vec<Config> {
        self.designed = true;
        let mut out: Vec<Config> = Vec::new();
        if let Some(d) = ctx.default_once(&mut self.started) {
            out.push(d);
        }
        // INITIAL − 1 random ones besides the default (never the default itself).
        let mut taken = vec![ctx.space.default_config()];
        for _ in 1..INITIAL {
            match self.random_new(ctx, &taken) {
                Some(c) => {
                    taken.push(c.clone());
                    out.push(c);
                }
                None => break,
            }
        }
        out
    }

    /// The candidates of this step.
    fn pool(&self, ctx: &mut Ctx) -> Vec<Config> {
        if let Some(list) = &self.listing {
            if list.len() <= POOL_LIMIT {
                return list.iter().filter(|c| ctx.is_new(c)).cloned().collect();
            }
            let mut picked: Vec<&Config> = list.sample(ctx.rng, POOL_LIMIT).collect();
            picked.retain(|c| ctx.is_new(c));
            return picked.into_iter().cloned().collect();
        }
        let mut out: Vec<Config> = Vec::new();
        for _ in 0..SAMPLED_POOL {
            match ctx.sample_new(&out) {
                Some(c) => out.push(c),
                None => break,
            }
        }
        if let Some(best) = ctx.best() {
            for (i, k) in ctx.space.knobs().iter().enumerate() {
                for &v in &k.values {
                    let mut c = best.clone();
                    c.0[i] = v;
                    if ctx.is_new(&c) && !out.contains(&c) && ctx.space.is_valid(&c) {
                        out.push(c);
                    }
                }
            }
        }
        out
    }

    /// The model's pick, or `None` when there is too little to fit; keeps the runners-up.
    fn model_pick(&mut self, ctx: &mut Ctx) -> Option<Config> {
        let mut times: Vec<f64> = self.observed.iter().filter_map(|o| o.1).collect();
        if times.len() < 2 || self.encoder.is_trivial() {
            return None;
        }
        times.sort_by(f64::total_cmp);
        let cap = crate::eval::stats::quantile(&times, CLIP_QUANTILE);
        let train: Vec<Code> = self.observed.iter().map(|o| o.0.clone()).collect();
        let y: Vec<f64> = self
            .observed
            .iter()
            .map(|o| o.1.map_or(cap, |t| t.min(cap)))
            .collect();
        let best = y.iter().copied().fold(f64::INFINITY, f64::min);
        let post = Posterior::fit(&self.encoder, train, &y)?;
        // The best LOOKAHEAD + 1 by expected improvement, best first; ties keep the earlier.
        let mut ranked: Vec<(f64, Config)> = Vec::with_capacity(LOOKAHEAD + 2);
        for c in self.pool(ctx) {
            let Some(code) = self.encoder.encode(&c) else {
                continue;
            };
            let ei = expected_improvement(post.predict(&code), best);
            if ranked.len() <= LOOKAHEAD || ei > ranked[ranked.len() - 1].0 {
                let at = ranked
                    .iter()
                    .position(|(b, _)| ei > *b)
                    .unwrap_or(ranked.len());
                ranked.insert(at, (ei, c));
                ranked.truncate(LOOKAHEAD + 1);
            }
        }
        let mut ranked = ranked.into_iter().map(|(_, c)| c);
        let pick = ranked.next();
        self.runners_up = ranked.collect();
        pick
    }
}

impl Strategy for Surrogate {
    fn ask(&mut self, ctx: &mut Ctx) -> Vec<Config> {
        if !self.designed {
            // All at once, so a GPU evaluator compiles them ahead while the first is measured.
            let initial = self.design(ctx);
            if !initial.is_empty() {
                return initial;
            }
        }
        let pick = self.model_pick(ctx).or_else(|| self.random_new(ctx, &[]));
        pick.into_iter().collect()
    }

    fn lookahead(&self) -> Vec<Config> {
        self.runners_up.clone()
    }

    fn tell(&mut self, _ctx: &mut Ctx, config: &Config, eval: &Evaluation) {
        if let Some(code) = self.encoder.encode(config) {
            let y = eval.p50_us().filter(|t| *t > 0.0).map(f64::ln);
            self.observed.push((code, y));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashSet};

    use rand::SeedableRng;

    use super::*;
    use crate::search::EliteSet;
    use crate::space::{Knob, Layer, Space};

    fn space() -> Space {
        let knob = |name: &str, values: Vec<i64>, default: i64| Knob {
            name: name.into(),
            values,
            default,
            layer: Layer::Macro,
            addresses: vec![],
        };
        Space::new(
            vec![
                knob("A", vec![16, 32, 48, 64], 48),
                knob("B", vec![1, 2, 3, 4, 5, 6, 7, 8], 1),
            ],
            vec![],
        )
    }

    #[test]
    fn the_first_ask_is_the_default_then_distinct_random_configs() {
        let space = space();
        let seen = HashSet::new();
        let elites = EliteSet::new(1, false);
        let profiles = BTreeMap::new();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut ctx = Ctx {
            space: &space,
            seen: &seen,
            elites: &elites,
            profiles: &profiles,
            rng: &mut rng,
            remaining: 100,
        };
        let mut s = Surrogate::new(&space);
        let first = s.ask(&mut ctx);
        assert_eq!(first.len(), INITIAL);
        assert_eq!(first[0], space.default_config());
        let distinct: HashSet<&Config> = first.iter().collect();
        assert_eq!(distinct.len(), INITIAL, "{first:?}");
        assert!(first.iter().all(|c| space.is_valid(c)));
    }

    #[test]
    fn with_too_little_to_fit_the_model_picks_nothing() {
        let space = space();
        let mut s = Surrogate::new(&space);
        let seen = HashSet::new();
        let elites = EliteSet::new(1, false);
        let profiles = BTreeMap::new();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut ctx = Ctx {
            space: &space,
            seen: &seen,
            elites: &elites,
            profiles: &profiles,
            rng: &mut rng,
            remaining: 100,
        };
        // One correct time only: no fit, so the strategy falls back to a random config.
        s.observed.push((
            s.encoder.encode(&space.default_config()).unwrap(),
            Some(1.0),
        ));
        s.observed.push((vec![0, 0], None));
        assert!(s.model_pick(&mut ctx).is_none());
        // Two correct times: the model picks, and never an evaluated config.
        s.observed.push((vec![3, 7], Some(3.0)));
        let pick = s.model_pick(&mut ctx).unwrap();
        assert!(space.is_valid(&pick));
    }
}
