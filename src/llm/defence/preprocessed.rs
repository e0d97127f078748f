//! The second pass of the static defences: the source as the device compiler sees it.
//!
//! The first pass ([`super::check`]) reads the text as written, so a forbidden name can hide
//! from it in a macro (`#define S cudaStream` … `S##TailLaunch`), a line splice (backslash-newline
//! inside an identifier), a digraph (`%:include`, `<% %>`), a trigraph (`??=`) or token pasting.
//! This pass undoes all of them:
//!
//! 1. Directives, read as the preprocessor reads them (trigraphs both on and off, since the
//!    dialect decides; splices, comments, `%:` for `#`): only `#define`, `#undef`, the
//!    conditionals, `#include` (of the allowed headers, as in the first pass), `#pragma`,
//!    `#error` and `#warning` are allowed, and no `#` outside a directive or a function-like
//!    macro's body. `#line` and line markers are refused: they could pass the source's own
//!    lines off as a header's in step 3.
//! 2. nvcc preprocesses the source with the compile's own arguments, `-E` in place of
//!    `-cubin` ([`Nvcc::preprocess_args`]):
//!    `nvcc -E -gencode=arch=compute_90a,code=sm_90a -Xptxas -v [-ccbin G++] -I<task dir>
//!    -DKNOB=V… <task flags> <extra flags> <tmp>/kernel.cu -o <tmp>/…`. With one real arch,
//!    nvcc runs only the device pass: the host compiler's `-E` with `-D__CUDA_ARCH__=900`, the
//!    `-I`/`-D` flags and `-include cuda_runtime.h`, whose output cicc compiles.
//! 3. Of that output only the source's own lines are kept: GCC's line markers (`# 12 "file"
//!    1` enters an included file, `… 2` returns from it) say which lines come from the CUDA
//!    headers, the task's headers and `-include`; their legitimate contents (`cudaMalloc`
//!    declarations, `static` helpers) are not the candidate's. A marker is only read at column
//!    0; GCC prints a space before a `#` that a macro expansion begins a line with.
//! 4. Digraphs there are spelled as usual (`<%` as `{`), the CUDA attributes that the memory
//!    space keywords became (`__attribute__((device))`) as the keywords, and the first pass's
//!    rules run again (all but the includes, which step 1 checked). A rejection says it was
//!    found after preprocessing.
//!
//! Without nvcc (or when it fails) steps 2–4 cannot run: the answer is
//! [`Preprocessed::NotChecked`] with the reason, never a silent pass. A source that nvcc cannot
//! preprocess is left to the compile gate, which runs the same preprocessing and refuses it.
//! Limits: the source is preprocessed with one config's knob values (code behind `#if` on other
//! values is only seen by the first pass); an NVRTC task is preprocessed as nvcc would
//! (`__CUDACC_RTC__` undefined).

use std::time::Duration;

use super::{check_code, check_includes, pieces, strip, DefenceContext, Piece, Rejection};
use crate::eval::compile::nvcc::Nvcc;
use crate::eval::compile::{CompileJob, CompilerSettings, DEFAULT_ARCH};

/// nvcc's preprocessor, run as the compile gate runs nvcc; or why there is none.
#[derive(Clone, Debug)]
pub struct Preprocessor {
    nvcc: Result<Nvcc, String>,
    /// The compile's target: `__CUDA_ARCH__` and the arch-specific macros follow it.
    arch: String,
    /// Flags the compile adds after the task's.
    extra_flags: Vec<String>,
    timeout: Option<Duration>,
}

impl Preprocessor {
    /// The nvcc the compile gate finds with `settings` ([`Nvcc::locate`]: the setting,
    /// `$EVOENGINEER_NVCC`, `PATH`, `/usr/local/cuda`, the wheels of `scripts/setup-cuda`),
    /// for sources compiled for `arch`.
    pub fn new(settings: &CompilerSettings, arch: &str) -> Preprocessor {
        Preprocessor {
            nvcc: Nvcc::locate(settings.nvcc.as_deref(), settings.ccbin.as_deref()),
            arch: arch.to_string(),
            extra_flags: settings.extra_flags.clone(),
            // As long as a compile may take: it runs the same preprocessing.
            timeout: settings.timeout,
        }
    }

    /// None, because of `why`: every check says so.
    pub fn unavailable(why: impl Into<String>) -> Preprocessor {
        Preprocessor {
            nvcc: Err(why.into()),
            arch: DEFAULT_ARCH.to_string(),
            extra_flags: Vec::new(),
            timeout: None,
        }
    }

    /// The arch sources are preprocessed for.
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// Why there is no nvcc to preprocess with, if there is none.
    pub fn unavailable_reason(&self) -> Option<&str> {
        self.nvcc.as_ref().err().map(String::as_str)
    }

    /// `job`'s source, preprocessed as its compile preprocesses it (the device pass).
    pub fn preprocess(&self, job: &CompileJob) -> Result<String, PreprocessError> {
        let nvcc = self
            .nvcc
            .as_ref()
            .map_err(|e| PreprocessError::Unavailable(e.clone()))?;
        let mut flags = job.flags.clone();
        flags.extend(self.extra_flags.iter().cloned());
        let args =
            nvcc.preprocess_args(&job.arch, job.include_dir.as_deref(), &job.defines, &flags);
        let run = nvcc
            .preprocess(&job.source, &job.file_name, &args, self.timeout)
            .map_err(PreprocessError::Tool)?;
        if run.timed_out {
            return Err(PreprocessError::Tool(format!(
                "nvcc -E ran longer than {:.0} s and was stopped",
                self.timeout.unwrap_or_default().as_secs_f64()
            )));
        }
        if run
            .output
            .contains("Failed to preprocess host compiler properties")
        {
            return Err(PreprocessError::Tool(format!(
                "nvcc cannot run its host compiler (install g++, or set EVOENGINEER_NVCC_CCBIN): {}",
                crate::llm::excerpt(&run.output, 300)
            )));
        }
        match (run.status, run.text) {
            (Some(0), Some(text)) => Ok(text),
            (Some(0), None) => Err(PreprocessError::Tool(
                "nvcc -E succeeded but wrote nothing".into(),
            )),
            (Some(_), _) => Err(PreprocessError::Refused(crate::llm::excerpt(
                &run.output,
                300,
            ))),
            (None, _) => Err(PreprocessError::Tool(format!(
                "nvcc -E was killed: {}",
                crate::llm::excerpt(&run.output, 300)
            ))),
        }
    }
}

/// Why a source could not be preprocessed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PreprocessError {
    #[error("nvcc is not available: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Tool(String),
    /// nvcc ran and refused the source (the compile will refuse it too).
    #[error("nvcc -E refused the source: {0}")]
    Refused(String),
}

/// What the second pass did with a source it did not reject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Preprocessed {
    Checked,
    /// Only the directives were checked (step 1): why the rest could not run.
    NotChecked(String),
}

/// The second pass over `job.source` (which passed [`super::check`]), preprocessed as `job`
/// compiles it.
pub fn check_preprocessed(
    job: &CompileJob,
    ctx: &DefenceContext,
    pp: &Preprocessor,
) -> Result<Preprocessed, Rejection> {
    check_directives(&job.source, ctx)?;
    let text = match pp.preprocess(job) {
        Ok(text) => text,
        Err(e) => return Ok(Preprocessed::NotChecked(e.to_string())),
    };
    check_expanded(&text, ctx)?;
    Ok(Preprocessed::Checked)
}

/// Steps 3 and 4 on nvcc's output `text`.
fn check_expanded(text: &str, ctx: &DefenceContext) -> Result<(), Rejection> {
    let own = digraphs(&own_lines(text));
    check_code(&strip(&own, false), &strip(&own, true), ctx).map_err(|r| {
        Rejection::new(
            r.kind,
            format!(
                "{} (found after preprocessing: `nvcc -E`, as the device compiler sees it)",
                r.message
            ),
        )
    })
}

/// Step 1: the directives of `code` as the preprocessor reads them.
fn check_directives(code: &str, ctx: &DefenceContext) -> Result<(), Rejection> {
    let found = |r: Rejection| {
        Rejection::new(
            r.kind,
            format!(
                "{} (found after preprocessing: line splices, digraphs and trigraphs resolved)",
                r.message
            ),
        )
    };
    for trigraphs in [false, true] {
        let text = spliced(code, trigraphs);
        check_includes(&digraphs(&strip(&text, false)), ctx).map_err(found)?;
        check_hashes(
            &digraphs(&strip(&text, true)),
            &digraphs(&strip(&text, false)),
        )
        .map_err(found)?;
    }
    Ok(())
}

/// The directives a candidate may use.
const DIRECTIVES: &[&str] = &[
    "define", "undef", "if", "ifdef", "ifndef", "elif", "elifdef", "elifndef", "else", "endif",
    "include", "pragma", "error", "warning",
];

/// Directives of `bare` (spliced, without comments and literals, `#` for `%:`) outside
/// [`DIRECTIVES`], and `#` tokens outside directives and function-like macros; messages quote
/// the same line of `text` (which keeps the literals).
fn check_hashes(bare: &str, text: &str) -> Result<(), Rejection> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    for (line, quoted) in bare.lines().zip(text.lines()) {
        let t = line.trim_start();
        let quoted = quoted.trim();
        let Some(rest) = t.strip_prefix('#') else {
            if t.contains('#') {
                return Err(Rejection::new(
                    "directive",
                    format!(
                        "`{}`: a `#` outside a directive (it could fake the preprocessor's line markers)",
                        super::shorten(quoted)
                    ),
                ));
            }
            continue;
        };
        let rest = rest.trim_start();
        let name = &rest[..rest.len() - rest.trim_start_matches(ident).len()];
        if rest.is_empty() {
            continue; // the null directive
        }
        if !DIRECTIVES.contains(&name) {
            return Err(Rejection::new(
                "directive",
                format!(
                    "`{}`: only #define, #undef, conditionals, #include, #pragma, #error and \
                     #warning are allowed (`#line` and line markers would pass the source's \
                     lines off as a header's)",
                    super::shorten(quoted)
                ),
            ));
        }
        // An object-like macro's `#` stays a `#` when expanded (`##` pastes).
        let body = rest[name.len()..].trim_start();
        let after_name = body.trim_start_matches(ident);
        if name == "define"
            && !after_name.starts_with('(')
            && after_name.replace("##", "").contains('#')
        {
            return Err(Rejection::new(
                "directive",
                format!(
                    "`{}`: a `#` in an object-like macro (it could fake the preprocessor's line markers)",
                    super::shorten(quoted)
                ),
            ));
        }
    }
    Ok(())
}

/// `code` after translation phases 1–2: trigraphs (`??=` and `??/`, if `trigraphs`), then
/// line splices (a backslash, maybe spaces, and a newline: GCC splices those too).
fn spliced(code: &str, trigraphs: bool) -> String {
    let code = if trigraphs {
        code.replace("??=", "#").replace("??/", "\\")
    } else {
        code.to_string()
    };
    let mut out = String::with_capacity(code.len());
    let mut rest = code.as_str();
    while let Some(i) = rest.find('\\') {
        let after = &rest[i + 1..];
        let blank = after.len() - after.trim_start_matches([' ', '\t', '\r']).len();
        if after[blank..].starts_with('\n') {
            out.push_str(&rest[..i]);
            rest = &after[blank + 1..];
        } else {
            out.push_str(&rest[..=i]);
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// `code` with the digraphs that matter to the rules spelled as usual outside literals and
/// comments: `%:%:` `##`, `%:` `#`, `<%` `{`, `%>` `}` (`<:` and `:>` are brackets).
fn digraphs(code: &str) -> String {
    pieces(code)
        .into_iter()
        .map(|(piece, text)| match piece {
            Piece::Code => text
                .replace("%:%:", "##")
                .replace("%:", "#")
                .replace("<%", "{")
                .replace("%>", "}"),
            _ => text.to_string(),
        })
        .collect()
}

/// The lines of preprocessed `text` from the source itself (at include depth 0: not inside
/// a file entered with a line marker's flag 1), without the line markers.
fn own_lines(text: &str) -> String {
    let mut depth = 0usize;
    let mut out = String::with_capacity(text.len() / 8);
    for line in text.lines() {
        match line_marker(line) {
            Some(flags) if flags.contains(&1) => depth += 1,
            Some(flags) if flags.contains(&2) => depth = depth.saturating_sub(1),
            Some(_) => {}
            None if depth == 0 => {
                out.push_str(line);
                out.push('\n');
            }
            None => {}
        }
    }
    out
}

/// The flags of a GCC line marker (`# 12 "file" 1 3`), if `line` is one.
fn line_marker(line: &str) -> Option<Vec<u32>> {
    let rest = line.strip_prefix("# ")?;
    let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    if digits == 0 {
        return None;
    }
    let name = rest[digits..].strip_prefix(" \"")?;
    let mut escaped = false;
    let close = name.char_indices().find_map(|(i, c)| {
        let end = !escaped && c == '"';
        escaped = !escaped && c == '\\';
        end.then_some(i)
    })?;
    name[close + 1..]
        .split_whitespace()
        .map(|f| f.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn directives(code: &str) -> Option<&'static str> {
        check_directives(code, &DefenceContext::default())
            .err()
            .map(|r| r.kind)
    }

    #[test]
    fn directives_as_the_preprocessor_reads_them() {
        assert_eq!(
            directives("#define N 4\n#if N > 2\n#pragma unroll\n#endif\n#\n"),
            None
        );
        assert_eq!(
            directives("#define CAT(a, b) a ## b\n#define STR(x) #x\n"),
            None
        );
        assert_eq!(directives("#define JOIN a ## b\n"), None);
        assert_eq!(directives("%:include <cudnn.h>\n"), Some("host_include"));
        assert_eq!(directives("#inc\\\nlude <cudnn.h>\n"), Some("host_include"));
        assert_eq!(directives("??=include <cudnn.h>\n"), Some("host_include"));
        assert_eq!(directives("#line 1 \"cuda_bf16.h\"\n"), Some("directive"));
        assert_eq!(directives("# 1 \"cuda_bf16.h\" 1\n"), Some("directive"));
        assert_eq!(directives("%:  7 \"x.h\" 1\n"), Some("directive"));
        assert_eq!(directives("#import <cudnn.h>\n"), Some("directive"));
        assert_eq!(
            directives("#define F(x) x\nF(# 1 \"x.h\" 1)\n"),
            Some("directive")
        );
        assert_eq!(directives("#define H #\n"), Some("directive"));
        assert_eq!(directives("#define H %:\n"), Some("directive"));
        // A comment continued by a splice (with a trigraph) must not hide the next line.
        assert_eq!(
            directives("// ??/\n# 1 \"cuda_bf16.h\" 1\n"),
            Some("directive")
        );
        // Nor an apostrophe that is a digit separator, or one in a raw string.
        assert_eq!(
            directives("int a = 1'0;\n#line 5 \"x.h\"\nint b = 2'0;\n"),
            Some("directive")
        );
        assert_eq!(
            directives("auto s = R\"x(\")x\";\n#line 5 \"x.h\"\nauto t = \"\";\n"),
            Some("directive")
        );
        // `#` in comments and strings is not a token.
        assert_eq!(directives("// #line 5\nconst char* s = \"#\";\n"), None);
    }

    #[test]
    fn own_lines_skip_headers_and_read_markers_at_column_0_only() {
        let text = "# 0 \"k.cu\"\n# 0 \"<command-line>\"\n# 1 \"/inc/cuda_runtime.h\" 1\n\
                    cudaError_t cudaMalloc(void**, size_t);\n# 1 \"/inc/nested.h\" 1\nstatic int x;\n\
                    # 5 \"/inc/cuda_runtime.h\" 2\nint y;\n# 0 \"<command-line>\" 2\n# 1 \"k.cu\"\n\
                    __attribute__((global)) void k() {}\n # 1 \"fake.h\" 1\nint z;\n\
                    # 7 \"k.cu\" 3 4\nint w;\n";
        assert_eq!(
            own_lines(text),
            "__attribute__((global)) void k() {}\n # 1 \"fake.h\" 1\nint z;\nint w;\n"
        );
        assert_eq!(line_marker("# 12 \"a \\\" b\" 1 3"), Some(vec![1, 3]));
        assert_eq!(line_marker("#pragma unroll"), None);
    }

    #[test]
    fn expanded_text_is_checked_with_the_keywords_back() {
        let kind = |text: &str| {
            check_expanded(text, &DefenceContext::default())
                .err()
                .map(|r| r.kind)
        };
        assert_eq!(
            kind("__attribute__((global)) void k() <% ((cudaStream_t)0x3); %>"),
            Some("host_api")
        );
        assert_eq!(
            kind("__attribute__((device)) float cache[64];"),
            Some("persistent_state")
        );
        assert_eq!(
            kind("__attribute__((global)) void k() <% static int n; %>"),
            Some("persistent_state")
        );
        assert_eq!(
            kind("__attribute__((constant)) float t[2] = {1, 2};\n__attribute__((global)) void k() { static __attribute__((shared)) float s[2]; }"),
            None
        );
        let r = check_expanded("void k() { cudaDeviceSynchronize(); }", &Default::default());
        assert!(r.unwrap_err().message.contains("after preprocessing"));
    }
}
