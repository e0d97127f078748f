//! Code evolution with a language model (issue #6): providers, prompts, extraction, static
//! defences and the evolution loop.
//!
//! A [`Provider`] turns a [`ChatRequest`] (a system and a user message) into an [`Answer`]
//! (text, model name, token counts). Two providers exist: [`openai::OpenAiProvider`], a
//! blocking client of any OpenAI-compatible chat-completions endpoint, and
//! [`command::CommandProvider`], which pipes the request to a program and reads its answer from
//! stdout. [`ProviderSpec`] parses the `--llm` flag (`openai:URL#MODEL`, `command:PATH`).

pub mod command;
pub mod defence;
pub mod evolve;
pub mod extract;
pub mod openai;
pub mod prompt;

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What the model is asked: one system and one user message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    pub system: String,
    pub user: String,
}

/// Token counts as the endpoint reported them (`usage`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

impl Usage {
    /// The tokens of the call: `total_tokens`, else (a server that reports none, or 0)
    /// prompt + completion.
    pub fn total(&self) -> u64 {
        if self.total_tokens > 0 {
            self.total_tokens
        } else {
            self.prompt_tokens + self.completion_tokens
        }
    }
}

/// What the model answered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub text: String,
    /// The model that answered (the endpoint's `model` field, else the one asked for).
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Attempts it took (1 without retries).
    pub attempts: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// The provider is set up wrong (a bad spec, a missing key variable).
    #[error("{0}")]
    Setup(String),
    /// The call failed after every retry (transport error, timeout, HTTP status).
    #[error("{0}")]
    Call(String),
    /// The endpoint answered something that is not a chat completion.
    #[error("{0}")]
    Protocol(String),
}

impl LlmError {
    /// The same error with every secret in its text hidden ([`crate::secrets::redact`]).
    pub fn redacted(self) -> LlmError {
        use crate::secrets::redact;
        match self {
            LlmError::Setup(m) => LlmError::Setup(redact(&m)),
            LlmError::Call(m) => LlmError::Call(redact(&m)),
            LlmError::Protocol(m) => LlmError::Protocol(redact(&m)),
        }
    }
}

/// A language model behind some interface.
pub trait Provider: std::fmt::Debug {
    /// A short description for logs and the store (never holds a key).
    fn describe(&self) -> String;
    /// The model name asked for.
    fn model(&self) -> String;
    fn complete(&self, request: &ChatRequest) -> Result<Answer, LlmError>;
}

/// How retries wait: `base · 2^attempt`, capped, unless the server says `Retry-After`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Retry {
    /// Retries after the first attempt.
    pub max_retries: u32,
    pub base: Duration,
    pub max_wait: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            max_retries: 4,
            base: Duration::from_secs(1),
            max_wait: Duration::from_secs(60),
        }
    }
}

impl Retry {
    /// The wait before retry `attempt` (0 for the first retry), honouring a server hint.
    pub fn wait(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let backoff = self
            .base
            .saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX));
        retry_after.unwrap_or(backoff).min(self.max_wait)
    }
}

/// The `--llm` flag: which provider, where, which model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ProviderSpec {
    /// `openai:BASE_URL#MODEL`, e.g. `openai:http://127.0.0.1:8000/v1#qwen2.5-coder`.
    OpenAi { base_url: String, model: String },
    /// `command:PROGRAM [ARGS...]` (the request as JSON on stdin) or `command-text:...` (the
    /// system and user messages as plain text).
    Command { program: Vec<String>, text: bool },
}

impl ProviderSpec {
    pub fn parse(spec: &str) -> Result<ProviderSpec, LlmError> {
        let bad = |why: &str| {
            LlmError::Setup(format!(
                "--llm `{spec}`: {why}; expected openai:BASE_URL#MODEL, command:PROGRAM or command-text:PROGRAM"
            ))
        };
        if let Some(rest) = spec.strip_prefix("openai:") {
            let (url, model) = rest.rsplit_once('#').ok_or_else(|| bad("no #MODEL"))?;
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(bad("the base URL must start with http:// or https://"));
            }
            if model.trim().is_empty() {
                return Err(bad("empty model name"));
            }
            return Ok(ProviderSpec::OpenAi {
                base_url: url.trim_end_matches('/').to_string(),
                model: model.to_string(),
            });
        }
        let (rest, text) = if let Some(r) = spec.strip_prefix("command-text:") {
            (r, true)
        } else if let Some(r) = spec.strip_prefix("command:") {
            (r, false)
        } else {
            return Err(bad("unknown provider"));
        };
        let program: Vec<String> = rest.split_whitespace().map(str::to_string).collect();
        if program.is_empty() {
            return Err(bad("no program"));
        }
        Ok(ProviderSpec::Command { program, text })
    }
}

impl std::fmt::Display for ProviderSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProviderSpec::OpenAi { base_url, model } => write!(f, "openai:{base_url}#{model}"),
            ProviderSpec::Command { program, text } => write!(
                f,
                "{}:{}",
                if *text { "command-text" } else { "command" },
                program.join(" ")
            ),
        }
    }
}

/// Everything needed to build a provider; recorded with the run (the key's variable NAME, never
/// the key).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProviderConfig {
    pub spec: ProviderSpec,
    /// The environment variable holding the API key (openai); `None`: no key sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_env: Option<String>,
    /// Per call (each attempt).
    pub timeout: Duration,
    pub retry: Retry,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
}

impl ProviderConfig {
    pub fn new(spec: ProviderSpec) -> ProviderConfig {
        ProviderConfig {
            spec,
            key_env: None,
            timeout: Duration::from_secs(300),
            retry: Retry::default(),
            temperature: None,
            max_tokens: None,
        }
    }

    pub fn build(&self) -> Result<Box<dyn Provider>, LlmError> {
        Ok(match &self.spec {
            ProviderSpec::OpenAi { .. } => Box::new(openai::OpenAiProvider::new(self)?),
            ProviderSpec::Command { .. } => Box::new(command::CommandProvider::new(self)?),
        })
    }
}

/// The chat-completions request body.
pub(crate) fn request_body(
    model: &str,
    request: &ChatRequest,
    cfg: &ProviderConfig,
) -> serde_json::Value {
    let mut body = serde_json::json!({
        "model": model,
        "messages": [
            { "role": "system", "content": request.system },
            { "role": "user", "content": request.user },
        ],
    });
    if let Some(t) = cfg.temperature {
        body["temperature"] = t.into();
    }
    if let Some(m) = cfg.max_tokens {
        body["max_tokens"] = m.into();
    }
    body
}

/// The answer text, model and usage of a chat-completions response.
pub(crate) fn parse_completion(
    body: &str,
    asked_model: &str,
) -> Result<(String, String, Option<Usage>), LlmError> {
    let v: serde_json::Value = serde_json::from_str(body).map_err(|e| {
        LlmError::Protocol(format!(
            "the answer is not JSON ({e}): {}",
            excerpt(&crate::secrets::redact(body), 200)
        ))
    })?;
    if let Some(err) = v.get("error") {
        return Err(LlmError::Protocol(format!(
            "the endpoint answered an error: {}",
            excerpt(&crate::secrets::redact(&err.to_string()), 500)
        )));
    }
    let choice = v
        .get("choices")
        .and_then(|c| c.get(0))
        .ok_or_else(|| LlmError::Protocol("the answer has no choices[0]".into()))?;
    let text = choice
        .get("message")
        .and_then(|m| m.get("content"))
        .and_then(|c| c.as_str())
        .or_else(|| choice.get("text").and_then(|c| c.as_str()))
        .unwrap_or("")
        .to_string();
    let model = v
        .get("model")
        .and_then(|m| m.as_str())
        .unwrap_or(asked_model)
        .to_string();
    // `usage`: prompt, completion and total tokens. Servers that leave the total out (or send
    // 0) get prompt + completion; `input_tokens`/`output_tokens` are read where the usual
    // names are absent. A `usage` without any count is no usage.
    let usage = v.get("usage").and_then(|u| {
        let n = |keys: &[&str]| keys.iter().find_map(|k| u.get(*k).and_then(|x| x.as_u64()));
        let prompt = n(&["prompt_tokens", "input_tokens"]);
        let completion = n(&["completion_tokens", "output_tokens"]);
        let total = n(&["total_tokens"]);
        if prompt.is_none() && completion.is_none() && total.is_none() {
            return None;
        }
        let u = Usage {
            prompt_tokens: prompt.unwrap_or(0),
            completion_tokens: completion.unwrap_or(0),
            total_tokens: total.unwrap_or(0),
        };
        Some(Usage {
            total_tokens: u.total(),
            ..u
        })
    });
    Ok((text, model, usage))
}

pub(crate) fn excerpt(text: &str, max: usize) -> String {
    let t = text.trim();
    match t.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &t[..i]),
        None => t.to_string(),
    }
}

#[cfg(test)]
mod tests;
