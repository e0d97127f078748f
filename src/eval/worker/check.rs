//! Outputs against the reference's and inputs against what they were given, on the GPU with
//! the worker's own kernels (`src/eval/checker.cu`), so that nothing is copied back but a few
//! hundred bytes per check. The verdicts are those of [`crate::eval::compare`] on the host:
//! the same tests per element in the same order, merged in index order.

use std::path::Path;

use crate::cuda::{CudaError, DeviceBuffer, Dims, Gpu, Kernel, Param};
use crate::eval::compare::{Errors, Tally};
use crate::eval::inputs;
use crate::task::DType;

/// The checker's source, compiled by the parent for the device like a task's reference.
pub const SOURCE: &str = include_str!("../checker.cu");
/// Its entries.
pub const COMPARE_ENTRY: &str = "evo_compare";
pub const SAME_ENTRY: &str = "evo_same";

/// Threads per block of both kernels (`EVO_THREADS` in the source).
const THREADS: u32 = 256;
/// Blocks of a comparison at most (each writes one part).
const MAX_BLOCKS: u64 = 2048;
/// Bytes of one `EvoPart`: 8 counters and indices, then 7 doubles.
const PART_BYTES: usize = 15 * 8;
/// "No index" in a part.
const NONE: u64 = u64::MAX;

/// The loaded kernels and their small result buffers.
pub struct Checker {
    compare: Kernel,
    same: Kernel,
    parts: DeviceBuffer,
    result: DeviceBuffer,
}

/// The checker's code for a type (see the source's header).
fn dtype_code(d: DType) -> i32 {
    match d {
        DType::F32 => 0,
        DType::F16 => 1,
        DType::Bf16 => 2,
        DType::E4m3 => 3,
        DType::E5m2 => 4,
        DType::I32 => 5,
        DType::I64 => 6,
    }
}

impl Checker {
    pub fn load(gpu: &Gpu, cubin: &Path) -> Result<Checker, CudaError> {
        let compare = gpu.load_kernel(cubin, COMPARE_ENTRY)?;
        let same = gpu.load_kernel(cubin, SAME_ENTRY)?;
        Ok(Checker {
            compare,
            same,
            parts: gpu.alloc(MAX_BLOCKS as usize * PART_BYTES)?,
            result: gpu.alloc(16)?,
        })
    }

    /// `out` (`n` elements of `dtype`) against `reference` (`n` f32), as
    /// [`crate::eval::compare::compare`] would judge them.
    pub fn compare(
        &self,
        gpu: &Gpu,
        name: &str,
        out: &DeviceBuffer,
        dtype: DType,
        reference: &DeviceBuffer,
        n: u64,
    ) -> Result<Errors, CudaError> {
        if n == 0 {
            return Ok(Tally::default().into_errors(name, 0));
        }
        let blocks = n.div_ceil(THREADS as u64 * 8).clamp(1, MAX_BLOCKS);
        let chunk = n.div_ceil(blocks);
        let blocks = n.div_ceil(chunk);
        let dims = Dims {
            grid: [blocks as u32, 1, 1],
            block: [THREADS, 1, 1],
            smem: 0,
        };
        let params = [
            Param::Ptr(out.ptr()),
            Param::Ptr(reference.ptr()),
            Param::I64(n as i64),
            Param::I32(dtype_code(dtype)),
            Param::I32(inputs::poison_byte(dtype) as i32),
            Param::I64(chunk as i64),
            Param::Ptr(self.parts.ptr()),
        ];
        gpu.prepare(&self.compare, &dims)?;
        gpu.launch(&self.compare, &dims, &params)?;
        let bytes = gpu.download_prefix(&self.parts, blocks as usize * PART_BYTES)?;
        let mut all = Tally::default();
        for part in bytes.chunks_exact(PART_BYTES) {
            all.merge(&tally(part));
        }
        Ok(all.into_errors(name, n))
    }

    /// How many of the first `bytes` bytes of `a` and `b` differ, and the first that does.
    pub fn differ(
        &self,
        gpu: &Gpu,
        a: &DeviceBuffer,
        b: &DeviceBuffer,
        bytes: u64,
    ) -> Result<Option<(u64, u64)>, CudaError> {
        let bytes = bytes.min(a.len() as u64).min(b.len() as u64);
        if bytes == 0 {
            return Ok(None);
        }
        let mut init = vec![0u8; 8];
        init.extend_from_slice(&u64::MAX.to_le_bytes());
        gpu.upload(&self.result, &init)?;
        let blocks = (bytes / 4).div_ceil(THREADS as u64 * 16).clamp(1, 4096);
        let dims = Dims {
            grid: [blocks as u32, 1, 1],
            block: [THREADS, 1, 1],
            smem: 0,
        };
        let params = [
            Param::Ptr(a.ptr()),
            Param::Ptr(b.ptr()),
            Param::I64(bytes as i64),
            Param::Ptr(self.result.ptr()),
        ];
        gpu.prepare(&self.same, &dims)?;
        gpu.launch(&self.same, &dims, &params)?;
        let r = gpu.download(&self.result)?;
        let count = u64::from_le_bytes(r[..8].try_into().unwrap_or_default());
        let first = u64::from_le_bytes(r[8..16].try_into().unwrap_or_default());
        Ok((count > 0).then_some((count, first)))
    }
}

/// One `EvoPart` (little-endian) as a tally.
fn tally(p: &[u8]) -> Tally {
    let word = |i: usize| u64::from_le_bytes(p[i * 8..i * 8 + 8].try_into().unwrap_or_default());
    let real = |i: usize| f64::from_bits(word(i));
    let index = |i: usize| Some(word(i)).filter(|&v| v != NONE);
    Tally {
        compared: word(0),
        nonfinite: word(1),
        unwritten: word(2),
        reference_bad: word(3),
        first_unwritten: index(4),
        first_nonfinite: index(5).map(|i| (i, real(14))),
        first_reference_bad: index(6),
        worst: index(7).map(|i| (i, real(12), real(13))),
        max_abs_err: real(8),
        sum_abs: real(9),
        sum_sq_err: real(10),
        sum_sq_ref: real(11),
    }
}

/// How many of the bytes differ and the first that does (host side, for the fallback).
pub fn differ_host(a: &[u8], b: &[u8]) -> Option<(u64, u64)> {
    let mut count = 0u64;
    let mut first = None;
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        if x != y {
            count += 1;
            first.get_or_insert(i as u64);
        }
    }
    first.map(|f| (count, f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_part_reads_as_the_kernel_writes_it() {
        let mut p = Vec::new();
        for w in [7u64, 1, 2, 0, 5, 9, NONE, 3] {
            p.extend_from_slice(&w.to_le_bytes());
        }
        for f in [0.5f64, 1.0, 2.0, 4.0, 1.5, 1.0, f64::INFINITY] {
            p.extend_from_slice(&f.to_le_bytes());
        }
        assert_eq!(p.len(), PART_BYTES);
        let t = tally(&p);
        assert_eq!(t.compared, 7);
        assert_eq!(t.first_unwritten, Some(5));
        assert_eq!(t.first_nonfinite, Some((9, f64::INFINITY)));
        assert_eq!(t.first_reference_bad, None);
        assert_eq!(t.worst, Some((3, 1.5, 1.0)));
        assert_eq!(t.max_abs_err, 0.5);
        assert_eq!(t.sum_sq_ref, 4.0);
    }

    #[test]
    fn host_differences() {
        assert_eq!(differ_host(b"abcd", b"abcd"), None);
        assert_eq!(differ_host(b"abcd", b"abXY"), Some((2, 2)));
    }
}
