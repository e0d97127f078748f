//! `tune --llm` end to end through the binary, with a `command:` provider (a shell script
//! standing in for a model) and a replayed landscape: no GPU and no network. The replay has no
//! measurements of model-written sources, so their trials are `missing` (nothing invented);
//! what is checked is the plumbing: flags, calls, sources with lineage, resume, show.

#[path = "support/chat_server.rs"]
mod chat_server;

use std::path::{Path, PathBuf};
use std::process::Command;

use assert_cmd::cargo::CommandCargoExt;
use evoengineer::store::Store;
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn evo() -> Command {
    Command::cargo_bin("evoengineer").unwrap()
}

fn model_script(dir: &Path) -> PathBuf {
    let p = dir.join("model.sh");
    std::fs::write(
        &p,
        r#"#!/bin/sh
# A stand-in model: reads the request, answers one fixed variant.
cat > /dev/null
cat <<'ANSWER'
Use fewer threads per row.

```cuda
#include <cuda_bf16.h>
extern "C" __global__ void softmax_bf16_kernel(const __nv_bfloat16* X, __nv_bfloat16* Y, int ROWS, int COLS) {}
```
ANSWER
"#,
    )
    .unwrap();
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    p
}

#[test]
fn tune_with_a_command_provider_records_calls_and_sources() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("runs.db");
    let script = model_script(tmp.path());
    let task = repo().join("tasks/softmax_bf16");
    let landscape = task.join("landscapes/h100-mission.jsonl");
    let out = evo()
        .arg("tune")
        .arg(&task)
        .arg("--replay")
        .arg(&landscape)
        .args(["--variant", "insight", "--llm"])
        .arg(format!("command:{}", script.display()))
        .args(["--llm-calls", "2", "--json", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["evaluations"], 3, "the task's kernel and two calls");
    assert_eq!(v["stopped_by"], "calls", "--llm-calls calls made");
    let run_id = v["run_id"].as_i64().unwrap();

    let store = Store::open(&db).unwrap();
    let sources = store.run_sources(run_id).unwrap();
    assert_eq!(sources.len(), 1, "the same answer twice: one source");
    assert_eq!(sources[0].operator.as_deref(), Some("init"));
    assert_eq!(
        sources[0].notes.as_deref(),
        Some("Use fewer threads per row.")
    );

    let show = evo()
        .args(["show", &run_id.to_string(), "--db"])
        .arg(&db)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(show.status.success());
    assert!(text.contains("src:"), "{text}");
    assert!(text.contains("missing"), "{text}");
    assert!(
        text.contains("code evolution: 1 sources proposed"),
        "{text}"
    );
    assert!(
        text.contains("init") && text.contains("from base"),
        "{text}"
    );

    let show = evo()
        .args(["show", &run_id.to_string(), "--json", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&show.stdout).unwrap();
    assert!(v["settings"]["llm"]["provider"]["spec"]["kind"] == "command");
    assert_eq!(v["sources"][0]["operator"], "init");
    assert_eq!(v["sources"][0]["parents"][0], "base");

    // Knob tuning of the model's source: a landscape whose lines name it (as an export of a
    // GPU run of it would), searched with --source and a prefix of its hash.
    let hash = &sources[0].hash;
    let lines: Vec<String> = std::fs::read_to_string(&landscape)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            v["source"] = format!("src:{hash}").into();
            v.to_string()
        })
        .collect();
    let variant_landscape = tmp.path().join("variant.jsonl");
    std::fs::write(&variant_landscape, lines.join("\n")).unwrap();
    let out = evo()
        .arg("tune")
        .arg(&task)
        .arg("--replay")
        .arg(&variant_landscape)
        .args(["--variant", "random", "--budget", "5", "--json", "--source"])
        .arg(&hash[..12])
        .arg("--db")
        .arg(&db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["evaluations"], 5);
    assert_eq!(v["winner"]["source"], format!("src:{hash}"));
    let out = evo()
        .args(["tune"])
        .arg(&task)
        .args(["--replay"])
        .arg(&variant_landscape)
        .args(["--source", "0123456789", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no model-written source"));
}

#[test]
fn llm_flags_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("runs.db");
    let task = repo().join("tasks/softmax_bf16");
    let landscape = task.join("landscapes/h100-mission.jsonl");
    let run = |args: &[&str]| {
        let out = evo()
            .arg("tune")
            .arg(&task)
            .arg("--replay")
            .arg(&landscape)
            .args(args)
            .arg("--db")
            .arg(&db)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = run(&[
        "--llm",
        "openai:http://127.0.0.1:9/v1#m",
        "--llm-key-env",
        "EVOENGINEER_TEST_NO_SUCH_KEY",
    ]);
    assert!(e.contains("EVOENGINEER_TEST_NO_SUCH_KEY"), "{e}");
    let e = run(&["--llm", "command:true", "--variant", "grid"]);
    assert!(e.contains("--variant full, insight or free"), "{e}");
    let e = run(&["--llm", "gemini:x"]);
    assert!(e.contains("expected openai:"), "{e}");
}

#[test]
fn openai_provider_through_the_binary_sends_the_key_and_stores_it_nowhere() {
    let key = "sk-test-do-not-store-4242";
    let answer = "Idea.\n```cuda\nextern \"C\" __global__ void softmax_bf16_kernel() {}\n```\n";
    let server = chat_server::ChatServer::start(vec![
        chat_server::Reply::status(503, "warming up"),
        chat_server::Reply::completion(answer),
    ]);
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("runs.db");
    let task = repo().join("tasks/softmax_bf16");
    let out = evo()
        .env("EVOENGINEER_TEST_API_KEY", key)
        .arg("tune")
        .arg(&task)
        .arg("--replay")
        .arg(task.join("landscapes/h100-mission.jsonl"))
        .arg("--llm")
        .arg(format!("openai:{}#test-model", server.base_url()))
        .args([
            "--llm-key-env",
            "EVOENGINEER_TEST_API_KEY",
            "--llm-calls",
            "1",
        ])
        .args(["--llm-temperature", "0.2", "--json", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains(key));
    assert!(!String::from_utf8_lossy(&out.stdout).contains(key));
    let reqs = server.requests.lock().unwrap();
    assert_eq!(reqs.len(), 2, "503, then the answer");
    for (_, headers, body) in reqs.iter() {
        assert!(headers
            .iter()
            .any(|(k, v)| k == "authorization" && v == &format!("Bearer {key}")));
        let body: Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["model"], "test-model");
        assert_eq!(body["temperature"], 0.2);
    }
    // Nothing in the store's files holds the key; the variable's name is recorded.
    let store = Store::open(&db).unwrap();
    let rec = store
        .load_run(1, &evoengineer::task::Task::load(&task).unwrap().space)
        .unwrap();
    let llm = rec.settings.llm.unwrap();
    assert_eq!(
        llm.provider.key_env.as_deref(),
        Some("EVOENGINEER_TEST_API_KEY")
    );
    drop(store);
    for entry in std::fs::read_dir(tmp.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(
            !bytes.windows(key.len()).any(|w| w == key.as_bytes()),
            "the key is in a file of the store"
        );
    }
}
