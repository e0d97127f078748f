//! The optional `--spec`: a benchmark_hub kernel spec ("T4" format:
//! `ConfigurationSpace.TuningParameters[].{Name, Default}` and
//! `ConfigurationSpace.Conditions[].Expression`), or a plain `{"restrictions": [...]}` object
//! (Kernel Tuner's `tune_kernel(restrictions=...)` list).

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::cache::read_json;
use crate::import::ImportError;

/// One restriction: where it is in the spec, and its Python text.
#[derive(Clone, Debug)]
pub struct Restriction {
    pub key: String,
    pub text: String,
}

/// A declared default value.
#[derive(Clone, Debug)]
pub struct SpecDefault {
    pub key: String,
    pub name: String,
    pub value: Value,
}

/// What the importer takes from a spec.
#[derive(Clone, Debug, Default)]
pub struct Spec {
    pub path: PathBuf,
    pub sha256: String,
    pub restrictions: Vec<Restriction>,
    pub defaults: Vec<SpecDefault>,
}

impl Spec {
    pub fn load(path: &Path) -> Result<Spec, ImportError> {
        let (doc, sha256) = read_json(path)?;
        let err = |key: &str, message: String| ImportError::invalid(path, key, message);
        let obj = doc
            .as_object()
            .ok_or_else(|| err("(top level)", "is not a JSON object".into()))?;
        let mut spec = Spec {
            path: path.to_path_buf(),
            sha256,
            ..Spec::default()
        };
        if let Some(cs) = obj.get("ConfigurationSpace") {
            let cs = cs
                .as_object()
                .ok_or_else(|| err("ConfigurationSpace", "is not an object".into()))?;
            if let Some(params) = cs.get("TuningParameters") {
                let params = params.as_array().ok_or_else(|| {
                    err(
                        "ConfigurationSpace.TuningParameters",
                        "is not a list".into(),
                    )
                })?;
                for (i, p) in params.iter().enumerate() {
                    let key = format!("ConfigurationSpace.TuningParameters[{i}]");
                    let name = p.get("Name").and_then(Value::as_str).ok_or_else(|| {
                        err(&format!("{key}.Name"), "is missing or not a string".into())
                    })?;
                    if let Some(d) = p.get("Default").filter(|d| !d.is_null()) {
                        spec.defaults.push(SpecDefault {
                            key: format!("{key}.Default"),
                            name: name.to_string(),
                            value: d.clone(),
                        });
                    }
                }
            }
            if let Some(conds) = cs.get("Conditions") {
                let conds = conds
                    .as_array()
                    .ok_or_else(|| err("ConfigurationSpace.Conditions", "is not a list".into()))?;
                for (i, c) in conds.iter().enumerate() {
                    let key = format!("ConfigurationSpace.Conditions[{i}].Expression");
                    let text = c
                        .get("Expression")
                        .and_then(Value::as_str)
                        .ok_or_else(|| err(&key, "is missing or not a string".into()))?;
                    spec.restrictions.push(Restriction {
                        key,
                        text: text.to_string(),
                    });
                }
            }
        } else if let Some(r) = obj.get("restrictions") {
            match r {
                Value::String(s) => spec.restrictions.push(Restriction {
                    key: "restrictions".into(),
                    text: s.clone(),
                }),
                Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        let key = format!("restrictions[{i}]");
                        let text = item.as_str().ok_or_else(|| {
                            err(
                                &key,
                                format!("{item} is not a string (a Python expression)"),
                            )
                        })?;
                        spec.restrictions.push(Restriction {
                            key,
                            text: text.to_string(),
                        });
                    }
                }
                v => return Err(err("restrictions", format!("{v} is not a list of strings"))),
            }
        } else {
            return Err(err(
                "(top level)",
                "has neither `ConfigurationSpace` (a benchmark_hub spec) nor `restrictions` (a list of Python expressions)".into(),
            ));
        }
        Ok(spec)
    }
}
