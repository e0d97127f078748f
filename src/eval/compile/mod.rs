//! The compile gate: a candidate's source and knob values to a cubin, with ptxas's report of
//! its entry kernel, checked against the device's limits and the task's spill allowance.

pub mod entry;
pub mod gate;
pub mod ptxas;

pub use gate::{RejectReason, ResourceLimits};
pub use ptxas::KernelResources;
