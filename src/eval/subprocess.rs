//! Running a helper program (nvidia-smi, ncu, python) with a deadline, its output captured.

use std::io::{Read, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// What a finished (or killed) program left.
#[derive(Debug)]
pub struct Captured {
    /// `None` when it was killed at the deadline.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl Captured {
    pub fn timed_out(&self) -> bool {
        self.status.is_none()
    }

    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// The last `n` characters of stderr and stdout, for messages.
    pub fn tail(&self, n: usize) -> String {
        let text = format!("{}\n{}", self.stderr.trim(), self.stdout.trim());
        tail_chars(text.trim(), n)
    }
}

/// The last `n` characters of `text`.
pub fn tail_chars(text: &str, n: usize) -> String {
    let count = text.chars().count();
    if count <= n {
        text.to_string()
    } else {
        let skip = count - n;
        format!("…{}", text.chars().skip(skip).collect::<String>())
    }
}

/// Runs `cmd` to completion or until `timeout`, then kills and reaps it. `stdin` is written
/// to its standard input (then closed). Errors: it could not be started (not found, ...).
pub fn run(cmd: Command, stdin: Option<&[u8]>, timeout: Duration) -> std::io::Result<Captured> {
    let raw = run_bytes(cmd, stdin, timeout)?;
    Ok(Captured {
        status: raw.status,
        stdout: String::from_utf8_lossy(&raw.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&raw.stderr).into_owned(),
    })
}

/// What [`run_bytes`] captured: the output as bytes, for callers that must refuse text that
/// is not UTF-8 rather than repair it.
#[derive(Debug)]
pub struct CapturedBytes {
    /// `None` when it was killed at the deadline.
    pub status: Option<ExitStatus>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// [`run`], with the output as it came.
pub fn run_bytes(
    mut cmd: Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> std::io::Result<CapturedBytes> {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    let input = stdin.map(<[u8]>::to_vec);
    let mut pipe_in = child.stdin.take();
    let writer = std::thread::spawn(move || {
        if let (Some(pipe), Some(bytes)) = (pipe_in.as_mut(), input) {
            let _ = pipe.write_all(&bytes);
        }
        drop(pipe_in);
    });
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let _ = writer.join();
    // A killed program's own children may hold the pipes open; do not wait on them forever.
    let stdout = join_bounded(out_reader, status.is_none());
    let stderr = join_bounded(err_reader, status.is_none());
    Ok(CapturedBytes {
        status,
        stdout,
        stderr,
    })
}

fn join_bounded(handle: std::thread::JoinHandle<Vec<u8>>, killed: bool) -> Vec<u8> {
    if killed {
        let deadline = Instant::now() + Duration::from_secs(2);
        while !handle.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if !handle.is_finished() {
            return Vec::new();
        }
    }
    handle.join().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c").arg(script);
        c
    }

    #[test]
    fn captures_output_and_status() {
        let c = run(
            sh("echo out; echo err >&2; exit 3"),
            None,
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(c.status.unwrap().code(), Some(3));
        assert_eq!(c.stdout, "out\n");
        assert_eq!(c.stderr, "err\n");
        assert!(!c.success());
    }

    #[test]
    fn feeds_stdin() {
        let c = run(sh("cat"), Some(b"hello"), Duration::from_secs(10)).unwrap();
        assert!(c.success());
        assert_eq!(c.stdout, "hello");
    }

    #[test]
    fn kills_at_the_deadline() {
        let start = Instant::now();
        let c = run(sh("exec sleep 30"), None, Duration::from_millis(200)).unwrap();
        assert!(c.timed_out());
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn missing_program_is_an_error() {
        assert!(run(
            Command::new("/nonexistent/prog"),
            None,
            Duration::from_secs(1)
        )
        .is_err());
    }

    #[test]
    fn tails() {
        assert_eq!(tail_chars("abcdef", 3), "…def");
        assert_eq!(tail_chars("ab", 3), "ab");
    }
}
