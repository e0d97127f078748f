//! `evoengineer import kernel-tuner`: a Kernel Tuner cache file becomes a task folder
//! (`task.toml`: knobs, constraints, one shape, no `[kernel]`) and a landscape
//! (`landscapes/<device>-<shape>.jsonl` and its `.meta.json`) that `tune --replay` and
//! `study` read.
//!
//! Knobs come in `tune_params_keys` order with integer values (booleans 0/1; other values
//! stand for their indices). Restrictions from `--spec` are translated from Python
//! ([`crate::import::python_expr`]). Every cache entry whose config parses becomes one
//! landscape line; valid configs the cache lacks replay as `missing`.

pub mod cache;
pub mod spec;
mod write;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::eval::Outcome;
use crate::import::python_expr::{self, NameInfo};
use crate::import::ImportError;
use crate::space::{Config, Constraint, Knob, Layer, Space};
use crate::task::expr::Expr;
pub use cache::{KtCache, KtEntry, KtParam};
pub use spec::Spec;

/// Spaces with at most this many combinations (before constraints) are enumerated to count
/// the valid configs the cache lacks.
pub const ENUMERATE_LIMIT: u128 = 2_000_000;

/// How many combinations the search for a valid default config tries at most.
const FIRST_VALID_LIMIT: u64 = 20_000_000;

/// What to import, and where.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    /// The cache file (`.json` or `.json.gz`).
    pub cache: PathBuf,
    /// A benchmark_hub spec or a `{"restrictions": [...]}` file.
    pub spec: Option<PathBuf>,
    /// The task folder to write.
    pub out: PathBuf,
    /// The task's name [default: the folder's name].
    pub name: Option<String>,
    /// The shape's name.
    pub shape: String,
    /// Exactly these knobs are macro [default: a guess].
    pub macro_knobs: Option<Vec<String>>,
    /// Overwrite an existing task.toml.
    pub force: bool,
    /// Recorded in the meta file.
    pub command_line: Option<String>,
}

impl ImportOptions {
    pub fn new(cache: impl Into<PathBuf>, out: impl Into<PathBuf>) -> ImportOptions {
        ImportOptions {
            cache: cache.into(),
            spec: None,
            out: out.into(),
            name: None,
            shape: "mission".into(),
            macro_knobs: None,
            force: false,
            command_line: None,
        }
    }
}

/// One knob as imported.
#[derive(Clone, Debug, Serialize)]
pub struct KnobSummary {
    pub name: String,
    pub values: Vec<i64>,
    pub default: i64,
    pub layer: Layer,
    /// The file's values, when the knob's are their indices.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mapped: Option<Vec<serde_json::Value>>,
}

/// What the landscape holds, against the cache and the space.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Counts {
    /// Entries in the cache.
    pub cache_entries: usize,
    /// Landscape lines written (entries whose config parses).
    pub records: usize,
    /// Entries left out: config or time not understood.
    pub skipped: usize,
    /// Lines with a config already written (two keys naming one config).
    pub duplicates: usize,
    pub ok: usize,
    /// By outcome (`ok`, `compile_error`, `runtime_error`).
    pub outcomes: BTreeMap<String, usize>,
    /// By the cache's failure string (`CompilationFailedConfig`, ...).
    pub failures: BTreeMap<String, usize>,
    /// Records whose config breaks a translated restriction (never proposed by a search).
    pub break_restrictions: usize,
    /// Combinations of the knobs' values, before constraints.
    pub raw_configs: String,
    /// Valid configs of the space (when it is small enough to enumerate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_configs: Option<usize>,
    /// Valid configs with a record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_in_cache: Option<usize>,
    /// Valid configs without a record: they replay as `missing`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing: Option<usize>,
}

/// The result of an import.
#[derive(Clone, Debug, Serialize)]
pub struct ImportSummary {
    pub task: String,
    pub dir: PathBuf,
    pub manifest: PathBuf,
    pub landscape: PathBuf,
    pub meta: PathBuf,
    pub cache: PathBuf,
    pub cache_sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spec: Option<PathBuf>,
    pub device: String,
    pub kernel: String,
    pub shape: String,
    pub knobs: Vec<KnobSummary>,
    /// Translated restrictions: (Python, rhai).
    pub constraints: Vec<(String, String)>,
    pub default_config: serde_json::Map<String, serde_json::Value>,
    /// Where the default config came from: `spec`, `first values`, `cache`, `lexicographic`.
    pub default_from: String,
    /// The layers were guessed (no `--macro`).
    pub layers_guessed: bool,
    pub counts: Counts,
    /// Things the user should know.
    pub notes: Vec<String>,
}

/// Everything the writer needs.
struct Plan<'a> {
    opts: &'a ImportOptions,
    cache: &'a KtCache,
    spec: Option<&'a Spec>,
    task_name: String,
    device: String,
    slug: String,
    knobs: Vec<KnobSummary>,
    constraints: Vec<(String, String)>,
    space: Space,
    counts: Counts,
    notes: Vec<String>,
    default_from: String,
}

/// Imports `opts.cache` into `opts.out`.
pub fn import(opts: &ImportOptions) -> Result<ImportSummary, ImportError> {
    let manifest = opts.out.join("task.toml");
    if manifest.exists() && !opts.force {
        return Err(ImportError::Exists { path: manifest });
    }
    let cache = KtCache::load(&opts.cache)?;
    let spec = opts.spec.as_deref().map(Spec::load).transpose()?;
    let mut notes = cache.notes.clone();

    for (i, p) in cache.params.iter().enumerate() {
        if !is_identifier(&p.name) {
            return Err(ImportError::invalid(
                &cache.path,
                format!("tune_params_keys[{i}]"),
                format!("`{}` is not an identifier", p.name),
            ));
        }
        if let Some(m) = &p.mapped {
            notes.push(format!(
                "{}: the values {} are not integers; the knob takes their indices 0..{}",
                p.name,
                serde_json::Value::Array(m.clone()),
                m.len() - 1
            ));
        }
    }
    let shape_params = shape_params(&cache)?;
    if opts.shape.trim().is_empty() {
        return Err(ImportError::BadOption {
            option: "--shape".into(),
            message: "is empty".into(),
        });
    }

    // Defaults: the spec's where valid, else the first value.
    let mut defaults: Vec<i64> = cache.params.iter().map(|p| p.values[0]).collect();
    let mut from_spec = false;
    if let Some(spec) = &spec {
        for d in &spec.defaults {
            match cache.params.iter().position(|p| p.name == d.name) {
                None => notes.push(format!(
                    "{}: the spec's parameter `{}` is not in the cache; ignored",
                    spec.path.display(),
                    d.name
                )),
                Some(i) => match cache.params[i].value_of(&d.value) {
                    Some(v) => {
                        defaults[i] = v;
                        from_spec = true;
                    }
                    None => notes.push(format!(
                        "{}: {}: {} is not one of {}'s values; its first value is the default",
                        spec.path.display(),
                        d.key,
                        d.value,
                        d.name
                    )),
                },
            }
        }
    }

    let constraints = translate_restrictions(&cache, spec.as_ref())?;
    let (layers, layers_guessed) = layers(&cache.params, opts.macro_knobs.as_deref())?;

    let knobs: Vec<Knob> = cache
        .params
        .iter()
        .zip(&defaults)
        .zip(&layers)
        .map(|((p, &default), &layer)| Knob {
            name: p.name.clone(),
            values: p.values.clone(),
            default,
            layer,
            addresses: vec![],
        })
        .collect();
    let space = Space::new(
        knobs,
        constraints
            .iter()
            .map(|(_, _, expr)| Constraint {
                expr: expr.clone(),
                reason: None,
            })
            .collect(),
    );

    // A default that breaks the restrictions: the first valid measured config, else the
    // first valid one.
    let mut default_from = if from_spec { "spec" } else { "first values" }.to_string();
    let mut default = space.default_config();
    if space.violation(&default).is_some() {
        let broken = space.display(&default);
        let measured = cache
            .entries
            .iter()
            .find(|e| e.outcome == Outcome::Ok && space.is_valid(&Config(e.config.clone())));
        let (config, how) = match measured {
            Some(e) => (
                Config(e.config.clone()),
                "the first valid config in the cache with a time",
            ),
            None => (
                first_valid(&space).ok_or_else(|| {
                    ImportError::invalid(
                        spec.as_ref().map_or(&cache.path, |s| &s.path),
                        "restrictions",
                        format!(
                            "no combination of the tune_params values meets every restriction (searched {FIRST_VALID_LIMIT} at most)"
                        ),
                    )
                })?,
                "the first valid config in lexicographic order",
            ),
        };
        notes.push(format!(
            "the default config {broken} breaks the restrictions; the default is {how}: {}",
            space.display(&config)
        ));
        default_from = if measured.is_some() {
            "cache"
        } else {
            "lexicographic"
        }
        .to_string();
        default = config;
    }
    let knobs: Vec<Knob> = space
        .knobs()
        .iter()
        .zip(default.values())
        .map(|(k, &d)| Knob {
            default: d,
            ..k.clone()
        })
        .collect();
    let space = Space::new(knobs, space.constraints().to_vec());

    let counts = count(&cache, &space, &mut notes);
    let device = if cache.device_name.trim().is_empty() {
        let stem = file_stem(&cache.path);
        notes.push(format!(
            "the cache has no device_name; the device is called `{stem}` after the file"
        ));
        stem
    } else {
        cache.device_name.trim().to_string()
    };
    let slug = slug(&device);
    let task_name = match &opts.name {
        Some(n) => n.clone(),
        None => std::path::absolute(&opts.out)
            .ok()
            .and_then(|p| p.file_name().map(|s| s.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "imported".into()),
    };
    if task_name.trim().is_empty() {
        return Err(ImportError::BadOption {
            option: "--name".into(),
            message: "is empty".into(),
        });
    }
    let knob_summaries: Vec<KnobSummary> = space
        .knobs()
        .iter()
        .zip(&cache.params)
        .map(|(k, p)| KnobSummary {
            name: k.name.clone(),
            values: k.values.clone(),
            default: k.default,
            layer: k.layer,
            mapped: p.mapped.clone(),
        })
        .collect();
    let plan = Plan {
        opts,
        cache: &cache,
        spec: spec.as_ref(),
        task_name,
        device,
        slug,
        knobs: knob_summaries,
        constraints: constraints
            .iter()
            .map(|(py, rhai, _)| (py.clone(), rhai.clone()))
            .collect(),
        space,
        counts,
        notes,
        default_from,
    };
    let paths = write::write(&plan, &shape_params)?;
    // The task must load as written, and its landscape replay.
    let task = crate::task::Task::load(&opts.out)?;
    debug_assert_eq!(task.space.knobs().len(), plan.knobs.len());

    Ok(ImportSummary {
        task: plan.task_name.clone(),
        dir: opts.out.clone(),
        manifest: paths.manifest,
        landscape: paths.landscape,
        meta: paths.meta,
        cache: cache.path.clone(),
        cache_sha256: cache.sha256.clone(),
        spec: spec.as_ref().map(|s| s.path.clone()),
        device: plan.device.clone(),
        kernel: cache.kernel_name.clone(),
        shape: opts.shape.clone(),
        default_config: plan.space.to_json(&plan.space.default_config()),
        knobs: plan.knobs,
        constraints: plan.constraints,
        default_from: plan.default_from,
        layers_guessed,
        counts: plan.counts,
        notes: plan.notes,
    })
}

/// `problem_size_0`, `problem_size_1`, ... from `problem_size`.
fn shape_params(cache: &KtCache) -> Result<BTreeMap<String, i64>, ImportError> {
    let params: BTreeMap<String, i64> = cache
        .problem_size
        .iter()
        .enumerate()
        .map(|(i, &v)| (format!("problem_size_{i}"), v))
        .collect();
    if let Some(clash) = params
        .keys()
        .find(|k| cache.params.iter().any(|p| &p.name == *k))
    {
        return Err(ImportError::invalid(
            &cache.path,
            "tune_params_keys",
            format!("`{clash}` is both a tunable parameter and the shape parameter made from problem_size"),
        ));
    }
    Ok(params)
}

/// Each restriction: (Python text, rhai text, compiled).
fn translate_restrictions(
    cache: &KtCache,
    spec: Option<&Spec>,
) -> Result<Vec<(String, String, Expr)>, ImportError> {
    let Some(spec) = spec else {
        return Ok(vec![]);
    };
    let names: BTreeMap<String, NameInfo> = cache
        .params
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                NameInfo {
                    non_negative: p.values.iter().all(|&v| v >= 0),
                },
            )
        })
        .collect();
    let mut out = Vec::new();
    for r in &spec.restrictions {
        let text = r.text.trim();
        let fail = |message: String| {
            ImportError::invalid(
                &spec.path,
                &r.key,
                format!("restriction `{text}`: {message}"),
            )
        };
        let t = python_expr::translate(text, &names).map_err(|e| fail(e.to_string()))?;
        if let Some(p) = cache
            .params
            .iter()
            .find(|p| p.mapped.is_some() && t.names.contains(&p.name))
        {
            return Err(fail(format!(
                "it mentions `{}`, whose values in the cache are not integers (imported as their indices), so it cannot be translated",
                p.name
            )));
        }
        let expr =
            Expr::compile(&t.rhai, cache.params.iter().map(|p| p.name.as_str())).map_err(|e| {
                fail(format!(
                    "its translation `{}` does not compile: {e}",
                    t.rhai
                ))
            })?;
        out.push((text.to_string(), t.rhai, expr));
    }
    Ok(out)
}

/// The layer of each knob: exactly `macro_knobs` are macro, or a guess. The bool says
/// whether it was a guess.
fn layers(
    params: &[KtParam],
    macro_knobs: Option<&[String]>,
) -> Result<(Vec<Layer>, bool), ImportError> {
    if let Some(names) = macro_knobs {
        for n in names {
            if !params.iter().any(|p| &p.name == n) {
                return Err(ImportError::BadOption {
                    option: "--macro".into(),
                    message: format!(
                        "`{n}` is not a tunable parameter of the cache; they are {}",
                        params
                            .iter()
                            .map(|p| p.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
        }
        let layers = params
            .iter()
            .map(|p| {
                if names.contains(&p.name) {
                    Layer::Macro
                } else {
                    Layer::Micro
                }
            })
            .collect();
        return Ok((layers, false));
    }
    let mut layers: Vec<Layer> = params.iter().map(guess_layer).collect();
    if !layers.contains(&Layer::Macro) {
        // The knob with the fewest values (preferring one that has a choice).
        let pick = (0..params.len())
            .filter(|&i| params[i].values.len() > 1)
            .min_by_key(|&i| params[i].values.len())
            .unwrap_or(0);
        layers[pick] = Layer::Macro;
    }
    Ok((layers, true))
}

/// Macro: switches (values within {0, 1}) and small choices named like algorithm switches.
fn guess_layer(p: &KtParam) -> Layer {
    const HINTS: [&str; 5] = ["use_", "method", "read_only", "padding", "strategy"];
    let switch = p.values.iter().all(|&v| v == 0 || v == 1);
    let lower = p.name.to_ascii_lowercase();
    let named = p.values.len() <= 3 && HINTS.iter().any(|h| lower.contains(h));
    if switch || named {
        Layer::Macro
    } else {
        Layer::Micro
    }
}

/// The first valid config in lexicographic order of the value lists.
fn first_valid(space: &Space) -> Option<Config> {
    let knobs = space.knobs();
    let mut idx = vec![0usize; knobs.len()];
    for _ in 0..FIRST_VALID_LIMIT {
        let config = Config(idx.iter().zip(knobs).map(|(&i, k)| k.values[i]).collect());
        if space.violation(&config).is_none() {
            return Some(config);
        }
        let mut pos = knobs.len();
        loop {
            if pos == 0 {
                return None;
            }
            pos -= 1;
            idx[pos] += 1;
            if idx[pos] < knobs[pos].values.len() {
                break;
            }
            idx[pos] = 0;
        }
    }
    None
}

fn count(cache: &KtCache, space: &Space, notes: &mut Vec<String>) -> Counts {
    let mut c = Counts {
        cache_entries: cache.entry_count,
        records: cache.entries.len(),
        skipped: cache.skipped.len(),
        raw_configs: space.raw_size().to_string(),
        ..Counts::default()
    };
    let mut seen = HashSet::new();
    for e in &cache.entries {
        *c.outcomes
            .entry(e.outcome.as_str().to_string())
            .or_default() += 1;
        if let Some(f) = &e.failure {
            *c.failures.entry(f.clone()).or_default() += 1;
        }
        if e.outcome == Outcome::Ok {
            c.ok += 1;
        }
        let config = Config(e.config.clone());
        if space.violation(&config).is_some() {
            c.break_restrictions += 1;
        }
        if !seen.insert(config) {
            c.duplicates += 1;
        }
    }
    if let Some((key, why)) = cache.skipped.first() {
        notes.push(format!(
            "{} cache entries were left out (config or time not understood); the first, `{key}`: {why}",
            cache.skipped.len()
        ));
    }
    if c.duplicates > 0 {
        notes.push(format!(
            "{} cache entries name a config already seen; a replay uses the last",
            c.duplicates
        ));
    }
    match space.enumerate(ENUMERATE_LIMIT) {
        Ok(valid) => {
            let in_cache = valid.iter().filter(|v| seen.contains(*v)).count();
            c.valid_configs = Some(valid.len());
            c.valid_in_cache = Some(in_cache);
            c.missing = Some(valid.len() - in_cache);
        }
        Err(_) => notes.push(format!(
            "the space has {} combinations, more than the {ENUMERATE_LIMIT} enumerated to count valid configs absent from the cache",
            space.raw_size()
        )),
    }
    c
}

/// Lowercase letters and digits, runs of anything else as one `-`.
pub fn slug(text: &str) -> String {
    let mut out = String::new();
    for ch in text.chars() {
        if ch.is_ascii_alphanumeric() {
            out.push(ch.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out = out.trim_matches('-').to_string();
    if out.is_empty() {
        "device".into()
    } else {
        out
    }
}

/// `A100` for `dir/A100.json.gz`.
fn file_stem(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    let name = name.strip_suffix(".json").unwrap_or(name);
    name.to_string()
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        assert_eq!(slug("NVIDIA A100-PCIE-40GB"), "nvidia-a100-pcie-40gb");
        assert_eq!(slug("AMD Instinct MI50/MI60"), "amd-instinct-mi50-mi60");
        assert_eq!(slug(""), "device");
        assert_eq!(file_stem(Path::new("/x/MI250X.json.gz")), "MI250X");
    }

    fn p(name: &str, values: &[i64]) -> KtParam {
        KtParam {
            name: name.into(),
            values: values.to_vec(),
            mapped: None,
        }
    }

    #[test]
    fn layer_guess() {
        let params = [
            p("block_size_x", &[16, 32, 64]),
            p("use_padding", &[0, 1]),
            p("between_method", &[0, 1, 2, 3]),
            p("use_method", &[0, 1, 2]),
        ];
        let (l, guessed) = layers(&params, None).unwrap();
        assert!(guessed);
        assert_eq!(l, [Layer::Micro, Layer::Macro, Layer::Micro, Layer::Macro]);
        // Nothing looks macro: the knob with the fewest values (more than one) is.
        let params = [p("a", &[7]), p("b", &[1, 2, 3, 4]), p("c", &[2, 4, 8])];
        let (l, _) = layers(&params, None).unwrap();
        assert_eq!(l, [Layer::Micro, Layer::Micro, Layer::Macro]);
        let (l, guessed) = layers(&params, Some(&["a".to_string()])).unwrap();
        assert!(!guessed);
        assert_eq!(l, [Layer::Macro, Layer::Micro, Layer::Micro]);
        assert!(layers(&params, Some(&["z".to_string()])).is_err());
    }
}
