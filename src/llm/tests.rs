use std::time::Duration;

use super::*;

#[path = "../../tests/support/chat_server.rs"]
mod chat_server;
use chat_server::{ChatServer, Reply};

fn fast(spec: ProviderSpec) -> ProviderConfig {
    let mut c = ProviderConfig::new(spec);
    c.timeout = Duration::from_secs(5);
    c.retry = Retry {
        max_retries: 3,
        base: Duration::from_millis(10),
        max_wait: Duration::from_millis(200),
    };
    c
}

fn req() -> ChatRequest {
    ChatRequest {
        system: "sys".into(),
        user: "write a kernel".into(),
    }
}

#[test]
fn spec_parsing() {
    assert_eq!(
        ProviderSpec::parse("openai:http://127.0.0.1:8000/v1/#qwen").unwrap(),
        ProviderSpec::OpenAi {
            base_url: "http://127.0.0.1:8000/v1".into(),
            model: "qwen".into()
        }
    );
    assert_eq!(
        ProviderSpec::parse("command:/bin/model --x").unwrap(),
        ProviderSpec::Command {
            program: vec!["/bin/model".into(), "--x".into()],
            text: false
        }
    );
    assert!(ProviderSpec::parse("openai:http://x/v1").is_err());
    assert!(ProviderSpec::parse("openai:ftp://x#m").is_err());
    assert!(ProviderSpec::parse("bard:x").is_err());
    assert!(ProviderSpec::parse("command:").is_err());
    let s = ProviderSpec::parse("openai:https://api.openai.com/v1#gpt-4.1").unwrap();
    assert_eq!(ProviderSpec::parse(&s.to_string()).unwrap(), s);
}

#[test]
fn backoff_doubles_and_honours_retry_after() {
    let r = Retry {
        max_retries: 5,
        base: Duration::from_millis(100),
        max_wait: Duration::from_secs(1),
    };
    assert_eq!(r.wait(0, None), Duration::from_millis(100));
    assert_eq!(r.wait(2, None), Duration::from_millis(400));
    assert_eq!(r.wait(9, None), Duration::from_secs(1));
    assert_eq!(
        r.wait(0, Some(Duration::from_millis(700))),
        Duration::from_millis(700)
    );
    assert_eq!(
        r.wait(0, Some(Duration::from_secs(90))),
        Duration::from_secs(1)
    );
}

#[test]
fn openai_answer_usage_and_key_header() {
    let server = ChatServer::start(vec![Reply::completion("hello")]);
    std::env::set_var("EVOENGINEER_TEST_KEY_A", "sk-secret-123");
    let mut cfg = fast(ProviderSpec::parse(&format!("openai:{}#m1", server.base_url())).unwrap());
    cfg.key_env = Some("EVOENGINEER_TEST_KEY_A".into());
    cfg.temperature = Some(0.5);
    let p = cfg.build().unwrap();
    assert!(
        !format!("{p:?}").contains("sk-secret"),
        "Debug shows no key"
    );
    assert!(!p.describe().contains("sk-secret"));
    let a = p.complete(&req()).unwrap();
    assert_eq!(a.text, "hello");
    assert_eq!(a.model, "test-model");
    assert_eq!(a.attempts, 1);
    assert_eq!(
        a.usage,
        Some(Usage {
            prompt_tokens: 100,
            completion_tokens: 50,
            total_tokens: 150
        })
    );
    let reqs = server.requests.lock().unwrap();
    let (line, headers, body) = &reqs[0];
    assert_eq!(line, "POST /v1/chat/completions HTTP/1.1");
    assert!(headers
        .iter()
        .any(|(k, v)| k == "authorization" && v == "Bearer sk-secret-123"));
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["model"], "m1");
    assert_eq!(body["temperature"], 0.5);
    assert_eq!(body["messages"][1]["content"], "write a kernel");
}

#[test]
fn missing_key_variable_is_a_setup_error() {
    let mut cfg = fast(ProviderSpec::parse("openai:http://127.0.0.1:9/v1#m").unwrap());
    cfg.key_env = Some("EVOENGINEER_TEST_KEY_SURELY_UNSET".into());
    let e = cfg.build().unwrap_err();
    assert!(e.to_string().contains("EVOENGINEER_TEST_KEY_SURELY_UNSET"));
}

#[test]
fn retries_429_and_5xx_then_succeeds() {
    let server = ChatServer::start(vec![
        Reply::status(429, r#"{"error":"slow down"}"#).header("Retry-After", "0.05"),
        Reply::status(503, "busy"),
        Reply::completion("third time"),
    ]);
    let p = fast(ProviderSpec::parse(&format!("openai:{}#m", server.base_url())).unwrap())
        .build()
        .unwrap();
    let a = p.complete(&req()).unwrap();
    assert_eq!(a.text, "third time");
    assert_eq!(a.attempts, 3);
    assert_eq!(server.count(), 3);
}

#[test]
fn client_errors_are_not_retried() {
    let server = ChatServer::start(vec![Reply::status(401, r#"{"error":"bad key"}"#)]);
    let p = fast(ProviderSpec::parse(&format!("openai:{}#m", server.base_url())).unwrap())
        .build()
        .unwrap();
    let e = p.complete(&req()).unwrap_err();
    assert!(e.to_string().contains("HTTP 401"), "{e}");
    assert_eq!(server.count(), 1);
}

#[test]
fn timeout_is_retried_then_given_up() {
    let server = ChatServer::start(vec![
        Reply::completion("late").delayed(Duration::from_millis(800))
    ]);
    let mut cfg = fast(ProviderSpec::parse(&format!("openai:{}#m", server.base_url())).unwrap());
    cfg.timeout = Duration::from_millis(200);
    cfg.retry.max_retries = 1;
    let e = cfg.build().unwrap().complete(&req()).unwrap_err();
    assert!(matches!(e, LlmError::Call(_)), "{e}");
    assert!(e.to_string().contains("after 2 attempts"), "{e}");
}

#[test]
fn malformed_json_is_a_protocol_error() {
    let server = ChatServer::start(vec![Reply::status(200, "not json at all")]);
    let p = fast(ProviderSpec::parse(&format!("openai:{}#m", server.base_url())).unwrap())
        .build()
        .unwrap();
    assert!(matches!(p.complete(&req()), Err(LlmError::Protocol(_))));
}

#[test]
fn command_provider_json_and_text() {
    // `cat` echoes the request: JSON in, so the answer is the request body as plain text.
    let p = fast(ProviderSpec::parse("command:cat").unwrap())
        .build()
        .unwrap();
    let a = p.complete(&req()).unwrap();
    let v: serde_json::Value = serde_json::from_str(&a.text).unwrap();
    assert_eq!(v["messages"][0]["content"], "sys");
    let p = fast(ProviderSpec::parse("command-text:cat").unwrap())
        .build()
        .unwrap();
    assert_eq!(p.complete(&req()).unwrap().text, "sys\n\nwrite a kernel");
    // A chat-completions JSON answer is unwrapped, with its usage.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("m.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\ncat >/dev/null\necho '{\"model\":\"x\",\"choices\":[{\"message\":{\"content\":\"hi\"}}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4,\"total_tokens\":7}}'\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let p = fast(ProviderSpec::parse(&format!("command:{}", script.display())).unwrap())
        .build()
        .unwrap();
    let a = p.complete(&req()).unwrap();
    assert_eq!(a.text, "hi");
    assert_eq!(a.usage.unwrap().total_tokens, 7);
}

#[test]
fn command_provider_timeout_and_failure() {
    let mut cfg = fast(ProviderSpec::parse("command:sleep 5").unwrap());
    cfg.timeout = Duration::from_millis(200);
    let t = std::time::Instant::now();
    let e = cfg.build().unwrap().complete(&req()).unwrap_err();
    assert!(e.to_string().contains("was stopped"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(3));
    let e = fast(ProviderSpec::parse("command:false").unwrap())
        .build()
        .unwrap()
        .complete(&req())
        .unwrap_err();
    assert!(e.to_string().contains("failed"), "{e}");
}

#[test]
fn an_error_that_echoes_the_headers_holds_no_secret() {
    let server = ChatServer::start(vec![Reply::echo_headers(400)]);
    std::env::set_var("EVOENGINEER_TEST_KEY_ECHO", "sk-echo-canary-31337");
    let spec = format!(
        "openai:http://user:pw-echo-canary@127.0.0.1:{}/v1#m",
        server.port
    );
    let mut cfg = fast(ProviderSpec::parse(&spec).unwrap());
    cfg.key_env = Some("EVOENGINEER_TEST_KEY_ECHO".into());
    let p = cfg.build().unwrap();
    let shown = format!("{p:?} {}", p.describe());
    assert!(!shown.contains("canary"), "{shown}");
    let e = p.complete(&req()).unwrap_err().to_string();
    assert!(e.contains("HTTP 400") && e.contains("Bearer ***"), "{e}");
    assert!(!e.contains("canary"), "{e}");
    let headers = &server.requests.lock().unwrap()[0].1;
    assert!(headers
        .iter()
        .any(|(k, v)| k == "authorization" && v == "Bearer sk-echo-canary-31337"));
}
