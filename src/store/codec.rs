//! JSON columns that keep every `f64` exactly, non-finite ones included.
//!
//! serde_json writes NaN and ±infinity as `null` and cannot read `null` back into an `f64`,
//! so an evaluation with, say, an infinite `max_abs_err` would not load again. The JSON column
//! keeps serde_json's form (readable, `null` where the value is not finite) and a second column
//! lists the non-finite values as `[[index, "nan" | "inf" | "-inf"], ...]`, the index counting
//! the floats in the fixed order of the visitors below; it is NULL when every float is finite.
//! Reading puts the values back at their places.

use crate::eval::Evaluation;
use crate::insight::Profile;

/// A visitor of every float of a `T`, in a fixed order.
pub(super) type Floats<T> = fn(&mut T, &mut dyn FnMut(&mut f64));

/// Visits every float of an evaluation, in a fixed order.
pub(super) fn evaluation_floats(e: &mut Evaluation, f: &mut dyn FnMut(&mut f64)) {
    if let Some(c) = &mut e.compile {
        if let Some(x) = &mut c.compile_s {
            f(x);
        }
    }
    if let Some(c) = &mut e.correctness {
        f(&mut c.max_abs_err);
        for x in [&mut c.mean_abs_err, &mut c.rel_l2_err, &mut c.rmse]
            .into_iter()
            .flatten()
        {
            f(x);
        }
    }
    if let Some(t) = &mut e.timing {
        f(&mut t.p50_us);
        f(&mut t.p90_us);
        for x in [&mut t.min_us, &mut t.mean_us, &mut t.std_us]
            .into_iter()
            .flatten()
        {
            f(x);
        }
        for x in &mut t.samples_us {
            f(x);
        }
    }
    if let Some(p) = &mut e.profile {
        profile_floats(p, f);
    }
    // Added after the others, so the positions of records written before phases hold.
    e.phases.floats(f);
}

/// Visits every float of a profile, in a fixed order.
pub(super) fn profile_floats(p: &mut Profile, f: &mut dyn FnMut(&mut f64)) {
    for x in p.metrics.values_mut() {
        f(x);
    }
    if let Some(x) = &mut p.profile_s {
        f(x);
    }
}

/// A value as its two columns: JSON, and the non-finite floats (None if there are none).
pub(super) fn encode<T: serde::Serialize + Clone>(
    value: &T,
    floats: Floats<T>,
) -> Result<(String, Option<String>), serde_json::Error> {
    let json = serde_json::to_string(value)?;
    let mut copy = value.clone();
    let mut nonfinite: Vec<(usize, &'static str)> = Vec::new();
    let mut i = 0;
    floats(&mut copy, &mut |x| {
        if !x.is_finite() {
            let name = if x.is_nan() {
                "nan"
            } else if *x > 0.0 {
                "inf"
            } else {
                "-inf"
            };
            nonfinite.push((i, name));
        }
        i += 1;
    });
    let nonfinite = if nonfinite.is_empty() {
        None
    } else {
        Some(serde_json::to_string(&nonfinite)?)
    };
    Ok((json, nonfinite))
}

/// The inverse of [`encode`].
pub(super) fn decode<T: serde::de::DeserializeOwned>(
    json: &str,
    nonfinite: Option<&str>,
    floats: Floats<T>,
) -> Result<T, String> {
    let Some(nonfinite) = nonfinite else {
        return serde_json::from_str(json).map_err(|e| e.to_string());
    };
    let list: Vec<(usize, String)> =
        serde_json::from_str(nonfinite).map_err(|e| format!("non-finite floats: {e}"))?;
    // Every `null` in these values stands for a non-finite float (their optional fields are
    // left out when empty); a placeholder lets serde read them, the list gives the values.
    let mut value: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    fill_nulls(&mut value);
    let mut out: T = serde_json::from_value(value).map_err(|e| e.to_string())?;
    let mut i = 0;
    let mut next = list.iter().peekable();
    let mut bad = None;
    floats(&mut out, &mut |x| {
        if let Some((_, name)) = next.next_if(|(at, _)| *at == i) {
            *x = match name.as_str() {
                "nan" => f64::NAN,
                "inf" => f64::INFINITY,
                "-inf" => f64::NEG_INFINITY,
                other => {
                    bad = Some(format!("`{other}` is not a non-finite float"));
                    f64::NAN
                }
            };
        }
        i += 1;
    });
    if let Some(b) = bad {
        return Err(b);
    }
    if let Some((at, _)) = next.next() {
        return Err(format!("non-finite float #{at} has no place in the value"));
    }
    Ok(out)
}

fn fill_nulls(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Null => *v = serde_json::Value::from(0.0),
        serde_json::Value::Array(a) => a.iter_mut().for_each(fill_nulls),
        serde_json::Value::Object(m) => m.values_mut().for_each(fill_nulls),
        _ => {}
    }
}
