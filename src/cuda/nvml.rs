//! The SM clock through NVML (`libnvidia-ml.so.1`, loaded at run time, as the driver is), for
//! the timing loop's clock check: a query takes microseconds where starting `nvidia-smi` takes
//! tens of milliseconds, twice per candidate. Without the library (no driver, another OS) the
//! caller falls back to `nvidia-smi`.

use std::ffi::{c_int, c_uint, c_void, CString};

use libloading::Library;

/// `nvmlReturn_t` success.
const NVML_SUCCESS: c_int = 0;
/// `nvmlClockType_t`: the SM clock.
const NVML_CLOCK_SM: c_uint = 1;

type InitFn = unsafe extern "C" fn() -> c_int;
type HandleByUuidFn = unsafe extern "C" fn(*const std::ffi::c_char, *mut *mut c_void) -> c_int;
type ClockInfoFn = unsafe extern "C" fn(*mut c_void, c_uint, *mut c_uint) -> c_int;

/// One device's clock queries.
pub struct Nvml {
    /// Keeps the library (and so `clock_info`) loaded.
    _lib: Library,
    device: *mut c_void,
    clock_info: ClockInfoFn,
}

// SAFETY: NVML is thread-safe (its documentation: "NVML is thread-safe so it is safe to make
// simultaneous NVML calls from multiple threads"); the handle is an opaque device id.
unsafe impl Send for Nvml {}

impl Nvml {
    /// Loads NVML and finds the device by its UUID as nvidia-smi prints it (`GPU-…`).
    pub fn open(uuid: &str) -> Option<Nvml> {
        let uuid = CString::new(uuid).ok()?;
        // SAFETY: loading the system's NVML runs its initializers, which have no preconditions.
        let lib = unsafe { Library::new("libnvidia-ml.so.1") }.ok()?;
        // SAFETY: the symbols have these C signatures in every NVML since CUDA 5 (nvml.h).
        let (init, by_uuid, clock_info) = unsafe {
            (
                *lib.get::<InitFn>(b"nvmlInit_v2\0").ok()?,
                *lib.get::<HandleByUuidFn>(b"nvmlDeviceGetHandleByUUID\0")
                    .ok()?,
                *lib.get::<ClockInfoFn>(b"nvmlDeviceGetClockInfo\0").ok()?,
            )
        };
        // SAFETY: nvmlInit_v2 may be called any number of times; the out-pointer is valid.
        let mut device: *mut c_void = std::ptr::null_mut();
        let found = unsafe {
            init() == NVML_SUCCESS && by_uuid(uuid.as_ptr(), &mut device) == NVML_SUCCESS
        };
        (found && !device.is_null()).then_some(Nvml {
            _lib: lib,
            device,
            clock_info,
        })
    }

    /// The SM clock now, MHz.
    pub fn sm_clock_mhz(&self) -> Option<u32> {
        let mut mhz: c_uint = 0;
        // SAFETY: `device` came from nvmlDeviceGetHandleByUUID of this loaded library, and the
        // out-pointer is valid for the call.
        let rc = unsafe { (self.clock_info)(self.device, NVML_CLOCK_SM, &mut mhz) };
        (rc == NVML_SUCCESS && mhz > 0).then_some(mhz)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_device_there_is_no_handle() {
        // On a machine without NVML the library does not load; with one, this UUID is nobody's.
        assert!(Nvml::open("GPU-00000000-0000-0000-0000-000000000000").is_none());
        assert!(Nvml::open("bad\0uuid").is_none());
    }
}
