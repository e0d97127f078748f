//! A provider that is any program: the request goes to its stdin, its stdout is the answer.
//!
//! `command:PROGRAM ARGS...` writes the chat-completions request body (JSON: `model`,
//! `messages`) to stdin; `command-text:...` writes the system message, a blank line, and the
//! user message as plain text. Stdout is the answer: a chat-completions response (JSON with
//! `choices`, whose `usage` is then recorded) or plain text. A non-zero exit or running past the
//! timeout (the program is killed) is an error.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
    let mut child = Command::new(exe)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| LlmError::Setup(format!("cannot run {exe}: {e}")))?;
    let mut stdin = child.stdin.take().expect("piped");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stdout.read_to_end(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if start.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(LlmError::Call(format!(
                    "{exe} ran longer than {:.1} s and was stopped",
                    timeout.as_secs_f64()
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(LlmError::Call(format!("waiting for {exe}: {e}"))),
        }
    };
    let _ = writer.join();
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    if !status.success() {
        return Err(LlmError::Call(format!(
            "{exe} failed ({status}): {}",
            excerpt(&crate::secrets::redact(&String::from_utf8_lossy(&err)), 500)
        )));
    }
    String::from_utf8(out).map_err(|_| LlmError::Protocol(format!("{exe} wrote non-UTF-8")))
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
