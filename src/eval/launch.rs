//! Launch dimensions of a kernel for one config on one shape: the task's `grid`, `block` and
//! `shared_mem` expressions evaluated with the knob values and the shape's parameters.
//!
//! The compile gate uses them to check threads, registers and shared memory per block before
//! anything runs; the GPU evaluator uses the same numbers to launch.

use serde::{Deserialize, Serialize};

use crate::space::{Config, Space};
use crate::task::expr::ExprError;
use crate::task::{Launch, Shape};

/// Grid and block sizes and dynamic shared memory (bytes) of one launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LaunchDims {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    /// Dynamic shared memory per block, bytes.
    pub smem: u32,
}

impl LaunchDims {
    pub fn threads_per_block(&self) -> u64 {
        self.block.iter().map(|&d| u64::from(d)).product()
    }

    pub fn blocks(&self) -> u64 {
        self.grid.iter().map(|&d| u64::from(d)).product()
    }
}

/// A launch expression that cannot be evaluated for this config, or gives a size no launch
/// can have.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LaunchError {
    #[error("{field}: {source}")]
    Eval { field: String, source: ExprError },
    #[error("{field} = `{expr}` gives {value}, {why}")]
    OutOfRange {
        field: String,
        expr: String,
        value: i64,
        why: &'static str,
    },
    #[error("the config has {found} values for {expected} knobs")]
    ConfigLength { found: usize, expected: usize },
}

/// The variables a launch expression sees: every knob, then every shape parameter.
pub fn launch_vars<'a>(
    space: &'a Space,
    config: &'a Config,
    shape: &'a Shape,
) -> Result<Vec<(&'a str, i64)>, LaunchError> {
    if config.values().len() != space.knobs().len() {
        return Err(LaunchError::ConfigLength {
            found: config.values().len(),
            expected: space.knobs().len(),
        });
    }
    Ok(space
        .knobs()
        .iter()
        .zip(config.values())
        .map(|(k, &v)| (k.name.as_str(), v))
        .chain(shape.vars())
        .collect())
}

/// Evaluates `launch`'s grid, block and shared-memory expressions for `config` on `shape`.
///
/// Grid and block sizes must be at least 1 and fit in 32 bits; shared memory must be
/// non-negative and fit in 32 bits. Hardware limits (1024 threads per block, 65535 blocks in
/// y and z, the device's shared memory) are the compile gate's to check, not this function's.
pub fn launch_dims(
    launch: &Launch,
    space: &Space,
    config: &Config,
    shape: &Shape,
) -> Result<LaunchDims, LaunchError> {
    let vars = launch_vars(space, config, shape)?;
    let eval = |field: String, expr: &crate::task::expr::Expr, min: i64| {
        let value = expr
            .eval_int(vars.iter().copied())
            .map_err(|source| LaunchError::Eval {
                field: field.clone(),
                source,
            })?;
        let why = if value < min {
            if min == 1 {
                "not a positive size"
            } else {
                "a negative size"
            }
        } else if value > i64::from(u32::MAX) {
            "more than fits in 32 bits"
        } else {
            return Ok(value as u32);
        };
        Err(LaunchError::OutOfRange {
            field,
            expr: expr.text().to_string(),
            value,
            why,
        })
    };
    let mut grid = [1u32; 3];
    let mut block = [1u32; 3];
    for (i, axis) in ["x", "y", "z"].iter().enumerate() {
        grid[i] = eval(format!("grid.{axis}"), &launch.grid[i], 1)?;
        block[i] = eval(format!("block.{axis}"), &launch.block[i], 1)?;
    }
    let smem = eval("shared_mem".to_string(), &launch.shared_mem, 0)?;
    Ok(LaunchDims { grid, block, smem })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::*;
    use crate::space::{Knob, Layer};
    use crate::task::expr::Expr;

    fn space() -> Space {
        let knob = |name: &str, values: Vec<i64>| Knob {
            name: name.into(),
            default: values[0],
            values,
            layer: Layer::Macro,
            addresses: vec![],
        };
        Space::new(
            vec![knob("BM", vec![64, 128]), knob("WARPS", vec![4, 8])],
            vec![],
        )
    }

    fn shape(m: i64) -> Shape {
        Shape {
            name: "s".into(),
            params: BTreeMap::from([("M".to_string(), m), ("N".to_string(), 1000)]),
            flops: None,
            bytes: None,
        }
    }

    fn launch(grid: [&str; 3], block: [&str; 3], smem: &str) -> Launch {
        let names = ["BM", "WARPS", "M", "N"];
        let e = |t: &str| Expr::compile(t, names).unwrap();
        Launch {
            source: PathBuf::from("k.cu"),
            entry: "k".into(),
            grid: grid.map(e),
            block: block.map(e),
            shared_mem: e(smem),
        }
    }

    #[test]
    fn evaluates_with_knobs_and_shape_params() {
        let l = launch(
            ["ceil_div(N, BM)", "ceil_div(M, BM)", "1"],
            ["WARPS * 32", "1", "1"],
            "BM * 64 * 2",
        );
        let d = launch_dims(&l, &space(), &Config(vec![128, 8]), &shape(4096)).unwrap();
        assert_eq!(d.grid, [8, 32, 1]);
        assert_eq!(d.block, [256, 1, 1]);
        assert_eq!(d.smem, 16384);
        assert_eq!(d.threads_per_block(), 256);
        assert_eq!(d.blocks(), 256);
    }

    #[test]
    fn zero_grid_and_negative_smem_are_errors() {
        let l = launch(["M / BM", "1", "1"], ["32", "1", "1"], "0");
        let err = launch_dims(&l, &space(), &Config(vec![128, 4]), &shape(100)).unwrap_err();
        assert!(err.to_string().contains("grid.x"), "{err}");
        assert!(err.to_string().contains("not a positive size"), "{err}");

        let l = launch(["1", "1", "1"], ["32", "1", "1"], "M - 200");
        let err = launch_dims(&l, &space(), &Config(vec![64, 4]), &shape(100)).unwrap_err();
        assert!(err.to_string().contains("shared_mem"), "{err}");
    }

    #[test]
    fn evaluation_errors_name_the_field() {
        let l = launch(["1", "N / (BM - 64)", "1"], ["32", "1", "1"], "0");
        let err = launch_dims(&l, &space(), &Config(vec![64, 4]), &shape(100)).unwrap_err();
        assert!(
            matches!(err, LaunchError::Eval { ref field, .. } if field == "grid.y"),
            "{err}"
        );
    }

    #[test]
    fn too_large_is_an_error() {
        let l = launch(["M * M * M", "1", "1"], ["32", "1", "1"], "0");
        let err = launch_dims(&l, &space(), &Config(vec![64, 4]), &shape(1 << 20)).unwrap_err();
        assert!(err.to_string().contains("32 bits"), "{err}");
    }

    #[test]
    fn config_of_the_wrong_length_is_an_error() {
        let l = launch(["1", "1", "1"], ["32", "1", "1"], "0");
        let err = launch_dims(&l, &space(), &Config(vec![64]), &shape(1)).unwrap_err();
        assert!(matches!(
            err,
            LaunchError::ConfigLength {
                found: 1,
                expected: 2
            }
        ));
    }
}
