//! The kernel source out of a model's answer.
//!
//! The answer's fenced code blocks (```` ```cuda ````, ```` ```cu ````, ```` ```cpp ````,
//! ```` ```c++ ````, ```` ```c ```` or no language) are read; the largest one that names the
//! entry kernel is the source. Everything outside that block is the reasoning notes, kept for
//! later prompts (I3). An empty answer, an answer without such a block, an unterminated block
//! (a truncated answer) or an empty block is rejected with the reason.

use super::defence::Rejection;

/// What was taken out of an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extracted {
    pub code: String,
    /// The answer outside the chosen block, trimmed (at most [`MAX_NOTES`] characters).
    pub notes: String,
}

/// Reasoning notes kept per proposal.
pub const MAX_NOTES: usize = 4000;

const LANGS: [&str; 8] = ["", "cuda", "cu", "cpp", "c++", "cxx", "c", "cuh"];

struct Block {
    lang: String,
    /// Byte range of the whole block, fences included.
    start: usize,
    end: usize,
    code: String,
}

/// The last `::` segment of a C++ entry name, without template arguments.
pub fn simple_entry(entry: &str) -> &str {
    let base = entry.split('<').next().unwrap_or(entry);
    base.rsplit("::").next().unwrap_or(base).trim()
}

fn blocks(answer: &str) -> Result<Vec<Block>, Rejection> {
    let mut out = Vec::new();
    let mut open: Option<(usize, String, usize)> = None; // (block start, lang, code start)
    let mut pos = 0;
    for line in answer.split_inclusive('\n') {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("```") {
            match open.take() {
                None => {
                    // The language is the tag's first word (```cuda title="k.cu" → cuda).
                    let lang = rest
                        .trim()
                        .split(|c: char| c.is_whitespace() || c == ':' || c == '{' || c == ',')
                        .next()
                        .unwrap_or("")
                        .to_ascii_lowercase();
                    open = Some((pos, lang, pos + line.len()))
                }
                Some((start, lang, code_start)) => {
                    out.push(Block {
                        lang,
                        start,
                        end: pos + line.len(),
                        code: answer[code_start..pos].to_string(),
                    });
                }
            }
        }
        pos += line.len();
    }
    if open.is_some() {
        return Err(Rejection::new(
            "unterminated_block",
            "the answer's last code block is never closed (a truncated answer?)",
        ));
    }
    Ok(out)
}

/// Takes the kernel source defining `entry` out of `answer`.
pub fn extract(answer: &str, entry: &str) -> Result<Extracted, Rejection> {
    if answer.trim().is_empty() {
        return Err(Rejection::new("empty_answer", "the model answered nothing"));
    }
    let name = simple_entry(entry);
    let all = blocks(answer)?;
    let code_blocks: Vec<&Block> = all
        .iter()
        .filter(|b| LANGS.contains(&b.lang.as_str()))
        .collect();
    if code_blocks.is_empty() {
        return Err(Rejection::new(
            "no_code",
            "the answer holds no fenced code block (```cuda ... ```)",
        ));
    }
    let best = code_blocks
        .iter()
        .filter(|b| contains_word(&b.code, name))
        .max_by_key(|b| b.code.len())
        .ok_or_else(|| {
            if code_blocks.iter().all(|b| b.code.trim().is_empty()) {
                Rejection::new("empty_code", "the answer's code blocks are empty")
            } else {
                Rejection::new(
                    "no_entry",
                    format!("no code block of the answer defines the entry kernel `{name}`"),
                )
            }
        })?;
    let notes = format!("{}\n{}", &answer[..best.start], &answer[best.end..]);
    let notes = notes.trim();
    let notes = match notes.char_indices().nth(MAX_NOTES) {
        Some((i, _)) => format!("{}…", &notes[..i]),
        None => notes.to_string(),
    };
    Ok(Extracted {
        code: best.code.clone(),
        notes,
    })
}

/// Whether `word` occurs in `text` as a whole identifier.
pub fn contains_word(text: &str, word: &str) -> bool {
    if word.is_empty() {
        return false;
    }
    let is_id = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        !before.is_some_and(is_id) && !after.is_some_and(is_id)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: &str = "extern \"C\" __global__ void k(float* y) { y[0] = 1; }\n";

    #[test]
    fn largest_block_naming_the_entry() {
        let a = format!(
            "I unrolled the loop.\n```cuda\n{K}```\nand a helper:\n```cpp\nint helper();\n```\n```\n// longer but other\n__global__ void other() {{}}\n```\nDone."
        );
        let e = extract(&a, "k").unwrap();
        assert_eq!(e.code, K);
        assert!(e.notes.starts_with("I unrolled the loop."));
        assert!(e.notes.contains("int helper();"));
        assert!(e.notes.ends_with("Done."));
        let two = format!("```cuda\n{K}```\n```cu\n// v2\n{K}```");
        assert!(extract(&two, "k").unwrap().code.starts_with("// v2"));
        assert_eq!(
            extract(&format!("```cuda\n{K}```"), "ns::k<128>")
                .unwrap()
                .code,
            K
        );
        let titled = format!("```CUDA title=\"k.cu\"\n{K}```");
        assert_eq!(extract(&titled, "k").unwrap().code, K);
    }

    #[test]
    fn rejections() {
        let kind = |a: &str| extract(a, "k").unwrap_err().kind;
        assert_eq!(kind("  \n"), "empty_answer");
        assert_eq!(kind("I would use shared memory."), "no_code");
        assert_eq!(kind("```python\nprint(1)\n```"), "no_code");
        assert_eq!(kind("```cuda\n\n```"), "empty_code");
        assert_eq!(kind("```cuda\n__global__ void kk() {}\n```"), "no_entry");
        assert_eq!(kind(&format!("```cuda\n{K}")), "unterminated_block");
    }

    #[test]
    fn words() {
        assert!(contains_word("void k(", "k"));
        assert!(!contains_word("void kk(", "k"));
        assert!(!contains_word("softmax_ref_x", "softmax_ref"));
    }
}
