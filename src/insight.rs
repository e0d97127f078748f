//! Profiling insights: hardware metrics, the bottleneck class the seed's decision rules give
//! them, and the knobs that class points to.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Tensor pipe busy, % of peak sustained while active.
pub const METRIC_TENSOR_PIPE: &str =
    "sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_active";
/// Instructions executed on the FMA pipe.
pub const METRIC_FMA_INST: &str = "smsp__inst_executed_pipe_fma.sum";
/// DRAM throughput, % of peak over the elapsed time.
pub const METRIC_DRAM: &str = "dram__throughput.avg.pct_of_peak_sustained_elapsed";
/// Cycles in which the SM sub-partitions were active.
pub const METRIC_CYCLES_ACTIVE: &str = "smsp__cycles_active.avg";
/// Achieved occupancy, % of peak sustained while active.
pub const METRIC_WARPS_ACTIVE: &str = "sm__warps_active.avg.pct_of_peak_sustained_active";
/// Kernel duration as Nsight Compute measures it (ns).
pub const METRIC_DURATION: &str = "gpu__time_duration.sum";

/// The metrics the seed's rules read, plus the kernel duration.
pub const SEED_METRICS: [&str; 6] = [
    METRIC_TENSOR_PIPE,
    METRIC_FMA_INST,
    METRIC_DRAM,
    METRIC_CYCLES_ACTIVE,
    METRIC_WARPS_ACTIVE,
    METRIC_DURATION,
];

/// What limits a kernel, in the seed's four classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bottleneck {
    Compute,
    Memory,
    Occupancy,
    Balanced,
}

impl Bottleneck {
    pub const ALL: [Bottleneck; 4] = [
        Bottleneck::Compute,
        Bottleneck::Memory,
        Bottleneck::Occupancy,
        Bottleneck::Balanced,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Bottleneck::Compute => "compute",
            Bottleneck::Memory => "memory",
            Bottleneck::Occupancy => "occupancy",
            Bottleneck::Balanced => "balanced",
        }
    }
}

impl fmt::Display for Bottleneck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Bottleneck {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Bottleneck::ALL
            .into_iter()
            .find(|b| b.as_str() == s)
            .ok_or_else(|| {
                format!("unknown bottleneck class `{s}` (expected compute, memory, occupancy or balanced)")
            })
    }
}

/// The thresholds of the seed's decision rules; a task may override each.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InsightRules {
    /// Tensor pipe busy above this (%): compute-bound.
    pub tensor_pipe_pct: f64,
    /// Else DRAM throughput above this (%): memory-bound.
    pub dram_pct: f64,
    /// Else achieved occupancy below this (%): occupancy-bound. Else balanced.
    pub warps_active_pct: f64,
}

impl Default for InsightRules {
    fn default() -> Self {
        InsightRules {
            tensor_pipe_pct: 50.0,
            dram_pct: 70.0,
            warps_active_pct: 30.0,
        }
    }
}

impl InsightRules {
    /// Applies the rules in the seed's order. A metric that is missing does not fire its rule.
    pub fn classify(&self, metrics: &BTreeMap<String, f64>) -> Bottleneck {
        let get = |name: &str| metrics.get(name).copied();
        if get(METRIC_TENSOR_PIPE).is_some_and(|v| v > self.tensor_pipe_pct) {
            Bottleneck::Compute
        } else if get(METRIC_DRAM).is_some_and(|v| v > self.dram_pct) {
            Bottleneck::Memory
        } else if get(METRIC_WARPS_ACTIVE).is_some_and(|v| v < self.warps_active_pct) {
            Bottleneck::Occupancy
        } else {
            Bottleneck::Balanced
        }
    }
}

/// A candidate's profile: raw metrics and the class the rules give them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bottleneck: Option<Bottleneck>,
    /// Seconds Nsight Compute took for this profile, where it was taken in this run (absent
    /// for a profile reused from an earlier run or read from a landscape).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_s: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(tensor: f64, dram: f64, warps: f64) -> BTreeMap<String, f64> {
        BTreeMap::from([
            (METRIC_TENSOR_PIPE.to_string(), tensor),
            (METRIC_DRAM.to_string(), dram),
            (METRIC_WARPS_ACTIVE.to_string(), warps),
        ])
    }

    #[test]
    fn rules_fire_in_the_seeds_order() {
        let r = InsightRules::default();
        assert_eq!(r.classify(&m(60.0, 90.0, 10.0)), Bottleneck::Compute);
        assert_eq!(r.classify(&m(40.0, 90.0, 10.0)), Bottleneck::Memory);
        assert_eq!(r.classify(&m(40.0, 60.0, 10.0)), Bottleneck::Occupancy);
        assert_eq!(r.classify(&m(40.0, 60.0, 40.0)), Bottleneck::Balanced);
    }

    #[test]
    fn thresholds_are_strict_and_overridable() {
        let r = InsightRules::default();
        assert_eq!(r.classify(&m(50.0, 70.0, 30.0)), Bottleneck::Balanced);
        let r = InsightRules {
            tensor_pipe_pct: 20.0,
            ..InsightRules::default()
        };
        assert_eq!(r.classify(&m(30.0, 0.0, 50.0)), Bottleneck::Compute);
    }

    #[test]
    fn missing_metrics_fall_through_to_balanced() {
        assert_eq!(
            InsightRules::default().classify(&BTreeMap::new()),
            Bottleneck::Balanced
        );
    }

    #[test]
    fn names_round_trip() {
        for b in Bottleneck::ALL {
            assert_eq!(b.as_str().parse::<Bottleneck>().unwrap(), b);
        }
        assert!("fast".parse::<Bottleneck>().is_err());
    }
}
