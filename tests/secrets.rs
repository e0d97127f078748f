//! Secret canaries: an API key, the credentials of a base URL and a PostgreSQL password are
//! given to the real binary, with the log at `trace`, against an endpoint that echoes the
//! request headers in its error bodies. None of them may appear in the store's files, stdout,
//! stderr, `show`, `show --json`, `export`, `runs` or the report. No GPU: a replayed landscape.

#[path = "support/chat_server.rs"]
mod chat_server;
mod common;
#[path = "support/postgres.rs"]
mod postgres_server;

use std::path::{Path, PathBuf};

use chat_server::{ChatServer, Reply};
use common::{evo, repo};
use evoengineer::candidate::Candidate;
use evoengineer::eval::{Environment, Evaluation, Outcome};
use evoengineer::llm::evolve::LlmSettings;
use evoengineer::llm::{ProviderConfig, ProviderSpec};
use evoengineer::search::{Settings, Trial, Variant};
use evoengineer::store::{NewRun, SourceRecord, Store};
use evoengineer::task::Task;

/// Every canary holds this, so a cut-off piece of one is found too.
const MARK: &str = "CANARY";
const KEY: &str = "sk-CANARY-key-5f3a9c1e7b20";
const URL_PASSWORD: &str = "CANARYPW-url-8d2e";
const PG_PASSWORD: &str = "CANARYPG-db-41c7";
const KEY_VAR: &str = "EVOENGINEER_SECRETS_TEST_KEY";

fn softmax() -> PathBuf {
    repo().join("tasks/softmax_bf16")
}

/// What was seen: a name and its bytes.
struct Seen(String, Vec<u8>);

impl Seen {
    fn output(name: &str, out: &std::process::Output) -> Vec<Seen> {
        vec![
            Seen(format!("{name}: stdout"), out.stdout.clone()),
            Seen(format!("{name}: stderr"), out.stderr.clone()),
        ]
    }
}

/// Every file under `dir`, recursively.
fn files(dir: &Path, out: &mut Vec<Seen>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(Seen(
                path.display().to_string(),
                std::fs::read(&path).unwrap(),
            ));
        }
    }
}

fn assert_no_canary(seen: &[Seen]) {
    for Seen(name, bytes) in seen {
        let text = String::from_utf8_lossy(bytes);
        assert!(
            !text.contains(MARK),
            "a secret in {name}:\n{}",
            text.lines()
                .filter(|l| l.contains(MARK))
                .take(5)
                .collect::<Vec<_>>()
                .join("\n")
        );
        let lower = text.to_ascii_lowercase();
        assert!(
            !lower.contains("bearer sk-") && !lower.contains("ureq_proto"),
            "a header dump in {name}"
        );
    }
}

/// `show`, `show --json`, `export` (JSON Lines and CSV), `runs` and `report` of a run.
fn read_back(db: &str, run_id: i64, report: &Path) -> Vec<Seen> {
    let id = run_id.to_string();
    let mut seen = Vec::new();
    let commands: [&[&str]; 6] = [
        &["show", &id],
        &["show", &id, "--json"],
        &["export", &id, "--format", "jsonl"],
        &["export", &id, "--format", "csv"],
        &["runs"],
        &["report", &id, "--out"],
    ];
    for args in commands {
        let mut cmd = evo();
        cmd.args(args);
        if args[0] == "report" {
            cmd.arg(report);
        }
        let out = cmd
            .args(["--db", db])
            .env("EVOENGINEER_LOG", "trace")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        seen.extend(Seen::output(&args.join(" "), &out));
    }
    seen
}

#[test]
fn an_echoed_key_and_url_credentials_reach_nothing_stored_or_printed() {
    let answer = "Idea.\n```cuda\nextern \"C\" __global__ void softmax_bf16_kernel() {}\n```\n";
    let server = ChatServer::start(vec![
        Reply::echo_headers(503),
        Reply::echo_headers(400),
        Reply::completion(answer),
    ]);
    let base = format!("http://user:{URL_PASSWORD}@127.0.0.1:{}/v1", server.port);
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("runs.db");
    let report = tmp.path().join("report");
    let out = evo()
        .current_dir(tmp.path())
        .env("EVOENGINEER_LOG", "trace")
        .env(KEY_VAR, KEY)
        .arg("tune")
        .arg(softmax())
        .arg("--replay")
        .arg(softmax().join("landscapes/h100-mission.jsonl"))
        .args(["--variant", "insight", "--llm"])
        .arg(format!("openai:{base}#test-model"))
        .args(["--llm-key-env", KEY_VAR, "--llm-calls", "2", "--report"])
        .arg(&report)
        .arg("--db")
        .arg(&db)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");

    // The canaries did go out, and came back in the error bodies.
    let reqs = server.requests.lock().unwrap().clone();
    assert_eq!(reqs.len(), 3, "503 retried, 400, then the answer");
    assert!(reqs[0]
        .1
        .iter()
        .any(|(k, v)| k == "authorization" && v == &format!("Bearer {KEY}")));
    // The echoed error was logged and recorded, hidden.
    assert!(stderr.contains("retrying"), "{stderr}");
    let store = Store::open(&db).unwrap();
    let sources = store.run_sources(1).unwrap();
    let rejection = sources
        .iter()
        .find_map(|s| s.rejection.clone())
        .expect("the failed call is recorded");
    assert!(rejection.contains("HTTP 400"), "{rejection}");
    assert!(rejection.contains("Bearer ***"), "{rejection}");
    drop(store);

    let mut seen = Seen::output("tune", &out);

    // The base URL's password is not stored: resuming asks for the spec again, and takes it.
    let resume = |spec: Option<&str>| {
        let mut cmd = evo();
        cmd.current_dir(tmp.path())
            .env("EVOENGINEER_LOG", "trace")
            .env(KEY_VAR, KEY)
            .args(["tune", "--resume", "1", "--json", "--db"])
            .arg(&db);
        if let Some(s) = spec {
            cmd.args(["--llm", s]);
        }
        cmd.output().unwrap()
    };
    let out = resume(None);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("resume it with --llm"), "{stderr}");
    seen.extend(Seen::output("resume without --llm", &out));
    let out = resume(Some("openai:http://user:x@elsewhere/v1#test-model"));
    assert!(!out.status.success());
    seen.extend(Seen::output("resume elsewhere", &out));
    let out = resume(Some(&format!("openai:{base}#test-model")));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    seen.extend(Seen::output("resume", &out));
    assert_eq!(server.count(), 3, "a finished run asks nothing again");

    seen.extend(read_back(db.to_str().unwrap(), 1, &report));
    files(tmp.path(), &mut seen);
    assert!(seen.iter().any(|s| s.0.ends_with("report.html")));
    assert_no_canary(&seen);
}

#[test]
fn a_store_location_that_is_neither_a_url_nor_a_path_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for db in [
        "mysql://x".to_string(),
        format!("user:{PG_PASSWORD}@db-host"),
        format!("host=db-host password={PG_PASSWORD}"),
        format!("sqlite://u:{PG_PASSWORD}@h/x.db"),
    ] {
        let out = evo()
            .current_dir(tmp.path())
            .args(["runs", "--db", &db])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{db}: {stderr}");
        assert!(stderr.contains("--db"), "{stderr}");
        assert!(stderr.contains("neither a PostgreSQL URL"), "{stderr}");
        assert!(!stderr.contains(MARK), "{stderr}");
    }
    // A PostgreSQL server that is not there: the message names it without the password.
    let out = evo()
        .current_dir(tmp.path())
        .env("EVOENGINEER_LOG", "trace")
        .args(["runs", "--db"])
        .arg(format!("postgres://evo:{PG_PASSWORD}@127.0.0.1:1/evo"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("cannot connect to postgres://evo:***@127.0.0.1:1/evo"),
        "{stderr}"
    );
    assert_no_canary(&Seen::output("runs on no server", &out));
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "no store was created: {left:?}");
}

/// The store's own defence, without a PostgreSQL server or the binary: a run given credentials
/// in `--db` and in the base URL (its command line and settings), a failure, a trial's message
/// and a source's texts holding a key are stored with every secret hidden.
#[test]
fn the_store_hides_the_secrets_of_what_it_is_given() {
    let task = Task::load(&softmax()).unwrap();
    let spec = ProviderSpec::parse(&format!(
        "openai:https://user:{URL_PASSWORD}@llm.example/v1#m"
    ))
    .unwrap();
    let mut settings = Settings::new(Variant::Insight, 1);
    settings.llm = Some(LlmSettings::new(ProviderConfig::new(spec), 2));
    let command_line = format!(
        "evoengineer tune {} --db postgres://evo:{PG_PASSWORD}@db-host/evo --llm openai:https://user:{URL_PASSWORD}@llm.example/v1#m",
        softmax().display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().join("runs.db")).unwrap();
    let run_id = store
        .create_run(&NewRun {
            task: task.name.clone(),
            task_dir: task.dir.clone(),
            shape: task.default_shape().name.clone(),
            kernel_hash: task.source_hash.clone(),
            settings,
            evaluator: "test".into(),
            environment: Environment {
                device: "test".into(),
                toolchain: "test".into(),
            },
            command_line,
        })
        .unwrap();
    store
        .fail_run(
            run_id,
            &format!("cannot connect to postgres://evo:{PG_PASSWORD}@db-host/evo"),
        )
        .unwrap();
    // Texts that reach the store unredacted (as from a provider that missed one) are
    // redacted there: a trial's message, a source's answer, notes and rejection.
    let echo =
        format!("HTTP 400: {{\"authorization\": \"Bearer {KEY}\", \"x-api-key\": \"{KEY}\"}}");
    let config = task.space.default_config();
    let candidate = Candidate::base(config);
    let trial = Trial {
        seq: 0,
        key: candidate.key(&task.space),
        candidate,
        evaluation: Evaluation::failed(Outcome::CompileError, format!("call failed: {echo}")),
        reused: false,
        wall_s: 0.1,
        elapsed_s: 0.1,
        profiled: false,
        profile: None,
    };
    let env = Environment {
        device: "test".into(),
        toolchain: "test".into(),
    };
    let journal = store
        .journal(run_id, &task.space, &task.source_hash, "mission", &env)
        .unwrap();
    journal.record_trial(&trial, &[]).unwrap();
    store
        .put_source(&SourceRecord {
            hash: "0".repeat(64),
            answer: Some(echo.clone()),
            notes: Some(echo.clone()),
            rejection: Some(format!("call failed: {echo}")),
            ..Default::default()
        })
        .unwrap();
    let rec = store.load_run(run_id, &task.space).unwrap();
    let message = rec.trials[0].evaluation.message.clone().unwrap();
    assert!(
        message.contains("\"authorization\": \"Bearer ***\""),
        "{message}"
    );
    let source = store.source(&"0".repeat(64)).unwrap().unwrap();
    assert!(source.rejection.unwrap().contains("Bearer ***"));
    assert!(
        rec.command_line.contains("postgres://evo:***@db-host/evo")
            && rec
                .command_line
                .contains("openai:https://user:***@llm.example/v1#m"),
        "{}",
        rec.command_line
    );
    let llm = rec.settings.llm.unwrap();
    assert_eq!(
        llm.provider.spec,
        ProviderSpec::OpenAi {
            base_url: "https://user:***@llm.example/v1".into(),
            model: "m".into()
        }
    );
    drop(store);
    let mut seen = Vec::new();
    files(tmp.path(), &mut seen);
    assert_no_canary(&seen);
}

/// The same on PostgreSQL, through the binary: the password of `--db` is in no table and in
/// no output. Skipped (saying so) where PostgreSQL is not installed.
#[test]
fn the_postgres_password_is_stored_and_shown_nowhere() {
    let Some(pg) = postgres_server::start("the_postgres_password_is_stored_and_shown_nowhere")
    else {
        return;
    };
    let url = pg
        .url
        .replacen("://evo@", &format!("://evo:{PG_PASSWORD}@"), 1);
    assert!(url.contains(PG_PASSWORD));
    let tmp = tempfile::tempdir().unwrap();
    let report = tmp.path().join("report");
    let task = repo().join("tasks/gemm_bf16");
    let out = evo()
        .current_dir(tmp.path())
        .env("EVOENGINEER_LOG", "trace")
        .arg("tune")
        .arg(&task)
        .arg("--replay")
        .arg(task.join("landscapes/h100-mission.jsonl"))
        .args(["--budget", "6", "--db", &url, "--report"])
        .arg(&report)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut seen = Seen::output("tune", &out);
    let mut client = pg.client();
    let runs: Vec<i64> = client
        .query("SELECT id FROM runs ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!runs.is_empty());
    for table in ["runs", "trials", "sources"] {
        for row in client
            .query(&format!("SELECT row_to_json(t)::text FROM {table} t"), &[])
            .unwrap()
        {
            let text: String = row.get(0);
            seen.push(Seen(format!("table {table}"), text.into_bytes()));
        }
    }
    let command_line: String = client
        .query_one(
            "SELECT command_line FROM runs ORDER BY id DESC LIMIT 1",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(command_line.contains("://evo:***@"), "{command_line}");
    for id in runs {
        seen.extend(read_back(&url, id, &report));
    }
    files(tmp.path(), &mut seen);
    assert_no_canary(&seen);
}
