//! The log (`EVOENGINEER_LOG`, default `warn`) on stderr, with no secret in it.
//!
//! Two guards, whatever the level asked for: other crates log at most `info` (ureq and
//! ureq-proto dump the bytes of requests, headers included, at `trace`; ureq logs requests at
//! `debug`; rustls and the PostgreSQL client log connection details), and every line passes
//! through [`evoengineer::secrets::redact`] before it is written.

use std::io::Write;

use tracing::Level;
use tracing_subscriber::filter::{filter_fn, EnvFilter, FilterExt};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// Installs the subscriber (and the bridge from the `log` crate).
pub fn init() {
    let env = EnvFilter::try_from_env("EVOENGINEER_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let quiet = filter_fn(|m| *m.level() <= Level::INFO || is_ours(m.target()));
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(RedactedStderr)
                .without_time()
                .with_filter(env.and(quiet)),
        )
        .init();
}

/// Whether a log target is this crate's (it may log at `debug` and `trace`).
fn is_ours(target: &str) -> bool {
    target == "evoengineer" || target.starts_with("evoengineer::")
}

/// Stderr, one redacted event at a time.
struct RedactedStderr;

impl<'a> MakeWriter<'a> for RedactedStderr {
    type Writer = RedactedEvent;

    fn make_writer(&'a self) -> RedactedEvent {
        RedactedEvent(Vec::new())
    }
}

/// One event's text, redacted and written to stderr when dropped.
struct RedactedEvent(Vec<u8>);

impl Write for RedactedEvent {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for RedactedEvent {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let text = evoengineer::secrets::redact(&String::from_utf8_lossy(&self.0));
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }
}
