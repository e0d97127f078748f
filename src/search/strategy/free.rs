//! EvoEngineer-Free: diverse exploration of the whole space, keeping only the best; no
//! profiling. Starts from the task's default config; then, each step, either mutates the best
//! (one or two knobs, any layer) or draws the config farthest from everything evaluated among
//! a few random samples.

use rand::RngExt;

use super::{distance, Ctx, Strategy};
use crate::space::Config;

/// Random samples per exploration step; the farthest from the evaluated set is proposed.
const EXPLORE_SAMPLES: usize = 8;

pub struct Free {
    started: bool,
}

impl Free {
    pub fn new() -> Free {
        Free { started: false }
    }

    fn mutate(ctx: &mut Ctx, base: &Config) -> Option<Config> {
        let n = ctx.space.knobs().len();
        for _ in 0..64 {
            let mut c = base.clone();
            let changes = if n > 1 && ctx.rng.random_bool(0.5) {
                2
            } else {
                1
            };
            for _ in 0..changes {
                let i = ctx.rng.random_range(0..n);
                let values = &ctx.space.knobs()[i].values;
                c.0[i] = values[ctx.rng.random_range(0..values.len())];
            }
            if &c != base && ctx.is_new(&c) && ctx.space.is_valid(&c) {
                return Some(c);
            }
        }
        None
    }

    fn explore(ctx: &mut Ctx) -> Option<Config> {
        let mut best: Option<(usize, Config)> = None;
        for _ in 0..EXPLORE_SAMPLES {
            let Some(c) = ctx.sample_new(&[]) else { break };
            let d = ctx
                .seen
                .iter()
                .map(|s| distance(s, &c))
                .min()
                .unwrap_or(usize::MAX);
            if best.as_ref().is_none_or(|(bd, _)| d > *bd) {
                best = Some((d, c));
            }
        }
        best.map(|(_, c)| c)
    }
}

impl Default for Free {
    fn default() -> Self {
        Free::new()
    }
}

impl Strategy for Free {
    fn ask(&mut self, ctx: &mut Ctx) -> Vec<Config> {
        if let Some(d) = ctx.default_once(&mut self.started) {
            return vec![d];
        }
        let best = ctx.best();
        let proposal = match best {
            Some(b) if ctx.rng.random_bool(0.5) => {
                Self::mutate(ctx, &b).or_else(|| Self::explore(ctx))
            }
            _ => Self::explore(ctx).or_else(|| best.and_then(|b| Self::mutate(ctx, &b))),
        };
        proposal.or_else(|| ctx.any_new(&[])).into_iter().collect()
    }
}
