//! EvoEngineer-Full: the two-layer traverse with elite preservation and insights.
//!
//! Layer 1 evaluates macro variants (micro knobs at their defaults): all of them when they fit
//! in half the budget, else a random half-budget's worth. Layer 2 then works in generations:
//! for every elite, best first, `micro_per_elite` micro variants (macro knobs fixed), ordered
//! by the elite's bottleneck class; the elite set is updated as results come in. When the
//! elites' micro neighbourhoods are spent it widens to macro moves around the elites, then to
//! random configs. Without the two-layer traverse (an ablation) layer 1 is a random
//! population and layer 2 varies every knob.

use super::{neighbours, Ctx, Strategy};
use crate::search::Settings;
use crate::space::{Config, Layer, Space};

pub struct Full {
    two_layer: bool,
    use_class: bool,
    micro_per_elite: usize,
    budget: usize,
    macros: Vec<usize>,
    micros: Vec<usize>,
    /// Layer 1 proposed; its results are all in once `pending` is zero.
    layer1_done: bool,
    pending: usize,
}

impl Full {
    pub fn new(space: &Space, s: &Settings) -> Full {
        let all: Vec<usize> = (0..space.knobs().len()).collect();
        let (macros, micros) = if s.two_layer {
            (
                space.layer_indices(Layer::Macro),
                space.layer_indices(Layer::Micro),
            )
        } else {
            (all.clone(), all)
        };
        Full {
            two_layer: s.two_layer,
            use_class: s.insights,
            micro_per_elite: s.micro_per_elite.max(1),
            budget: s.limits.budget,
            macros,
            micros,
            layer1_done: false,
            pending: 0,
        }
    }

    fn layer1(&self, ctx: &mut Ctx) -> Vec<Config> {
        let space = ctx.space;
        let cap = (self.budget / 2).max(1);
        let default = space.default_config();
        let mut out = vec![default.clone()];
        let macro_count = space.raw_size_of(&self.macros);
        if self.two_layer && macro_count <= cap as u128 {
            // Every macro variant, in lexicographic order, micro knobs at their defaults
            // (or the first valid micro values a few draws find).
            let sub = Space::new(
                self.macros
                    .iter()
                    .map(|&i| space.knobs()[i].clone())
                    .collect(),
                vec![],
            );
            for m in sub.enumerate(u128::MAX).unwrap_or_default() {
                let mut c = default.clone();
                for (j, &i) in self.macros.iter().enumerate() {
                    c.0[i] = m.0[j];
                }
                let c = if space.is_valid(&c) {
                    Some(c)
                } else {
                    let fixed: Vec<Option<i64>> = (0..space.knobs().len())
                        .map(|i| self.macros.contains(&i).then(|| c.0[i]))
                        .collect();
                    space.sample_with(ctx.rng, &fixed)
                };
                if let Some(c) = c {
                    if !out.contains(&c) {
                        out.push(c);
                    }
                }
            }
        } else {
            let target = cap.min(macro_count.min(usize::MAX as u128) as usize).max(1);
            let mut misses = 0;
            while out.len() < target && misses < 64 {
                let c = ctx.sample_new(&out).map(|mut c| {
                    if self.two_layer {
                        for &i in &self.micros {
                            c.0[i] = space.knobs()[i].default;
                        }
                    }
                    c
                });
                match c {
                    Some(c) if space.is_valid(&c) && !out.contains(&c) => out.push(c),
                    _ => misses += 1,
                }
            }
        }
        out.retain(|c| ctx.is_new(c));
        out
    }

    fn generation(&self, ctx: &mut Ctx) -> Vec<Config> {
        let elites: Vec<Config> = ctx
            .elites
            .members()
            .iter()
            .filter_map(|e| e.candidate.as_ref().map(|c| c.config.clone()))
            .collect();
        let mut out: Vec<Config> = Vec::new();
        for e in &elites {
            let class = if self.use_class {
                ctx.bottleneck(e)
            } else {
                None
            };
            let mut taken = 0;
            for c in neighbours(ctx, e, &self.micros, class, self.micro_per_elite * 4) {
                if taken == self.micro_per_elite {
                    break;
                }
                if !out.contains(&c) {
                    out.push(c);
                    taken += 1;
                }
            }
        }
        if out.is_empty() && self.two_layer {
            // Micro neighbourhoods spent: macro moves around the elites.
            for e in &elites {
                let class = if self.use_class {
                    ctx.bottleneck(e)
                } else {
                    None
                };
                for c in neighbours(ctx, e, &self.macros, class, self.micro_per_elite) {
                    if !out.contains(&c) {
                        out.push(c);
                    }
                }
            }
        }
        if out.is_empty() {
            let want = self.micro_per_elite * elites.len().max(1);
            while out.len() < want {
                match ctx.any_new(&out) {
                    Some(c) => out.push(c),
                    None => break,
                }
            }
        }
        out
    }
}

impl Strategy for Full {
    fn ask(&mut self, ctx: &mut Ctx) -> Vec<Config> {
        if !self.layer1_done {
            self.layer1_done = true;
            let batch = self.layer1(ctx);
            self.pending = batch.len();
            if !batch.is_empty() {
                return batch;
            }
        }
        self.pending = 0;
        self.generation(ctx)
    }

    fn tell(&mut self, _ctx: &mut Ctx, _config: &Config, _eval: &crate::eval::Evaluation) {
        self.pending = self.pending.saturating_sub(1);
    }

    fn may_converge(&self) -> bool {
        self.layer1_done && self.pending == 0
    }
}
