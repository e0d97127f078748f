//! A tiny HTTP/1.1 server speaking just enough of the chat-completions protocol for tests:
//! bound to 127.0.0.1 on a random port, one thread, one request per connection, answers from
//! a script of replies in order (the last one repeats). Records every request body.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Wait this long before answering (to make the client time out).
    pub delay: Duration,
    /// Answer with the request's headers instead of `body` (as some proxies do in an error).
    pub echo: bool,
}

impl Reply {
    /// A 200 chat completion whose message content is `content`.
    pub fn completion(content: &str) -> Reply {
        let body = serde_json::json!({
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "model": "test-model",
            "choices": [{ "index": 0, "finish_reason": "stop",
                          "message": { "role": "assistant", "content": content } }],
            "usage": { "prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150 },
        });
        Reply {
            status: 200,
            headers: vec![],
            body: body.to_string(),
            delay: Duration::ZERO,
            echo: false,
        }
    }

    pub fn status(status: u16, body: &str) -> Reply {
        Reply {
            status,
            headers: vec![],
            body: body.to_string(),
            delay: Duration::ZERO,
            echo: false,
        }
    }

    /// `status` with a body that echoes the request line and headers: as raw lines and as a
    /// JSON object of an OpenAI-style error.
    pub fn echo_headers(status: u16) -> Reply {
        Reply {
            echo: true,
            ..Reply::status(status, "")
        }
    }

    pub fn header(mut self, k: &str, v: &str) -> Reply {
        self.headers.push((k.to_string(), v.to_string()));
        self
    }

    pub fn delayed(mut self, d: Duration) -> Reply {
        self.delay = d;
        self
    }
}

/// One recorded request: request line, headers (names lowercased), body.
pub type Request = (String, Vec<(String, String)>, String);

pub struct ChatServer {
    pub port: u16,
    /// Every request: (request line, headers lowercased, body).
    pub requests: Arc<Mutex<Vec<Request>>>,
}

impl ChatServer {
    pub fn start(script: Vec<Reply>) -> ChatServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        std::thread::spawn(move || {
            // Replies are given in the order connections arrive; each is served on its own
            // thread, so a slow reply does not hold up the next request.
            for (i, stream) in listener.incoming().enumerate() {
                let Ok(stream) = stream else { continue };
                let reply = script[i.min(script.len() - 1)].clone();
                let log = log.clone();
                std::thread::spawn(move || serve(stream, reply, log));
            }
        });
        ChatServer { port, requests }
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

fn serve(mut stream: std::net::TcpStream, reply: Reply, log: Arc<Mutex<Vec<Request>>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() || line.is_empty() {
        return;
    }
    let mut headers = Vec::new();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() {
            break;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            let k = k.trim().to_ascii_lowercase();
            if k == "content-length" {
                len = v.trim().parse().unwrap_or(0);
            }
            headers.push((k, v.trim().to_string()));
        }
    }
    let mut body = vec![0u8; len];
    let _ = reader.read_exact(&mut body);
    log.lock().unwrap().push((
        line.trim_end().to_string(),
        headers.clone(),
        String::from_utf8_lossy(&body).into_owned(),
    ));
    std::thread::sleep(reply.delay);
    let body = if reply.echo {
        let raw: Vec<String> = headers.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        let map: serde_json::Map<String, serde_json::Value> = headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into()))
            .collect();
        serde_json::json!({ "error": {
            "message": format!("bad request: {}\n{}", line.trim_end(), raw.join("\n")),
            "headers": map,
        }})
        .to_string()
    } else {
        reply.body.clone()
    };
    let reply = Reply { body, ..reply };
    let mut out = format!(
        "HTTP/1.1 {} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        reply.body.len()
    );
    for (k, v) in &reply.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&reply.body);
    let _ = stream.write_all(out.as_bytes());
    let _ = stream.flush();
}
