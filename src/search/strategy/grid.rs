//! Every valid config, in lexicographic order. A baseline; refuses spaces too large to list.

use super::{Ctx, Strategy};
use crate::space::{Config, Space, SpaceError};

/// Spaces with more knob combinations than this are refused.
pub const GRID_LIMIT: u128 = 1_000_000;

pub struct Grid {
    configs: Vec<Config>,
    next: usize,
}

impl Grid {
    pub fn new(space: &Space) -> Result<Grid, SpaceError> {
        Ok(Grid {
            configs: space.enumerate(GRID_LIMIT)?,
            next: 0,
        })
    }
}

impl Strategy for Grid {
    fn ask(&mut self, ctx: &mut Ctx) -> Vec<Config> {
        let mut out = Vec::new();
        while out.len() < 16 && self.next < self.configs.len() {
            let c = &self.configs[self.next];
            self.next += 1;
            if ctx.is_new(c) {
                out.push(c.clone());
            }
        }
        out
    }

    fn may_converge(&self) -> bool {
        false
    }
}
