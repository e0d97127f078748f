//! The statistics of a study: quantiles that tolerate "never" (infinity), and what a search's
//! trajectory says about when it got where.

/// The `q`-quantile (0 ≤ q ≤ 1) of `values`, interpolating linearly between the two closest
/// ranks (numpy's default). Infinite values sort last and stand for "never": a quantile that
/// falls on or beyond one is infinite. `None` for an empty slice.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    let frac = pos - lo as f64;
    if lo == hi || frac == 0.0 {
        return Some(v[lo]);
    }
    if v[hi].is_infinite() {
        return Some(v[hi]);
    }
    Some(v[lo] + frac * (v[hi] - v[lo]))
}

pub fn median(values: &[f64]) -> Option<f64> {
    quantile(values, 0.5)
}

pub fn p90(values: &[f64]) -> Option<f64> {
    quantile(values, 0.9)
}

/// The best (lowest) p50 after each evaluation of a search: `best[i]` is the best among
/// evaluations `0..=i`, `None` while no candidate has passed every gate.
pub fn best_so_far(p50s: impl IntoIterator<Item = Option<f64>>) -> Vec<Option<f64>> {
    let mut best: Option<f64> = None;
    p50s.into_iter()
        .map(|p| {
            if let Some(p) = p {
                best = Some(best.map_or(p, |b| b.min(p)));
            }
            best
        })
        .collect()
}

/// How many evaluations a search took to first hold a best p50 at or below `target`: the
/// 1-based position in `best`, or `None` if it never did.
pub fn evaluations_to_reach(best: &[Option<f64>], target: f64) -> Option<usize> {
    best.iter()
        .position(|b| b.is_some_and(|b| b <= target))
        .map(|i| i + 1)
}

/// The best p50 after `n` evaluations; a search that stopped earlier keeps its final best.
pub fn best_after(best: &[Option<f64>], n: usize) -> Option<f64> {
    if n == 0 {
        return None;
    }
    best.get(n.min(best.len()).checked_sub(1)?)
        .copied()
        .flatten()
}

/// The fraction of `values` that are finite.
pub fn fraction_finite(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.iter().filter(|v| v.is_finite()).count() as f64 / values.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const INF: f64 = f64::INFINITY;

    #[test]
    fn median_of_small_vectors() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[7.0]), Some(7.0));
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[5.0, 5.0, 1.0, 9.0, 9.0]), Some(5.0));
    }

    #[test]
    fn p90_interpolates_between_ranks() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        let p = p90(&v).unwrap();
        assert!((p - 9.1).abs() < 1e-12, "{p}");
        assert_eq!(p90(&[2.0, 1.0]), Some(1.9));
        assert_eq!(quantile(&v, 0.0), Some(1.0));
        assert_eq!(quantile(&v, 1.0), Some(10.0));
    }

    #[test]
    fn never_counts_as_infinity() {
        // Two of five never reached: the median is still finite, the p90 is not.
        let v = [10.0, INF, 30.0, INF, 20.0];
        assert_eq!(median(&v), Some(30.0));
        assert_eq!(p90(&v), Some(INF));
        // Half never reached, even count: the median straddles a finite and an infinite value.
        assert_eq!(median(&[1.0, 2.0, INF, INF]), Some(INF));
        assert_eq!(median(&[INF, INF, INF]), Some(INF));
        assert!((fraction_finite(&v) - 0.6).abs() < 1e-12);
        assert_eq!(fraction_finite(&[]), 0.0);
    }

    #[test]
    fn evaluations_to_reach_a_hand_trajectory() {
        // Evaluations: failed, 700, failed, 650, 690, 612, 600.
        let p50s = [
            None,
            Some(700.0),
            None,
            Some(650.0),
            Some(690.0),
            Some(612.0),
            Some(600.0),
        ];
        let best = best_so_far(p50s);
        assert_eq!(
            best,
            [
                None,
                Some(700.0),
                Some(700.0),
                Some(650.0),
                Some(650.0),
                Some(612.0),
                Some(600.0)
            ]
        );
        assert_eq!(evaluations_to_reach(&best, 600.0), Some(7));
        // Within 2% of 600 is 612: reached at the 6th evaluation.
        assert_eq!(evaluations_to_reach(&best, 600.0 * 1.02), Some(6));
        assert_eq!(evaluations_to_reach(&best, 700.0), Some(2));
        assert_eq!(evaluations_to_reach(&best, 500.0), None);
        assert_eq!(evaluations_to_reach(&[], 1.0), None);
    }

    #[test]
    fn best_after_n_evaluations() {
        let best = best_so_far([None, Some(5.0), Some(3.0)]);
        assert_eq!(best_after(&best, 0), None);
        assert_eq!(best_after(&best, 1), None);
        assert_eq!(best_after(&best, 2), Some(5.0));
        assert_eq!(best_after(&best, 3), Some(3.0));
        // Stopped after 3: the best after 64 is its final best.
        assert_eq!(best_after(&best, 64), Some(3.0));
        assert_eq!(best_after(&[], 16), None);
    }
}
