//! A blocking client of an OpenAI-compatible `POST {base}/chat/completions` endpoint (OpenAI,
//! vLLM, llama.cpp's server, Ollama's `/v1`, ...).
//!
//! The API key is read from the environment variable whose NAME the configuration gives, when
//! the provider is built; it is sent as `Authorization: Bearer ...` and nowhere else: not logged,
//! not stored, not in `Debug` output. Each attempt has the configured timeout; 429, 5xx and
//! transport errors (timeouts included) are retried with exponential backoff, honouring a
//! `Retry-After` of seconds. Other statuses fail at once.
//!
//! The key and the base URL's credentials are registered with [`crate::secrets`], and every
//! error text is redacted before it leaves: an endpoint that echoes the request headers in an
//! error body (some proxies do) does not put the key into the store or the logs.

use std::time::Duration;

use super::{
    excerpt, parse_completion, request_body, Answer, ChatRequest, LlmError, Provider,
    ProviderConfig, ProviderSpec,
};
use crate::secrets;

/// An API key that never prints.
#[derive(Clone)]
struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

pub struct OpenAiProvider {
    url: String,
    model: String,
    key: Option<Secret>,
    cfg: ProviderConfig,
    agent: ureq::Agent,
    /// `url` with its credentials hidden, for messages.
    shown_url: String,
}

/// Shows neither the key nor the base URL's credentials.
impl std::fmt::Debug for OpenAiProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiProvider")
            .field("url", &self.shown_url)
            .field("model", &self.model)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl OpenAiProvider {
    pub fn new(cfg: &ProviderConfig) -> Result<OpenAiProvider, LlmError> {
        let ProviderSpec::OpenAi { base_url, model } = &cfg.spec else {
            return Err(LlmError::Setup("not an openai provider spec".into()));
        };
        let key = match &cfg.key_env {
            None => None,
            Some(name) => match std::env::var(name) {
                Ok(k) if !k.trim().is_empty() => Some(Secret(k.trim().to_string())),
                _ => {
                    return Err(LlmError::Setup(format!(
                        "--llm-key-env {name}: that environment variable is not set or empty"
                    )))
                }
            },
        };
        if let Some(k) = &key {
            secrets::register(&k.0);
        }
        secrets::register_url(base_url);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(cfg.timeout))
            .http_status_as_error(false)
            .build()
            .into();
        let url = format!("{base_url}/chat/completions");
        Ok(OpenAiProvider {
            shown_url: secrets::redact(&url),
            url,
            model: model.clone(),
            key,
            cfg: cfg.clone(),
            agent,
        })
    }

    /// One attempt: `Ok` with the body of a 2xx, `Err((retryable, retry_after, message))`.
    fn attempt(&self, body: &str) -> Result<String, (bool, Option<Duration>, String)> {
        let mut req = self
            .agent
            .post(&self.url)
            .header("Content-Type", "application/json");
        if let Some(k) = &self.key {
            req = req.header("Authorization", &format!("Bearer {}", k.0));
        }
        let mut resp = match req.send(body) {
            Ok(r) => r,
            Err(e) => {
                let e = secrets::redact(&e.to_string());
                return Err((true, None, format!("POST {}: {e}", self.shown_url)));
            }
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64);
        let text = match resp.body_mut().read_to_string() {
            Ok(t) => t,
            Err(e) => {
                let e = secrets::redact(&e.to_string());
                return Err((
                    true,
                    None,
                    format!("POST {}: reading the answer: {e}", self.shown_url),
                ));
            }
        };
        if (200..300).contains(&status) {
            return Ok(text);
        }
        let retryable = status == 429 || status >= 500;
        Err((
            retryable,
            retry_after,
            format!(
                "POST {}: HTTP {status}: {}",
                self.shown_url,
                excerpt(&secrets::redact(&text), 300)
            ),
        ))
    }
}

impl Provider for OpenAiProvider {
    fn describe(&self) -> String {
        format!("openai:{}#{}", self.shown_url, self.model)
    }

    fn model(&self) -> String {
        self.model.clone()
    }

    fn complete(&self, request: &ChatRequest) -> Result<Answer, LlmError> {
        let body = request_body(&self.model, request, &self.cfg).to_string();
        let retry = self.cfg.retry;
        let mut attempt = 0u32;
        loop {
            match self.attempt(&body) {
                Ok(text) => {
                    let (text, model, usage) =
                        parse_completion(&text, &self.model).map_err(LlmError::redacted)?;
                    return Ok(Answer {
                        text,
                        model,
                        usage,
                        attempts: attempt + 1,
                    });
                }
                Err((retryable, retry_after, message)) => {
                    if !retryable || attempt >= retry.max_retries {
                        return Err(LlmError::Call(format!(
                            "{message} (after {} attempts)",
                            attempt + 1
                        ))
                        .redacted());
                    }
                    let wait = retry.wait(attempt, retry_after);
                    tracing::warn!("{message}; retrying in {:.1} s", wait.as_secs_f64());
                    std::thread::sleep(wait);
                    attempt += 1;
                }
            }
        }
    }
}
