//! A Kernel Tuner cache file (`tune_kernel(..., cache=...)`, and benchmark_hub's cachefiles),
//! read and checked: its tunable parameters as integer knobs, and one outcome per entry.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::eval::Outcome;
use crate::import::ImportError;

/// One tunable parameter, as a knob.
#[derive(Clone, Debug)]
pub struct KtParam {
    pub name: String,
    /// The knob's values: the file's own when they are all integers (booleans as 0/1, floats
    /// with a whole value), else the indices 0..n-1.
    pub values: Vec<i64>,
    /// When the file's values are not all integers: value `i` of the knob stands for
    /// `mapped[i]`.
    pub mapped: Option<Vec<Value>>,
}

impl KtParam {
    /// The knob value for a value as the file writes it, if it is one of this parameter's.
    pub fn value_of(&self, v: &Value) -> Option<i64> {
        match &self.mapped {
            None => as_int(v).filter(|i| self.values.contains(i)),
            Some(m) => m.iter().position(|x| same_value(x, v)).map(|i| i as i64),
        }
    }

    /// The knob value for a value written as text (a piece of a cache key, `"16"`).
    pub fn value_of_text(&self, text: &str) -> Option<i64> {
        let text = text.trim();
        match &self.mapped {
            None => {
                let v = match text {
                    "True" | "true" => 1,
                    "False" | "false" => 0,
                    _ => text.parse::<i64>().ok().or_else(|| {
                        let f: f64 = text.parse().ok()?;
                        as_int(&Value::from(f))
                    })?,
                };
                self.values.contains(&v).then_some(v)
            }
            Some(m) => m
                .iter()
                .position(|x| match x {
                    Value::String(s) => s == text,
                    other => {
                        let parsed: Option<f64> = text.parse().ok();
                        parsed.is_some_and(|p| other.as_f64() == Some(p))
                    }
                })
                .map(|i| i as i64),
        }
    }
}

/// One cache entry whose config parses.
#[derive(Clone, Debug)]
pub struct KtEntry {
    pub config: Vec<i64>,
    pub outcome: Outcome,
    /// For `ok`: the time, μs.
    pub p50_us: Option<f64>,
    pub p90_us: Option<f64>,
    /// The failure string of a failed entry (`CompilationFailedConfig`, ...).
    pub failure: Option<String>,
    /// Kept in the landscape's `message` (unknown failure strings, odd times).
    pub message: Option<String>,
}

/// A cache file, read and checked.
#[derive(Clone, Debug)]
pub struct KtCache {
    pub path: PathBuf,
    pub sha256: String,
    pub device_name: String,
    pub kernel_name: String,
    /// `problem_size` as written (an integer or a list).
    pub problem_size_raw: Value,
    pub problem_size: Vec<i64>,
    pub objective: String,
    pub params: Vec<KtParam>,
    /// Entries whose config parses, in file order.
    pub entries: Vec<KtEntry>,
    /// How many entries `cache` holds.
    pub entry_count: usize,
    /// Entries left out: (cache key, why).
    pub skipped: Vec<(String, String)>,
    /// Things the user should know (said once each).
    pub notes: Vec<String>,
}

/// Reads a JSON file, gunzipping it when it starts with the gzip magic; also returns the
/// sha256 of the bytes on disk.
pub fn read_json(path: &Path) -> Result<(Value, String), ImportError> {
    let raw = std::fs::read(path).map_err(|error| ImportError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    let sha256 = crate::task::sha256_hex(&raw);
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| ImportError::Json {
                path: path.to_path_buf(),
                message: format!("not a readable gzip file: {e}"),
            })?;
        out
    } else {
        raw
    };
    let value = serde_json::from_slice(&bytes).map_err(|e| ImportError::Json {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok((value, sha256))
}

/// An integer for a JSON value that is one: an integer, a boolean (0/1), or a float with a
/// whole value that fits.
pub fn as_int(v: &Value) -> Option<i64> {
    match v {
        Value::Bool(b) => Some(i64::from(*b)),
        Value::Number(n) => n.as_i64().or_else(|| {
            let f = n.as_f64()?;
            (f.is_finite() && f.fract() == 0.0 && f.abs() < 9.2e18).then_some(f as i64)
        }),
        _ => None,
    }
}

fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

impl KtCache {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<KtCache, ImportError> {
        let (doc, sha256) = read_json(path)?;
        let err = |key: &str, message: String| ImportError::invalid(path, key, message);
        let obj = doc
            .as_object()
            .ok_or_else(|| err("(top level)", "is not a JSON object".into()))?;
        let text = |key: &str| -> Result<String, ImportError> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(String::new()),
                Some(Value::String(s)) => Ok(s.clone()),
                Some(v) => Err(err(key, format!("{v} is not a string"))),
            }
        };
        let device_name = text("device_name")?;
        let kernel_name = text("kernel_name")?;
        let mut notes = Vec::new();

        let problem_size_raw = obj.get("problem_size").cloned().unwrap_or(Value::Null);
        let problem_size =
            match &problem_size_raw {
                Value::Null => Vec::new(),
                Value::Array(items) => items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        as_int(v).ok_or_else(|| {
                            err(
                                &format!("problem_size[{i}]"),
                                format!("{v} is not an integer"),
                            )
                        })
                    })
                    .collect::<Result<_, _>>()?,
                v => vec![as_int(v)
                    .ok_or_else(|| err("problem_size", format!("{v} is not an integer")))?],
            };

        let tune_params = obj
            .get("tune_params")
            .ok_or_else(|| err("tune_params", "is missing".into()))?
            .as_object()
            .ok_or_else(|| {
                err(
                    "tune_params",
                    "is not an object (name -> list of values)".into(),
                )
            })?;
        let keys: Vec<String> = match obj.get("tune_params_keys") {
            None => tune_params.keys().cloned().collect(),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_str().map(str::to_string).ok_or_else(|| {
                        err(
                            &format!("tune_params_keys[{i}]"),
                            format!("{v} is not a string"),
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
            Some(v) => return Err(err("tune_params_keys", format!("{v} is not a list"))),
        };
        if keys.is_empty() {
            return Err(err("tune_params", "names no tunable parameter".into()));
        }
        let mut params: Vec<KtParam> = Vec::new();
        for name in &keys {
            if params.iter().any(|p| &p.name == name) {
                return Err(err("tune_params_keys", format!("`{name}` is listed twice")));
            }
            let values = tune_params.get(name).ok_or_else(|| {
                err(
                    "tune_params_keys",
                    format!("`{name}` is not a key of tune_params"),
                )
            })?;
            params.push(param(path, name, values)?);
        }
        if let Some(extra) = tune_params.keys().find(|k| !keys.contains(k)) {
            return Err(err(
                &format!("tune_params.{extra}"),
                "is not listed in tune_params_keys".into(),
            ));
        }

        let objective = match obj.get("objective") {
            None | Some(Value::Null) => "time".to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(v) => return Err(err("objective", format!("{v} is not a string"))),
        };
        let higher_is_better = match obj.get("objective_higher_is_better") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(v) => {
                return Err(err(
                    "objective_higher_is_better",
                    format!("{v} is not true or false"),
                ))
            }
        };
        let cache = obj
            .get("cache")
            .ok_or_else(|| err("cache", "is missing".into()))?
            .as_object()
            .ok_or_else(|| err("cache", "is not an object (key -> record)".into()))?;
        if objective != "time" || higher_is_better {
            let all_have_time = !cache.is_empty()
                && cache
                    .values()
                    .all(|r| r.get("time").is_some_and(|t| !t.is_null()));
            if objective == "time" || !all_have_time {
                let what = if objective == "time" {
                    "`time` with objective_higher_is_better: true".to_string()
                } else {
                    format!("`{objective}` (and not every record has a `time`)")
                };
                return Err(err(
                    "objective",
                    format!("the objective is {what}; only a time to minimize can be imported"),
                ));
            }
            notes.push(format!(
                "the cache's objective is `{objective}`{}; the records' `time` (ms, lower is better) is imported instead",
                if higher_is_better { " (higher is better)" } else { "" }
            ));
        }

        let mut entries = Vec::new();
        let mut skipped = Vec::new();
        for (key, rec) in cache {
            match entry(&params, key, rec) {
                Ok(e) => entries.push(e),
                Err(why) => skipped.push((key.clone(), why)),
            }
        }
        Ok(KtCache {
            path: path.to_path_buf(),
            sha256,
            device_name,
            kernel_name,
            problem_size_raw,
            problem_size,
            objective,
            params,
            entries,
            entry_count: cache.len(),
            skipped,
            notes,
        })
    }
}

fn param(path: &Path, name: &str, values: &Value) -> Result<KtParam, ImportError> {
    let key = format!("tune_params.{name}");
    let items = values
        .as_array()
        .ok_or_else(|| ImportError::invalid(path, &key, format!("{values} is not a list")))?;
    if items.is_empty() {
        return Err(ImportError::invalid(
            path,
            &key,
            "the list of values is empty",
        ));
    }
    for v in items {
        if !matches!(v, Value::Number(_) | Value::Bool(_) | Value::String(_)) {
            return Err(ImportError::invalid(
                path,
                &key,
                format!("value {v} is neither a number nor a string"),
            ));
        }
    }
    let ints: Option<Vec<i64>> = items.iter().map(as_int).collect();
    match ints {
        Some(ints) => {
            for (j, v) in ints.iter().enumerate() {
                if ints[..j].contains(v) {
                    return Err(ImportError::invalid(
                        path,
                        &key,
                        format!("value {} is listed twice (as the integer {v})", items[j]),
                    ));
                }
            }
            Ok(KtParam {
                name: name.to_string(),
                values: ints,
                mapped: None,
            })
        }
        None => {
            for (j, v) in items.iter().enumerate() {
                if items[..j].iter().any(|x| same_value(x, v)) {
                    return Err(ImportError::invalid(
                        path,
                        &key,
                        format!("value {v} is listed twice"),
                    ));
                }
            }
            Ok(KtParam {
                name: name.to_string(),
                values: (0..items.len() as i64).collect(),
                mapped: Some(items.clone()),
            })
        }
    }
}

/// One entry: its config (from the record's fields, else from the key) and its outcome.
fn entry(params: &[KtParam], key: &str, rec: &Value) -> Result<KtEntry, String> {
    let rec: &Map<String, Value> = rec.as_object().ok_or("the record is not an object")?;
    let pieces: Vec<&str> = key.split(',').collect();
    let mut config = Vec::with_capacity(params.len());
    for (i, p) in params.iter().enumerate() {
        let v = match rec.get(&p.name) {
            Some(v) => p
                .value_of(v)
                .ok_or_else(|| format!("{} = {v} is not one of its tune_params values", p.name))?,
            None if pieces.len() == params.len() => {
                p.value_of_text(pieces[i]).ok_or_else(|| {
                    format!(
                        "{} = {} (from the key) is not one of its tune_params values",
                        p.name, pieces[i]
                    )
                })?
            }
            None => return Err(format!("the record has no `{}`", p.name)),
        };
        config.push(v);
    }
    let (mut outcome, mut p50_us, mut p90_us, mut failure, mut message) =
        (Outcome::Ok, None, None, None, None);
    match rec.get("time") {
        Some(Value::Number(n)) => {
            let t = n.as_f64().unwrap_or(f64::NAN);
            if t.is_finite() && t >= 0.0 {
                p50_us = Some(t * 1000.0);
                p90_us = Some(p90_ms(rec.get("times")).map_or(t * 1000.0, |p| p * 1000.0));
            } else {
                outcome = Outcome::RuntimeError;
                failure = Some("invalid time".to_string());
                message = Some(format!("time is {n}"));
            }
        }
        Some(Value::String(s)) => {
            failure = Some(s.clone());
            outcome = match s.as_str() {
                "CompilationFailedConfig" => Outcome::CompileError,
                "RuntimeFailedConfig" => Outcome::RuntimeError,
                _ => {
                    message = Some(s.clone());
                    Outcome::RuntimeError
                }
            };
        }
        Some(v) => {
            return Err(format!(
                "`time` is {v}, neither a number nor a failure string"
            ))
        }
        None => return Err("the record has no `time`".into()),
    }
    Ok(KtEntry {
        config,
        outcome,
        p50_us,
        p90_us,
        failure,
        message,
    })
}

/// The 90th percentile of `times` (ms), linearly interpolated as numpy does; `None` unless
/// it is a non-empty list of finite numbers.
pub fn p90_ms(times: Option<&Value>) -> Option<f64> {
    let items = times?.as_array()?;
    let mut v: Vec<f64> = items
        .iter()
        .map(|x| x.as_f64().filter(|f| f.is_finite()))
        .collect::<Option<_>>()?;
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let pos = 0.9 * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(v.len() - 1);
    Some(v[lo] + (v[hi] - v[lo]) * (pos - lo as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p90_interpolates_like_numpy() {
        // numpy.percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 90) == 9.1
        let times = serde_json::json!([10, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert!((p90_ms(Some(&times)).unwrap() - 9.1).abs() < 1e-12);
        assert_eq!(p90_ms(Some(&serde_json::json!([2.5]))), Some(2.5));
        assert_eq!(p90_ms(Some(&serde_json::json!([]))), None);
        assert_eq!(p90_ms(Some(&serde_json::json!(["x"]))), None);
    }

    #[test]
    fn integers_from_json() {
        assert_eq!(as_int(&serde_json::json!(true)), Some(1));
        assert_eq!(as_int(&serde_json::json!(4.0)), Some(4));
        assert_eq!(as_int(&serde_json::json!(4.5)), None);
        assert_eq!(as_int(&serde_json::json!("4")), None);
    }
}
