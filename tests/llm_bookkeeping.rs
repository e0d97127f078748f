//! What `tune --llm` says about itself: why it stopped (model calls made against
//! `--llm-calls`, not evaluations against `--budget`) and the tokens the model reported,
//! with servers that send prompt and completion tokens but no total. Through the binary, on a
//! replayed landscape: no GPU, no network.

#[path = "support/chat_server.rs"]
mod chat_server;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use assert_cmd::cargo::CommandCargoExt;
use chat_server::{ChatServer, Reply};
use serde_json::{json, Value};

fn task() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tasks/softmax_bf16")
}

fn tune(db: &Path, llm: &str, calls: usize, extra: &[&str]) -> Output {
    let out = Command::cargo_bin("evoengineer")
        .unwrap()
        .arg("tune")
        .arg(task())
        .arg("--replay")
        .arg(task().join("landscapes/h100-mission.jsonl"))
        .args(["--llm", llm, "--llm-calls", &calls.to_string()])
        .args(extra)
        .arg("--db")
        .arg(db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn show(db: &Path, run_id: i64, json: bool) -> String {
    let mut c = Command::cargo_bin("evoengineer").unwrap();
    c.args(["show", &run_id.to_string(), "--db"]).arg(db);
    if json {
        c.arg("--json");
    }
    let out = c.output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

fn kernel(variant: u32) -> String {
    format!(
        "Idea {variant}.\n\n```cuda\n#include <cuda_bf16.h>\n// variant {variant}\nextern \"C\" __global__ void softmax_bf16_kernel(const __nv_bfloat16* X, __nv_bfloat16* Y, int ROWS, int COLS) {{}}\n```\n"
    )
}

/// A chat completion whose usage is `usage` (here without `total_tokens`).
fn completion(content: &str, usage: Value) -> Reply {
    let body = json!({
        "model": "test-model",
        "choices": [{ "index": 0, "message": { "role": "assistant", "content": content } }],
        "usage": usage,
    });
    Reply::status(200, &body.to_string())
}

#[test]
fn an_llm_run_reports_its_calls_and_the_tokens_of_servers_without_a_total() {
    // Three calls: prompt and completion tokens but no total, then a total of 0, then the
    // same source again (one stored source, three calls' tokens).
    let server = ChatServer::start(vec![
        completion(
            &kernel(1),
            json!({ "prompt_tokens": 600, "completion_tokens": 300 }),
        ),
        completion(
            &kernel(2),
            json!({ "prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 0 }),
        ),
        completion(
            &kernel(2),
            json!({ "prompt_tokens": 10, "completion_tokens": 5 }),
        ),
    ]);
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("runs.db");
    let llm = format!("openai:{}#test-model", server.base_url());
    let out = tune(&db, &llm, 3, &["--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["evaluations"], 4, "the task's kernel and three calls");
    assert_eq!(v["stopped_by"], "calls");
    assert_eq!(
        v["llm"],
        json!({
            "calls": 3, "calls_limit": 3, "calls_with_usage": 3,
            "prompt_tokens": 710, "completion_tokens": 355, "total_tokens": 1065,
        })
    );
    assert_eq!(server.count(), 3);
    let run_id = v["run_id"].as_i64().unwrap();

    // `show` tells the same stop, and the tokens of the stored sources (the repeated one keeps
    // its first record).
    let text = show(&db, run_id, false);
    assert!(
        text.contains("; stopped: 3 of 3 model calls made"),
        "{text}"
    );
    assert!(!text.contains("evaluations made"), "{text}");
    assert!(
        text.contains(
            "code evolution: 2 sources proposed (0 turned away before compiling), 1050 tokens (700 prompt + 350 completion)"
        ),
        "{text}"
    );
    let v: Value = serde_json::from_str(&show(&db, run_id, true)).unwrap();
    assert_eq!(v["stopped_by"], "calls");
    assert_eq!(v["why"], "stopped: 3 of 3 model calls made");
    assert_eq!(v["llm_calls"], json!({ "made": 3, "limit": 3 }));
    assert_eq!(v["sources"][0]["usage"]["total_tokens"], 900);
}

#[test]
fn a_command_provider_run_prints_calls_made_and_tokens() {
    let tmp = tempfile::tempdir().unwrap();
    let script = tmp.path().join("model.sh");
    let answer = json!({
        "choices": [{ "message": { "content": kernel(7) } }],
        "usage": { "prompt_tokens": 7, "completion_tokens": 3 },
    });
    std::fs::write(
        &script,
        format!("#!/bin/sh\ncat > /dev/null\ncat <<'ANSWER'\n{answer}\nANSWER\n"),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let db = tmp.path().join("runs.db");
    let out = tune(&db, &format!("command:{}", script.display()), 2, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("run 1: 3 evaluations") && text.contains("stopped: 2 of 2 model calls made"),
        "{text}"
    );
    assert!(!text.contains("stopped by budget"), "{text}");
    assert!(
        text.contains(
            "code evolution: 2 of 2 model calls made, 20 tokens (14 prompt + 6 completion)"
        ),
        "{text}"
    );
    // The report says it in the same words.
    let report_dir = tmp.path().join("report");
    let status = Command::cargo_bin("evoengineer")
        .unwrap()
        .args(["report", "1", "--db"])
        .arg(&db)
        .arg("--out")
        .arg(&report_dir)
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    let html = std::fs::read_to_string(report_dir.join("report.html")).unwrap();
    assert!(
        html.contains("stopped: 2 of 2 model calls made"),
        "the report's stop reason"
    );
    assert!(!html.contains("stopped by calls"));

    // A plain-text answer reports no tokens, and the summary says so.
    let plain = tmp.path().join("plain.sh");
    std::fs::write(
        &plain,
        format!(
            "#!/bin/sh\ncat > /dev/null\ncat <<'ANSWER'\n{}\nANSWER\n",
            kernel(8)
        ),
    )
    .unwrap();
    std::fs::set_permissions(&plain, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = tune(&db, &format!("command:{}", plain.display()), 1, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("code evolution: 1 of 1 model calls made, no token counts reported"),
        "{text}"
    );
}
