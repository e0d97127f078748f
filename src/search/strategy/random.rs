//! Uniform random search without replacement. A baseline.

use rand::seq::SliceRandom;

use super::{Ctx, Strategy};
use crate::space::{Config, Space};

/// Spaces up to this many knob combinations are listed and shuffled; larger ones are sampled.
const LIST_LIMIT: u128 = 1 << 16;

pub struct Random {
    listed: bool,
    order: Option<Vec<Config>>,
    next: usize,
}

impl Random {
    pub fn new(space: &Space) -> Random {
        Random {
            listed: space.raw_size() <= LIST_LIMIT,
            order: None,
            next: 0,
        }
    }
}

impl Strategy for Random {
    fn ask(&mut self, ctx: &mut Ctx) -> Vec<Config> {
        if self.listed {
            let order = self.order.get_or_insert_with(|| {
                let mut all = ctx.space.enumerate(LIST_LIMIT).unwrap_or_default();
                all.shuffle(ctx.rng);
                all
            });
            let mut out = Vec::new();
            while out.len() < 8 && self.next < order.len() {
                let c = &order[self.next];
                self.next += 1;
                if ctx.is_new(c) {
                    out.push(c.clone());
                }
            }
            out
        } else {
            let mut out = Vec::new();
            while out.len() < 8 {
                match ctx.sample_new(&out) {
                    Some(c) => out.push(c),
                    None => break,
                }
            }
            out
        }
    }

    fn may_converge(&self) -> bool {
        false
    }
}
