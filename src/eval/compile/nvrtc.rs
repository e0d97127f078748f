//! NVRTC in-process, through cudarc's `nvrtc::sys` (loaded at run time).
//!
//! cudarc opens `libnvrtc` by bare name (`libnvrtc.so`, `libnvrtc.so.13`, …), which only the
//! dynamic loader's search path finds, and libnvrtc itself opens `libnvrtc-builtins.so.13.0`
//! by bare name when it compiles. Setting `LD_LIBRARY_PATH` from inside the process is too late
//! for glibc, so instead this module opens both libraries once by absolute path: the loader
//! then answers later opens by bare name with the library already loaded (it matches the
//! soname). Where the libraries are looked for, first found wins:
//! 1. `CompilerSettings::nvrtc`, then `$EVOENGINEER_NVRTC` (the library, or its directory);
//! 2. wherever the loader already finds it (`LD_LIBRARY_PATH`, ldconfig);
//! 3. `$CUDA_HOME/lib64`, `$CUDA_PATH/lib64`, `/usr/local/cuda/lib64`, `lib64` and `lib`
//!    beside the `nvcc` on `PATH`;
//! 4. the PyPI wheels (`<install dir>/nvidia/cu13/lib`, see [`super::nvcc`]).
//!
//! NVRTC 13.0 bundles no headers: `cuda_bf16.h` and friends come from the toolkit's include
//! directory (`CompilerSettings::cuda_include`, else `include` beside the library's directory,
//! else `/usr/local/cuda/include`), and its `cccl` subdirectory. It has no `<stdint.h>` either;
//! the compile supplies one (and `<cstdint>`) that includes `<cuda/std/cstdint>`.
//!
//! ptxas's report is asked for with `--ptxas-options=-v` and lands in the program log.
//! Options are NVRTC's, not nvcc's: NVRTC refuses `-O3`, for one.

use std::ffi::{c_char, c_int, CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use cudarc::nvrtc::result as nvrtc_result;
use cudarc::nvrtc::sys::{self, nvrtcResult};

use super::nvcc::{on_path, wheel_dirs};

/// A loaded NVRTC.
#[derive(Clone, Debug)]
pub struct Nvrtc {
    /// `nvrtc 13.0`.
    pub toolchain: String,
    /// Version and library size: part of the cache key.
    pub identity: String,
    /// The library, when known.
    pub library: Option<PathBuf>,
    /// `-I` directories for the CUDA headers.
    pub include_dirs: Vec<PathBuf>,
}

/// Headers NVRTC lacks, supplied in memory: (include name, text).
const SHIM_HEADERS: &[(&str, &str)] = &[
    (
        "stdint.h",
        "#pragma once\n// Supplied by evoengineer: NVRTC has no <stdint.h>.\n#include <cuda/std/cstdint>\n",
    ),
    (
        "cstdint",
        "#pragma once\n// Supplied by evoengineer: NVRTC has no <cstdint>.\n#include <cuda/std/cstdint>\n\
         namespace std { using ::int8_t; using ::int16_t; using ::int32_t; using ::int64_t;\n\
         using ::uint8_t; using ::uint16_t; using ::uint32_t; using ::uint64_t;\n\
         using ::intptr_t; using ::uintptr_t; }\n",
    ),
];

/// How one NVRTC compile ended.
#[derive(Debug, PartialEq, Eq)]
pub enum NvrtcStatus {
    Success,
    /// The source did not compile (the candidate's fault).
    Compilation,
    /// NVRTC refused an option (the task's or the settings' fault).
    InvalidOption,
    /// Any other failure of NVRTC.
    Other(String),
}

#[derive(Debug)]
pub struct NvrtcRun {
    pub status: NvrtcStatus,
    pub log: String,
    pub cubin: Option<Vec<u8>>,
    /// The symbol of the entry (from `nvrtcGetLoweredName`).
    pub lowered_name: Option<String>,
    pub seconds: f64,
}

/// The library found by the first successful load, for the whole process.
static LOADED: OnceLock<Result<Option<PathBuf>, String>> = OnceLock::new();

impl Nvrtc {
    /// Loads NVRTC (once per process) and finds the CUDA headers.
    pub fn load(explicit: Option<&Path>, include: Option<&Path>) -> Result<Nvrtc, String> {
        let library = LOADED.get_or_init(|| load_library(explicit)).clone()?;
        let (mut major, mut minor): (c_int, c_int) = (0, 0);
        // SAFETY: the library is loaded; both pointers are valid.
        unsafe { sys::nvrtcVersion(&mut major, &mut minor) }
            .result()
            .map_err(|e| format!("nvrtcVersion failed: {e:?}"))?;
        let library = library.or_else(loaded_library_path);
        let size = library
            .as_ref()
            .and_then(|l| std::fs::metadata(l).ok())
            .map(|m| m.len())
            .unwrap_or(0);
        Ok(Nvrtc {
            toolchain: format!("nvrtc {major}.{minor}"),
            identity: format!("nvrtc|{major}.{minor}|{size}"),
            include_dirs: include_dirs(include, library.as_deref()),
            library,
        })
    }

    /// Compiles `source` to a cubin for `arch`; `entry` is lowered through a name expression
    /// unless it is already a mangled symbol.
    pub fn compile(
        &self,
        source: &str,
        file_name: &str,
        entry: &str,
        options: &[String],
    ) -> Result<NvrtcRun, String> {
        let src = CString::new(source).map_err(|_| "the source contains a NUL byte".to_string())?;
        let name = CString::new(file_name).map_err(|_| "bad file name".to_string())?;
        let shim_names: Vec<CString> = SHIM_HEADERS
            .iter()
            .map(|(n, _)| CString::new(*n).expect("no NUL"))
            .collect();
        let shim_texts: Vec<CString> = SHIM_HEADERS
            .iter()
            .map(|(_, t)| CString::new(*t).expect("no NUL"))
            .collect();
        let name_ptrs: Vec<*const c_char> = shim_names.iter().map(|c| c.as_ptr()).collect();
        let text_ptrs: Vec<*const c_char> = shim_texts.iter().map(|c| c.as_ptr()).collect();
        let mut prog: sys::nvrtcProgram = std::ptr::null_mut();
        // SAFETY: every pointer is to a live NUL-terminated string or array of them, which
        // outlive the program (it is destroyed by `Program`'s drop, below).
        unsafe {
            sys::nvrtcCreateProgram(
                &mut prog,
                src.as_ptr(),
                name.as_ptr(),
                SHIM_HEADERS.len() as c_int,
                text_ptrs.as_ptr(),
                name_ptrs.as_ptr(),
            )
        }
        .result()
        .map_err(|e| format!("nvrtcCreateProgram failed: {e:?}"))?;
        let prog = Program(prog);
        let name_expr = if entry.starts_with("_Z") {
            None
        } else {
            let e = CString::new(entry).map_err(|_| "bad entry name".to_string())?;
            // SAFETY: a live program and string.
            unsafe { sys::nvrtcAddNameExpression(prog.0, e.as_ptr()) }
                .result()
                .map_err(|err| format!("nvrtcAddNameExpression({entry}) failed: {err:?}"))?;
            Some(e)
        };
        let start = Instant::now();
        // SAFETY: a live program; the options are copied into C strings by cudarc.
        let compiled = unsafe { nvrtc_result::compile_program(prog.0, options) };
        let seconds = start.elapsed().as_secs_f64();
        // SAFETY: a live program.
        let log = unsafe { nvrtc_result::get_program_log(prog.0) }
            .map(|chars| c_chars_to_string(&chars))
            .unwrap_or_default();
        let status = match compiled {
            Ok(()) => NvrtcStatus::Success,
            Err(e) if e.0 == nvrtcResult::NVRTC_ERROR_COMPILATION => NvrtcStatus::Compilation,
            Err(e) if e.0 == nvrtcResult::NVRTC_ERROR_INVALID_OPTION => NvrtcStatus::InvalidOption,
            Err(e) => NvrtcStatus::Other(format!("{:?}", e.0)),
        };
        let mut run = NvrtcRun {
            status,
            log,
            cubin: None,
            lowered_name: None,
            seconds,
        };
        if run.status != NvrtcStatus::Success {
            return Ok(run);
        }
        run.lowered_name = match &name_expr {
            None => Some(entry.to_string()),
            Some(e) => {
                let mut lowered: *const c_char = std::ptr::null();
                // SAFETY: a compiled program and the expression added before compiling; the
                // returned string lives as long as the program, so it is copied at once.
                unsafe { sys::nvrtcGetLoweredName(prog.0, e.as_ptr(), &mut lowered) }
                    .result()
                    .ok()
                    .filter(|_| !lowered.is_null())
                    .map(|_| {
                        unsafe { CStr::from_ptr(lowered) }
                            .to_string_lossy()
                            .into_owned()
                    })
            }
        };
        let mut size = 0usize;
        // SAFETY: a compiled program; `size` is valid.
        unsafe { sys::nvrtcGetCUBINSize(prog.0, &mut size) }
            .result()
            .map_err(|e| format!("nvrtcGetCUBINSize failed: {e:?}"))?;
        if size > 0 {
            let mut cubin = vec![0u8; size];
            // SAFETY: `cubin` has the size NVRTC gave.
            unsafe { sys::nvrtcGetCUBIN(prog.0, cubin.as_mut_ptr() as *mut c_char) }
                .result()
                .map_err(|e| format!("nvrtcGetCUBIN failed: {e:?}"))?;
            run.cubin = Some(cubin);
        }
        Ok(run)
    }

    /// `-I` options for the CUDA headers.
    pub fn include_options(&self) -> Vec<String> {
        self.include_dirs
            .iter()
            .map(|d| format!("-I{}", d.display()))
            .collect()
    }
}

/// Destroys the program on drop.
struct Program(sys::nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: created by nvrtcCreateProgram, destroyed once.
        let _ = unsafe { nvrtc_result::destroy_program(self.0) };
    }
}

fn c_chars_to_string(chars: &[c_char]) -> String {
    let bytes: Vec<u8> = chars
        .iter()
        .map(|&c| c as u8)
        .take_while(|&b| b != 0)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// `path` itself if it is a file, else the NVRTC library in that directory.
fn library_in(path: &Path) -> Option<PathBuf> {
    if path.is_file() {
        return Some(path.to_path_buf());
    }
    ["libnvrtc.so.13", "libnvrtc.so"]
        .iter()
        .map(|n| path.join(n))
        .find(|p| p.is_file())
}

/// Directories that may hold libnvrtc, in order.
fn library_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(v) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            dirs.push(PathBuf::from(v).join("lib64"));
        }
    }
    dirs.push(PathBuf::from("/usr/local/cuda/lib64"));
    if let Some(root) = on_path("nvcc")
        .and_then(|n| std::fs::canonicalize(n).ok())
        .and_then(|n| n.parent()?.parent().map(Path::to_path_buf))
    {
        dirs.push(root.join("lib64"));
        dirs.push(root.join("lib"));
    }
    for (dir, _) in wheel_dirs() {
        dirs.push(dir.join("nvidia").join("cu13").join("lib"));
    }
    dirs
}

fn load_library(explicit: Option<&Path>) -> Result<Option<PathBuf>, String> {
    let explicit = explicit.map(Path::to_path_buf).or_else(|| {
        std::env::var_os("EVOENGINEER_NVRTC")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    if let Some(p) = explicit {
        let lib = library_in(&p).ok_or_else(|| {
            format!(
                "no NVRTC library at {} (the nvrtc setting or $EVOENGINEER_NVRTC)",
                p.display()
            )
        })?;
        preload(&lib)?;
        return present().then_some(Some(lib.clone())).ok_or_else(|| {
            format!(
                "loaded {} but cudarc still cannot open libnvrtc",
                lib.display()
            )
        });
    }
    if present() {
        return Ok(None);
    }
    let dirs = library_dirs();
    for dir in &dirs {
        if let Some(lib) = library_in(dir).filter(|_| dir.is_dir()) {
            if preload(&lib).is_ok() && present() {
                return Ok(Some(lib));
            }
        }
    }
    Err(format!(
        "NVRTC (libnvrtc.so.13) not found; looked where the dynamic loader looks and in {}. \
         Install it with scripts/setup-cuda, or set EVOENGINEER_NVRTC=/path/to/libnvrtc.so.13 \
         (or LD_LIBRARY_PATH=<its directory>)",
        dirs.iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// Whether cudarc can open libnvrtc by the names it tries.
fn present() -> bool {
    // SAFETY: only opens and closes the library.
    unsafe { sys::is_culib_present() }
}

/// Opens `lib`, and the builtins library beside it, by absolute path, for good.
fn preload(lib: &Path) -> Result<(), String> {
    let dir = lib.parent().unwrap_or(Path::new("."));
    let mut builtins: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                        n.starts_with("libnvrtc-builtins.so.") && !n.contains(".alt.")
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    builtins.sort();
    for b in &builtins {
        dlopen_global(b)?;
    }
    dlopen_global(lib)
}

#[cfg(unix)]
fn dlopen_global(path: &Path) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| "bad path".to_string())?;
    // SAFETY: a valid C string; the handle is never closed, so the library stays loaded.
    let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    if handle.is_null() {
        // SAFETY: dlerror returns a C string or null.
        let err = unsafe { libc::dlerror() };
        let msg = if err.is_null() {
            "unknown error".to_string()
        } else {
            unsafe { CStr::from_ptr(err) }
                .to_string_lossy()
                .into_owned()
        };
        return Err(format!("cannot load {}: {msg}", path.display()));
    }
    Ok(())
}

#[cfg(not(unix))]
fn dlopen_global(path: &Path) -> Result<(), String> {
    Err(format!(
        "cannot preload {} on this platform",
        path.display()
    ))
}

/// The libnvrtc this process has mapped (Linux), when it was found by the loader.
fn loaded_library_path() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| {
            Path::new(p)
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libnvrtc.so"))
        })
        .map(PathBuf::from)
}

/// The CUDA include directory and its `cccl` subdirectory.
fn include_dirs(explicit: Option<&Path>, library: Option<&Path>) -> Vec<PathBuf> {
    let has_headers =
        |d: &Path| d.join("cuda_runtime.h").is_file() || d.join("cuda_bf16.h").is_file();
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(e) = explicit {
        candidates.push(e.to_path_buf());
    } else {
        if let Some(lib) = library {
            let lib = std::fs::canonicalize(lib).unwrap_or_else(|_| lib.to_path_buf());
            if let Some(root) = lib.parent().and_then(Path::parent) {
                candidates.push(root.join("include"));
            }
        }
        candidates.push(PathBuf::from("/usr/local/cuda/include"));
    }
    let Some(inc) = candidates
        .into_iter()
        .find(|d| explicit.is_some() || has_headers(d))
    else {
        return Vec::new();
    };
    let cccl = inc.join("cccl");
    let mut out = vec![inc];
    if cccl.is_dir() {
        out.push(cccl);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_in_a_directory() {
        assert_eq!(library_in(Path::new("/no/such/dir")), None);
    }

    #[test]
    fn log_conversion_stops_at_nul() {
        let chars: Vec<c_char> = b"ptxas info\0junk".iter().map(|&b| b as c_char).collect();
        assert_eq!(c_chars_to_string(&chars), "ptxas info");
    }
}
