//! A throwaway PostgreSQL server for tests: initdb in a temporary folder, started with pg_ctl
//! on a free loopback port, stopped (and the folder removed) when dropped. As root, the
//! server runs as the unprivileged `postgres` user (PostgreSQL refuses to run as root).
//!
//! Without the server binaries (Debian's `postgresql` package, under
//! /usr/lib/postgresql/*/bin) [`start`] prints a SKIPPED line and gives `None`, unless
//! `EVOENGINEER_REQUIRE_POSTGRES=1` (set by scripts/test) makes that a failure.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Pg {
    bin: PathBuf,
    data: PathBuf,
    run_as: Option<String>,
    _dir: tempfile::TempDir,
    pub url: String,
}

fn bin_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("EVOENGINEER_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("pg_ctl").is_file().then_some((v, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, b)| b)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn command(bin: &Path, run_as: Option<&str>, program: &str) -> Command {
    match run_as {
        Some(user) => {
            let mut c = Command::new("runuser");
            c.args(["-u", user, "--"]).arg(bin.join(program));
            c
        }
        None => Command::new(bin.join(program)),
    }
}

fn run(mut c: Command, what: &str) {
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh server, or `None` (after saying SKIPPED) where PostgreSQL is not installed.
pub fn start(test: &str) -> Option<Pg> {
    let Some(bin) = bin_dir() else {
        let msg = format!(
            "SKIPPED: no PostgreSQL server binaries (/usr/lib/postgresql/*/bin; apt-get install postgresql) [{test}]"
        );
        if std::env::var("EVOENGINEER_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
            panic!("{msg}, but EVOENGINEER_REQUIRE_POSTGRES=1");
        }
        eprintln!("\n{msg}\n");
        return None;
    };
    let dir = tempfile::Builder::new()
        .prefix("evo-pg-")
        .tempdir_in("/tmp")
        .unwrap();
    let data = dir.path().join("data");
    let run_as = is_root().then(|| "postgres".to_string());
    if let Some(user) = &run_as {
        let out = Command::new("id").args(["-u", user]).output().unwrap();
        assert!(
            out.status.success(),
            "running as root, and there is no `{user}` user to run PostgreSQL as"
        );
        let uid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        std::os::unix::fs::chown(dir.path(), Some(uid), None).unwrap();
    }
    let mut init = command(&bin, run_as.as_deref(), "initdb");
    init.arg("-D")
        .arg(&data)
        .args(["-U", "evo", "--auth=trust", "-E", "UTF8", "--no-locale"]);
    run(init, "initdb");
    // Another test may take the port between our look and the server's start: retry.
    for attempt in 0..5 {
        let port = free_port();
        let mut ctl = command(&bin, run_as.as_deref(), "pg_ctl");
        ctl.arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.path().join("server.log"))
            .arg("-o")
            .arg(format!(
                "-p {port} -h 127.0.0.1 -k {} -c fsync=off -c max_connections=200",
                dir.path().display()
            ))
            .args(["-w", "-t", "60", "start"]);
        let out = ctl.output().unwrap();
        if out.status.success() {
            return Some(Pg {
                bin,
                data,
                run_as,
                _dir: dir,
                url: format!("postgres://evo@127.0.0.1:{port}/postgres"),
            });
        }
        let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
        if attempt == 4 {
            panic!(
                "pg_ctl start failed: {}\n{log}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    unreachable!()
}

impl Pg {
    /// A client connection, for looking at the tables.
    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).unwrap()
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let mut ctl = command(&self.bin, self.run_as.as_deref(), "pg_ctl");
        ctl.arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"]);
        let _ = ctl.output();
    }
}
