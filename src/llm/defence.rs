//! Static defences: checks on a model-written source before it reaches the compiler.
//!
//! They catch what a kernel source can do to fool the harness without computing the answer
//! (known cheats in LLM-written kernels, `/work/shared/FACTS.md`):
//!
//! | kind | what | why |
//! |---|---|---|
//! | `host_include` | `#include` of anything but the CUDA device headers, `<stdint.h>`-like C headers and the task folder's own headers | host libraries (cuBLAS, threads, I/O) do the work elsewhere |
//! | `host_api` | a call of a CUDA runtime or driver API (`cudaStreamCreate…`, `cudaMemcpy…`, `cudaLaunch…`, `cudaDeviceSynchronize`, `cuLaunchKernel`, …) or a mention of `cudaStreamFireAndForget`/`cudaStreamTailLaunch`, or a number cast to `cudaStream_t` (what those two expand to) | work on another stream the timer misses |
//! | `dynamic_parallelism` | `<<<` | a kernel launching kernels (on other streams) |
//! | `reads_reference` | the reference kernel's entry name or file name | copying the reference's answer |
//! | `persistent_state` | a non-const `__device__`/`__managed__` variable at file scope (also spelled `__attribute__((device))`), or a `static` variable inside a function (not `__shared__`, not const) | results cached between calls |
//! | `directive` | (second pass) `#line`, a line marker, `#import` or any directive but `#define`, `#undef`, the conditionals, `#include`, `#pragma`, `#error`, `#warning`; a `#` outside a directive | lines passed off as a header's, hidden from the second pass |
//!
//! Two passes. [`check`] reads the source as written and gives the clearest messages.
//! [`check_preprocessed`] (in [`preprocessed`]) reads it as the device compiler does: directives
//! after line splices, digraphs and trigraphs, then the output of `nvcc -E` with the compile's
//! arch, defines and flags, keeping only the source's own lines (not the headers'), so that a
//! name hidden by a macro, a splice, a digraph or token pasting is still found; its messages
//! say so. Without nvcc it says that it could not check ([`Preprocessed::NotChecked`]).
//!
//! Comments and string literals are ignored (lexed as C++ does: `1'000` is a number, `R"x(…)x"`
//! a string). `asm volatile` (with `%globaltimer`, `clock64` or
//! anything else) is allowed, and so are `__constant__` tables and the device-side PDL calls
//! `cudaGridDependencySynchronize` and `cudaTriggerProgrammaticLaunchCompletion`.
//!
//! Outputs left unwritten cannot be seen in the source: the correctness gate poisons outputs
//! with NaN before every launch and counts unwritten elements, so such a kernel fails there.
//! The persistent-state rule is a heuristic: it also rejects honest uses (a self-resetting
//! grid-wide counter); a model is told to avoid them.

use super::extract::contains_word;

pub mod preprocessed;
pub use preprocessed::{check_preprocessed, Preprocessed, Preprocessor};

/// Why a proposal was turned away before compiling.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct Rejection {
    pub kind: &'static str,
    pub message: String,
}

impl Rejection {
    pub fn new(kind: &'static str, message: impl Into<String>) -> Rejection {
        Rejection {
            kind,
            message: message.into(),
        }
    }
}

/// What a source is checked against.
#[derive(Clone, Debug, Default)]
pub struct DefenceContext {
    /// The reference kernel's entry name (its simple name).
    pub reference_entry: Option<String>,
    /// The reference source's file name (`reference.cu`).
    pub reference_file: Option<String>,
    /// File names in the task folder a source may `#include "..."`.
    pub local_headers: Vec<String>,
}

impl DefenceContext {
    /// The reference of `task` and the headers in its folder.
    pub fn for_task(task: &crate::task::Task) -> DefenceContext {
        let file_name = |p: &std::path::Path| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let reference_file = task.reference.as_ref().map(|r| file_name(&r.source));
        let local_headers = std::fs::read_dir(&task.dir)
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        p.extension()
                            .and_then(|x| x.to_str())
                            .is_some_and(|x| ["h", "hh", "hpp", "cuh", "inc"].contains(&x))
                    })
                    .map(|p| file_name(&p))
                    .collect()
            })
            .unwrap_or_default();
        DefenceContext {
            reference_entry: task
                .reference
                .as_ref()
                .map(|r| super::extract::simple_entry(&r.entry).to_string()),
            reference_file,
            local_headers,
        }
    }
}

/// Headers a kernel may include (exact names, or prefixes ending in `/`).
const ALLOWED_INCLUDES: &[&str] = &[
    "cuda_bf16.h",
    "cuda_bf16.hpp",
    "cuda_fp16.h",
    "cuda_fp16.hpp",
    "cuda_fp8.h",
    "cuda_fp8.hpp",
    "cuda_fp6.h",
    "cuda_fp4.h",
    "cuda_runtime.h",
    "cuda_device_runtime_api.h",
    "device_launch_parameters.h",
    "vector_types.h",
    "vector_functions.h",
    "math_constants.h",
    "cuda_pipeline.h",
    "cuda_pipeline_primitives.h",
    "cuda_awbarrier.h",
    "cuda_awbarrier_primitives.h",
    "mma.h",
    "cooperative_groups.h",
    "cooperative_groups/",
    "cuda/",
    "cub/",
    "stdint.h",
    "cstdint",
    "stddef.h",
    "cstddef",
    "float.h",
    "cfloat",
    "limits.h",
    "climits",
    "type_traits",
    "math.h",
    "cmath",
];

/// Device-side CUDA API calls that launch nothing.
const ALLOWED_CUDA_CALLS: &[&str] = &[
    "cudaGridDependencySynchronize",
    "cudaTriggerProgrammaticLaunchCompletion",
];

/// Checks `code` as written (the first pass); the first failed rule.
pub fn check(code: &str, ctx: &DefenceContext) -> Result<(), Rejection> {
    let no_comments = strip(code, false);
    check_includes(&no_comments, ctx)?;
    check_code(&no_comments, &strip(code, true), ctx)
}

/// Every rule but the includes: `no_comments` is the source without comments, `bare` also
/// without the contents of literals.
fn check_code(no_comments: &str, bare: &str, ctx: &DefenceContext) -> Result<(), Rejection> {
    if bare.contains("<<<") {
        return Err(Rejection::new(
            "dynamic_parallelism",
            "the source launches a kernel from the device (`<<<`)",
        ));
    }
    for (name, after) in identifiers(bare) {
        let api = (name.starts_with("cuda") || name.starts_with("cu"))
            && name
                .chars()
                .nth(if name.starts_with("cuda") { 4 } else { 2 })
                .is_some_and(|c| c.is_ascii_uppercase());
        let call = after.trim_start().starts_with('(');
        if name == "cudaStreamFireAndForget" || name == "cudaStreamTailLaunch" {
            return Err(Rejection::new(
                "host_api",
                format!("the source names `{name}` (work launched off the timed stream)"),
            ));
        }
        if name == "cudaStream_t" && stream_handle(after) {
            return Err(Rejection::new(
                "host_api",
                "the source makes a stream handle of a number (`cudaStreamTailLaunch` is \
                 `((cudaStream_t)0x3)`): work launched off the timed stream",
            ));
        }
        if api && call && !ALLOWED_CUDA_CALLS.contains(&name) {
            return Err(Rejection::new(
                "host_api",
                format!("the source calls the CUDA API `{name}`; a candidate is one kernel and may not allocate, copy, synchronize or launch"),
            ));
        }
    }
    if let Some(r) = &ctx.reference_entry {
        if contains_word(bare, r) {
            return Err(Rejection::new(
                "reads_reference",
                format!("the source names the reference kernel `{r}`"),
            ));
        }
    }
    if let Some(f) = &ctx.reference_file {
        if no_comments.contains(f.as_str()) {
            return Err(Rejection::new(
                "reads_reference",
                format!("the source names the reference file `{f}`"),
            ));
        }
    }
    check_state(&cuda_attributes(bare))
}

/// Whether the text after `cudaStream_t` casts a number: `) 0x3`, `)3`, `>(4)`.
fn stream_handle(after: &str) -> bool {
    let t = after.trim_start();
    let t = match t.strip_prefix(')').or_else(|| t.strip_prefix('>')) {
        Some(t) => t.trim_start(),
        None => return false,
    };
    t.trim_start_matches(['(', ' ', '\t', '\n'])
        .starts_with(|c: char| c.is_ascii_digit())
}

/// `bare` with the CUDA memory spaces spelled as GCC attributes (`__attribute__((device))`,
/// which `__device__` becomes after preprocessing, or written by hand) also spelled as the
/// keywords (`__device__`), so that the state rules see them.
fn cuda_attributes(bare: &str) -> String {
    const SPACES: [&str; 5] = ["device", "managed", "shared", "constant", "global"];
    let mut out = String::with_capacity(bare.len());
    let mut rest = bare;
    while let Some(at) = rest.find("__attribute__") {
        let after = &rest[at + "__attribute__".len()..];
        let inner = after.trim_start();
        let list_end = inner
            .starts_with('(')
            .then(|| balanced_end(inner))
            .flatten();
        out.push_str(&rest[..at]);
        if let Some(end) = list_end {
            let names = inner[1..end - 1]
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| SPACES.contains(&w.trim_matches('_')) && !w.is_empty());
            for n in names {
                out.push_str(&format!(" __{}__ ", n.trim_matches('_')));
            }
        }
        out.push_str("__attribute__");
        rest = after;
    }
    out.push_str(rest);
    out
}

/// The index after the `)` closing the `(` that `s` starts with.
fn balanced_end(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

fn check_includes(code: &str, ctx: &DefenceContext) -> Result<(), Rejection> {
    for line in code.lines() {
        let t = line.trim_start();
        let Some(rest) = t.strip_prefix('#') else {
            continue;
        };
        let rest = rest.trim_start();
        let Some(rest) = rest.strip_prefix("include") else {
            continue;
        };
        let rest = rest.trim();
        let (name, local) = if let Some(r) = rest.strip_prefix('<') {
            (r.split('>').next().unwrap_or(""), false)
        } else if let Some(r) = rest.strip_prefix('"') {
            (r.split('"').next().unwrap_or(""), true)
        } else {
            return Err(Rejection::new(
                "host_include",
                format!("`{}`: only literal includes are allowed", t.trim()),
            ));
        };
        let allowed = ALLOWED_INCLUDES.iter().any(|a| {
            if a.ends_with('/') {
                name.starts_with(a) && !name.contains("..")
            } else {
                name == *a
            }
        }) || (local
            && ctx.local_headers.iter().any(|h| h == name)
            && ctx.reference_file.as_deref() != Some(name));
        if !allowed {
            return Err(Rejection::new(
                "host_include",
                format!("the source includes `{name}`, which is not a CUDA device header"),
            ));
        }
    }
    Ok(())
}

/// Non-const `__device__`/`__managed__` variables at file scope; `static` variables in
/// function bodies.
fn check_state(bare: &str) -> Result<(), Rejection> {
    // Split into statements at `;`, `{` and `}`, tracking which braces open function bodies.
    let mut depth_fn = 0usize; // braces inside a function body
    let mut stack: Vec<bool> = Vec::new(); // per open brace: is it (inside) a function body?
    let mut stmt = String::new();
    for c in bare.chars() {
        match c {
            ';' | '{' | '}' => {
                let s = stmt.split_whitespace().collect::<Vec<_>>().join(" ");
                stmt.clear();
                let in_fn = depth_fn > 0;
                if c != '}' {
                    check_statement(&s, in_fn, c == '{')?;
                }
                match c {
                    '{' => {
                        // A brace after `)` (maybe with qualifiers) opens a function body.
                        let body = in_fn || is_function_head(&s);
                        stack.push(body);
                        if body {
                            depth_fn += 1;
                        }
                    }
                    '}' if stack.pop() == Some(true) => depth_fn -= 1,
                    _ => {}
                }
            }
            _ => stmt.push(c),
        }
    }
    Ok(())
}

fn is_function_head(s: &str) -> bool {
    let s = s.trim_end();
    // `... ) {`, `... ) const {`, `... ) -> T {`, lambdas `[&](int i) {`.
    s.contains(')') && !s.starts_with("struct") && !s.starts_with("class") && {
        let tail = &s[s.rfind(')').unwrap_or(0)..];
        !tail.contains('=')
    }
}

fn check_statement(s: &str, in_fn: bool, opens: bool) -> Result<(), Rejection> {
    if opens {
        return Ok(());
    }
    let words: Vec<&str> = s
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .collect();
    let has = |w: &str| words.contains(&w);
    // Attributes with parentheses do not make a declaration a function prototype.
    let cleaned = strip_attributes(s);
    let s = cleaned.as_str();
    let before_init = s.split('=').next().unwrap_or(s);
    // `const T* p` is a writable pointer; `T* const p` and `const T x` are not writable.
    let object = before_init.rsplit('*').next().unwrap_or(before_init);
    let const_object = if before_init.contains('*') {
        object.split_whitespace().any(|w| w == "const")
    } else {
        has("const")
    };
    let constant = const_object || has("constexpr") || has("__constant__");
    let prototype = before_init.contains('(');
    if !in_fn {
        if (has("__device__") || has("__managed__"))
            && !constant
            && !prototype
            && !has("typedef")
            && !has("using")
        {
            return Err(Rejection::new(
                "persistent_state",
                format!(
                    "`{}`: a writable __device__ variable keeps state between launches",
                    shorten(s)
                ),
            ));
        }
    } else if words.first() == Some(&"static") && !has("__shared__") && !constant && !prototype {
        return Err(Rejection::new(
            "persistent_state",
            format!(
                "`{}`: a static variable keeps state between launches",
                shorten(s)
            ),
        ));
    }
    Ok(())
}

/// `s` without `__align__(..)`, `alignas(..)`, `__launch_bounds__(..)`, `__attribute__((..))`
/// and `__declspec(..)`.
fn strip_attributes(s: &str) -> String {
    let mut out = s.to_string();
    for name in [
        "__align__",
        "alignas",
        "__launch_bounds__",
        "__attribute__",
        "__declspec",
        "__maxnreg__",
    ] {
        while let Some(i) = out.find(name) {
            let after = i + name.len();
            let rest = &out[after..];
            let open = rest.len() - rest.trim_start().len();
            if !rest.trim_start().starts_with('(') {
                out.replace_range(i..after, " ");
                continue;
            }
            let mut depth = 0usize;
            let mut end = out.len();
            for (j, c) in out[after + open..].char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            end = after + open + j + 1;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            out.replace_range(i..end, " ");
        }
    }
    out
}

fn shorten(s: &str) -> String {
    super::excerpt(s, 120)
}

/// Identifiers of `code` with the text after each.
fn identifiers(code: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let b = code.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            out.push((&code[start..i], &code[i..]));
        } else if c.is_ascii_digit() {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.') {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    out
}

/// `code` with comments replaced by spaces (newlines kept) and, if `strings`, the contents of
/// string and character literals blanked (newlines kept).
pub fn strip(code: &str, strings: bool) -> String {
    let mut out = String::with_capacity(code.len());
    for (piece, text) in pieces(code) {
        match piece {
            Piece::Code => out.push_str(text),
            Piece::Comment => {
                out.extend(text.chars().filter(|&c| c == '\n'));
                out.push(' ');
            }
            Piece::Literal if strings => {
                let quote = if text.starts_with('\'') { '\'' } else { '"' };
                out.push(quote);
                out.extend(text.chars().filter(|&c| c == '\n'));
                out.push(quote);
            }
            Piece::Literal => out.push_str(text),
        }
    }
    out
}

/// What a piece of source is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Piece {
    Code,
    /// `// …` (without its newline) or `/* … */`.
    Comment,
    /// A string or character literal from its opening quote to its closing one (a raw
    /// string's `"delim(…)delim"`; an unterminated one ends at the end of its line).
    Literal,
}

/// `code` cut into code, comments and literals, in order. As C++ lexes: `'` in a number is a
/// digit separator (`1'000`), `R"x(…)x"` is a raw string.
fn pieces(code: &str) -> Vec<(Piece, &str)> {
    let b = code.as_bytes();
    let mut out = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < b.len() {
        let found = match (b[i], b.get(i + 1)) {
            (b'/', Some(b'/')) => Some((Piece::Comment, line_end(b, i))),
            (b'/', Some(b'*')) => Some((
                Piece::Comment,
                find(b, i + 2, b"*/").map_or(b.len(), |e| e + 2),
            )),
            (b'"', _) => Some((
                Piece::Literal,
                raw_end(b, i).unwrap_or_else(|| quoted_end(b, i)),
            )),
            (b'\'', _) if !digit_separator(b, i) => Some((Piece::Literal, quoted_end(b, i))),
            _ => None,
        };
        match found {
            Some((piece, end)) => {
                if start < i {
                    out.push((Piece::Code, &code[start..i]));
                }
                out.push((piece, &code[i..end]));
                (start, i) = (end, end);
            }
            None => i += 1,
        }
    }
    if start < b.len() {
        out.push((Piece::Code, &code[start..]));
    }
    out
}

fn find(b: &[u8], from: usize, what: &[u8]) -> Option<usize> {
    b.get(from..)?
        .windows(what.len())
        .position(|w| w == what)
        .map(|p| from + p)
}

fn line_end(b: &[u8], from: usize) -> usize {
    find(b, from, b"\n").unwrap_or(b.len())
}

/// The end of the literal opening with the quote at `i`: after its closing quote, or at the
/// end of the line when there is none (escaped newlines continue it).
fn quoted_end(b: &[u8], i: usize) -> usize {
    let quote = b[i];
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            b'\n' => return j,
            c if c == quote => return j + 1,
            _ => j += 1,
        }
    }
    b.len()
}

/// The end of a raw string whose quote is at `i`, if the identifier before it is a raw
/// prefix (`R`, `LR`, `uR`, `UR`, `u8R`) and a delimiter and `(` follow.
fn raw_end(b: &[u8], i: usize) -> Option<usize> {
    let mut s = i;
    while s > 0 && (b[s - 1].is_ascii_alphanumeric() || b[s - 1] == b'_') {
        s -= 1;
    }
    if ![&b"R"[..], b"LR", b"uR", b"UR", b"u8R"].contains(&&b[s..i]) {
        return None;
    }
    let open = i + 1 + b.get(i + 1..)?.iter().take(17).position(|&c| c == b'(')?;
    let delim = &b[i + 1..open];
    if delim
        .iter()
        .any(|c| c.is_ascii_whitespace() || [b')', b'\\', b'"'].contains(c))
    {
        return None;
    }
    let close = [&b")"[..], delim, b"\""].concat();
    Some(find(b, open + 1, &close).map_or(b.len(), |e| e + close.len()))
}

/// Whether the `'` at `i` separates digits of a number (`1'000'000`, `0x7f'ff`).
fn digit_separator(b: &[u8], i: usize) -> bool {
    let mut s = i;
    while s > 0 && (b[s - 1].is_ascii_alphanumeric() || [b'_', b'.', b'\''].contains(&b[s - 1])) {
        s -= 1;
    }
    let number = match b.get(s) {
        Some(c) if c.is_ascii_digit() => true,
        Some(b'.') => b.get(s + 1).is_some_and(u8::is_ascii_digit),
        _ => false,
    };
    number
        && s < i
        && b.get(i + 1)
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> DefenceContext {
        DefenceContext {
            reference_entry: Some("softmax_ref".into()),
            reference_file: Some("reference.cu".into()),
            local_headers: vec!["common.cuh".into(), "reference.cu".into()],
        }
    }

    fn kind(code: &str) -> Option<&'static str> {
        check(code, &ctx()).err().map(|r| r.kind)
    }

    #[test]
    fn the_task_kernels_pass() {
        for t in ["softmax_bf16", "gemm_bf16", "sdpa_fp8"] {
            let code = std::fs::read_to_string(format!(
                "{}/tasks/{t}/kernel.cu",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap();
            assert_eq!(check(&code, &DefenceContext::default()), Ok(()), "{t}");
        }
    }

    /// nvcc's preprocessor, or `None` after saying SKIPPED (nvcc is not installed).
    fn preprocessor(test: &str) -> Option<Preprocessor> {
        let pp = Preprocessor::new(&crate::eval::compile::CompilerSettings::default(), "sm_90a");
        if let Some(why) = pp.unavailable_reason() {
            // Straight to stderr, in one write: libtest captures `eprintln!` of passing tests.
            let line =
                format!("\nSKIPPED: nvcc not found (run scripts/setup-cuda) [{test}: {why}]\n");
            let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
            return None;
        }
        Some(pp)
    }

    /// The second pass on `code` as `task` compiles it at its default knobs.
    fn preprocessed(
        task: &crate::task::Task,
        code: &str,
        pp: &Preprocessor,
    ) -> Result<Preprocessed, Rejection> {
        let job = crate::eval::compile::CompileJob::for_candidate(
            task,
            &task.space.default_config(),
            task.default_shape(),
            "sm_90a",
            Some(code),
        )
        .unwrap();
        check_preprocessed(&job, &DefenceContext::for_task(task), pp)
    }

    fn task(name: &str) -> crate::task::Task {
        crate::task::Task::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tasks")
                .join(name),
        )
        .unwrap()
    }

    #[test]
    fn the_task_kernels_pass_after_preprocessing() {
        let Some(pp) = preprocessor("the_task_kernels_pass_after_preprocessing") else {
            return;
        };
        for t in ["softmax_bf16", "gemm_bf16", "sdpa_fp8"] {
            let task = task(t);
            let code =
                std::fs::read_to_string(&task.kernel.as_ref().unwrap().launch.source).unwrap();
            assert_eq!(
                preprocessed(&task, &code, &pp),
                Ok(Preprocessed::Checked),
                "{t}"
            );
        }
    }

    /// Macros, pasting, stringizing, digraphs, digit separators and a raw string, all honest.
    const HONEST_WITH_MACROS: &str = r####"#include <cuda_bf16.h>
#include <cooperative_groups.h>
#define CAT(a, b) a ## b
#define STR(x) #x
#define DEVICE_FN static __device__ __forceinline__
%:define WARP 32
#ifndef THREADS_PER_ROW
#define THREADS_PER_ROW 128
#endif
namespace cg = cooperative_groups;
__constant__ float CAT(scale_, table)[2] = {1.f, 2.f};
DEVICE_FN float warp_max(float v) <%
  for (int o = WARP / 2; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
%>
extern "C" __global__ void __launch_bounds__(THREADS_PER_ROW) softmax_bf16_kernel(
    const __nv_bfloat16* X, __nv_bfloat16* Y, int ROWS, int COLS) {
  __shared__ float CAT(red, uce)[WARP];
  static __shared__ float extra[1'024];
  const char* name = STR(softmax_bf16_kernel);
  auto raw = R"x(a "quoted" #line)x";
  int r = blockIdx.x;
  if (r >= ROWS) return;
  float m = -1e30f;
  for (int c = threadIdx.x; c < COLS; c += blockDim.x)
    m = fmaxf(m, __bfloat162float(X[(size_t)r * COLS + c]));
  m = warp_max(m) * scale_table[0];
  if (threadIdx.x % WARP == 0) reduce[threadIdx.x / WARP] = m + extra[0] * (name[0] + raw[0]);
  cg::this_thread_block().sync();
  for (int c = threadIdx.x; c < COLS; c += blockDim.x)
    Y[(size_t)r * COLS + c] = __float2bfloat16(reduce[0]);
}
"####;

    #[test]
    fn an_honest_kernel_with_macros_passes_both_passes() {
        let softmax = task("softmax_bf16");
        let ctx = DefenceContext::for_task(&softmax);
        assert_eq!(check(HONEST_WITH_MACROS, &ctx), Ok(()));
        let Some(pp) = preprocessor("an_honest_kernel_with_macros_passes_both_passes") else {
            return;
        };
        assert_eq!(
            preprocessed(&softmax, HONEST_WITH_MACROS, &pp),
            Ok(Preprocessed::Checked)
        );
    }

    #[test]
    fn hidden_cheats_are_found_after_preprocessing() {
        // Each passes the first pass; see also tests/fixtures/cheats/hidden.
        let cases = [
            // A macro.
            ("#define SYNC cudaDeviceSynchronize\n__global__ void k() { SYNC(); }", "host_api"),
            // A line continuation inside the identifier.
            ("__global__ void k() { cudaDevice\\\nSynchronize(); }", "host_api"),
            // A digraph-spelled directive, and digraph braces.
            ("%:define KEEP static\n__global__ void k(int* y) <% KEEP int n; y[0] = n++; %>", "persistent_state"),
            // Token pasting.
            ("#define CAT(a, b) a ## b\n__global__ void k() { cudaStream_t s = CAT(cudaStream, FireAndForget); }", "host_api"),
            ("#define CAT(a, b) a %:%: b\n__global__ void k() { CAT(softmax, _ref)(); }", "reads_reference"),
        ];
        let softmax = task("softmax_bf16");
        let ctx = DefenceContext::for_task(&softmax);
        for (code, _) in cases {
            assert_eq!(check(code, &ctx), Ok(()), "{code}");
        }
        let Some(pp) = preprocessor("hidden_cheats_are_found_after_preprocessing") else {
            return;
        };
        for (code, kind) in cases {
            let r = preprocessed(&softmax, code, &pp).unwrap_err();
            assert_eq!(r.kind, kind, "{code}: {r}");
            assert!(r.message.contains("found after preprocessing"), "{r}");
        }
    }

    #[test]
    fn without_nvcc_the_second_pass_says_it_did_not_check() {
        let softmax = task("softmax_bf16");
        let pp = Preprocessor::unavailable("nvcc not found");
        let code = "#define SYNC cudaDeviceSynchronize\n__global__ void k() { SYNC(); }";
        match preprocessed(&softmax, code, &pp) {
            Ok(Preprocessed::NotChecked(why)) => assert!(why.contains("nvcc not found"), "{why}"),
            other => panic!("{other:?}"),
        }
        // The directives are read without nvcc.
        assert_eq!(
            preprocessed(&softmax, "%:include <cudnn.h>\n", &pp).map_err(|r| r.kind),
            Err("host_include")
        );
    }

    #[test]
    fn literals_are_lexed_as_cpp_does() {
        // A digit separator is not a quote; a raw string ends at its delimiter.
        assert_eq!(
            kind("__global__ void k(int* y) { y[0] = 1'0; cudaDeviceSynchronize(); y[1] = 2'0; }"),
            Some("host_api")
        );
        assert_eq!(
            kind("__global__ void k() { auto s = R\"x(\")x\"; cudaDeviceSynchronize(); auto t = \"\"; }"),
            Some("host_api")
        );
        // A stray apostrophe ends at its line.
        assert_eq!(
            kind("#if 0\n'\n#endif\n__global__ void k() { cudaDeviceSynchronize(); }\n#if 0\n'\n#endif\n"),
            Some("host_api")
        );
        assert_eq!(
            strip("a = R\"d(x \" y)d\" + 'c' + 1'000; // z", true),
            "a = R\"\" + '' + 1'000;  "
        );
    }

    #[test]
    fn rules() {
        assert_eq!(
            kind("#include <cuda_bf16.h>\n#include \"common.cuh\"\n#include <cuda/barrier>"),
            None
        );
        assert_eq!(kind("#include <cublas_v2.h>"), Some("host_include"));
        assert_eq!(kind("#include <thread>"), Some("host_include"));
        assert_eq!(kind("#include \"reference.cu\""), Some("host_include"));
        assert_eq!(kind("#include \"../x.h\""), Some("host_include"));
        assert_eq!(kind("// #include <iostream>\n"), None);
        assert_eq!(
            kind("__global__ void k() { cudaDeviceSynchronize(); }"),
            Some("host_api")
        );
        assert_eq!(
            kind("__global__ void k() { cuLaunchKernel (f); }"),
            Some("host_api")
        );
        assert_eq!(
            kind("__global__ void k() { cudaGridDependencySynchronize(); }"),
            None
        );
        assert_eq!(
            kind("__global__ void k() { const char* s = \"cudaMemcpy(\"; }"),
            None
        );
        assert_eq!(
            kind("__global__ void k() { g<<<1, 1>>>(); }"),
            Some("dynamic_parallelism")
        );
        assert_eq!(
            kind("__global__ void k() { softmax_ref(); }"),
            Some("reads_reference")
        );
        assert_eq!(
            kind("__device__ float cache[4096];\n"),
            Some("persistent_state")
        );
        assert_eq!(
            kind("__device__ __managed__ int calls = 0;\n"),
            Some("persistent_state")
        );
        assert_eq!(
            kind("static __device__ bool done;"),
            Some("persistent_state")
        );
        assert_eq!(
            kind("__global__ void k() { static int n; n++; }"),
            Some("persistent_state")
        );
        assert_eq!(
            kind("__global__ void k() { auto s = (cudaStream_t)0x4; }"),
            Some("host_api")
        );
        assert_eq!(
            kind("__global__ void k() { auto s = reinterpret_cast<cudaStream_t>(3); }"),
            Some("host_api")
        );
        assert_eq!(kind("__device__ void f(cudaStream_t s);"), None);
        assert_eq!(
            kind("__attribute__((device)) float cache[64];"),
            Some("persistent_state")
        );
        assert_eq!(kind("__constant__ float table[4] = {1, 2, 3, 4};"), None);
        assert_eq!(kind("__device__ const float c = 1.f;"), None);
        assert_eq!(kind("__device__ const float* p;"), Some("persistent_state"));
        assert_eq!(kind("__device__ float* const p = nullptr;"), None);
        assert_eq!(
            kind("__device__ __align__(16) float buf[64];"),
            Some("persistent_state")
        );
        assert_eq!(
            kind("__device__ __attribute__((used)) int n;"),
            Some("persistent_state")
        );
        assert_eq!(
            kind("__global__ void __launch_bounds__(256, 2) k(float* y) { y[0] = 1.f; }"),
            None
        );
        assert_eq!(kind("__device__ float f(float x);\n__device__ __forceinline__ float g(float x) { return x; }"), None);
        assert_eq!(
            kind("__global__ void k() { static __shared__ float s[32]; __shared__ int t; }"),
            None
        );
        assert_eq!(
            kind("__global__ void k(long long* t) { long long v; asm volatile(\"mov.u64 %0, %%globaltimer;\" : \"=l\"(v)); t[0] = clock64() + v; }"),
            None
        );
    }
}
