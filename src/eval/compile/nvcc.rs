//! nvcc as a subprocess: finding it, its version, and one compile to a cubin.
//!
//! Where nvcc is looked for, first found wins:
//! 1. `CompilerSettings::nvcc` (an explicit path: an error if it is not there);
//! 2. `$EVOENGINEER_NVCC` (likewise);
//! 3. `nvcc` on `PATH`;
//! 4. `/usr/local/cuda/bin/nvcc`;
//! 5. the PyPI wheels of `scripts/setup-cuda`: `$EVOENGINEER_CUDA_HOME/nvidia/cu13/bin/nvcc`,
//!    then `.cuda/py/nvidia/cu13/bin/nvcc` in the current directory or any parent, beside the
//!    running executable or any parent, and in the source tree this crate was built from.
//!
//! nvcc is run by its canonical path: the wheel's nvcc finds its `nvcc.profile` (which supplies
//! cicc, libdevice, ptxas and the include directories) next to the path it was called by, so
//! through a symlink it would find none. It needs a host C++ compiler even for `-cubin` (it
//! preprocesses with it): `CompilerSettings::ccbin`, else `$EVOENGINEER_NVCC_CCBIN`, else
//! `g++` on `PATH`. The command:
//!
//! ```text
//! nvcc -cubin -gencode=arch=compute_90a,code=sm_90a -Xptxas -v [-ccbin G++] -I<source dir>
//!      -DKNOB=V… -DSHAPE_PARAM=V… <task flags> <extra flags> <tmp>/kernel.cu -o <tmp>/kernel.cubin
//! ```
//!
//! The static defences' second pass preprocesses a source with the same command, `-E` in place
//! of `-cubin` ([`Nvcc::preprocess_args`]): the device pass only, as cicc gets it.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A located, working nvcc.
#[derive(Clone, Debug)]
pub struct Nvcc {
    pub path: PathBuf,
    /// `nvcc 13.0, V13.0.88`.
    pub toolchain: String,
    /// The release and build lines of `nvcc --version`: part of the cache key.
    pub identity: String,
    pub ccbin: Option<PathBuf>,
}

/// The wheel's nvcc below a `.cuda/py`-style install directory.
const WHEEL_NVCC: &str = "nvidia/cu13/bin/nvcc";

/// Where to look, in order, with how each place was found.
fn candidates(explicit: Option<&Path>) -> Result<Vec<(PathBuf, String)>, String> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(vec![(p.to_path_buf(), "the nvcc setting".into())])
        } else {
            Err(format!(
                "nvcc {} (from the settings) does not exist",
                p.display()
            ))
        };
    }
    if let Some(p) = std::env::var_os("EVOENGINEER_NVCC").filter(|v| !v.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(vec![(p, "$EVOENGINEER_NVCC".into())])
        } else {
            Err(format!(
                "$EVOENGINEER_NVCC = {} does not exist",
                p.display()
            ))
        };
    }
    let mut out = Vec::new();
    if let Some(p) = on_path("nvcc") {
        out.push((p, "PATH".into()));
    }
    out.push((
        PathBuf::from("/usr/local/cuda/bin/nvcc"),
        "/usr/local/cuda".into(),
    ));
    for (dir, how) in wheel_dirs() {
        out.push((dir.join(WHEEL_NVCC), how));
    }
    Ok(out)
}

/// Install directories of the PyPI wheels (`<dir>/nvidia/cu13/...`), with how each was found.
pub fn wheel_dirs() -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    if let Some(h) = std::env::var_os("EVOENGINEER_CUDA_HOME").filter(|v| !v.is_empty()) {
        out.push((PathBuf::from(h), "$EVOENGINEER_CUDA_HOME".to_string()));
    }
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.push(cwd);
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        roots.push(dir);
    }
    roots.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    for root in roots {
        for dir in root.ancestors() {
            let wheel = dir.join(".cuda").join("py");
            if wheel.join(WHEEL_NVCC).is_file() && !out.iter().any(|(d, _)| *d == wheel) {
                out.push((wheel, format!("{} (scripts/setup-cuda)", dir.display())));
            }
        }
    }
    out
}

/// `name` in a directory of `PATH`.
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

impl Nvcc {
    /// Finds nvcc, checks that it runs, and reads its version.
    pub fn locate(explicit: Option<&Path>, ccbin: Option<&Path>) -> Result<Nvcc, String> {
        let candidates = candidates(explicit)?;
        let Some((found, _how)) = candidates.iter().find(|(p, _)| p.is_file()) else {
            return Err(format!(
                "nvcc not found; looked in: {}. Install it with scripts/setup-cuda (CUDA 13.0 \
                 wheels), or set EVOENGINEER_NVCC=/path/to/nvcc",
                candidates
                    .iter()
                    .map(|(p, how)| format!("{} ({how})", p.display()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        };
        let path = std::fs::canonicalize(found).unwrap_or_else(|_| found.clone());
        let out = Command::new(&path)
            .arg("--version")
            .output()
            .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(format!(
                "{} --version failed ({}): {}",
                path.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let release = text
            .lines()
            .find_map(|l| l.split_once("release ").map(|(_, r)| r.trim().to_string()))
            .ok_or_else(|| {
                format!(
                    "{} --version printed no release line: {text}",
                    path.display()
                )
            })?;
        let build = text
            .lines()
            .find(|l| l.starts_with("Build "))
            .unwrap_or_default();
        let ccbin = match ccbin {
            Some(c) => Some(c.to_path_buf()),
            None => std::env::var_os("EVOENGINEER_NVCC_CCBIN")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
        };
        if ccbin.is_none() && on_path("g++").is_none() && on_path("c++").is_none() {
            return Err(
                "nvcc needs a host C++ compiler even for -cubin (it preprocesses with it), and \
                 there is no g++ on PATH: install g++, or set EVOENGINEER_NVCC_CCBIN"
                    .to_string(),
            );
        }
        Ok(Nvcc {
            toolchain: format!("nvcc {release}"),
            identity: format!("nvcc|{release}|{build}"),
            path,
            ccbin,
        })
    }

    /// The arguments of one compile (without the input and output files).
    pub fn args(
        &self,
        arch: &str,
        include_dir: Option<&Path>,
        defines: &[(String, String)],
        flags: &[String],
    ) -> Vec<String> {
        let cc = arch.trim_start_matches("sm_");
        let mut args = vec![
            "-cubin".to_string(),
            format!("-gencode=arch=compute_{cc},code=sm_{cc}"),
            "-Xptxas".to_string(),
            "-v".to_string(),
        ];
        if let Some(c) = &self.ccbin {
            args.push("-ccbin".into());
            args.push(c.display().to_string());
        }
        if let Some(d) = include_dir {
            args.push(format!("-I{}", d.display()));
        }
        args.extend(defines.iter().map(|(k, v)| format!("-D{k}={v}")));
        args.extend(flags.iter().cloned());
        args
    }

    /// The arguments of a run that preprocesses as a compile with the same arguments does
    /// ([`Nvcc::args`] with `-E` for `-cubin`): with one `-gencode` for a real arch, `nvcc -E`
    /// runs only the device pass, the same host-compiler `-E` call (`-D__CUDA_ARCH__=…`, the
    /// same `-I`, `-D`, flags and `-include cuda_runtime.h`) whose output cicc compiles.
    pub fn preprocess_args(
        &self,
        arch: &str,
        include_dir: Option<&Path>,
        defines: &[(String, String)],
        flags: &[String],
    ) -> Vec<String> {
        let mut args = self.args(arch, include_dir, defines, flags);
        args[0] = "-E".to_string();
        args
    }

    /// Compiles `source` (written to a temporary directory as `file_name`).
    pub fn compile(
        &self,
        source: &str,
        file_name: &str,
        args: &[String],
        timeout: Option<Duration>,
    ) -> Result<NvccRun, String> {
        self.run_on(source, file_name, args, timeout)
    }

    /// Preprocesses `source` (written to a temporary directory as `file_name`) with `args`
    /// from [`Nvcc::preprocess_args`]; the text is in [`PreprocessRun::text`].
    pub fn preprocess(
        &self,
        source: &str,
        file_name: &str,
        args: &[String],
        timeout: Option<Duration>,
    ) -> Result<PreprocessRun, String> {
        let run = self.run_on(source, file_name, args, timeout)?;
        Ok(PreprocessRun {
            status: run.status,
            timed_out: run.timed_out,
            output: run.output,
            text: run.cubin.map(|b| String::from_utf8_lossy(&b).into_owned()),
        })
    }

    /// Runs nvcc with `args` on `source` in a temporary directory; what it wrote to `-o` is in
    /// [`NvccRun::cubin`].
    fn run_on(
        &self,
        source: &str,
        file_name: &str,
        args: &[String],
        timeout: Option<Duration>,
    ) -> Result<NvccRun, String> {
        let tmp = TempDir::new("nvcc")
            .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
        let src = tmp.path().join(file_name);
        let out = tmp.path().join("kernel.cubin");
        std::fs::write(&src, source).map_err(|e| format!("cannot write {}: {e}", src.display()))?;
        let mut cmd = Command::new(&self.path);
        cmd.args(args)
            .arg(&src)
            .arg("-o")
            .arg(&out)
            .current_dir(tmp.path());
        let start = Instant::now();
        let run = run_with_timeout(cmd, timeout)
            .map_err(|e| format!("cannot run {}: {e}", self.path.display()))?;
        let seconds = start.elapsed().as_secs_f64();
        let mut output = run.stderr;
        if !run.stdout.trim().is_empty() {
            output.push_str(&run.stdout);
        }
        // Messages name the temporary copy: name the file as the task does.
        let output = output.replace(&format!("{}/", tmp.path().display()), "");
        let cubin = match run.status {
            Some(0) => std::fs::read(&out).ok(),
            _ => None,
        };
        Ok(NvccRun {
            status: run.status,
            timed_out: run.timed_out,
            output,
            cubin,
            seconds,
        })
    }
}

/// What one `nvcc -E` run gave.
#[derive(Debug)]
pub struct PreprocessRun {
    /// Exit status; `None` when killed.
    pub status: Option<i32>,
    pub timed_out: bool,
    /// stderr, then stdout.
    pub output: String,
    /// The preprocessed source, when nvcc wrote one.
    pub text: Option<String>,
}

/// What one nvcc run gave.
#[derive(Debug)]
pub struct NvccRun {
    /// Exit status; `None` when killed.
    pub status: Option<i32>,
    pub timed_out: bool,
    /// stderr, then stdout.
    pub output: String,
    pub cubin: Option<Vec<u8>>,
    pub seconds: f64,
}

struct Finished {
    status: Option<i32>,
    timed_out: bool,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` in a process group of its own, so that on timeout nvcc and the tools it started
/// (cicc, ptxas) are killed together.
fn run_with_timeout(mut cmd: Command, timeout: Option<Duration>) -> std::io::Result<Finished> {
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            timed_out = true;
            #[cfg(unix)]
            // SAFETY: kill(2) with the negated id of the process group the child leads.
            unsafe {
                libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL);
            }
            let _ = child.kill();
            break child.wait()?;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Ok(Finished {
        status: status.code(),
        timed_out,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// A directory under the system's temporary directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> std::io::Result<TempDir> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "evoengineer-{tag}-{}-{n}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_path_must_exist() {
        let err = candidates(Some(Path::new("/no/such/nvcc"))).unwrap_err();
        assert!(err.contains("/no/such/nvcc"), "{err}");
    }

    #[test]
    fn gencode_for_arch_specific_targets() {
        let nvcc = Nvcc {
            path: PathBuf::from("nvcc"),
            toolchain: String::new(),
            identity: String::new(),
            ccbin: Some(PathBuf::from("/usr/bin/g++")),
        };
        let args = nvcc.args(
            "sm_90a",
            Some(Path::new("/t")),
            &[("BM".into(), "128".into())],
            &["-O3".into()],
        );
        assert_eq!(
            args,
            [
                "-cubin",
                "-gencode=arch=compute_90a,code=sm_90a",
                "-Xptxas",
                "-v",
                "-ccbin",
                "/usr/bin/g++",
                "-I/t",
                "-DBM=128",
                "-O3"
            ]
        );
    }

    #[test]
    fn timeout_kills() {
        let mut cmd = Command::new("sh");
        // The shell's child must die too, or it would hold the pipes open.
        cmd.args(["-c", "echo started >&2; sleep 5; true"]);
        let t = Instant::now();
        let r = run_with_timeout(cmd, Some(Duration::from_millis(200))).unwrap();
        assert!(r.timed_out);
        assert!(t.elapsed() < Duration::from_secs(4));
        assert_eq!(r.stderr.trim(), "started");
    }

    #[test]
    fn temp_dir_is_removed() {
        let d = TempDir::new("test").unwrap();
        let p = d.path().to_path_buf();
        std::fs::write(p.join("x"), "y").unwrap();
        drop(d);
        assert!(!p.exists());
    }
}
