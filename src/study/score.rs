//! The score of a search against random search (Willemsen et al., FGCS 2024, as used by
//! AutoTuningAssociation/autotuning_methodology): after `n` evaluations,
//!
//! `score = (R(n) − best) / (R(n) − optimum)`
//!
//! where `R(n)` is the median of the best value random search holds after `n` evaluations and
//! `best` the strategy's best. 0 is random search, 1 the optimum, negative worse than random.
//! `R(n)` is exact, not simulated: random search draws `n` of the `M` valid configs uniformly
//! without replacement, so the best is at or below the `k`-th smallest value with probability
//! `1 − C(M−k−1, n) / C(M, n)`. Configs without a time (failed a gate, or absent from the
//! landscape) count as drawn and sort last. A run that has nothing correct yet holds the worst
//! time of the landscape.

use serde::Serialize;

/// Random search on one landscape, computed from the values of every valid config.
#[derive(Clone, Debug, PartialEq)]
pub struct RandomBaseline {
    /// Every valid config's p50 (infinite: no time), ascending.
    sorted: Vec<f64>,
    worst: f64,
}

impl RandomBaseline {
    /// `None` when no value is finite.
    pub fn new(mut values: Vec<f64>) -> Option<RandomBaseline> {
        values.sort_by(f64::total_cmp);
        let worst = values.iter().copied().rfind(|v| v.is_finite())?;
        Some(RandomBaseline {
            sorted: values,
            worst,
        })
    }

    pub fn optimum(&self) -> f64 {
        self.sorted[0]
    }

    /// The worst finite value: what a run holds before anything is correct.
    pub fn worst(&self) -> f64 {
        self.worst
    }

    pub fn configs(&self) -> usize {
        self.sorted.len()
    }

    /// The median of random search's best after `n` evaluations.
    pub fn median_best(&self, n: usize) -> f64 {
        let m = self.sorted.len();
        if n == 0 {
            return f64::INFINITY;
        }
        if n >= m {
            return self.sorted[0];
        }
        // above = P(best > sorted[k]) = C(m-k-1, n) / C(m, n), updated k by k.
        let mut above = 1.0;
        for k in 0..m {
            let left = (m - k) as f64;
            above *= if m - k > n {
                (left - n as f64) / left
            } else {
                0.0
            };
            if 1.0 - above >= 0.5 {
                return self.sorted[k];
            }
        }
        self.sorted[m - 1]
    }

    /// The score of holding `best` (`None`: nothing correct yet) after `n` evaluations; `None`
    /// when random search's median is already the optimum (there is nothing to beat).
    pub fn score(&self, best: Option<f64>, n: usize) -> Option<f64> {
        let r = self.median_best(n);
        let opt = self.optimum();
        let span = r - opt;
        if !(span > 0.0 && span.is_finite()) {
            return None;
        }
        let best = best.filter(|b| b.is_finite()).unwrap_or(self.worst);
        Some((r - best) / span)
    }
}

/// The scores of many runs at one evaluation count.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScoreStats {
    pub evaluations: usize,
    /// Random search's median best at this count (μs).
    pub random_median_best_us: f64,
    /// Mean score over the runs.
    pub mean: f64,
    /// Half-width of the mean's 95 % confidence interval (normal approximation: 1.96 standard
    /// errors); 0 with a single run.
    pub ci95: f64,
    /// Fraction of runs that beat random search's median (score > 0).
    pub beats_random: f64,
    pub runs: usize,
}

impl ScoreStats {
    /// `None` when no run has a score.
    pub fn of(
        baseline: &RandomBaseline,
        n: usize,
        bests: impl IntoIterator<Item = Option<f64>>,
    ) -> Option<ScoreStats> {
        let scores: Vec<f64> = bests
            .into_iter()
            .filter_map(|b| baseline.score(b, n))
            .collect();
        if scores.is_empty() {
            return None;
        }
        let k = scores.len() as f64;
        let mean = scores.iter().sum::<f64>() / k;
        let ci95 = if scores.len() > 1 {
            let var = scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (k - 1.0);
            1.96 * (var / k).sqrt()
        } else {
            0.0
        };
        Some(ScoreStats {
            evaluations: n,
            random_median_best_us: baseline.median_best(n),
            mean,
            ci95,
            beats_random: scores.iter().filter(|&&s| s > 0.0).count() as f64 / k,
            runs: scores.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INF: f64 = f64::INFINITY;

    #[test]
    fn random_median_best_by_hand() {
        // Four configs 1 < 2 < 3 < 4. One draw: the median best is 2 (P(best <= 2) = 1/2).
        let b = RandomBaseline::new(vec![4.0, 2.0, 1.0, 3.0]).unwrap();
        assert_eq!(b.median_best(1), 2.0);
        // Two draws of four: P(best = 1) = 1 - C(3,2)/C(4,2) = 1/2.
        assert_eq!(b.median_best(2), 1.0);
        assert_eq!(b.median_best(4), 1.0);
        assert_eq!(b.median_best(9), 1.0);
        assert_eq!(b.median_best(0), INF);
        // Five configs, one draw: P(best <= 3) = 3/5 is the first at or above 1/2.
        let b = RandomBaseline::new(vec![5.0, 4.0, 3.0, 2.0, 1.0]).unwrap();
        assert_eq!(b.median_best(1), 3.0);
        // Two of five: P(best = 1) = 1 - C(4,2)/C(5,2) = 0.4; P(best <= 2) = 1 - 3/10 = 0.7.
        assert_eq!(b.median_best(2), 2.0);
    }

    #[test]
    fn failures_sort_last_and_count_as_drawn() {
        // Half the space fails: P(best <= 1) = 1/4 and P(best <= 2) = 1/2 for one draw.
        let b = RandomBaseline::new(vec![INF, 1.0, INF, 2.0]).unwrap();
        assert_eq!(b.median_best(1), 2.0);
        assert_eq!(b.worst(), 2.0);
        assert!(RandomBaseline::new(vec![INF, INF]).is_none());
    }

    #[test]
    fn score_is_zero_at_random_and_one_at_the_optimum() {
        // Values 1..=10; two draws: P(best <= k-th) = 1 - C(10-k, 2)/45; k=3: 1-21/45=0.53.
        let b = RandomBaseline::new((1..=10).map(f64::from).collect()).unwrap();
        assert_eq!(b.median_best(2), 3.0);
        assert_eq!(b.score(Some(3.0), 2), Some(0.0));
        assert_eq!(b.score(Some(1.0), 2), Some(1.0));
        assert_eq!(b.score(Some(2.0), 2), Some(0.5));
        assert_eq!(b.score(Some(7.0), 2), Some(-2.0));
        // Nothing correct: the worst value.
        assert_eq!(b.score(None, 2), Some(-3.5));
        // With every config drawn random search holds the optimum: no score.
        assert_eq!(b.score(Some(1.0), 10), None);
    }

    #[test]
    fn stats_over_runs() {
        let b = RandomBaseline::new((1..=10).map(f64::from).collect()).unwrap();
        let s = ScoreStats::of(&b, 2, [Some(1.0), Some(2.0), Some(3.0), Some(5.0)]).unwrap();
        // Scores 1, 0.5, 0, -1.
        assert!((s.mean - 0.125).abs() < 1e-12);
        assert_eq!(s.beats_random, 0.5);
        assert_eq!(s.runs, 4);
        let sd = ((0.875f64.powi(2) + 0.375f64.powi(2) + 0.125f64.powi(2) + 1.125f64.powi(2))
            / 3.0)
            .sqrt();
        assert!((s.ci95 - 1.96 * sd / 2.0).abs() < 1e-12);
        assert_eq!(s.random_median_best_us, 3.0);
        assert!(ScoreStats::of(&b, 10, [Some(1.0)]).is_none());
    }
}
