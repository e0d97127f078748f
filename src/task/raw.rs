//! The manifest as written: serde structs that reject unknown keys. `Task::load` turns them
//! into checked types.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::insight::InsightRules;
use crate::space::Layer;
use crate::task::Tolerance;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTask {
    pub task: Option<RawHeader>,
    #[serde(default)]
    pub knob: Vec<RawKnob>,
    #[serde(default)]
    pub constraint: Vec<RawConstraint>,
    #[serde(default)]
    pub shape: Vec<RawShape>,
    pub tolerance: Option<Tolerance>,
    pub insight: Option<InsightRules>,
    pub kernel: Option<RawKernel>,
    pub reference: Option<RawLaunch>,
    #[serde(default)]
    pub baseline: Vec<RawBaseline>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHeader {
    pub name: Option<String>,
    pub description: Option<String>,
    /// The shapes a candidate must be correct at to become an elite; default: every shape.
    pub verify_shapes: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKnob {
    pub name: String,
    pub values: Vec<i64>,
    pub default: Option<i64>,
    pub layer: Option<Layer>,
    #[serde(default)]
    pub addresses: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConstraint {
    pub expr: String,
    pub reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawShape {
    pub name: String,
    #[serde(default)]
    pub params: BTreeMap<String, i64>,
    pub flops: Option<String>,
    pub bytes: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLaunch {
    pub source: String,
    pub entry: String,
    pub grid: Vec<String>,
    pub block: Vec<String>,
    pub shared_mem: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKernel {
    pub source: String,
    pub entry: String,
    pub compiler: Option<Compiler>,
    #[serde(default)]
    pub flags: Vec<String>,
    #[serde(default)]
    pub shape_defines: Vec<String>,
    pub grid: Vec<String>,
    pub block: Vec<String>,
    pub shared_mem: Option<String>,
    pub max_spill_bytes: Option<u64>,
    pub timeout_s: Option<f64>,
    #[serde(default, rename = "arg")]
    pub args: Vec<RawArg>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawArg {
    pub name: String,
    pub kind: ArgKind,
    pub dtype: DType,
    pub len: Option<String>,
    pub value: Option<String>,
    #[serde(default)]
    pub shape: Vec<String>,
    #[serde(default = "default_role")]
    pub role: ArgRole,
    pub init: Option<Init>,
}

fn default_role() -> ArgRole {
    ArgRole::Input
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBaseline {
    pub name: String,
    pub expr: String,
    pub setup: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compiler {
    Nvcc,
    Nvrtc,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArgKind {
    Buffer,
    Scalar,
}

impl ArgKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ArgKind::Buffer => "buffer",
            ArgKind::Scalar => "scalar",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArgRole {
    Input,
    Output,
    Inout,
}

/// Element types of buffers and scalars.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F32,
    F16,
    Bf16,
    E4m3,
    E5m2,
    I32,
    I64,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::Bf16 => 2,
            DType::E4m3 | DType::E5m2 => 1,
            DType::I64 => 8,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::Bf16 => "bf16",
            DType::E4m3 => "e4m3",
            DType::E5m2 => "e5m2",
            DType::I32 => "i32",
            DType::I64 => "i64",
        }
    }

    pub fn is_scalar_type(self) -> bool {
        matches!(self, DType::I32 | DType::I64 | DType::F32)
    }

    pub fn is_float(self) -> bool {
        !matches!(self, DType::I32 | DType::I64)
    }
}

/// How a buffer's initial values are drawn (then multiplied by `scale`, then rounded to the
/// buffer's type).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "dist", rename_all = "lowercase", deny_unknown_fields)]
pub enum Init {
    Normal {
        #[serde(default)]
        mean: f64,
        #[serde(default = "one")]
        std: f64,
        #[serde(default = "one")]
        scale: f64,
    },
    Uniform {
        #[serde(default = "minus_one")]
        low: f64,
        #[serde(default = "one")]
        high: f64,
        #[serde(default = "one")]
        scale: f64,
    },
}

impl Default for Init {
    fn default() -> Self {
        Init::Normal {
            mean: 0.0,
            std: 1.0,
            scale: 1.0,
        }
    }
}

fn one() -> f64 {
    1.0
}

fn minus_one() -> f64 {
    -1.0
}
