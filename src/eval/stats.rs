//! Statistics of timed launches, and the SM clock read around them.

use crate::eval::Timing;

/// The `q` quantile (0..=1) of sorted samples, interpolating linearly between the two
/// nearest ranks (numpy's default, and `torch.quantile`'s); the PyTorch baseline script uses
/// the same rule.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    assert!(!sorted.is_empty(), "quantile of no samples");
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    sorted[lo] + (sorted[hi] - sorted[lo]) * frac
}

/// Summary statistics of samples (μs).
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub p50: f64,
    pub p90: f64,
    pub min: f64,
    pub mean: f64,
    /// Sample standard deviation (n − 1); 0 for one sample.
    pub std: f64,
}

/// Summarizes the finite samples; `None` when there are none.
pub fn summarize(samples: &[f64]) -> Option<Summary> {
    let mut s: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return None;
    }
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let mean = s.iter().sum::<f64>() / n as f64;
    let std = if n > 1 {
        (s.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
    } else {
        0.0
    };
    Some(Summary {
        n,
        p50: quantile(&s, 0.5),
        p90: quantile(&s, 0.9),
        min: s[0],
        mean,
        std,
    })
}

/// Whether the SM clock fell by more than 10% between two readings.
pub fn clock_dropped(before: Option<u32>, after: Option<u32>) -> bool {
    match (before, after) {
        (Some(b), Some(a)) if b > 0 => (a as f64) < 0.9 * b as f64,
        _ => false,
    }
}

/// The MHz `nvidia-smi --query-gpu=clocks.sm --format=csv,noheader,nounits` prints.
pub fn parse_smi_clock(stdout: &str) -> Option<u32> {
    stdout
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())?
        .parse()
        .ok()
}

/// The performance gate's record: statistics, the samples, and the clocks around them.
pub fn timing(
    samples_us: Vec<f64>,
    clock_before: Option<u32>,
    clock_after: Option<u32>,
) -> Option<Timing> {
    let s = summarize(&samples_us)?;
    Some(Timing {
        p50_us: s.p50,
        p90_us: s.p90,
        min_us: Some(s.min),
        mean_us: Some(s.mean),
        std_us: Some(s.std),
        samples_us,
        sm_clock_mhz_before: clock_before,
        sm_clock_mhz_after: clock_after,
        clock_dropped: clock_dropped(clock_before, clock_after),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_like_numpy() {
        let s = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&s, 0.5), 2.5);
        assert!((quantile(&s, 0.9) - 3.7).abs() < 1e-12);
        assert_eq!(quantile(&s, 0.0), 1.0);
        assert_eq!(quantile(&s, 1.0), 4.0);
        assert_eq!(quantile(&[5.0], 0.9), 5.0);
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert!((quantile(&s, 0.9) - 90.1).abs() < 1e-9);
    }

    #[test]
    fn summary_of_unsorted_samples() {
        let s = summarize(&[3.0, 1.0, 2.0, f64::NAN]).unwrap();
        assert_eq!(s.n, 3);
        assert_eq!(s.p50, 2.0);
        assert_eq!(s.min, 1.0);
        assert_eq!(s.mean, 2.0);
        assert_eq!(s.std, 1.0);
        assert!(summarize(&[]).is_none());
        assert_eq!(summarize(&[4.0]).unwrap().std, 0.0);
    }

    #[test]
    fn clock_drop_is_more_than_ten_percent() {
        assert!(!clock_dropped(Some(1980), Some(1785)));
        assert!(clock_dropped(Some(1980), Some(1780)));
        assert!(!clock_dropped(None, Some(100)));
        assert!(!clock_dropped(Some(1980), None));
    }

    #[test]
    fn smi_output() {
        assert_eq!(parse_smi_clock("1980\n"), Some(1980));
        assert_eq!(parse_smi_clock("\n  1755 \n"), Some(1755));
        assert_eq!(parse_smi_clock("[N/A]\n"), None);
        assert_eq!(parse_smi_clock(""), None);
    }

    #[test]
    fn timing_record() {
        let t = timing(vec![10.0, 12.0, 11.0], Some(1980), Some(1500)).unwrap();
        assert_eq!(t.p50_us, 11.0);
        assert_eq!(t.min_us, Some(10.0));
        assert!(t.clock_dropped);
        assert_eq!(t.samples_us.len(), 3);
        assert!(timing(vec![], None, None).is_none());
    }
}
