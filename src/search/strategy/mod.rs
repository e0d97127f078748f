//! Strategies decide which configs to evaluate next. They see the space, the configs already
//! evaluated, the elite set and the profiles taken so far, and draw every random choice from
//! the run's seeded generator, so the same seed and the same measurements give the same
//! proposals.

mod free;
mod full;
mod grid;
mod insight;
mod random;
mod surrogate;

use std::collections::{BTreeMap, HashSet};

use rand::seq::{IndexedRandom, SliceRandom};
use rand_chacha::ChaCha8Rng;

use crate::eval::Evaluation;
use crate::insight::Bottleneck;
use crate::search::elites::EliteSet;
use crate::space::{Config, Space, SpaceError};

pub use free::Free;
pub use full::Full;
pub use grid::{Grid, GRID_LIMIT};
pub use insight::Insight;
pub use random::Random;
pub use surrogate::Surrogate;

/// What a strategy may look at when it proposes.
pub struct Ctx<'a> {
    pub space: &'a Space,
    pub seen: &'a HashSet<Config>,
    pub elites: &'a EliteSet,
    /// Bottleneck classes of profiled configs.
    pub profiles: &'a BTreeMap<Config, Bottleneck>,
    pub rng: &'a mut ChaCha8Rng,
    /// Evaluations left in the budget.
    pub remaining: usize,
}

impl Ctx<'_> {
    pub fn is_new(&self, c: &Config) -> bool {
        !self.seen.contains(c)
    }

    /// The best config so far, if any candidate was correct.
    pub fn best(&self) -> Option<Config> {
        self.elites
            .best()
            .and_then(|e| e.candidate.as_ref())
            .map(|c| c.config.clone())
    }

    /// The task's default config, the first time a strategy asks (if not evaluated yet).
    pub fn default_once(&self, started: &mut bool) -> Option<Config> {
        if std::mem::replace(started, true) {
            return None;
        }
        let d = self.space.default_config();
        self.is_new(&d).then_some(d)
    }

    pub fn bottleneck(&self, c: &Config) -> Option<Bottleneck> {
        self.profiles.get(c).copied()
    }

    /// A random valid config not yet evaluated nor in `taken`, if sampling finds one.
    pub fn sample_new(&mut self, taken: &[Config]) -> Option<Config> {
        for _ in 0..64 {
            let c = self.space.sample(self.rng)?;
            if self.is_new(&c) && !taken.contains(&c) {
                return Some(c);
            }
        }
        None
    }

    /// A random config not yet evaluated, listing the space if it is small enough: the last
    /// resort when sampling keeps hitting evaluated configs.
    pub fn any_new(&mut self, taken: &[Config]) -> Option<Config> {
        if let Some(c) = self.sample_new(taken) {
            return Some(c);
        }
        let all = self.space.enumerate(ANY_NEW_LIST_LIMIT).ok()?;
        let left: Vec<Config> = all
            .into_iter()
            .filter(|c| self.is_new(c) && !taken.contains(c))
            .collect();
        left.choose(self.rng).cloned()
    }
}

/// Spaces up to this many combinations are listed when sampling finds nothing new.
const ANY_NEW_LIST_LIMIT: u128 = 1 << 16;

pub trait Strategy {
    /// The next configs to evaluate, in order. Empty: nothing left to propose.
    fn ask(&mut self, ctx: &mut Ctx) -> Vec<Config>;

    /// The result of one proposed config.
    fn tell(&mut self, _ctx: &mut Ctx, _config: &Config, _eval: &Evaluation) {}

    /// Whether the convergence rule may stop the search now (not while Full still walks its
    /// first layer, never for the grid and random baselines).
    fn may_converge(&self) -> bool {
        true
    }

    /// Configs likely to be asked for next (after the last `ask`), for the evaluator to
    /// compile ahead while it measures; never measured unless asked for. Default: none.
    fn lookahead(&self) -> Vec<Config> {
        Vec::new()
    }
}

/// Builds the strategy for a variant.
pub fn build(
    variant: crate::search::Variant,
    space: &Space,
    settings: &crate::search::Settings,
) -> Result<Box<dyn Strategy>, SpaceError> {
    use crate::search::Variant;
    Ok(match variant {
        Variant::Grid => Box::new(Grid::new(space)?),
        Variant::Random => Box::new(Random::new(space)),
        Variant::Free => Box::new(Free::new()),
        Variant::Insight => Box::new(Insight::new(settings.insights)),
        Variant::Full => Box::new(Full::new(space, settings)),
        Variant::Surrogate => Box::new(Surrogate::new(space)),
    })
}

/// Configs one or two knob changes away from `base`, changing only the knobs in `knobs`,
/// valid and not yet evaluated. Ordered: moves that change more knobs addressing `class`
/// first; single changes before pairs; within a group in random order. At most `cap`.
pub fn neighbours(
    ctx: &mut Ctx,
    base: &Config,
    knobs: &[usize],
    class: Option<Bottleneck>,
    cap: usize,
) -> Vec<Config> {
    let space = ctx.space;
    let tagged = |i: usize| class.is_some_and(|c| space.knobs()[i].addresses(c));
    // (changes, untagged changes) -> moves; lower sorts first.
    let mut groups: BTreeMap<(usize, usize), Vec<Config>> = BTreeMap::new();
    for (a, &i) in knobs.iter().enumerate() {
        for &v in &space.knobs()[i].values {
            if v == base.0[i] {
                continue;
            }
            let mut c = base.clone();
            c.0[i] = v;
            let untagged = usize::from(!tagged(i));
            groups.entry((1, untagged)).or_default().push(c.clone());
            for &j in &knobs[a + 1..] {
                for &w in &space.knobs()[j].values {
                    if w == base.0[j] {
                        continue;
                    }
                    let mut d = c.clone();
                    d.0[j] = w;
                    let untagged = untagged + usize::from(!tagged(j));
                    let group = groups.entry((2, untagged)).or_default();
                    if group.len() < 4 * cap.max(1) {
                        group.push(d);
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    for (_, mut group) in groups {
        group.shuffle(ctx.rng);
        for c in group {
            if out.len() >= cap {
                return out;
            }
            if ctx.is_new(&c) && !out.contains(&c) && space.is_valid(&c) {
                out.push(c);
            }
        }
    }
    out
}

/// Hamming distance between two configs.
pub fn distance(a: &Config, b: &Config) -> usize {
    a.0.iter().zip(&b.0).filter(|(x, y)| x != y).count()
}
