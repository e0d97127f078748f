//! A provider that is any program: the request goes to its stdin, its stdout is the answer.
//!
//! `command:PROGRAM ARGS...` writes the chat-completions request body (JSON: `model`,
//! `messages`) to stdin; `command-text:...` writes the system message, a blank line, and the
//! user message as plain text. Stdout is the answer: a chat-completions response (JSON with
//! `choices`, whose `usage` is then recorded) or plain text. A non-zero exit or running past the
//! timeout (the program is killed) is an error.

use std::process::Command;
use std::time::Duration;

use super::{
    excerpt, parse_completion, request_body, Answer, ChatRequest, LlmError, Provider,
    ProviderConfig, ProviderSpec,
};

#[derive(Debug)]
pub struct CommandProvider {
    program: Vec<String>,
    text: bool,
    cfg: ProviderConfig,
}

impl CommandProvider {
    pub fn new(cfg: &ProviderConfig) -> Result<CommandProvider, LlmError> {
        let ProviderSpec::Command { program, text } = &cfg.spec else {
            return Err(LlmError::Setup("not a command provider spec".into()));
        };
        Ok(CommandProvider {
            program: program.clone(),
            text: *text,
            cfg: cfg.clone(),
        })
    }
}

/// Runs `program` with `input` on stdin; its stdout, or why not.
pub fn run_with_timeout(
    program: &[String],
    input: &[u8],
    timeout: Duration,
) -> Result<String, LlmError> {
    let (exe, args) = program
        .split_first()
        .ok_or_else(|| LlmError::Setup("no program".into()))?;
    let mut cmd = Command::new(exe);
    cmd.args(args);
    let done = crate::eval::subprocess::run_bytes(cmd, Some(input), timeout)
        .map_err(|e| LlmError::Setup(format!("cannot run {exe}: {e}")))?;
    let Some(status) = done.status else {
        return Err(LlmError::Call(format!(
            "{exe} ran longer than {:.1} s and was stopped",
            timeout.as_secs_f64()
        )));
    };
    if !status.success() {
        return Err(LlmError::Call(format!(
            "{exe} failed ({status}): {}",
            excerpt(
                &crate::secrets::redact(&String::from_utf8_lossy(&done.stderr)),
                500
            )
        )));
    }
    String::from_utf8(done.stdout).map_err(|_| LlmError::Protocol(format!("{exe} wrote non-UTF-8")))
}

impl Provider for CommandProvider {
    fn describe(&self) -> String {
        crate::secrets::redact(&self.cfg.spec.to_string())
    }

    fn model(&self) -> String {
        format!("command:{}", self.program.join(" "))
    }

    fn complete(&self, request: &ChatRequest) -> Result<Answer, LlmError> {
        let model = self.model();
        let input = if self.text {
            format!("{}\n\n{}", request.system, request.user)
        } else {
            request_body(&model, request, &self.cfg).to_string()
        };
        let out = run_with_timeout(&self.program, input.as_bytes(), self.cfg.timeout)
            .map_err(LlmError::redacted)?;
        let looks_json = out.trim_start().starts_with('{') && out.contains("\"choices\"");
        let (text, model, usage) = if looks_json {
            parse_completion(&out, &model).map_err(LlmError::redacted)?
        } else {
            (out, model, None)
        };
        Ok(Answer {
            text,
            model,
            usage,
            attempts: 1,
        })
    }
}

#[cfg(test)]
mod run_tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    #[test]
    fn a_program_gets_its_input_and_its_failures_are_named() {
        let t = Duration::from_secs(10);
        assert_eq!(run_with_timeout(&sh("cat"), b"hello", t).unwrap(), "hello");
        let slow = run_with_timeout(&sh("sleep 5"), b"", Duration::from_millis(200)).unwrap_err();
        assert!(
            matches!(&slow, LlmError::Call(m) if m.contains("ran longer than 0.2 s")),
            "{slow}"
        );
        let bytes = run_with_timeout(&sh("printf '\\377'"), b"", t).unwrap_err();
        assert!(
            matches!(&bytes, LlmError::Protocol(m) if m.contains("non-UTF-8")),
            "{bytes}"
        );
        let failed = run_with_timeout(
            &sh("echo 'Authorization: Bearer sk-CANARY-123' >&2; exit 3"),
            b"",
            t,
        )
        .unwrap_err();
        let m = failed.to_string();
        assert!(m.contains("failed") && m.contains("3"), "{m}");
        assert!(!m.contains("sk-CANARY-123"), "the stderr is redacted: {m}");
        let missing = run_with_timeout(&["/no/such/program".to_string()], b"", t).unwrap_err();
        assert!(
            matches!(&missing, LlmError::Setup(m) if m.contains("/no/such/program")),
            "{missing}"
        );
    }
}
