//! Static defences: checks on a model-written source before it reaches the compiler.
//!
//! They catch what a kernel source can do to fool the harness without computing the answer
//! (known cheats in LLM-written kernels, `/work/shared/FACTS.md`):
//!
//! | kind | what | why |
//! |---|---|---|
//! | `host_include` | `#include` of anything but the CUDA device headers, `<stdint.h>`-like C headers and the task folder's own headers | host libraries (cuBLAS, threads, I/O) do the work elsewhere |
//! | `host_api` | a call of a CUDA runtime or driver API (`cudaStreamCreate…`, `cudaMemcpy…`, `cudaLaunch…`, `cudaDeviceSynchronize`, `cuLaunchKernel`, …) or a mention of `cudaStreamFireAndForget`/`cudaStreamTailLaunch` | work on another stream the timer misses |
//! | `dynamic_parallelism` | `<<<` | a kernel launching kernels (on other streams) |
//! | `reads_reference` | the reference kernel's entry name or file name | copying the reference's answer |
//! | `persistent_state` | a non-const `__device__`/`__managed__` variable at file scope, or a `static` variable inside a function (not `__shared__`, not const) | results cached between calls |
//!
//! Comments and string literals are ignored. `asm volatile` (with `%globaltimer`, `clock64` or
//! anything else) is allowed, and so are `__constant__` tables and the device-side PDL calls
//! `cudaGridDependencySynchronize` and `cudaTriggerProgrammaticLaunchCompletion`.
//!
//! Outputs left unwritten cannot be seen in the source: the correctness gate poisons outputs
//! with NaN before every launch and counts unwritten elements, so such a kernel fails there.
//! The persistent-state rule is a heuristic: it also rejects honest uses (a self-resetting
//! grid-wide counter); a model is told to avoid them.

use super::extract::contains_word;

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

/// Checks `code`; the first failed rule.
pub fn check(code: &str, ctx: &DefenceContext) -> Result<(), Rejection> {
    let no_comments = strip(code, false);
    check_includes(&no_comments, ctx)?;
    let bare = strip(code, true);
    if bare.contains("<<<") {
        return Err(Rejection::new(
            "dynamic_parallelism",
            "the source launches a kernel from the device (`<<<`)",
        ));
    }
    for (name, after) in identifiers(&bare) {
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
        if api && call && !ALLOWED_CUDA_CALLS.contains(&name) {
            return Err(Rejection::new(
                "host_api",
                format!("the source calls the CUDA API `{name}`; a candidate is one kernel and may not allocate, copy, synchronize or launch"),
            ));
        }
    }
    if let Some(r) = &ctx.reference_entry {
        if contains_word(&bare, r) {
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
    check_state(&bare)
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
/// string and character literals blanked.
pub fn strip(code: &str, strings: bool) -> String {
    let mut out = String::with_capacity(code.len());
    let mut chars = code.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for d in chars.by_ref() {
                    if d == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut prev = ' ';
                for d in chars.by_ref() {
                    if d == '\n' {
                        out.push('\n');
                    }
                    if prev == '*' && d == '/' {
                        break;
                    }
                    prev = d;
                }
                out.push(' ');
            }
            '"' | '\'' => {
                out.push(c);
                let mut escaped = false;
                for d in chars.by_ref() {
                    if escaped {
                        escaped = false;
                        if !strings {
                            out.push(d);
                        }
                        continue;
                    }
                    if d == '\\' {
                        escaped = true;
                        if !strings {
                            out.push(d);
                        }
                        continue;
                    }
                    if d == c {
                        break;
                    }
                    if !strings || d == '\n' {
                        out.push(d);
                    }
                }
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
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
