//! EvoEngineer-Insight: one best; after each new best, the search asks for its bottleneck
//! class and tries changes to the knobs tagged with that class first (single knob changes,
//! then pairs), then the rest; when the best's neighbourhood is spent, random configs.

use super::{neighbours, Ctx, Strategy};
use crate::eval::Evaluation;
use crate::space::Config;

/// Neighbours listed per new best.
const NEIGHBOURS: usize = 256;

pub struct Insight {
    use_class: bool,
    started: bool,
    /// The best the queue was built for.
    queued_for: Option<Config>,
    queue: Vec<Config>,
}

impl Insight {
    /// `use_class`: order moves by the best's bottleneck class (false: an ablation).
    pub fn new(use_class: bool) -> Insight {
        Insight {
            use_class,
            started: false,
            queued_for: None,
            queue: Vec::new(),
        }
    }
}

impl Strategy for Insight {
    fn ask(&mut self, ctx: &mut Ctx) -> Vec<Config> {
        if let Some(d) = ctx.default_once(&mut self.started) {
            return vec![d];
        }
        let best = ctx.best();
        if let Some(best) = best {
            if self.queued_for.as_ref() != Some(&best) {
                let class = if self.use_class {
                    ctx.bottleneck(&best)
                } else {
                    None
                };
                let all: Vec<usize> = (0..ctx.space.knobs().len()).collect();
                let mut q = neighbours(ctx, &best, &all, class, NEIGHBOURS);
                q.reverse(); // pop from the back
                self.queue = q;
                self.queued_for = Some(best);
            }
        }
        while let Some(c) = self.queue.pop() {
            if ctx.is_new(&c) {
                return vec![c];
            }
        }
        ctx.any_new(&[]).into_iter().collect()
    }

    fn tell(&mut self, _ctx: &mut Ctx, _config: &Config, _eval: &Evaluation) {}
}
