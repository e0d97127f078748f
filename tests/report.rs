//! `evoengineer report` end to end: a run made through the CLI on a generated landscape,
//! written as HTML, checked as text and, where Chromium is installed, rendered headless.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{evo, seed_task, write_landscape};
use serde_json::Value;

const FIGURES: [&str; 5] = [
    "fig-progress",
    "fig-macro",
    "fig-knobs",
    "fig-resources",
    "fig-bottleneck",
];

/// Makes run 1 in `dir/runs.db` (Full, seed 2) and writes its report with two baselines;
/// returns the report's path and `show --json` of the run.
fn make_report(dir: &Path) -> (PathBuf, Value) {
    let land = write_landscape(dir);
    let db = dir.join("runs.db");
    let out = evo()
        .arg("tune")
        .arg(seed_task())
        .arg("--replay")
        .arg(&land)
        .arg("--db")
        .arg(&db)
        .args(["--variant", "full", "--seed", "2", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let baselines = dir.join("baselines.jsonl");
    std::fs::write(
        &baselines,
        "{\"name\": \"example baseline A\", \"p50_us\": 640.0}\n{\"name\": \"example baseline B\", \"p50_us\": 580.5, \"shape\": \"mission\"}\n{\"name\": \"elsewhere\", \"p50_us\": 1.0, \"shape\": \"other\"}\n",
    )
    .unwrap();
    let out_dir = dir.join("report");
    let out = evo()
        .args(["report", "1", "--db"])
        .arg(&db)
        .arg("--out")
        .arg(&out_dir)
        .arg("--baselines")
        .arg(&baselines)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = out_dir.join("report.html");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        path.display().to_string()
    );
    let show = evo()
        .args(["show", "1", "--json", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    (path, serde_json::from_slice(&show.stdout).unwrap())
}

/// The text of `<figure id="id">...</figure>`.
fn figure<'a>(html: &'a str, id: &str) -> &'a str {
    let at = html
        .find(&format!("<figure id=\"{id}\">"))
        .unwrap_or_else(|| panic!("no <figure id=\"{id}\">"));
    let end = html[at..].find("</figure>").expect("figure not closed");
    &html[at..at + end]
}

fn count(s: &str, needle: &str) -> usize {
    s.matches(needle).count()
}

#[test]
fn report_has_every_chart_with_content() {
    let dir = tempfile::tempdir().unwrap();
    let (path, run) = make_report(dir.path());
    let html = std::fs::read_to_string(&path).unwrap();
    let trajectory = run["trajectory"].as_array().unwrap();
    let n = trajectory.len();
    let ok = trajectory.iter().filter(|t| t["outcome"] == "ok").count();
    let failed = n - ok;
    assert!(ok > 10 && failed > 3, "{ok} ok, {failed} failed");

    for id in FIGURES {
        let fig = figure(&html, id);
        let svg_at = fig.find("<svg").unwrap_or_else(|| panic!("{id}: no <svg>"));
        let svg = &fig[svg_at..fig.find("</svg>").unwrap()];
        assert!(svg.len() > 1000, "{id}: svg nearly empty");
        assert!(fig.contains("<figcaption>"), "{id}: no caption");
        assert!(count(svg, "<text") > 5, "{id}: no labels");
    }
    // Progress: a step line per elite rank (K = 3), a dot per correct candidate, a cross per
    // failure, and the two baselines of this shape.
    let p = figure(&html, "fig-progress");
    assert_eq!(count(p, "<polyline"), 3);
    assert!(count(p, "class=\"cand\"") >= ok);
    assert!(count(p, "<path") >= failed);
    assert_eq!(count(p, "class=\"baselinelabel\""), 2);
    assert!(p.contains("example baseline A 640.0 μs"));
    assert!(!html.contains("elsewhere"));
    assert!(p.contains(">p50 (μs)</text>") && p.contains(">evaluations</text>"));
    // Macro variants: every candidate, correct ones as dots, failures as crosses.
    let m = figure(&html, "fig-macro");
    let dots =
        count(m, "class=\"cand\"") + count(m, "class=\"rowbest\"") + count(m, "class=\"winner\"");
    assert_eq!(
        dots,
        ok + 3,
        "a dot per correct candidate plus three in the legend"
    );
    assert!(count(m, "<path") >= failed);
    for knob in ["USE_WARP_SPECIALIZATION", "TILE_N"] {
        assert!(m.contains(&format!(">{knob}</text>")), "no column {knob}");
    }
    // Knobs: a panel per knob, a median bar per value that has correct candidates.
    let k = figure(&html, "fig-knobs");
    assert_eq!(count(k, "class=\"paneltitle\""), 7);
    assert!(count(k, "class=\"median\"") >= 7 * 2 - 1);
    assert!(count(k, "<polyline") >= 6);
    // Resources: both panels have the correct candidates.
    let r = figure(&html, "fig-resources");
    assert!(count(r, "<circle") >= 2 * ok);
    assert!(r.contains("registers per thread") && r.contains("shared memory per block (KiB)"));
    // Bottleneck: a rect per trial in the top band, classes coloured.
    let b = figure(&html, "fig-bottleneck");
    assert!(count(b, "<rect") >= n);
    assert!(b.contains("class=\"b-compute\"") && b.contains("class=\"b-memory\""));
    // Winner and trajectory.
    let winner = run["winner"]["p50_us"].as_f64().unwrap();
    assert!(html.contains(&format!("{winner:.1} μs")));
    assert!(html.contains("speedup over the default config"));
    assert!(html.contains("id=\"trajectory\""));
    // Self-contained.
    for bad in ["<script", "src=", "href=", "url(", "@import"] {
        assert!(!html.contains(bad), "report contains {bad}");
    }
}

#[test]
fn report_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("empty.db");
    let out = evo()
        .args(["report", "9", "--out"])
        .arg(dir.path().join("r"))
        .arg("--db")
        .arg(&db)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no run 9"));
    let (_, _) = make_report(dir.path());
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"name\": \"x\"}\n").unwrap();
    let out = evo()
        .args(["report", "1", "--out"])
        .arg(dir.path().join("r"))
        .arg("--db")
        .arg(dir.path().join("runs.db"))
        .arg("--baselines")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.jsonl:1") && err.contains("p50_us"),
        "{err}"
    );
}

/// Says a test was skipped where it is seen: the harness captures `eprintln!`, so write to
/// the terminal's stderr device directly when there is one.
fn skipped(why: &str) {
    use std::io::Write;
    let line = format!("SKIPPED: {why}");
    match std::fs::OpenOptions::new().write(true).open("/dev/stderr") {
        Ok(mut f) => {
            let _ = writeln!(f, "{line}");
        }
        Err(_) => eprintln!("{line}"),
    }
}

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for name in [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ] {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// Runs headless Chromium with `args` on `url`; its stdout. Killed after 90 s.
fn run_chromium(bin: &Path, args: &[&str], url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    // Stdout to a file: the DOM is larger than a pipe's buffer.
    let stdout = profile.path().join("stdout");
    let mut child = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1400,3000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish in 90 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "chromium failed: {status:?}");
    std::fs::read_to_string(&stdout).unwrap()
}

/// Renders the report in headless Chromium: after load the DOM holds every chart's SVG with
/// its shapes, and a screenshot is taken. Set EVOENGINEER_REPORT_SCREENSHOT=FILE.png to keep
/// the screenshot. Skipped, saying so on stderr, where Chromium is not installed.
#[test]
fn report_renders_in_headless_chromium() {
    let Some(bin) = chromium() else {
        skipped("chromium not found (apt-get install chromium)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = make_report(dir.path());
    let url = format!("file://{}", path.display());
    let dom = run_chromium(&bin, &["--dump-dom"], &url);
    let file = std::fs::read_to_string(&path).unwrap();
    for id in FIGURES {
        let rendered = figure(&dom, id);
        let written = figure(&file, id);
        assert!(rendered.contains("<svg"), "{id}: no svg after load");
        for shape in ["<circle", "<polyline", "<rect", "<text"] {
            assert_eq!(
                count(rendered, shape),
                count(written, shape),
                "{id}: {shape} count changed in the browser"
            );
        }
    }
    let shot = dir.path().join("shot.png");
    run_chromium(&bin, &[&format!("--screenshot={}", shot.display())], &url);
    let png = std::fs::read(&shot).expect("no screenshot");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    // A blank page of this size compresses to a few kB; charts make it much larger.
    assert!(
        png.len() > 50_000,
        "screenshot looks blank ({} bytes)",
        png.len()
    );
    if let Some(keep) = std::env::var_os("EVOENGINEER_REPORT_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
}
