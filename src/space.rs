//! The design space of a task: knobs, their values, and the constraints a config must meet.
//!
//! A [`Config`] is one value per knob, in the order the task declares them. Spaces can be far
//! too large to list (10^12 configs and more): nothing here enumerates unless asked to, and
//! sampling draws each knob independently, then rejects configs that break a constraint.

use std::fmt;
use std::sync::{Arc, OnceLock};

use rand::RngExt;
use serde::{Deserialize, Serialize};

use crate::insight::Bottleneck;
use crate::task::expr::{Expr, ExprError};

/// Which layer of the two-layer traverse a knob belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layer {
    /// High-level algorithmic choices, searched first.
    Macro,
    /// Fine-grained tuning, searched around the best macro variants.
    Micro,
}

#[derive(Clone, Debug)]
pub struct Knob {
    pub name: String,
    pub values: Vec<i64>,
    pub default: i64,
    pub layer: Layer,
    /// The bottleneck classes this knob can relieve.
    pub addresses: Vec<Bottleneck>,
}

impl Knob {
    pub fn addresses(&self, class: Bottleneck) -> bool {
        self.addresses.contains(&class)
    }
}

#[derive(Clone, Debug)]
pub struct Constraint {
    pub expr: Expr,
    pub reason: Option<String>,
}

/// One value per knob, in the task's knob order.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Config(pub Vec<i64>);

impl Config {
    pub fn values(&self) -> &[i64] {
        &self.0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpaceError {
    #[error("the space has {size} configs, more than the {limit} that can be listed; use a sampling strategy (full, insight, free or random) instead of grid")]
    TooLarge { size: String, limit: u128 },
    #[error("{0}")]
    BadConfig(String),
}

/// The configs a task may take.
#[derive(Clone, Debug)]
pub struct Space {
    knobs: Vec<Knob>,
    constraints: Vec<Constraint>,
    /// Every valid config, listed once on first demand ([`Space::listed`]).
    listing: OnceLock<Arc<Vec<Config>>>,
}

/// How many random draws `sample` makes before it decides the constraints leave nothing.
pub const SAMPLE_ATTEMPTS: usize = 10_000;

impl Space {
    pub fn new(knobs: Vec<Knob>, constraints: Vec<Constraint>) -> Space {
        Space {
            knobs,
            constraints,
            listing: OnceLock::new(),
        }
    }

    /// Every valid config, as [`Space::enumerate`] lists them, if there are at most `limit`
    /// combinations; listed once per space and shared afterwards (a study runs hundreds of
    /// searches on one space).
    pub fn listed(&self, limit: u128) -> Result<Arc<Vec<Config>>, SpaceError> {
        let size = self.raw_size();
        if size > limit {
            return Err(SpaceError::TooLarge {
                size: format_big(size),
                limit,
            });
        }
        if let Some(l) = self.listing.get() {
            return Ok(l.clone());
        }
        let all = Arc::new(self.enumerate(limit)?);
        Ok(self.listing.get_or_init(|| all).clone())
    }

    pub fn knobs(&self) -> &[Knob] {
        &self.knobs
    }

    pub fn constraints(&self) -> &[Constraint] {
        &self.constraints
    }

    pub fn knob_index(&self, name: &str) -> Option<usize> {
        self.knobs.iter().position(|k| k.name == name)
    }

    /// Indices of the knobs in `layer`, in declaration order.
    pub fn layer_indices(&self, layer: Layer) -> Vec<usize> {
        (0..self.knobs.len())
            .filter(|&i| self.knobs[i].layer == layer)
            .collect()
    }

    /// The number of knob combinations before constraints, saturating at `u128::MAX`.
    pub fn raw_size(&self) -> u128 {
        self.knobs
            .iter()
            .fold(1u128, |acc, k| acc.saturating_mul(k.values.len() as u128))
    }

    /// Combinations of the given knobs only.
    pub fn raw_size_of(&self, indices: &[usize]) -> u128 {
        indices.iter().fold(1u128, |acc, &i| {
            acc.saturating_mul(self.knobs[i].values.len() as u128)
        })
    }

    pub fn default_config(&self) -> Config {
        Config(self.knobs.iter().map(|k| k.default).collect())
    }

    fn vars<'a>(&'a self, config: &'a Config) -> impl Iterator<Item = (&'a str, i64)> + 'a {
        self.knobs
            .iter()
            .zip(config.values())
            .map(|(k, &v)| (k.name.as_str(), v))
    }

    /// The first constraint `config` breaks, if any. An expression that cannot be evaluated
    /// for this config (division by zero, say) counts as broken.
    pub fn violation(&self, config: &Config) -> Option<(&Constraint, Option<ExprError>)> {
        for c in &self.constraints {
            match c.expr.eval_bool(self.vars(config)) {
                Ok(true) => {}
                Ok(false) => return Some((c, None)),
                Err(e) => return Some((c, Some(e))),
            }
        }
        None
    }

    /// Every knob holds one of its allowed values and every constraint holds.
    pub fn is_valid(&self, config: &Config) -> bool {
        config.0.len() == self.knobs.len()
            && self
                .knobs
                .iter()
                .zip(config.values())
                .all(|(k, v)| k.values.contains(v))
            && self.violation(config).is_none()
    }

    /// All valid configs in lexicographic order of the knobs' value lists, if there are at
    /// most `limit` combinations before constraints.
    pub fn enumerate(&self, limit: u128) -> Result<Vec<Config>, SpaceError> {
        let size = self.raw_size();
        if size > limit {
            return Err(SpaceError::TooLarge {
                size: format_big(size),
                limit,
            });
        }
        let mut out = Vec::new();
        let mut idx = vec![0usize; self.knobs.len()];
        loop {
            let config = Config(
                idx.iter()
                    .zip(&self.knobs)
                    .map(|(&i, k)| k.values[i])
                    .collect(),
            );
            if self.violation(&config).is_none() {
                out.push(config);
            }
            // Odometer increment, last knob fastest.
            let mut pos = self.knobs.len();
            loop {
                if pos == 0 {
                    return Ok(out);
                }
                pos -= 1;
                idx[pos] += 1;
                if idx[pos] < self.knobs[pos].values.len() {
                    break;
                }
                idx[pos] = 0;
            }
        }
    }

    /// A uniformly drawn valid config whose knobs in `fixed` keep the given values, or `None`
    /// if `SAMPLE_ATTEMPTS` draws found none.
    pub fn sample_with<R: rand::Rng + ?Sized>(
        &self,
        rng: &mut R,
        fixed: &[Option<i64>],
    ) -> Option<Config> {
        for _ in 0..SAMPLE_ATTEMPTS {
            let values = self
                .knobs
                .iter()
                .enumerate()
                .map(|(i, k)| match fixed.get(i).copied().flatten() {
                    Some(v) => v,
                    None => k.values[rng.random_range(0..k.values.len())],
                })
                .collect();
            let config = Config(values);
            if self.violation(&config).is_none() {
                return Some(config);
            }
        }
        None
    }

    pub fn sample<R: rand::Rng + ?Sized>(&self, rng: &mut R) -> Option<Config> {
        self.sample_with(rng, &[])
    }

    /// `K=V,K=V` in knob order.
    pub fn display(&self, config: &Config) -> String {
        self.knobs
            .iter()
            .zip(config.values())
            .map(|(k, v)| format!("{}={v}", k.name))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn to_json(&self, config: &Config) -> serde_json::Map<String, serde_json::Value> {
        self.knobs
            .iter()
            .zip(config.values())
            .map(|(k, &v)| (k.name.clone(), serde_json::Value::from(v)))
            .collect()
    }

    /// A config from a JSON object naming every knob exactly once, and no other key.
    pub fn from_json(
        &self,
        map: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Config, SpaceError> {
        if let Some(extra) = map.keys().find(|k| self.knob_index(k).is_none()) {
            return Err(SpaceError::BadConfig(format!("unknown knob `{extra}`")));
        }
        let mut values = Vec::with_capacity(self.knobs.len());
        for k in &self.knobs {
            let v = map
                .get(&k.name)
                .ok_or_else(|| SpaceError::BadConfig(format!("knob `{}` is missing", k.name)))?;
            let v = v.as_i64().ok_or_else(|| {
                SpaceError::BadConfig(format!("knob `{}` is {v}, not an integer", k.name))
            })?;
            values.push(v);
        }
        Ok(Config(values))
    }

    /// Parses `K=V,K=V`; knobs not named keep their defaults. The result must be valid.
    pub fn parse(&self, text: &str) -> Result<Config, SpaceError> {
        let mut config = self.default_config();
        let mut seen = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part.split_once('=').ok_or_else(|| {
                SpaceError::BadConfig(format!("`{part}` is not of the form KNOB=VALUE"))
            })?;
            let (name, value) = (name.trim(), value.trim());
            let i = self.knob_index(name).ok_or_else(|| {
                SpaceError::BadConfig(format!(
                    "unknown knob `{name}`; the knobs are {}",
                    self.knobs
                        .iter()
                        .map(|k| k.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
            if seen.contains(&i) {
                return Err(SpaceError::BadConfig(format!(
                    "knob `{name}` is given twice"
                )));
            }
            seen.push(i);
            let v: i64 = value.parse().map_err(|_| {
                SpaceError::BadConfig(format!("`{name}={value}`: the value is not an integer"))
            })?;
            if !self.knobs[i].values.contains(&v) {
                return Err(SpaceError::BadConfig(format!(
                    "`{name}={v}` is not allowed; {name} takes {:?}",
                    self.knobs[i].values
                )));
            }
            config.0[i] = v;
        }
        if let Some((c, err)) = self.violation(&config) {
            let why = c
                .reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            let detail = err.map(|e| format!(": {e}")).unwrap_or_default();
            return Err(SpaceError::BadConfig(format!(
                "{} breaks the constraint `{}`{why}{detail}",
                self.display(&config),
                c.expr.text()
            )));
        }
        Ok(config)
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layer::Macro => "macro",
            Layer::Micro => "micro",
        })
    }
}

/// 1234567 -> "1234567", 10^15 -> "1.0e15".
pub fn format_big(n: u128) -> String {
    if n < 1_000_000_000 {
        n.to_string()
    } else {
        format!("{:.1e}", n as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn knob(name: &str, values: &[i64], layer: Layer) -> Knob {
        Knob {
            name: name.into(),
            values: values.to_vec(),
            default: values[0],
            layer,
            addresses: vec![],
        }
    }

    fn space(constraints: &[&str]) -> Space {
        let knobs = vec![
            knob("A", &[1, 2, 4], Layer::Macro),
            knob("B", &[8, 16], Layer::Micro),
        ];
        let names: Vec<_> = knobs.iter().map(|k| k.name.clone()).collect();
        let constraints = constraints
            .iter()
            .map(|c| Constraint {
                expr: Expr::compile(c, names.iter().map(String::as_str)).unwrap(),
                reason: None,
            })
            .collect();
        Space::new(knobs, constraints)
    }

    #[test]
    fn enumerates_in_order_and_filters() {
        let s = space(&["A * B <= 32"]);
        let all: Vec<_> = s
            .enumerate(1000)
            .unwrap()
            .iter()
            .map(|c| s.display(c))
            .collect();
        assert_eq!(
            all,
            ["A=1,B=8", "A=1,B=16", "A=2,B=8", "A=2,B=16", "A=4,B=8"]
        );
    }

    #[test]
    fn too_large_to_enumerate() {
        let knobs = (0..40)
            .map(|i| knob(&format!("K{i}"), &[0, 1, 2], Layer::Macro))
            .collect();
        let s = Space::new(knobs, vec![]);
        assert!(matches!(
            s.enumerate(1_000_000),
            Err(SpaceError::TooLarge { .. })
        ));
        // Sampling still works.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        assert!(s.is_valid(&s.sample(&mut rng).unwrap()));
    }

    #[test]
    fn sampling_respects_constraints_and_fixed_values() {
        let s = space(&["A * B <= 32"]);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for _ in 0..100 {
            let c = s.sample_with(&mut rng, &[Some(4)]).unwrap();
            assert_eq!(c.values(), &[4, 8]);
        }
        assert!(s.sample_with(&mut rng, &[None, Some(16)]).unwrap().0[0] <= 2);
    }

    #[test]
    fn unsatisfiable_space_samples_nothing() {
        let s = space(&["A > 100"]);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        assert!(s.sample(&mut rng).is_none());
        assert!(s.enumerate(100).unwrap().is_empty());
    }

    #[test]
    fn parse_checks_names_values_and_constraints() {
        let s = space(&["A * B <= 32"]);
        assert_eq!(s.parse("B=16").unwrap().values(), &[1, 16]);
        assert!(s
            .parse("C=1")
            .unwrap_err()
            .to_string()
            .contains("unknown knob `C`"));
        assert!(s
            .parse("A=3")
            .unwrap_err()
            .to_string()
            .contains("not allowed"));
        assert!(s
            .parse("A=x")
            .unwrap_err()
            .to_string()
            .contains("not an integer"));
        assert!(s
            .parse("A=1,A=2")
            .unwrap_err()
            .to_string()
            .contains("twice"));
        assert!(s
            .parse("A=4,B=16")
            .unwrap_err()
            .to_string()
            .contains("A * B <= 32"));
    }

    #[test]
    fn json_round_trip() {
        let s = space(&[]);
        let c = Config(vec![2, 16]);
        assert_eq!(s.from_json(&s.to_json(&c)).unwrap(), c);
        let mut m = s.to_json(&c);
        m.insert("Z".into(), 1.into());
        assert!(s.from_json(&m).is_err());
    }
}
