use proptest::prelude::*;

use super::*;

fn assert_hidden(text: &str, secrets: &[&str]) -> String {
    let r = redact(text);
    for s in secrets {
        assert!(!r.contains(s), "`{s}` left in {r:?} (from {text:?})");
    }
    assert_eq!(redact(&r), r, "redacting twice changes nothing");
    r
}

#[test]
fn header_values_are_masked_and_the_scheme_kept() {
    let raw = "HTTP 400: you sent\r\nAuthorization: Bearer sk-live-0123456789\r\nx-api-key: k-777\r\napi-key:zzz9\r\nProxy-Authorization: Basic dXNlcjpwYXNz\r\nContent-Type: application/json";
    let r = assert_hidden(
        raw,
        &["sk-live-0123456789", "k-777", "zzz9", "dXNlcjpwYXNz"],
    );
    assert!(r.contains("Authorization: Bearer ***"), "{r}");
    assert!(r.contains("Proxy-Authorization: Basic ***"), "{r}");
    assert!(r.contains("Content-Type: application/json"), "{r}");
    // Python's dict repr, a flag, an environment dump, a bare bearer token.
    assert_hidden(
        "{'Authorization': 'Bearer abc.def-ghi', 'api_key': 'q1w2e3'}",
        &["abc.def-ghi", "q1w2e3"],
    );
    assert_hidden(
        "prog --api-key=sk-flag-1 --password hunter2x",
        &["sk-flag-1"],
    );
    assert_hidden("OPENAI_API_KEY=sk-env-42 other", &["sk-env-42"]);
    assert_hidden("token was bearer  eyJhbGciOi.J9", &["eyJhbGciOi.J9"]);
    let r = redact("Authorization: Token tok-123 and more");
    assert_eq!(r, "Authorization: Token *** and more");
}

#[test]
fn echoed_headers_in_json_stay_valid_json() {
    let echo = serde_json::json!({
        "error": { "message": "bad request", "headers": {
            "authorization": "Bearer sk-json-secret-1",
            "x-api-key": "xk-json-2",
            "api-key": ["ak-json-3"],
            "host": "127.0.0.1:9",
        }}
    })
    .to_string();
    let r = assert_hidden(&echo, &["sk-json-secret-1", "xk-json-2", "ak-json-3"]);
    let v: serde_json::Value = serde_json::from_str(&r).unwrap();
    assert_eq!(v["error"]["headers"]["authorization"], "Bearer ***");
    assert_eq!(v["error"]["headers"]["host"], "127.0.0.1:9");
    // The same text inside a JSON string (as an evaluation's message is stored): escaped quotes.
    let stored =
        serde_json::json!({ "message": format!("call failed: HTTP 400: {echo}\npassword:\nnext") })
            .to_string();
    let r = assert_hidden(&stored, &["sk-json-secret-1", "xk-json-2", "ak-json-3"]);
    let v: serde_json::Value = serde_json::from_str(&r).unwrap();
    assert!(v["message"].as_str().unwrap().contains("\nnext"));
}

#[test]
fn url_credentials_are_stripped() {
    let cases = [
        ("https://user:CANARYPW@host/v1", "https://user:***@host/v1"),
        (
            "openai:https://user:CANARYPW@host:8000/v1#model",
            "openai:https://user:***@host:8000/v1#model",
        ),
        (
            "--db postgres://evo:CANARY@127.0.0.1:5432/evo done",
            "--db postgres://evo:***@127.0.0.1:5432/evo done",
        ),
        (
            "postgresql://evo@db-host/evo",
            "postgresql://evo@db-host/evo",
        ),
        ("https://tok-abc@host/v1", "https://***@host/v1"),
        (
            "https://h/v1?api-key=A1&x=1&key=K2&token=T3#frag",
            "https://h/v1?api-key=***&x=1&key=***&token=***#frag",
        ),
        (
            "postgres://h/db?user=evo&password=PW9",
            "postgres://h/db?user=evo&password=***",
        ),
        (
            "https://api.openai.com/v1#gpt-4.1",
            "https://api.openai.com/v1#gpt-4.1",
        ),
        (
            "\"base_url\":\"http://u:p%40ss@127.0.0.1:1/v1\"",
            "\"base_url\":\"http://u:***@127.0.0.1:1/v1\"",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(redact(text), want, "{text}");
    }
}

#[test]
fn a_command_line_with_every_kind_of_secret() {
    let line =
        "evoengineer tune tasks/softmax_bf16 --db postgres://u:PGCANARY7@127.0.0.1:5432/evo \
        --llm openai:https://user:URLCANARY7@host/v1#m --llm-key-env OPENAI_API_KEY --llm-calls 2";
    let r = assert_hidden(line, &["PGCANARY7", "URLCANARY7"]);
    assert!(
        r.contains("--llm-key-env OPENAI_API_KEY --llm-calls 2"),
        "{r}"
    );
    assert!(r.contains("postgres://u:***@127.0.0.1:5432/evo"), "{r}");
}

#[test]
fn registered_values_are_masked_anywhere() {
    register("sk-REGISTERED-4242-abcdef");
    register("tiny");
    register_url("http://someone:URLPW-123456@h/v1?key=QUERYKEY-99");
    let r = redact("echo: sk-REGISTERED-4242-abcdef; host someone:URLPW-123456; QUERYKEY-99 tiny");
    assert_eq!(r, "echo: ***; host someone:***; *** tiny");
}

#[test]
fn ordinary_text_is_left_alone() {
    for text in [
        "src:0123abcd|BLOCK=128,COLS=4096",
        "usage: prompt_tokens 100, max_tokens: 50",
        "--llm-key-env EVOENGINEER_TEST_API_KEY",
        "{\"key_env\":\"EVOENGINEER_TEST_API_KEY\",\"timeout\":{\"secs\":300}}",
        "Authorization failed for this request",
        "__global__ void k(int key, int token) { int secret_sauce = key; }",
        "error: expected a \";\" at line 3",
        "http://127.0.0.1:8000/v1/chat/completions",
        "a@b.c and user@example.com",
    ] {
        assert_eq!(redact(text), text);
    }
}

fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("Authorization: Bearer SECRETVAL".to_string()),
        Just("\"x-api-key\": \"SECRETVAL\"".to_string()),
        Just("api-key=SECRETVAL".to_string()),
        Just("https://u:SECRETVAL@h/p?key=SECRETVAL".to_string()),
        Just("password:".to_string()),
        Just("\\".to_string()),
        Just("\"".to_string()),
        Just("'".to_string()),
        Just("\n".to_string()),
        Just("\u{1b}[31m".to_string()),
        Just("é".to_string()),
        "[a-z:=@/ ?&]{0,6}",
    ]
}

proptest! {
    /// A JSON document redacted as text is still JSON, and holds none of the values.
    #[test]
    fn redacted_json_stays_json(parts in proptest::collection::vec(fragment(), 0..12)) {
        let text: String = parts.join(" ");
        let doc = serde_json::json!({ "message": text, "n": 1.5 }).to_string();
        let r = redact(&doc);
        let v: serde_json::Value = serde_json::from_str(&r).expect("valid JSON");
        prop_assert_eq!(&v["n"], &serde_json::json!(1.5));
        let plain = redact(&text);
        prop_assert!(!plain.contains("SECRETVAL"), "{}", plain);
        prop_assert_eq!(redact(&plain), plain.clone());
    }
}
