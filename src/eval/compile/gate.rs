//! The checks a compiled kernel must pass before it may run: threads, registers and shared
//! memory per block within the device's limits, spills within the task's allowance.

use serde::{Deserialize, Serialize};

use super::ptxas::KernelResources;
use crate::eval::launch::LaunchDims;

/// Why a candidate did not pass the compile gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The compiler refused the source (front end or ptxas).
    CompilerError,
    /// Compilation ran past the time limit.
    CompileTimeout,
    /// The entry kernel is not among the compiled entry functions.
    EntryNotFound,
    /// The launch expressions cannot be evaluated for this config, or give no valid size.
    LaunchDims,
    ThreadsPerBlock,
    BlockDims,
    GridDims,
    RegistersPerThread,
    RegistersPerBlock,
    SharedMemory,
    Spills,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::CompilerError => "compiler_error",
            RejectReason::CompileTimeout => "compile_timeout",
            RejectReason::EntryNotFound => "entry_not_found",
            RejectReason::LaunchDims => "launch_dims",
            RejectReason::ThreadsPerBlock => "threads_per_block",
            RejectReason::BlockDims => "block_dims",
            RejectReason::GridDims => "grid_dims",
            RejectReason::RegistersPerThread => "registers_per_thread",
            RejectReason::RegistersPerBlock => "registers_per_block",
            RejectReason::SharedMemory => "shared_memory",
            RejectReason::Spills => "spills",
        }
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Per-block limits of the target device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceLimits {
    pub max_threads_per_block: u64,
    pub max_block_dims: [u32; 3],
    pub max_grid_dims: [u32; 3],
    pub max_registers_per_thread: u32,
    /// The register file one block may use (65536 32-bit registers on every current GPU).
    pub max_registers_per_block: u64,
    /// Static plus dynamic shared memory one block may use, with the opt-in attribute set.
    pub max_smem_per_block: u64,
}

impl Default for ResourceLimits {
    /// sm_90 (H100): 227 KB of shared memory per block (opt-in).
    fn default() -> Self {
        ResourceLimits {
            max_threads_per_block: 1024,
            max_block_dims: [1024, 1024, 64],
            max_grid_dims: [i32::MAX as u32, 65535, 65535],
            max_registers_per_thread: 255,
            max_registers_per_block: 65536,
            max_smem_per_block: 232_448,
        }
    }
}

impl ResourceLimits {
    /// The limits of `arch` (`sm_90a`, `sm_80`, …), from the CUDA C++ Programming Guide's table
    /// of compute capabilities; architectures it does not know get sm_90's.
    pub fn for_arch(arch: &str) -> ResourceLimits {
        let cc = arch
            .trim_start_matches("sm_")
            .trim_start_matches("compute_")
            .trim_end_matches(['a', 'f']);
        let smem_kb = match cc {
            "70" | "72" => 96,
            "75" => 64,
            "80" | "87" => 163,
            "86" | "89" | "120" | "121" => 99,
            _ => 227, // 90, 100, 103, 110 and unknown
        };
        ResourceLimits {
            max_smem_per_block: smem_kb * 1024,
            ..ResourceLimits::default()
        }
    }
}

/// Registers a block of `threads` threads really takes: each warp is allocated
/// `registers × 32` rounded up to 256, the allocation unit.
pub fn registers_per_block(registers: u32, threads: u64) -> u64 {
    let warps = threads.div_ceil(32);
    let per_warp = (u64::from(registers) * 32).div_ceil(256) * 256;
    warps * per_warp
}

/// The first limit the kernel breaks, with a message that gives the numbers.
pub fn check(
    resources: &KernelResources,
    launch: &LaunchDims,
    max_spill_bytes: u64,
    limits: &ResourceLimits,
) -> Result<(), (RejectReason, String)> {
    let threads = launch.threads_per_block();
    let [bx, by, bz] = launch.block;
    if threads > limits.max_threads_per_block {
        return Err((
            RejectReason::ThreadsPerBlock,
            format!(
                "{threads} threads per block ({bx}×{by}×{bz}), more than the device's {}",
                limits.max_threads_per_block
            ),
        ));
    }
    for (axis, (&d, &max)) in ["x", "y", "z"]
        .iter()
        .zip(launch.block.iter().zip(&limits.max_block_dims))
    {
        if d > max {
            return Err((
                RejectReason::BlockDims,
                format!("block.{axis} = {d}, more than the device's {max}"),
            ));
        }
    }
    for (axis, (&d, &max)) in ["x", "y", "z"]
        .iter()
        .zip(launch.grid.iter().zip(&limits.max_grid_dims))
    {
        if d > max {
            return Err((
                RejectReason::GridDims,
                format!("grid.{axis} = {d}, more than the device's {max}"),
            ));
        }
    }
    let regs = resources.registers;
    if regs > limits.max_registers_per_thread {
        return Err((
            RejectReason::RegistersPerThread,
            format!(
                "{regs} registers per thread, more than the device's {}",
                limits.max_registers_per_thread
            ),
        ));
    }
    let block_regs = registers_per_block(regs, threads);
    if block_regs > limits.max_registers_per_block {
        return Err((
            RejectReason::RegistersPerBlock,
            format!(
                "{regs} registers × {threads} threads take {block_regs} registers per block \
                 (allocated per warp in units of 256), more than the device's {}",
                limits.max_registers_per_block
            ),
        ));
    }
    let smem = resources.static_smem_bytes + u64::from(launch.smem);
    if smem > limits.max_smem_per_block {
        return Err((
            RejectReason::SharedMemory,
            format!(
                "{smem} bytes of shared memory per block ({} static + {} dynamic), more than \
                 the device's {}",
                resources.static_smem_bytes, launch.smem, limits.max_smem_per_block
            ),
        ));
    }
    let spills = resources.spill_bytes();
    if spills > max_spill_bytes {
        return Err((
            RejectReason::Spills,
            format!(
                "spills {spills} bytes to local memory ({} stores + {} loads; {regs} registers), \
                 more than the task's max_spill_bytes = {max_spill_bytes}",
                resources.spill_store_bytes, resources.spill_load_bytes
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(registers: u32, smem: u64, spill_st: u64, spill_ld: u64) -> KernelResources {
        KernelResources {
            registers,
            static_smem_bytes: smem,
            spill_store_bytes: spill_st,
            spill_load_bytes: spill_ld,
            ..KernelResources::default()
        }
    }

    fn launch(block: [u32; 3], smem: u32) -> LaunchDims {
        LaunchDims {
            grid: [1, 1, 1],
            block,
            smem,
        }
    }

    fn reason(r: Result<(), (RejectReason, String)>) -> Option<RejectReason> {
        r.err().map(|(reason, _)| reason)
    }

    #[test]
    fn passes_within_limits() {
        let l = ResourceLimits::default();
        assert!(check(&res(248, 0, 0, 0), &launch([256, 1, 1], 147_456), 0, &l).is_ok());
        assert!(check(&res(255, 0, 0, 0), &launch([256, 1, 1], 0), 0, &l).is_ok());
        assert!(check(&res(24, 0, 8, 8), &launch([1024, 1, 1], 0), 16, &l).is_ok());
    }

    #[test]
    fn each_limit() {
        let l = ResourceLimits::default();
        let r = check(&res(32, 0, 0, 0), &launch([64, 32, 1], 0), 0, &l);
        assert_eq!(reason(r.clone()), Some(RejectReason::ThreadsPerBlock));
        assert!(r
            .unwrap_err()
            .1
            .contains("2048 threads per block (64×32×1)"));
        assert_eq!(
            reason(check(&res(32, 0, 0, 0), &launch([1, 1, 128], 0), 0, &l)),
            Some(RejectReason::BlockDims)
        );
        let grid = LaunchDims {
            grid: [1, 70_000, 1],
            block: [32, 1, 1],
            smem: 0,
        };
        assert_eq!(
            reason(check(&res(32, 0, 0, 0), &grid, 0, &l)),
            Some(RejectReason::GridDims)
        );
        assert_eq!(
            reason(check(&res(256, 0, 0, 0), &launch([32, 1, 1], 0), 0, &l)),
            Some(RejectReason::RegistersPerThread)
        );
        // 128 registers × 1024 threads = 131072 > 65536.
        let r = check(&res(128, 0, 0, 0), &launch([1024, 1, 1], 0), 0, &l);
        assert_eq!(reason(r.clone()), Some(RejectReason::RegistersPerBlock));
        assert!(r.unwrap_err().1.contains("131072"));
        // 129 registers round up to 136 per thread: 8 warps × 4352 = 34816.
        assert!(check(&res(129, 0, 0, 0), &launch([256, 1, 1], 0), 0, &l).is_ok());
        // 250 registers round to 256: 256 threads use exactly 65536.
        assert!(check(&res(250, 0, 0, 0), &launch([256, 1, 1], 0), 0, &l).is_ok());
        assert_eq!(
            reason(check(&res(250, 0, 0, 0), &launch([288, 1, 1], 0), 0, &l)),
            Some(RejectReason::RegistersPerBlock)
        );
        let r = check(&res(32, 1024, 0, 0), &launch([128, 1, 1], 231_425), 0, &l);
        assert_eq!(reason(r.clone()), Some(RejectReason::SharedMemory));
        assert!(r
            .unwrap_err()
            .1
            .contains("232449 bytes of shared memory per block (1024 static + 231425 dynamic)"));
        assert!(check(&res(32, 1024, 0, 0), &launch([128, 1, 1], 231_424), 0, &l).is_ok());
        let r = check(&res(24, 0, 716, 772), &launch([128, 1, 1], 0), 0, &l);
        assert_eq!(reason(r.clone()), Some(RejectReason::Spills));
        assert!(r.unwrap_err().1.contains("spills 1488 bytes"));
        assert!(check(&res(24, 0, 716, 772), &launch([128, 1, 1], 0), 1488, &l).is_ok());
    }

    #[test]
    fn limits_per_arch() {
        assert_eq!(
            ResourceLimits::for_arch("sm_90a").max_smem_per_block,
            232_448
        );
        assert_eq!(
            ResourceLimits::for_arch("sm_90").max_smem_per_block,
            232_448
        );
        assert_eq!(
            ResourceLimits::for_arch("sm_80").max_smem_per_block,
            166_912
        );
        assert_eq!(
            ResourceLimits::for_arch("sm_89").max_smem_per_block,
            101_376
        );
        assert_eq!(
            ResourceLimits::for_arch("sm_100a").max_smem_per_block,
            232_448
        );
        assert_eq!(
            ResourceLimits::for_arch("sm_90a"),
            ResourceLimits::default()
        );
    }

    #[test]
    fn register_allocation_unit() {
        assert_eq!(registers_per_block(248, 256), 63_488);
        assert_eq!(registers_per_block(1, 1), 256);
        assert_eq!(registers_per_block(250, 256), 65_536);
        assert_eq!(registers_per_block(129, 512), 69_632);
    }
}
