//! A small Gaussian-process surrogate over knob configurations, for the `surrogate` strategy.
//!
//! Each knob contributes features scaled to [0, 1]: the value's position in the knob's list
//! (neighbouring values behave alike) and, where it varies, its power-of-two alignment (the
//! number of trailing zero bits: 32 and 64 are alike in ways 48 is not, as warps and vector
//! widths make them). The kernel is mostly *additive* over these features, so a handful of
//! measurements already says which value of each knob is good, plus a smaller full-interaction
//! (Matérn 5/2) term for effects that only show together. Each feature term is a squared
//! exponential of the feature distance mixed with an exact-match term, so a value seen to be
//! fast is believed fast even where its neighbours are not.
//!
//! Every feature takes one of a few values per knob, so the kernel is computed from per-knob
//! tables indexed by value positions: predicting thousands of candidates costs table lookups,
//! not exponentials. The hyperparameters (length scale, weight of the interaction term) are
//! chosen from a small grid by the marginal likelihood, deterministically.

use crate::space::{Config, Space};

/// Weight of the exact-match term in each feature's kernel.
const MATCH_WEIGHT: f64 = 0.3;
/// Length scale of the full-interaction term, in feature units.
const INTERACTION_LENGTH: f64 = 0.5;
/// Observation noise (relative to the standardised targets' unit variance).
const NOISE: f64 = 1e-3;
/// (length scale, interaction weight) pairs tried, in order; ties keep the first.
const GRID: [(f64, f64); 5] = [(0.15, 0.0), (0.3, 0.0), (0.6, 0.0), (0.3, 0.3), (0.6, 0.3)];

/// How each knob's values map to features.
#[derive(Clone, Debug)]
pub struct Encoder {
    knobs: Vec<KnobFeatures>,
    /// Feature columns in all (the additive kernel averages over them).
    columns: usize,
}

#[derive(Clone, Debug)]
struct KnobFeatures {
    /// Index of the knob in the space.
    knob: usize,
    values: Vec<i64>,
    /// Per value: the feature columns of this knob (position, and alignment if it varies).
    features: Vec<Vec<f64>>,
}

/// A config as positions into its knobs' value lists (only knobs with more than one value).
pub type Code = Vec<u16>;

impl Encoder {
    pub fn new(space: &Space) -> Encoder {
        let mut knobs = Vec::new();
        let mut columns = 0;
        for (i, k) in space.knobs().iter().enumerate() {
            let n = k.values.len();
            if n < 2 {
                continue;
            }
            let pos: Vec<f64> = (0..n).map(|j| j as f64 / (n - 1) as f64).collect();
            let tz: Vec<f64> = k.values.iter().map(|&v| alignment(v)).collect();
            let (lo, hi) = tz
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &t| {
                    (lo.min(t), hi.max(t))
                });
            let features: Vec<Vec<f64>> = (0..n)
                .map(|j| {
                    let mut f = vec![pos[j]];
                    if hi > lo {
                        f.push((tz[j] - lo) / (hi - lo));
                    }
                    f
                })
                .collect();
            columns += features[0].len();
            knobs.push(KnobFeatures {
                knob: i,
                values: k.values.clone(),
                features,
            });
        }
        Encoder { knobs, columns }
    }

    /// The code of a config; `None` if a value is not one of its knob's.
    pub fn encode(&self, c: &Config) -> Option<Code> {
        self.knobs
            .iter()
            .map(|k| {
                let v = *c.0.get(k.knob)?;
                k.values.iter().position(|&x| x == v).map(|p| p as u16)
            })
            .collect()
    }

    /// Whether any knob varies (otherwise there is nothing to model).
    pub fn is_trivial(&self) -> bool {
        self.columns == 0
    }

    /// The kernel of one hyperparameter setting, as tables.
    fn kernel(&self, length: f64, interaction: f64) -> Kernel {
        let tables = self
            .knobs
            .iter()
            .map(|k| {
                let n = k.values.len();
                let mut additive = vec![0.0; n * n];
                let mut squared = vec![0.0; n * n];
                for a in 0..n {
                    for b in 0..n {
                        let mut add = 0.0;
                        let mut sq = 0.0;
                        for (fa, fb) in k.features[a].iter().zip(&k.features[b]) {
                            let d = fa - fb;
                            let same = if d.abs() < 1e-12 { 1.0 } else { 0.0 };
                            add += (1.0 - MATCH_WEIGHT) * (-0.5 * (d / length).powi(2)).exp()
                                + MATCH_WEIGHT * same;
                            sq += d * d;
                        }
                        additive[a * n + b] = add;
                        squared[a * n + b] = sq;
                    }
                }
                KnobTable {
                    n,
                    additive,
                    squared,
                }
            })
            .collect();
        Kernel {
            tables,
            columns: self.columns.max(1) as f64,
            interaction,
        }
    }
}

/// Trailing zero bits of |v| (0 for 0): how aligned a value is.
fn alignment(v: i64) -> f64 {
    if v == 0 {
        0.0
    } else {
        f64::from(v.unsigned_abs().trailing_zeros())
    }
}

struct KnobTable {
    n: usize,
    additive: Vec<f64>,
    squared: Vec<f64>,
}

struct Kernel {
    tables: Vec<KnobTable>,
    columns: f64,
    interaction: f64,
}

impl Kernel {
    fn k(&self, a: &Code, b: &Code) -> f64 {
        let mut add = 0.0;
        let mut sq = 0.0;
        for ((t, &x), &y) in self.tables.iter().zip(a).zip(b) {
            let i = x as usize * t.n + y as usize;
            add += t.additive[i];
            sq += t.squared[i];
        }
        let add = add / self.columns;
        if self.interaction == 0.0 {
            return add;
        }
        (1.0 - self.interaction) * add + self.interaction * matern52(sq.sqrt() / INTERACTION_LENGTH)
    }
}

fn matern52(r: f64) -> f64 {
    let s5 = 5f64.sqrt() * r;
    (1.0 + s5 + 5.0 / 3.0 * r * r) * (-s5).exp()
}

/// A fitted surrogate: predicts the mean and standard deviation of the (standardised) target.
pub struct Posterior {
    kernel: Kernel,
    train: Vec<Code>,
    /// Lower Cholesky factor of K + noise·I, row-major n×n.
    chol: Vec<f64>,
    /// (K + noise·I)⁻¹ z.
    alpha: Vec<f64>,
    mean: f64,
    scale: f64,
}

/// A prediction in the targets' own units.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Prediction {
    pub mean: f64,
    pub sd: f64,
}

impl Posterior {
    /// Fits the targets `y` at `train`, choosing the hyperparameters with the highest marginal
    /// likelihood. `None` with fewer than two points.
    pub fn fit(encoder: &Encoder, train: Vec<Code>, y: &[f64]) -> Option<Posterior> {
        let n = train.len();
        if n < 2 || y.len() != n {
            return None;
        }
        let mean = y.iter().sum::<f64>() / n as f64;
        let var = y.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
        let scale = if var > 0.0 { var.sqrt() } else { 1.0 };
        let z: Vec<f64> = y.iter().map(|v| (v - mean) / scale).collect();
        let mut best: Option<(f64, Posterior)> = None;
        for &(length, interaction) in &GRID {
            let kernel = encoder.kernel(length, interaction);
            let mut k = vec![0.0; n * n];
            for i in 0..n {
                for j in 0..=i {
                    let v = kernel.k(&train[i], &train[j]);
                    k[i * n + j] = v;
                    k[j * n + i] = v;
                }
                k[i * n + i] += NOISE;
            }
            let Some(chol) = cholesky(&k, n) else {
                continue;
            };
            let alpha = solve_upper_t(&chol, n, &solve_lower(&chol, n, &z));
            let fit: f64 = z.iter().zip(&alpha).map(|(a, b)| a * b).sum();
            let logdet: f64 = (0..n).map(|i| chol[i * n + i].ln()).sum();
            let ll = -0.5 * fit - logdet;
            if best.as_ref().is_none_or(|(b, _)| ll > *b) {
                best = Some((
                    ll,
                    Posterior {
                        kernel,
                        train: train.clone(),
                        chol,
                        alpha,
                        mean,
                        scale,
                    },
                ));
            }
        }
        best.map(|(_, p)| p)
    }

    pub fn predict(&self, x: &Code) -> Prediction {
        let n = self.train.len();
        let ks: Vec<f64> = self.train.iter().map(|t| self.kernel.k(x, t)).collect();
        let m: f64 = ks.iter().zip(&self.alpha).map(|(a, b)| a * b).sum();
        let v = solve_lower(&self.chol, n, &ks);
        let var = (self.kernel.k(x, x) - v.iter().map(|a| a * a).sum::<f64>()).max(1e-12);
        Prediction {
            mean: m * self.scale + self.mean,
            sd: var.sqrt() * self.scale,
        }
    }
}

/// Expected improvement below `best` (minimisation).
pub fn expected_improvement(p: Prediction, best: f64) -> f64 {
    if p.sd <= 0.0 {
        return (best - p.mean).max(0.0);
    }
    let g = (best - p.mean) / p.sd;
    (best - p.mean) * normal_cdf(g) + p.sd * normal_pdf(g)
}

fn normal_pdf(x: f64) -> f64 {
    (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
}

fn normal_cdf(x: f64) -> f64 {
    0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
}

/// Lower Cholesky factor of a symmetric positive definite n×n matrix; `None` if it is not.
fn cholesky(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= l[i * n + k] * l[j * n + k];
            }
            if i == j {
                if s <= 0.0 || !s.is_finite() {
                    return None;
                }
                l[i * n + i] = s.sqrt();
            } else {
                l[i * n + j] = s / l[j * n + j];
            }
        }
    }
    Some(l)
}

/// Solves L x = b for lower-triangular L.
fn solve_lower(l: &[f64], n: usize, b: &[f64]) -> Vec<f64> {
    let mut x = vec![0.0; n];
    for i in 0..n {
        let mut s = b[i];
        for k in 0..i {
            s -= l[i * n + k] * x[k];
        }
        x[i] = s / l[i * n + i];
    }
    x
}

/// Solves Lᵀ x = b for lower-triangular L.
fn solve_upper_t(l: &[f64], n: usize, b: &[f64]) -> Vec<f64> {
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let mut s = b[i];
        for k in i + 1..n {
            s -= l[k * n + i] * x[k];
        }
        x[i] = s / l[i * n + i];
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::{Knob, Layer};

    fn space(values: &[&[i64]]) -> Space {
        Space::new(
            values
                .iter()
                .enumerate()
                .map(|(i, v)| Knob {
                    name: format!("K{i}"),
                    values: v.to_vec(),
                    default: v[0],
                    layer: Layer::Macro,
                    addresses: vec![],
                })
                .collect(),
            vec![],
        )
    }

    #[test]
    fn cholesky_solves_a_known_system() {
        // A = [[4, 2], [2, 3]]: L = [[2, 0], [1, sqrt 2]].
        let l = cholesky(&[4.0, 2.0, 2.0, 3.0], 2).unwrap();
        assert!((l[0] - 2.0).abs() < 1e-12 && (l[2] - 1.0).abs() < 1e-12);
        assert!((l[3] - 2f64.sqrt()).abs() < 1e-12);
        // A x = [2, 1] -> x = [0.5, 0].
        let x = solve_upper_t(&l, 2, &solve_lower(&l, 2, &[2.0, 1.0]));
        assert!((x[0] - 0.5).abs() < 1e-12 && x[1].abs() < 1e-12, "{x:?}");
        assert!(cholesky(&[1.0, 2.0, 2.0, 1.0], 2).is_none());
    }

    #[test]
    fn normal_cdf_matches_known_values() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-12);
        assert!((normal_cdf(1.959964) - 0.975).abs() < 1e-6);
        assert!((normal_cdf(-1.0) - 0.158655).abs() < 1e-6);
    }

    #[test]
    fn encoder_skips_constant_knobs_and_reads_alignment() {
        let s = space(&[&[16, 32, 48, 64], &[7], &[0, 1]]);
        let e = Encoder::new(&s);
        assert_eq!(e.encode(&Config(vec![48, 7, 1])), Some(vec![2, 1]));
        assert_eq!(e.encode(&Config(vec![40, 7, 1])), None);
        // 16, 32, 48, 64 have 4, 5, 4, 6 trailing zeros: position + alignment columns; the
        // 0/1 knob has alignments 0 and 0, so only its position.
        assert_eq!(e.columns, 3);
        assert!(!e.is_trivial());
        assert!(Encoder::new(&space(&[&[3]])).is_trivial());
    }

    #[test]
    fn the_posterior_interpolates_and_is_unsure_far_away() {
        let s = space(&[&[1, 2, 3, 4, 5, 6, 7, 8], &[1, 2, 3, 4, 5, 6, 7, 8]]);
        let e = Encoder::new(&s);
        let pts = [
            (0u16, 0u16, 1.0),
            (7, 7, 3.0),
            (0, 7, 2.0),
            (7, 0, 2.0),
            (3, 3, 1.5),
        ];
        let train: Vec<Code> = pts.iter().map(|&(a, b, _)| vec![a, b]).collect();
        let y: Vec<f64> = pts.iter().map(|p| p.2).collect();
        let post = Posterior::fit(&e, train, &y).unwrap();
        for &(a, b, v) in &pts {
            let p = post.predict(&vec![a, b]);
            assert!((p.mean - v).abs() < 0.1, "at ({a},{b}): {p:?} vs {v}");
            assert!(p.sd < 0.2, "at a training point: {p:?}");
        }
        let far = post.predict(&vec![5, 1]);
        assert!(far.sd > post.predict(&vec![3, 3]).sd);
        assert!(Posterior::fit(&e, vec![vec![0, 0]], &[1.0]).is_none());
    }

    #[test]
    fn expected_improvement_prefers_low_means_and_high_uncertainty() {
        let lo = Prediction { mean: 0.0, sd: 0.1 };
        let hi = Prediction { mean: 1.0, sd: 0.1 };
        assert!(expected_improvement(lo, 0.5) > expected_improvement(hi, 0.5));
        let unsure = Prediction { mean: 1.0, sd: 2.0 };
        assert!(expected_improvement(unsure, 0.5) > expected_improvement(hi, 0.5));
        assert_eq!(
            expected_improvement(Prediction { mean: 1.0, sd: 0.0 }, 0.5),
            0.0
        );
    }
}
