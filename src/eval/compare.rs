//! Candidate outputs against reference outputs: error metrics, NaN/Inf and unwritten counts,
//! and the verdict under a task's [`Tolerance`].
//!
//! The reference writes f32 (see `docs/task-format.md`); the candidate writes its own type,
//! decoded here. An element still bit-equal to the poison pattern was never written. Error
//! metrics are taken over the elements where both sides are finite, so they stay finite
//! numbers (they are stored as JSON); NaN/Inf and unwritten elements are counted instead, and
//! any of them fails the check.

use crate::eval::inputs::{decode, is_poisoned};
use crate::eval::CorrectnessReport;
use crate::task::{DType, Tolerance};

/// Errors of one output buffer, or of several pooled (one trial).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Errors {
    /// Elements compared (both sides finite).
    pub compared: u64,
    pub max_abs_err: f64,
    sum_abs: f64,
    sum_sq_err: f64,
    sum_sq_ref: f64,
    /// Candidate elements that are NaN or ±Inf (and were written).
    pub nonfinite: u64,
    /// Candidate elements still equal to the poison pattern.
    pub unwritten: u64,
    /// Reference elements that are NaN or ±Inf or unwritten: a broken reference.
    pub reference_bad: u64,
    /// Human-readable notes on the first offending elements (one per output).
    pub notes: Vec<String>,
}

impl Errors {
    pub fn mean_abs_err(&self) -> f64 {
        if self.compared == 0 {
            0.0
        } else {
            self.sum_abs / self.compared as f64
        }
    }

    pub fn rmse(&self) -> f64 {
        if self.compared == 0 {
            0.0
        } else {
            (self.sum_sq_err / self.compared as f64).sqrt()
        }
    }

    /// ‖out − ref‖₂ / ‖ref‖₂; 0 when both are zero; f64::MAX when only the reference is.
    pub fn rel_l2_err(&self) -> f64 {
        if self.sum_sq_ref > 0.0 {
            (self.sum_sq_err / self.sum_sq_ref).sqrt()
        } else if self.sum_sq_err == 0.0 {
            0.0
        } else {
            f64::MAX
        }
    }

    /// Pools another output's elements into these (one trial with several outputs).
    pub fn pool(&mut self, other: &Errors) {
        self.compared += other.compared;
        self.max_abs_err = self.max_abs_err.max(other.max_abs_err);
        self.sum_abs += other.sum_abs;
        self.sum_sq_err += other.sum_sq_err;
        self.sum_sq_ref += other.sum_sq_ref;
        self.nonfinite += other.nonfinite;
        self.unwritten += other.unwritten;
        self.reference_bad += other.reference_bad;
        self.notes.extend(other.notes.iter().cloned());
    }
}

/// What a scan of one buffer (or of one range of it) found, wherever it ran: on host
/// threads ([`compare`]) or on the GPU (the worker's checker kernel, which fills the same
/// fields). Ranges merge in index order with [`Tally::merge`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tally {
    pub compared: u64,
    pub nonfinite: u64,
    pub unwritten: u64,
    pub reference_bad: u64,
    pub max_abs_err: f64,
    pub sum_abs: f64,
    pub sum_sq_err: f64,
    pub sum_sq_ref: f64,
    pub first_unwritten: Option<u64>,
    /// Index and value.
    pub first_nonfinite: Option<(u64, f64)>,
    pub first_reference_bad: Option<u64>,
    /// Index, candidate value, reference value of the largest error (if any error is > 0).
    pub worst: Option<(u64, f64, f64)>,
}

impl Tally {
    /// Adds the tally of a range that comes after this one: firsts from the earliest range,
    /// the largest error overall (the earliest index on ties, as a single pass keeps).
    pub fn merge(&mut self, later: &Tally) {
        self.compared += later.compared;
        self.nonfinite += later.nonfinite;
        self.unwritten += later.unwritten;
        self.reference_bad += later.reference_bad;
        self.sum_abs += later.sum_abs;
        self.sum_sq_err += later.sum_sq_err;
        self.sum_sq_ref += later.sum_sq_ref;
        self.first_unwritten = self.first_unwritten.or(later.first_unwritten);
        self.first_nonfinite = self.first_nonfinite.or(later.first_nonfinite);
        self.first_reference_bad = self.first_reference_bad.or(later.first_reference_bad);
        if later.max_abs_err > self.max_abs_err {
            self.max_abs_err = later.max_abs_err;
            self.worst = later.worst;
        }
    }

    /// The errors of a buffer of `n` elements named `name`, with notes on the first
    /// offending elements.
    pub fn into_errors(self, name: &str, n: u64) -> Errors {
        let mut e = Errors {
            compared: self.compared,
            max_abs_err: self.max_abs_err,
            sum_abs: self.sum_abs,
            sum_sq_err: self.sum_sq_err,
            sum_sq_ref: self.sum_sq_ref,
            nonfinite: self.nonfinite,
            unwritten: self.unwritten,
            reference_bad: self.reference_bad,
            notes: Vec::new(),
        };
        if let Some(i) = self.first_unwritten {
            e.notes.push(format!(
                "{name}: {} of {n} elements were never written (first at index {i})",
                e.unwritten
            ));
        }
        if let Some((i, v)) = self.first_nonfinite {
            e.notes.push(format!(
                "{name}: {} of {n} elements are NaN or Inf (first at index {i}: {v})",
                e.nonfinite
            ));
        }
        if let Some(i) = self.first_reference_bad {
            e.notes.push(format!(
                "{name}: the reference left {} of {n} elements NaN, Inf or unwritten (first at index {i})",
                e.reference_bad
            ));
        }
        if let Some((i, o, r)) = self.worst {
            e.notes.push(format!(
                "{name}: largest error at index {i}: {o} against {r}"
            ));
        }
        e
    }
}

fn scan(out: &[u8], dtype: DType, reference: &[u8], range: std::ops::Range<usize>) -> Tally {
    let size = dtype.size();
    let mut s = Tally::default();
    for i in range {
        let r = decode(DType::F32, &reference[i * 4..i * 4 + 4]);
        if !r.is_finite() {
            s.reference_bad += 1;
            s.first_reference_bad.get_or_insert(i as u64);
            continue;
        }
        let o_bytes = &out[i * size..(i + 1) * size];
        if is_poisoned(dtype, o_bytes) {
            s.unwritten += 1;
            s.first_unwritten.get_or_insert(i as u64);
            continue;
        }
        let o = decode(dtype, o_bytes);
        if !o.is_finite() {
            s.nonfinite += 1;
            s.first_nonfinite.get_or_insert((i as u64, o));
            continue;
        }
        let d = (o - r).abs();
        s.compared += 1;
        s.sum_abs += d;
        s.sum_sq_err += d * d;
        s.sum_sq_ref += r * r;
        if d > s.max_abs_err {
            s.max_abs_err = d;
            s.worst = Some((i as u64, o, r));
        }
    }
    s
}

/// Elements per thread below which a buffer is compared on one thread.
const PARALLEL_CHUNK: usize = 1 << 20;

/// Compares one output buffer: `out` in `dtype` against `reference` in f32 (both raw
/// little-endian bytes of the same element count). `name` labels the notes. Large buffers
/// are split over the CPU's cores; the result does not depend on how.
pub fn compare(name: &str, out: &[u8], dtype: DType, reference: &[u8]) -> Errors {
    let size = dtype.size();
    let n = (out.len() / size).min(reference.len() / 4);
    let threads = std::thread::available_parallelism()
        .map(|t| t.get())
        .unwrap_or(1)
        .min(n.div_ceil(PARALLEL_CHUNK))
        .max(1);
    let per = n.div_ceil(threads).max(1);
    let parts: Vec<Tally> = if threads == 1 {
        vec![scan(out, dtype, reference, 0..n)]
    } else {
        std::thread::scope(|sc| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let range = (t * per).min(n)..((t + 1) * per).min(n);
                    sc.spawn(move || scan(out, dtype, reference, range))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("compare thread panicked"))
                .collect()
        })
    };
    let mut all = Tally::default();
    for p in &parts {
        all.merge(p);
    }
    all.into_errors(name, n as u64)
}

/// Without a reference: counts unwritten and NaN/Inf elements only.
pub fn check_only(name: &str, out: &[u8], dtype: DType) -> Errors {
    let size = dtype.size();
    let n = out.len() / size;
    let mut e = Errors::default();
    let mut first = None;
    for (i, o_bytes) in out.chunks_exact(size).enumerate() {
        if is_poisoned(dtype, o_bytes) {
            e.unwritten += 1;
            first.get_or_insert(i);
        } else if !decode(dtype, o_bytes).is_finite() {
            e.nonfinite += 1;
            first.get_or_insert(i);
        } else {
            e.compared += 1;
        }
    }
    if let Some(i) = first {
        e.notes.push(format!(
            "{name}: {} of {n} elements unwritten, {} NaN or Inf (first at index {i})",
            e.unwritten, e.nonfinite
        ));
    }
    e
}

/// The worst of each metric over trials, as the correctness report stores it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Worst {
    pub trials: u32,
    pub max_abs_err: f64,
    pub mean_abs_err: f64,
    pub rel_l2_err: f64,
    pub rmse: f64,
    pub nonfinite: u64,
    pub unwritten: u64,
}

impl Worst {
    pub fn add_trial(&mut self, e: &Errors) {
        self.trials += 1;
        self.max_abs_err = self.max_abs_err.max(e.max_abs_err);
        self.mean_abs_err = self.mean_abs_err.max(e.mean_abs_err());
        self.rel_l2_err = self.rel_l2_err.max(e.rel_l2_err());
        self.rmse = self.rmse.max(e.rmse());
        self.nonfinite = self.nonfinite.max(e.nonfinite);
        self.unwritten = self.unwritten.max(e.unwritten);
    }

    pub fn report(&self) -> CorrectnessReport {
        CorrectnessReport {
            trials: self.trials,
            max_abs_err: self.max_abs_err,
            mean_abs_err: Some(self.mean_abs_err),
            rel_l2_err: Some(self.rel_l2_err),
            rmse: Some(self.rmse),
            nan_count: self.nonfinite,
            unwritten_count: self.unwritten,
            verified: Vec::new(),
        }
    }
}

/// Whether one trial's errors pass: no NaN/Inf, nothing unwritten, every threshold present
/// met. The error says what failed.
pub fn verdict(e: &Errors, tol: &Tolerance) -> Result<(), String> {
    let mut failures = Vec::new();
    if e.unwritten > 0 {
        failures.push(format!(
            "{} output elements were never written",
            e.unwritten
        ));
    }
    if e.nonfinite > 0 {
        failures.push(format!("{} output elements are NaN or Inf", e.nonfinite));
    }
    let checks = [
        ("max_abs_err", e.max_abs_err, tol.max_abs_err),
        ("mean_abs_err", e.mean_abs_err(), tol.mean_abs_err),
        ("rel_l2_err", e.rel_l2_err(), tol.rel_l2_err),
    ];
    for (name, value, limit) in checks {
        if let Some(limit) = limit {
            if value > limit {
                failures.push(format!("{name} {} > {limit}", short(value)));
            }
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

/// A number for messages: 4 significant digits.
pub fn short(v: f64) -> String {
    if v == f64::MAX {
        "inf".into()
    } else if v != 0.0 && (v.abs() < 1e-3 || v.abs() >= 1e5) {
        format!("{v:.3e}")
    } else {
        format!("{}", (v * 1e4).round() / 1e4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_split_over_threads_gives_what_one_pass_gives() {
        // Above the parallel threshold, with errors, NaN and unwritten elements scattered.
        let n = 3 * PARALLEL_CHUNK + 17;
        let mut out = Vec::with_capacity(n * 4);
        let mut reference = Vec::with_capacity(n * 4);
        for i in 0..n {
            let r = (i % 1000) as f32 / 100.0;
            let o = match i % 99_991 {
                5 => f32::NAN,
                7 => f32::from_bits(u32::MAX), // poison: unwritten
                _ => r + (i % 13) as f32 * 1e-3,
            };
            out.extend_from_slice(&o.to_le_bytes());
            reference.extend_from_slice(&r.to_le_bytes());
        }
        let split = compare("y", &out, DType::F32, &reference);
        let whole = scan(&out, DType::F32, &reference, 0..n).into_errors("y", n as u64);
        assert_eq!(split.compared, whole.compared);
        assert_eq!(split.max_abs_err, whole.max_abs_err);
        assert_eq!(split.nonfinite, whole.nonfinite);
        assert_eq!(split.unwritten, whole.unwritten);
        assert!((split.rel_l2_err() - whole.rel_l2_err()).abs() < 1e-12);
        assert!(
            split.notes.iter().any(|n| n.contains("first at index 5")),
            "{:?}",
            split.notes
        );
    }
    use crate::eval::inputs::{encode_all, poison_byte};

    fn f32s(v: &[f64]) -> Vec<u8> {
        encode_all(DType::F32, v)
    }

    #[test]
    fn exact_match_has_zero_errors() {
        let r = f32s(&[1.0, -2.0, 3.5]);
        let e = compare(
            "O",
            &encode_all(DType::Bf16, &[1.0, -2.0, 3.5]),
            DType::Bf16,
            &r,
        );
        assert_eq!(e.compared, 3);
        assert_eq!(e.max_abs_err, 0.0);
        assert_eq!(e.rel_l2_err(), 0.0);
        assert!(verdict(
            &e,
            &Tolerance {
                max_abs_err: Some(0.0),
                ..Default::default()
            }
        )
        .is_ok());
    }

    #[test]
    fn metrics_by_hand() {
        // Errors 0.5 and 0 and 1.5 against reference (1, 2, 2).
        let r = f32s(&[1.0, 2.0, 2.0]);
        let o = f32s(&[1.5, 2.0, 0.5]);
        let e = compare("O", &o, DType::F32, &r);
        assert_eq!(e.max_abs_err, 1.5);
        assert!((e.mean_abs_err() - 2.0 / 3.0).abs() < 1e-12);
        assert!((e.rmse() - ((0.25 + 2.25) / 3.0f64).sqrt()).abs() < 1e-12);
        assert!((e.rel_l2_err() - (2.5f64 / 9.0).sqrt()).abs() < 1e-12);
        assert!(
            e.notes.iter().any(|n| n.contains("index 2")),
            "{:?}",
            e.notes
        );
        let tol = Tolerance {
            max_abs_err: Some(1.0),
            ..Default::default()
        };
        assert!(verdict(&e, &tol)
            .unwrap_err()
            .contains("max_abs_err 1.5 > 1"));
        let tol = Tolerance {
            max_abs_err: Some(2.0),
            rel_l2_err: Some(0.1),
            ..Default::default()
        };
        assert!(verdict(&e, &tol).unwrap_err().contains("rel_l2_err"));
    }

    #[test]
    fn unwritten_and_nonfinite_are_counted_and_fail() {
        let r = f32s(&[1.0, 1.0, 1.0, 1.0]);
        let mut o = encode_all(DType::F16, &[1.0, 1.0, 1.0, 1.0]);
        o[2..4].fill(poison_byte(DType::F16)); // element 1 unwritten
        o[4..6].copy_from_slice(&half::f16::NAN.to_bits().to_le_bytes()); // element 2 NaN
        o[6..8].copy_from_slice(&half::f16::INFINITY.to_bits().to_le_bytes()); // element 3 Inf
        let e = compare("O", &o, DType::F16, &r);
        assert_eq!(e.unwritten, 1);
        assert_eq!(e.nonfinite, 2);
        assert_eq!(e.compared, 1);
        assert_eq!(e.max_abs_err, 0.0);
        let err = verdict(&e, &Tolerance::default()).unwrap_err();
        assert!(
            err.contains("never written") && err.contains("NaN"),
            "{err}"
        );
        assert!(e.notes[0].contains("first at index 1"), "{:?}", e.notes);
    }

    #[test]
    fn fp8_outputs_and_poison() {
        let r = f32s(&[1.0, 448.0]);
        let o = vec![0x38, 0xFF]; // e4m3 1.0, poison
        let e = compare("O", &o, DType::E4m3, &r);
        assert_eq!(e.compared, 1);
        assert_eq!(e.unwritten, 1);
    }

    #[test]
    fn a_broken_reference_is_counted_apart() {
        let mut r = f32s(&[1.0, 1.0]);
        r[4..8].fill(0xFF);
        let e = compare("O", &f32s(&[1.0, 1.0]), DType::F32, &r);
        assert_eq!(e.reference_bad, 1);
        assert_eq!(e.compared, 1);
        assert!(e.notes.iter().any(|n| n.contains("reference")));
    }

    #[test]
    fn zero_reference_rel_l2() {
        let r = f32s(&[0.0, 0.0]);
        assert_eq!(
            compare("O", &f32s(&[0.0, 0.0]), DType::F32, &r).rel_l2_err(),
            0.0
        );
        assert_eq!(
            compare("O", &f32s(&[0.0, 1.0]), DType::F32, &r).rel_l2_err(),
            f64::MAX
        );
    }

    #[test]
    fn pooling_and_worst_over_trials() {
        let r = f32s(&[1.0, 1.0]);
        let a = compare("A", &f32s(&[1.0, 1.5]), DType::F32, &r);
        let b = compare("B", &f32s(&[1.0, 1.0]), DType::F32, &r);
        let mut trial = Errors::default();
        trial.pool(&a);
        trial.pool(&b);
        assert_eq!(trial.compared, 4);
        assert_eq!(trial.max_abs_err, 0.5);
        assert!((trial.mean_abs_err() - 0.125).abs() < 1e-12);

        let mut w = Worst::default();
        w.add_trial(&trial);
        w.add_trial(&b);
        let rep = w.report();
        assert_eq!(rep.trials, 2);
        assert_eq!(rep.max_abs_err, 0.5);
        assert_eq!(rep.mean_abs_err, Some(0.125));
        assert_eq!(rep.nan_count, 0);
        // The report survives JSON (every number finite).
        let back: CorrectnessReport =
            serde_json::from_str(&serde_json::to_string(&rep).unwrap()).unwrap();
        assert_eq!(back, rep);
    }

    #[test]
    fn without_a_reference_only_nan_and_unwritten_count() {
        let mut o = f32s(&[1.0, 2.0, 3.0]);
        o[4..8].fill(0xFF);
        let e = check_only("O", &o, DType::F32);
        assert_eq!((e.compared, e.unwritten, e.nonfinite), (2, 1, 0));
        assert!(verdict(&e, &Tolerance::default()).is_err());
        let e = check_only("O", &f32s(&[1.0, 2.0]), DType::F32);
        assert!(verdict(&e, &Tolerance::default()).is_ok());
        assert!(e.notes.is_empty());
    }

    #[test]
    fn short_numbers() {
        assert_eq!(short(1.5), "1.5");
        assert_eq!(short(0.06251), "0.0625");
        assert_eq!(short(1.0e-5), "1.000e-5");
        assert_eq!(short(f64::MAX), "inf");
    }
}
