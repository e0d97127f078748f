//! The decisions of the timing loop, kept apart from the GPU so they can be tested without
//! one: when the samples are enough (the stopping rule), when a candidate is clearly slower
//! than the bar it must beat (racing), and which timed launches have their outputs checked.
//!
//! - **Stopping rule.** After at least `min_iterations` samples, timing stops once the
//!   distribution-free 95 % confidence interval of the median (order statistics) is within
//!   `ci_rel` of the median on either side, or at `iterations` samples, or when the wall-time
//!   budget is spent.
//! - **Racing.** With a bar (the p50 of the current K-th elite, when the elite set is full),
//!   a candidate whose *fastest* sample after `race_after` samples is still more than
//!   `race_margin` above the bar stops there and is recorded as `slower`: it cannot become
//!   an elite, and the few samples it took are kept.
//! - **Checked launches.** Each timed launch's outputs are compared with the reference for
//!   its input set when it is the fastest so far (a launch that skips work is fast, so the
//!   first such launch is always checked), and otherwise with probability `check_fraction`,
//!   drawn from a generator seeded by the run and the candidate; at least two in all.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::eval::worker::TimingParams;

/// What the loop does after a sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Take another sample.
    Go,
    /// The median is known well enough, or the sample limit is reached.
    Enough,
    /// Clearly slower than the bar: stop and record it as such.
    Slower,
}

/// The 95 % confidence interval of the median of `sorted` (ascending) from order statistics,
/// distribution-free: ranks n/2 ∓ 0.98·√n (normal approximation of the binomial), clamped to
/// the sample. `None` for no samples.
pub fn median_ci(sorted: &[f64]) -> Option<(f64, f64)> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let half = n as f64 / 2.0;
    let spread = 0.98 * (n as f64).sqrt();
    let lo = ((half - spread).floor().max(1.0) as usize).min(n);
    let hi = ((half + spread).ceil().max(1.0) as usize).min(n);
    Some((sorted[lo - 1], sorted[hi - 1]))
}

/// The decision after the samples so far (`samples_us`, in order taken).
pub fn next(samples_us: &[f64], p: &TimingParams, bar_us: Option<f64>) -> Next {
    let n = samples_us.len();
    if n == 0 {
        return Next::Go;
    }
    if let Some(bar) = bar_us.filter(|b| b.is_finite() && *b > 0.0) {
        let fastest = samples_us.iter().copied().fold(f64::INFINITY, f64::min);
        if n >= p.race_after.max(1) as usize && fastest > bar * (1.0 + p.race_margin.max(0.0)) {
            return Next::Slower;
        }
    }
    if n >= p.iterations.max(1) as usize {
        return Next::Enough;
    }
    if n < p.min_iterations.max(1) as usize || p.ci_rel <= 0.0 {
        return Next::Go;
    }
    let mut sorted = samples_us.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = crate::eval::stats::quantile(&sorted, 0.5);
    match median_ci(&sorted) {
        Some((lo, hi))
            if median > 0.0
                && median - lo <= p.ci_rel * median
                && hi - median <= p.ci_rel * median =>
        {
            Next::Enough
        }
        _ => Next::Go,
    }
}

/// Which timed launches get their outputs checked.
pub struct CheckPlan {
    rng: ChaCha8Rng,
    fraction: f64,
    fastest: f64,
    checked: u32,
}

/// Checks at least this many timed launches.
pub const MIN_CHECKS: u32 = 2;

impl CheckPlan {
    /// Seeded by the run's seed and something that tells candidates apart (their cubin's
    /// name), so a kernel cannot know which launches are checked.
    pub fn new(seed: u64, candidate: &str, fraction: f64) -> CheckPlan {
        let mut key = [0u8; 32];
        let digest = crate::task::sha256_hex(format!("{seed}:{candidate}").as_bytes());
        for (i, b) in key.iter_mut().enumerate() {
            *b = u8::from_str_radix(&digest[2 * i..2 * i + 2], 16).unwrap_or(0);
        }
        CheckPlan {
            rng: ChaCha8Rng::from_seed(key),
            fraction: fraction.clamp(0.0, 1.0),
            fastest: f64::INFINITY,
            checked: 0,
        }
    }

    /// Whether to check the launch that just took `sample_us`; `last`: timing stops after it.
    pub fn check(&mut self, sample_us: f64, last: bool) -> bool {
        // Draw every time, so the sequence does not depend on which samples were fastest.
        let coin = self.rng.random::<f64>() < self.fraction;
        let record = sample_us < self.fastest;
        self.fastest = self.fastest.min(sample_us);
        let yes = coin || record || (last && self.checked < MIN_CHECKS);
        if yes {
            self.checked += 1;
        }
        yes
    }

    /// Launches checked so far.
    pub fn checked(&self) -> u32 {
        self.checked
    }

    /// A generator for other unpredictable choices of the same evaluation (where buffers lie).
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> TimingParams {
        TimingParams {
            iterations: 100,
            min_iterations: 10,
            ci_rel: 0.01,
            race_after: 5,
            race_margin: 0.1,
            ..TimingParams::default()
        }
    }

    #[test]
    fn the_median_interval_widens_with_fewer_samples() {
        let xs: Vec<f64> = (1..=100).map(f64::from).collect();
        let (lo, hi) = median_ci(&xs).unwrap();
        // Ranks 50 ∓ 9.8: 40 and 60.
        assert_eq!((lo, hi), (40.0, 60.0));
        let (lo, hi) = median_ci(&xs[..10]).unwrap();
        // Ranks 5 ∓ 3.1: 1 and 9.
        assert_eq!((lo, hi), (1.0, 9.0));
        assert_eq!(median_ci(&[3.0]), Some((3.0, 3.0)));
        assert_eq!(median_ci(&[]), None);
    }

    #[test]
    fn steady_samples_stop_at_the_minimum_and_noisy_ones_go_on() {
        let p = params();
        let steady = vec![100.0; 10];
        assert_eq!(next(&steady[..9], &p, None), Next::Go, "below the minimum");
        assert_eq!(next(&steady, &p, None), Next::Enough);
        // ±5 % noise: the interval is wider than ±1 % at 10 samples.
        let noisy: Vec<f64> = (0..10)
            .map(|i| if i % 2 == 0 { 95.0 } else { 105.0 })
            .collect();
        assert_eq!(next(&noisy, &p, None), Next::Go);
        // ... and the limit ends it.
        let many: Vec<f64> = (0..100)
            .map(|i| if i % 2 == 0 { 95.0 } else { 105.0 })
            .collect();
        assert_eq!(next(&many, &p, None), Next::Enough);
        // A tolerance of 0 means: always the full count.
        let p0 = TimingParams {
            ci_rel: 0.0,
            ..params()
        };
        assert_eq!(next(&steady, &p0, None), Next::Go);
    }

    #[test]
    fn racing_stops_only_the_clearly_slower_and_only_after_enough_samples() {
        let p = params();
        let slow = vec![150.0; 5];
        assert_eq!(
            next(&slow[..4], &p, Some(100.0)),
            Next::Go,
            "too few samples yet"
        );
        assert_eq!(next(&slow, &p, Some(100.0)), Next::Slower);
        // One fast sample among them: not clearly slower.
        let mixed = [150.0, 150.0, 105.0, 150.0, 150.0];
        assert_eq!(next(&mixed, &p, Some(100.0)), Next::Go);
        // Within the margin: not raced out.
        assert_eq!(next(&[109.0; 5], &p, Some(100.0)), Next::Go);
        // No bar, or a meaningless one: never.
        assert_eq!(next(&slow, &p, None), Next::Go);
        assert_eq!(next(&slow, &p, Some(f64::NAN)), Next::Go);
    }

    #[test]
    fn checked_launches_are_random_per_candidate_and_cover_every_new_fastest() {
        let samples: Vec<f64> = (0..40).map(|i| 100.0 + (i % 7) as f64).collect();
        let pick = |seed: u64, who: &str| {
            let mut plan = CheckPlan::new(seed, who, 0.5);
            samples
                .iter()
                .enumerate()
                .map(|(i, &s)| plan.check(s, i + 1 == samples.len()))
                .collect::<Vec<bool>>()
        };
        let a = pick(1, "a.cubin");
        assert_eq!(
            a,
            pick(1, "a.cubin"),
            "the same seed and candidate: the same launches"
        );
        assert_ne!(a, pick(1, "b.cubin"), "another candidate: other launches");
        assert_ne!(a, pick(2, "a.cubin"), "another run: other launches");
        assert!(a[0], "the first launch is the fastest so far");
        let n = a.iter().filter(|&&c| c).count();
        assert!((10..=32).contains(&n), "about half of 40: {n}");
        // A launch faster than every one before it is always checked, whatever the coin.
        let mut plan = CheckPlan::new(7, "x", 0.0);
        assert!(plan.check(100.0, false));
        assert!(!plan.check(101.0, false));
        assert!(plan.check(50.0, false), "a new fastest");
        assert!(!plan.check(60.0, false));
        assert_eq!(plan.checked(), 2);
        // At least two checks: the last launch is checked when fewer were.
        let mut plan = CheckPlan::new(7, "x", 0.0);
        assert!(plan.check(100.0, false));
        assert!(plan.check(101.0, true));
    }
}
