//! Finding the entry kernel among the symbols ptxas compiled, for nvcc (NVRTC lowers the name
//! itself, through `nvrtcAddNameExpression`).
//!
//! `kernel.entry` may be an `extern "C"` name (the symbol itself), a mangled symbol
//! (`_Z…`), or a C++ name: `name`, `ns::name`, `name<128, 4>`. A C++ name is matched against
//! the mangled symbols by its qualified name and, when it has template arguments that are all
//! integers (or `true`/`false`), by their values; anything else must be written mangled.
//! A template kernel must be instantiated in the source (`template __global__ void k<128>(…);`)
//! for nvcc to emit it.

/// The symbol of `wanted` among `symbols`, or why there is none.
pub fn resolve(wanted: &str, symbols: &[String]) -> Result<String, String> {
    let wanted = wanted.trim();
    if let Some(s) = symbols.iter().find(|s| *s == wanted) {
        return Ok(s.clone());
    }
    let listing = || {
        if symbols.is_empty() {
            "ptxas compiled no entry function".to_string()
        } else {
            format!(
                "the compiled entry functions are: {}",
                symbols
                    .iter()
                    .map(|s| describe(s))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    };
    let Some(name) = CppName::parse(wanted) else {
        return Err(format!("no entry function `{wanted}`; {}", listing()));
    };
    let matches: Vec<&String> = symbols
        .iter()
        .filter(|s| {
            demangle_prefix(s).is_some_and(|m| {
                m.components == name.components
                    && match (&name.int_args, &m.int_args) {
                        (Some(want), Some(have)) => want == have,
                        _ => true,
                    }
            })
        })
        .collect();
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(format!(
            "no entry function `{wanted}`; {} (a template kernel must be instantiated \
             explicitly in the source)",
            listing()
        )),
        many => Err(format!(
            "`{wanted}` matches several entry functions: {}; write the mangled name in \
             kernel.entry",
            many.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// `_Z2tkILi128EEvPf` → `_Z2tkILi128EEvPf (tk<128>)`; other names as they are.
fn describe(symbol: &str) -> String {
    match demangle_prefix(symbol) {
        Some(m) => {
            let args = m
                .int_args
                .map(|a| {
                    format!(
                        "<{}>",
                        a.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
                    )
                })
                .unwrap_or_default();
            format!("{symbol} ({}{args})", m.components.join("::"))
        }
        None => symbol.to_string(),
    }
}

/// A C++ function name as written in a manifest.
#[derive(Debug, PartialEq, Eq)]
struct CppName {
    components: Vec<String>,
    /// The template arguments, when there are some and all are integers.
    int_args: Option<Vec<i64>>,
}

impl CppName {
    fn parse(text: &str) -> Option<CppName> {
        let text = text.trim().trim_start_matches('&').trim();
        let text = text.strip_prefix("::").unwrap_or(text);
        // Drop a parameter list, if any.
        let text = text.split('(').next()?.trim();
        let (path, args) = match text.find('<') {
            Some(i) => {
                let args = text[i + 1..].trim_end().strip_suffix('>')?;
                (&text[..i], Some(args))
            }
            None => (text, None),
        };
        let components: Vec<String> = path.split("::").map(|c| c.trim().to_string()).collect();
        if components.iter().any(|c| !is_identifier(c)) {
            return None;
        }
        let int_args = args.and_then(|a| {
            a.split(',')
                .map(|v| parse_int_literal(v.trim()))
                .collect::<Option<Vec<i64>>>()
        });
        Some(CppName {
            components,
            int_args,
        })
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_int_literal(v: &str) -> Option<i64> {
    match v {
        "true" => return Some(1),
        "false" => return Some(0),
        _ => {}
    }
    let v = v.trim_end_matches(['u', 'U', 'l', 'L']);
    let (neg, digits) = match v.strip_prefix('-') {
        Some(d) => (true, d.trim()),
        None => (false, v),
    };
    let n: i64 = if let Some(hex) = digits.strip_prefix("0x").or(digits.strip_prefix("0X")) {
        i64::from_str_radix(hex, 16).ok()?
    } else {
        digits.parse().ok()?
    };
    Some(if neg { -n } else { n })
}

/// The qualified name (and integer template arguments) at the front of an Itanium-mangled
/// function symbol: enough to match a kernel, not a demangler.
#[derive(Debug, PartialEq, Eq)]
struct Mangled {
    components: Vec<String>,
    int_args: Option<Vec<i64>>,
}

fn demangle_prefix(symbol: &str) -> Option<Mangled> {
    let s = symbol.strip_prefix("_Z")?.as_bytes();
    let mut pos = 0;
    let mut components = Vec::new();
    let mut int_args = None;
    if s.first() == Some(&b'N') {
        pos += 1;
        while matches!(s.get(pos), Some(b'r' | b'V' | b'K')) {
            pos += 1;
        }
        loop {
            match s.get(pos)? {
                b'E' => break,
                b'I' => {
                    let (args, next) = template_args(s, pos)?;
                    int_args = args;
                    pos = next;
                }
                b'S' if s.get(pos + 1) == Some(&b't') => {
                    components.push("std".to_string());
                    pos += 2;
                }
                c if c.is_ascii_digit() => {
                    let (name, next) = source_name(s, pos)?;
                    components.push(name);
                    int_args = None;
                    pos = next;
                }
                _ => return None,
            }
        }
    } else {
        let (name, next) = source_name(s, pos)?;
        components.push(name);
        pos = next;
        if s.get(pos) == Some(&b'I') {
            int_args = template_args(s, pos)?.0;
        }
    }
    Some(Mangled {
        components,
        int_args,
    })
}

/// `<length><identifier>` at `pos`.
fn source_name(s: &[u8], pos: usize) -> Option<(String, usize)> {
    let digits = s[pos..].iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let len: usize = std::str::from_utf8(&s[pos..pos + digits])
        .ok()?
        .parse()
        .ok()?;
    let start = pos + digits;
    let name = s.get(start..start + len)?;
    Some((String::from_utf8(name.to_vec()).ok()?, start + len))
}

/// `I … E` at `pos`: the values of the arguments when every one is an integer literal
/// (`L<type>[n]<digits>E`), and the position after the closing `E`.
fn template_args(s: &[u8], pos: usize) -> Option<(Option<Vec<i64>>, usize)> {
    let end = skip_group(s, pos)?;
    let inner = &s[pos + 1..end - 1];
    let mut values = Vec::new();
    let mut q = 0;
    while q < inner.len() {
        if inner[q] != b'L' || !inner.get(q + 1).is_some_and(|c| c.is_ascii_lowercase()) {
            return Some((None, end));
        }
        q += 2;
        let neg = inner.get(q) == Some(&b'n');
        if neg {
            q += 1;
        }
        let digits = inner[q..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 || inner.get(q + digits) != Some(&b'E') {
            return Some((None, end));
        }
        let v: i64 = std::str::from_utf8(&inner[q..q + digits])
            .ok()?
            .parse()
            .ok()?;
        values.push(if neg { -v } else { v });
        q += digits + 1;
    }
    Some((Some(values), end))
}

/// The position after the `E` that closes the group opened at `pos` (`I`, `N`, …), counting
/// nested groups (`I N L X J F Z DT Dt … E`) and skipping what holds digits that are not a
/// name's length: `<length><identifier>`, literals `L<type>[n]<digits>E`, substitutions
/// `S<seq>_`, template parameters `T<seq>_`, arrays `A<n>_` and vectors `Dv<n>_`.
fn skip_group(s: &[u8], pos: usize) -> Option<usize> {
    let seq = |mut p: usize, digits_only: bool| -> Option<usize> {
        while s
            .get(p)
            .is_some_and(|c| c.is_ascii_digit() || (!digits_only && c.is_ascii_uppercase()))
        {
            p += 1;
        }
        (s.get(p) == Some(&b'_')).then_some(p + 1)
    };
    let mut depth = 0usize;
    let mut p = pos;
    loop {
        let c = *s.get(p)?;
        let next = s.get(p + 1).copied();
        match c {
            b'0'..=b'9' => p = source_name(s, p)?.1,
            b'L' if next.is_some_and(|n| n.is_ascii_lowercase()) => {
                p += 2;
                if s.get(p) == Some(&b'n') {
                    p += 1;
                }
                while s.get(p).is_some_and(u8::is_ascii_digit) {
                    p += 1;
                }
                if s.get(p) != Some(&b'E') {
                    return None;
                }
                p += 1;
            }
            b'S' if next.is_some_and(|n| n.is_ascii_lowercase()) => p += 2,
            b'S' | b'T' => p = seq(p + 1, false)?,
            b'A' => p = seq(p + 1, true)?,
            b'D' => match next? {
                b'v' => p = seq(p + 2, true)?,
                b'T' | b't' => {
                    depth += 1;
                    p += 2;
                }
                _ => p += 2,
            },
            b'I' | b'N' | b'L' | b'X' | b'J' | b'F' | b'Z' => {
                depth += 1;
                p += 1;
            }
            b'E' => {
                depth = depth.checked_sub(1)?;
                p += 1;
                if depth == 0 {
                    return Some(p);
                }
            }
            _ => p += 1,
        }
        if depth == 0 {
            // Only reachable if `pos` did not open a group.
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syms() -> Vec<String> {
        [
            "_ZN2ns5innerEPd",
            "with_dyn_smem",
            "plain",
            "_Z10cpp_kernelPfi",
            "_Z2tkILi256EEvPf",
            "_Z2tkILi128EEvPf",
            "_ZN4gemm6kernelILi128ELi64ELb1EEEvPKfPfi",
            "_ZN4gemm6kernelILi64ELi64ELb0EEEvPKfPfi",
            "_Z5mixedIfLi4EEvPT_",
            "_Z3negILin3EEvPi",
        ]
        .map(String::from)
        .to_vec()
    }

    #[test]
    fn extern_c_and_mangled_names_match_exactly() {
        assert_eq!(resolve("plain", &syms()).unwrap(), "plain");
        assert_eq!(
            resolve("_Z2tkILi128EEvPf", &syms()).unwrap(),
            "_Z2tkILi128EEvPf"
        );
    }

    #[test]
    fn cpp_names() {
        assert_eq!(resolve("cpp_kernel", &syms()).unwrap(), "_Z10cpp_kernelPfi");
        assert_eq!(resolve("ns::inner", &syms()).unwrap(), "_ZN2ns5innerEPd");
        assert_eq!(resolve("&ns::inner", &syms()).unwrap(), "_ZN2ns5innerEPd");
        assert_eq!(
            resolve("cpp_kernel(float*, int)", &syms()).unwrap(),
            "_Z10cpp_kernelPfi"
        );
    }

    #[test]
    fn template_instances_by_integer_arguments() {
        assert_eq!(resolve("tk<128>", &syms()).unwrap(), "_Z2tkILi128EEvPf");
        assert_eq!(resolve("tk<256>", &syms()).unwrap(), "_Z2tkILi256EEvPf");
        assert_eq!(
            resolve("gemm::kernel<64, 64, false>", &syms()).unwrap(),
            "_ZN4gemm6kernelILi64ELi64ELb0EEEvPKfPfi"
        );
        assert_eq!(resolve("neg<-3>", &syms()).unwrap(), "_Z3negILin3EEvPi");
        // A type argument: matched by name alone, and there is one instance.
        assert_eq!(
            resolve("mixed<float, 4>", &syms()).unwrap(),
            "_Z5mixedIfLi4EEvPT_"
        );
    }

    #[test]
    fn ambiguous_and_missing() {
        let err = resolve("tk", &syms()).unwrap_err();
        assert!(
            err.contains("several") && err.contains("_Z2tkILi256EEvPf"),
            "{err}"
        );
        let err = resolve("tk<512>", &syms()).unwrap_err();
        assert!(err.contains("no entry function `tk<512>`"), "{err}");
        assert!(err.contains("_Z2tkILi128EEvPf (tk<128>)"), "{err}");
        let err = resolve("inner", &syms()).unwrap_err();
        assert!(err.contains("ns::inner"), "{err}");
        let err = resolve("k", &[]).unwrap_err();
        assert!(err.contains("no entry function"), "{err}");
    }

    #[test]
    fn demangles_prefixes() {
        let m = demangle_prefix("_ZN4gemm6kernelILi128ELi64ELb1EEEvPKfPfi").unwrap();
        assert_eq!(m.components, ["gemm", "kernel"]);
        assert_eq!(m.int_args, Some(vec![128, 64, 1]));
        let m = demangle_prefix("_Z5mixedIfLi4EEvPT_").unwrap();
        assert_eq!(m.int_args, None);
        let m = demangle_prefix("_Z1kI6MyTypeLi2EEvv").unwrap();
        assert_eq!((m.components, m.int_args), (vec!["k".to_string()], None));
        // Vectors, arrays, substitutions, nested types, function types as arguments.
        for sym in [
            "_Z1kIDv4_fLi2EEvv",
            "_Z1kIA10_iEvv",
            "_Z1kISt4pairIiiEEvv",
            "_Z1kIN2ns1TILi3EEEEvv",
            "_Z1kIFviEEvv",
        ] {
            let m = demangle_prefix(sym).unwrap_or_else(|| panic!("{sym}"));
            assert_eq!(m.components, ["k"], "{sym}");
            assert_eq!(m.int_args, None, "{sym}");
        }
        assert!(demangle_prefix("plain").is_none());
    }
}
