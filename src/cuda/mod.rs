//! The one place that talks to the CUDA driver, through cudarc (the driver library is loaded
//! at run time, so the binary builds and runs on a machine without a GPU; [`Gpu::open`] then
//! says there is none).
//!
//! Everything here is used by one thread of the worker process (`eval::worker`), on one
//! context and one stream. cudarc's cross-stream event tracking is switched off: with a single
//! stream it only adds event records between our own operations, and those would land
//! inside timed intervals. Every driver call returns a [`CudaError`]; nothing unwraps a
//! driver result. Device memory is raw bytes ([`DeviceBuffer`]); element types are handled on
//! the host (`eval::inputs`).

pub mod bench;
pub mod nvml;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cudarc::driver::{
    result, sys, CudaContext, CudaEvent, CudaFunction, CudaSlice, CudaStream, DevicePtr,
    DriverError, LaunchConfig, PushKernelArg,
};
use serde::{Deserialize, Serialize};

/// A failure of a driver call, or of something around it.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    #[error("no CUDA driver here (libcuda could not be loaded)")]
    NoDriver,
    #[error("{call}: {name}: {text}")]
    Driver {
        call: &'static str,
        /// The `CUresult` value.
        code: u32,
        name: String,
        text: String,
    },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A request the driver would refuse, caught before calling it (with a clearer message).
    #[error("{0}")]
    Invalid(String),
}

impl CudaError {
    fn driver(call: &'static str, e: DriverError) -> CudaError {
        let name = e
            .error_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|_| format!("{:?}", e.0));
        let text = e
            .error_string()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        CudaError::Driver {
            call,
            code: e.0 as u32,
            name,
            text,
        }
    }

    /// An error after which the context is unusable: every later call fails the same way, so
    /// the process must end (the parent starts a fresh worker).
    pub fn is_sticky(&self) -> bool {
        use sys::cudaError_enum as E;
        const STICKY: [E; 10] = [
            E::CUDA_ERROR_ECC_UNCORRECTABLE,
            E::CUDA_ERROR_ILLEGAL_ADDRESS,
            E::CUDA_ERROR_LAUNCH_TIMEOUT,
            E::CUDA_ERROR_ASSERT,
            E::CUDA_ERROR_HARDWARE_STACK_ERROR,
            E::CUDA_ERROR_ILLEGAL_INSTRUCTION,
            E::CUDA_ERROR_MISALIGNED_ADDRESS,
            E::CUDA_ERROR_INVALID_ADDRESS_SPACE,
            E::CUDA_ERROR_INVALID_PC,
            E::CUDA_ERROR_LAUNCH_FAILED,
        ];
        match self {
            CudaError::Driver { code, .. } => STICKY.iter().any(|e| *e as u32 == *code),
            _ => false,
        }
    }
}

fn drv(call: &'static str) -> impl FnOnce(DriverError) -> CudaError {
    move |e| CudaError::driver(call, e)
}

/// Launch geometry, already evaluated from the task's expressions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Dims {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    /// Dynamic shared memory per block, bytes.
    #[serde(default)]
    pub smem: u32,
}

impl Dims {
    pub fn threads_per_block(&self) -> u64 {
        self.block.iter().map(|&d| d as u64).product()
    }

    pub fn describe(&self) -> String {
        format!(
            "grid ({}, {}, {}) block ({}, {}, {}) smem {} B",
            self.grid[0],
            self.grid[1],
            self.grid[2],
            self.block[0],
            self.block[1],
            self.block[2],
            self.smem
        )
    }
}

/// What the device is; recorded with every measurement.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeviceInfo {
    pub ordinal: u32,
    pub name: String,
    /// `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, as nvidia-smi names it.
    pub uuid: String,
    pub cc_major: u32,
    pub cc_minor: u32,
    pub sm_count: u32,
    pub l2_bytes: u64,
    pub memory_bytes: u64,
    pub max_threads_per_block: u32,
    /// Shared memory a block gets without opting in, bytes.
    pub smem_per_block: u64,
    /// Shared memory a block can get after raising its dynamic limit, bytes.
    pub smem_per_block_optin: u64,
    /// Peak SM clock the driver reports (MHz); absent where the attribute is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_mhz: Option<u32>,
    /// `cuDriverGetVersion`: 13000 for CUDA 13.0.
    pub driver_version: u32,
}

impl DeviceInfo {
    /// `sm_90`.
    pub fn arch(&self) -> String {
        format!("sm_{}{}", self.cc_major, self.cc_minor)
    }

    /// `13.0`.
    pub fn driver_cuda(&self) -> String {
        format!(
            "{}.{}",
            self.driver_version / 1000,
            (self.driver_version % 1000) / 10
        )
    }

    /// One line for `Environment::device`.
    pub fn describe(&self) -> String {
        format!(
            "{} ({}, {} SMs, {} MB L2, CUDA driver {})",
            self.name,
            self.arch(),
            self.sm_count,
            self.l2_bytes >> 20,
            self.driver_cuda()
        )
    }
}

/// nvidia-smi's name for a device UUID.
pub fn format_uuid(bytes: &[u8; 16]) -> String {
    let h = |r: std::ops::Range<usize>| {
        bytes[r]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    format!(
        "GPU-{}-{}-{}-{}-{}",
        h(0..4),
        h(4..6),
        h(6..8),
        h(8..10),
        h(10..16)
    )
}

/// The SM clock now (MHz), from nvidia-smi; `None` if it is missing or says nothing usable.
/// [`Gpu::sm_clock_mhz`] asks NVML first, which is far cheaper.
pub fn sm_clock_mhz(uuid: &str) -> Option<u32> {
    let mut cmd = std::process::Command::new("nvidia-smi");
    cmd.args([
        "--query-gpu=clocks.sm",
        "--format=csv,noheader,nounits",
        "-i",
        uuid,
    ]);
    let out = crate::eval::subprocess::run(cmd, None, Duration::from_secs(10)).ok()?;
    if !out.success() {
        return None;
    }
    crate::eval::stats::parse_smi_clock(&out.stdout)
}

/// Device memory, raw bytes: `len` bytes at `ptr`, which may start past the beginning of
/// its allocation (see [`Gpu::alloc_at`]). Freed (stream-ordered) when dropped.
#[derive(Debug)]
pub struct DeviceBuffer {
    /// Owns the allocation (freed when dropped); `ptr` points into it.
    _allocation: CudaSlice<u8>,
    ptr: u64,
    len: usize,
}

impl DeviceBuffer {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The device address, to pass as a kernel parameter.
    pub fn ptr(&self) -> u64 {
        self.ptr
    }
}

/// One kernel parameter, as the kernel receives it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Param {
    Ptr(u64),
    I32(i32),
    I64(i64),
    F32(f32),
}

/// What the driver says about a loaded kernel.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KernelAttrs {
    pub registers: u32,
    /// Local memory per thread (stack frame and spills), bytes.
    pub local_bytes: u32,
    pub static_smem_bytes: u32,
    /// The most threads a block of this kernel can have (registers included).
    pub max_threads_per_block: u32,
    /// `sm_XY` the machine code was built for, as XY.
    pub binary_version: u32,
}

/// A kernel loaded from a cubin.
#[derive(Debug)]
pub struct Kernel {
    func: CudaFunction,
    pub entry: String,
    pub attrs: KernelAttrs,
    /// The dynamic shared-memory limit set so far.
    dynamic_limit: std::cell::Cell<u32>,
}

/// Shared memory a block gets without `MAX_DYNAMIC_SHARED_SIZE_BYTES` raised.
const DEFAULT_DYNAMIC_SMEM: u32 = 48 * 1024;

/// Three timing events, reused sample after sample.
pub struct Events {
    e: [CudaEvent; 3],
}

/// The device: a context, one stream, and the L2 flush buffer.
pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    info: DeviceInfo,
    flush: Option<DeviceBuffer>,
    flush_count: u8,
    /// NVML for this device, opened on the first clock query (`None` inside: not available).
    nvml: Option<Option<nvml::Nvml>>,
}

impl Gpu {
    /// Whether the driver library can be loaded at all.
    pub fn driver_present() -> bool {
        // SAFETY: only tries to dlopen the library by its usual names.
        unsafe { sys::is_culib_present() }
    }

    /// Opens device `ordinal` (its primary context) and reads what it is.
    pub fn open(ordinal: usize) -> Result<Gpu, CudaError> {
        if !Self::driver_present() {
            return Err(CudaError::NoDriver);
        }
        let ctx = CudaContext::new(ordinal).map_err(drv("cuInit/cuDevicePrimaryCtxRetain"))?;
        // SAFETY: one stream only, and no buffer exists yet; see the module comment.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(drv("cuStreamCreate"))?;
        let info = read_info(&ctx, ordinal)?;
        Ok(Gpu {
            ctx,
            stream,
            info,
            flush: None,
            flush_count: 0,
            nvml: None,
        })
    }

    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// The SM clock now (MHz): NVML when it loads, else nvidia-smi.
    pub fn sm_clock_mhz(&mut self) -> Option<u32> {
        let uuid = &self.info.uuid;
        match self.nvml.get_or_insert_with(|| nvml::Nvml::open(uuid)) {
            Some(n) => n.sm_clock_mhz(),
            None => sm_clock_mhz(uuid),
        }
    }

    /// (free, total) device memory, bytes.
    pub fn mem_info(&self) -> Result<(usize, usize), CudaError> {
        self.ctx.mem_get_info().map_err(drv("cuMemGetInfo"))
    }

    /// Uninitialized device memory.
    pub fn alloc(&self, bytes: usize) -> Result<DeviceBuffer, CudaError> {
        self.alloc_at(bytes, 0)
    }

    /// Uninitialized device memory that starts `offset` bytes into a larger allocation, so
    /// that where buffers lie (and how far apart) changes from one request to the next.
    /// `offset` is rounded down to a multiple of 256 bytes (the alignment `cuMemAlloc` gives).
    pub fn alloc_at(&self, bytes: usize, offset: usize) -> Result<DeviceBuffer, CudaError> {
        if bytes == 0 {
            return Err(CudaError::Invalid("a buffer of 0 bytes".into()));
        }
        let offset = offset / 256 * 256;
        let total = bytes
            .checked_add(offset)
            .ok_or_else(|| CudaError::Invalid(format!("{bytes} + {offset} bytes overflow")))?;
        // SAFETY: the memory is uninitialized; every user fills it before reading.
        let slice = unsafe { self.stream.alloc::<u8>(total) }.map_err(drv("cuMemAlloc"))?;
        let base = {
            let (p, _sync) = slice.device_ptr(&self.stream);
            p
        };
        Ok(DeviceBuffer {
            _allocation: slice,
            ptr: base + offset as u64,
            len: bytes,
        })
    }

    /// Copies host bytes into the start of `buf`, and waits for the copy (so `bytes` may go
    /// away after).
    pub fn upload(&self, buf: &DeviceBuffer, bytes: &[u8]) -> Result<(), CudaError> {
        if bytes.len() > buf.len() {
            return Err(CudaError::Invalid(format!(
                "{} bytes do not fit a buffer of {}",
                bytes.len(),
                buf.len()
            )));
        }
        self.bind()?;
        // SAFETY: `buf` is a live allocation of at least `bytes.len()` bytes; the stream is
        // synchronized before `bytes` can be dropped.
        unsafe { result::memcpy_htod_async(buf.ptr, bytes, self.stream.cu_stream()) }
            .map_err(drv("cuMemcpyHtoDAsync"))?;
        self.stream
            .synchronize()
            .map_err(drv("cuStreamSynchronize"))
    }

    /// Waits for the stream, then copies the whole buffer to the host.
    pub fn download(&self, buf: &DeviceBuffer) -> Result<Vec<u8>, CudaError> {
        self.download_prefix(buf, buf.len())
    }

    /// Waits for the stream, then copies the first `bytes` bytes of the buffer (at most its
    /// length) to the host.
    pub fn download_prefix(&self, buf: &DeviceBuffer, bytes: usize) -> Result<Vec<u8>, CudaError> {
        let mut out = vec![0u8; bytes.min(buf.len())];
        self.bind()?;
        // SAFETY: `out` has exactly the buffer's length and outlives the synchronization.
        unsafe { result::memcpy_dtoh_async(&mut out[..], buf.ptr, self.stream.cu_stream()) }
            .map_err(drv("cuMemcpyDtoHAsync"))?;
        self.stream
            .synchronize()
            .map_err(drv("cuStreamSynchronize"))?;
        Ok(out)
    }

    /// Sets every byte of `buf` to `byte` (stream-ordered).
    pub fn fill(&self, buf: &DeviceBuffer, byte: u8) -> Result<(), CudaError> {
        self.bind()?;
        // SAFETY: `buf` is a live allocation of `len` bytes owned by this context.
        unsafe { result::memset_d8_async(buf.ptr, byte, buf.len(), self.stream.cu_stream()) }
            .map_err(drv("cuMemsetD8Async"))
    }

    /// Copies `src` into `dst` on the device (stream-ordered).
    pub fn copy(&self, dst: &DeviceBuffer, src: &DeviceBuffer) -> Result<(), CudaError> {
        let n = src.len().min(dst.len());
        self.bind()?;
        // SAFETY: both are live allocations of at least `n` bytes in this context.
        unsafe { result::memcpy_dtod_async(dst.ptr, src.ptr, n, self.stream.cu_stream()) }
            .map_err(drv("cuMemcpyDtoDAsync"))
    }

    fn bind(&self) -> Result<(), CudaError> {
        self.ctx.bind_to_thread().map_err(drv("cuCtxSetCurrent"))
    }

    /// Bytes the L2 flush writes: twice the L2, at least 8 MiB.
    pub fn flush_bytes(&self) -> usize {
        ((2 * self.info.l2_bytes) as usize).max(8 << 20)
    }

    /// Evicts the L2 by writing a buffer of twice its size (stream-ordered; the buffer is
    /// allocated on first use).
    pub fn flush_l2(&mut self) -> Result<(), CudaError> {
        if self.flush.is_none() {
            self.flush = Some(self.alloc(self.flush_bytes())?);
        }
        self.flush_count = self.flush_count.wrapping_add(1);
        let flush = self.flush.as_ref().expect("allocated above");
        self.fill(flush, self.flush_count)
    }

    /// Loads `entry` from the cubin at `path`.
    pub fn load_kernel(&self, path: &Path, entry: &str) -> Result<Kernel, CudaError> {
        let bytes = std::fs::read(path).map_err(|source| CudaError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        self.load_kernel_bytes(bytes, entry)
    }

    /// Loads `entry` from a cubin image.
    pub fn load_kernel_bytes(&self, bytes: Vec<u8>, entry: &str) -> Result<Kernel, CudaError> {
        if entry.is_empty() || entry.contains('\0') {
            return Err(CudaError::Invalid(format!(
                "`{entry}` is not a kernel name"
            )));
        }
        if bytes.is_empty() {
            return Err(CudaError::Invalid("the cubin is empty".into()));
        }
        let module = self
            .ctx
            .load_module(cudarc::nvrtc::Ptx::from_binary(bytes))
            .map_err(drv("cuModuleLoadData"))?;
        let func = module
            .load_function(entry)
            .map_err(drv("cuModuleGetFunction"))?;
        let attr = |a| {
            func.get_attribute(a)
                .map(|v| v.max(0) as u32)
                .map_err(drv("cuFuncGetAttribute"))
        };
        use sys::CUfunction_attribute_enum as A;
        let attrs = KernelAttrs {
            registers: attr(A::CU_FUNC_ATTRIBUTE_NUM_REGS)?,
            local_bytes: attr(A::CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES)?,
            static_smem_bytes: attr(A::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES)?,
            max_threads_per_block: attr(A::CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK)?,
            binary_version: attr(A::CU_FUNC_ATTRIBUTE_BINARY_VERSION)?,
        };
        Ok(Kernel {
            func,
            entry: entry.to_string(),
            attrs,
            dynamic_limit: std::cell::Cell::new(DEFAULT_DYNAMIC_SMEM),
        })
    }

    /// Checks a launch against the kernel's and the device's limits, and raises the kernel's
    /// dynamic shared-memory limit when it needs more than the default 48 KB.
    pub fn prepare(&self, kernel: &Kernel, dims: &Dims) -> Result<(), CudaError> {
        if dims.grid.contains(&0) || dims.block.contains(&0) {
            return Err(CudaError::Invalid(format!(
                "empty launch: {}",
                dims.describe()
            )));
        }
        let threads = dims.threads_per_block();
        if threads > kernel.attrs.max_threads_per_block as u64 {
            return Err(CudaError::Invalid(format!(
                "{threads} threads per block, but `{}` allows at most {} ({} registers per thread)",
                kernel.entry, kernel.attrs.max_threads_per_block, kernel.attrs.registers
            )));
        }
        let smem = kernel.attrs.static_smem_bytes as u64 + dims.smem as u64;
        if smem > self.info.smem_per_block_optin {
            return Err(CudaError::Invalid(format!(
                "{smem} bytes of shared memory per block ({} static + {} dynamic), the device allows {}",
                kernel.attrs.static_smem_bytes, dims.smem, self.info.smem_per_block_optin
            )));
        }
        if dims.smem > kernel.dynamic_limit.get() {
            self.bind()?;
            kernel
                .func
                .set_attribute(
                    sys::CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    dims.smem as i32,
                )
                .map_err(drv("cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES)"))?;
            kernel.dynamic_limit.set(dims.smem);
        }
        Ok(())
    }

    /// Enqueues one launch (call [`Gpu::prepare`] first). Errors in the launch configuration
    /// show here; faults inside the kernel show at the next synchronization.
    pub fn launch(&self, kernel: &Kernel, dims: &Dims, params: &[Param]) -> Result<(), CudaError> {
        let cfg = LaunchConfig {
            grid_dim: (dims.grid[0], dims.grid[1], dims.grid[2]),
            block_dim: (dims.block[0], dims.block[1], dims.block[2]),
            shared_mem_bytes: dims.smem,
        };
        let mut builder = self.stream.launch_builder(&kernel.func);
        for p in params {
            match p {
                Param::Ptr(v) => builder.arg(v),
                Param::I32(v) => builder.arg(v),
                Param::I64(v) => builder.arg(v),
                Param::F32(v) => builder.arg(v),
            };
        }
        // SAFETY: the parameters follow the kernel's signature as the task declares it; a
        // kernel that faults poisons only this process's context (the worker then exits).
        unsafe { builder.launch(cfg) }
            .map(|_| ())
            .map_err(drv("cuLaunchKernel"))
    }

    /// Waits for all work of the context (every stream), and reports any fault in it.
    pub fn synchronize(&self) -> Result<(), CudaError> {
        self.ctx.synchronize().map_err(drv("cuCtxSynchronize"))
    }

    /// Whether the context still works (after an error: sticky errors fail this too).
    pub fn healthy(&self) -> bool {
        self.synchronize().is_ok()
    }

    pub fn events(&self) -> Result<Events, CudaError> {
        let new = || {
            self.ctx
                .new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(drv("cuEventCreate"))
        };
        Ok(Events {
            e: [new()?, new()?, new()?],
        })
    }

    /// Records event `i` on the stream.
    pub fn record(&self, events: &Events, i: usize) -> Result<(), CudaError> {
        events.e[i]
            .record(&self.stream)
            .map_err(drv("cuEventRecord"))
    }

    /// Milliseconds between two recorded events (waits for both).
    pub fn elapsed_ms(&self, events: &Events, from: usize, to: usize) -> Result<f64, CudaError> {
        events.e[from]
            .elapsed_ms(&events.e[to])
            .map(f64::from)
            .map_err(drv("cuEventElapsedTime"))
    }
}

fn read_info(ctx: &Arc<CudaContext>, ordinal: usize) -> Result<DeviceInfo, CudaError> {
    use sys::CUdevice_attribute_enum as A;
    let attr = |a| {
        ctx.attribute(a)
            .map(|v| v.max(0) as u32)
            .map_err(drv("cuDeviceGetAttribute"))
    };
    let name = ctx.name().map_err(drv("cuDeviceGetName"))?;
    let uuid = ctx.uuid().map_err(drv("cuDeviceGetUuid"))?;
    let uuid_bytes: [u8; 16] = uuid.bytes.map(|b| b as u8);
    let (major, minor) = ctx
        .compute_capability()
        .map_err(drv("cuDeviceGetAttribute"))?;
    let mut version: std::ffi::c_int = 0;
    // SAFETY: writes one int.
    unsafe { sys::cuDriverGetVersion(&mut version) }
        .result()
        .map_err(drv("cuDriverGetVersion"))?;
    Ok(DeviceInfo {
        ordinal: ordinal as u32,
        name,
        uuid: format_uuid(&uuid_bytes),
        cc_major: major.max(0) as u32,
        cc_minor: minor.max(0) as u32,
        sm_count: attr(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?,
        l2_bytes: attr(A::CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE)? as u64,
        memory_bytes: ctx.total_mem().map_err(drv("cuDeviceTotalMem"))? as u64,
        max_threads_per_block: attr(A::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK)?,
        smem_per_block: attr(A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK)? as u64,
        smem_per_block_optin: attr(A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)?
            as u64,
        clock_mhz: attr(A::CU_DEVICE_ATTRIBUTE_CLOCK_RATE)
            .ok()
            .filter(|&k| k > 0)
            .map(|k| k / 1000),
        driver_version: version.max(0) as u32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_format_matches_nvidia_smi() {
        let bytes: [u8; 16] = [
            0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab,
            0xcd, 0xef,
        ];
        assert_eq!(
            format_uuid(&bytes),
            "GPU-12345678-9abc-def0-0123-456789abcdef"
        );
    }

    #[test]
    fn device_description() {
        let d = DeviceInfo {
            name: "NVIDIA H100 80GB HBM3".into(),
            cc_major: 9,
            cc_minor: 0,
            sm_count: 132,
            l2_bytes: 50 << 20,
            driver_version: 13000,
            ..Default::default()
        };
        assert_eq!(d.arch(), "sm_90");
        assert_eq!(d.driver_cuda(), "13.0");
        assert_eq!(
            d.describe(),
            "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs, 50 MB L2, CUDA driver 13.0)"
        );
    }

    #[test]
    fn sticky_errors() {
        let e = |code: sys::cudaError_enum| CudaError::Driver {
            call: "x",
            code: code as u32,
            name: String::new(),
            text: String::new(),
        };
        assert!(e(sys::cudaError_enum::CUDA_ERROR_ILLEGAL_ADDRESS).is_sticky());
        assert!(e(sys::cudaError_enum::CUDA_ERROR_LAUNCH_FAILED).is_sticky());
        assert!(!e(sys::cudaError_enum::CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES).is_sticky());
        assert!(!e(sys::cudaError_enum::CUDA_ERROR_INVALID_VALUE).is_sticky());
        assert!(!CudaError::Invalid("x".into()).is_sticky());
    }

    #[test]
    fn dims_json() {
        let d: Dims = serde_json::from_str(r#"{"grid":[4,2,1],"block":[128,1,1]}"#).unwrap();
        assert_eq!(d.smem, 0);
        assert_eq!(d.threads_per_block(), 128);
        assert!(d.describe().contains("grid (4, 2, 1)"));
    }

    #[test]
    fn no_driver_is_an_error_not_a_panic() {
        if !Gpu::driver_present() {
            assert!(matches!(Gpu::open(0), Err(CudaError::NoDriver)));
        }
    }
}
