//! Secrets kept out of everything stored or printed: API keys, `Authorization`-style header
//! values, bearer tokens, and the credentials of URLs.
//!
//! [`redact`] is the one function that hides them. It is applied where error texts are built
//! (the model providers), where text is stored (the store: a run's command line and settings,
//! trial evaluations, sources, failures, queue results) and where text is printed (the log
//! writer and the binary's error message). It replaces with `***`:
//!
//! - every value [`register`]ed in this process (the API key when a provider reads it, the
//!   password of a `--db` or base URL), wherever it appears;
//! - the password of a URL (`scheme://user:PASSWORD@host`, kept: `user:***@`); a user name
//!   without a password is hidden too (`https://***@host`: it may be a token), except in a
//!   PostgreSQL URL, where it is only the role;
//! - the value after `Authorization`, `Proxy-Authorization`, `api-key`, `x-api-key`, `api_key`,
//!   `apikey`, `password`, `passwd`, `secret`, `access_token`, `auth_token` and `:` or `=`
//!   (an HTTP header, a JSON or Python field, a flag), keeping an authorization scheme such as
//!   `Bearer` or `Basic`;
//! - query parameters `key=`, `api_key=`, `api-key=`, `apikey=`, `token=`, `access_token=`,
//!   `password=`, `passwd=`, `pwd=`, `secret=`, `sig=`, `signature=`, `auth=` (after `?` or `&`);
//! - the token after `Bearer`.
//!
//! A value ends at whitespace, a quote, a backslash or one of `, ; & # < > ( ) { } [ ]`, so the
//! text of a JSON document stays valid JSON after redaction: a masked value never takes a quote
//! or part of an escape sequence with it.

use std::sync::Mutex;

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// Registered values shorter than this are not masked wherever they appear (too likely to be
/// ordinary text); the patterns still hide them where they stand as keys or passwords.
const MIN_KNOWN_LEN: usize = 6;

/// Values registered in this process, longest first.
static KNOWN: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Field and header names whose value is a secret.
const NAMES: &[&str] = &[
    "authorization",
    "api-key",
    "api_key",
    "apikey",
    "password",
    "passwd",
    "secret",
    "access_token",
    "auth_token",
    "auth-token",
];

/// Query parameters whose value is a secret.
const QUERY_NAMES: &[&str] = &[
    "key",
    "api_key",
    "api-key",
    "apikey",
    "token",
    "access_token",
    "password",
    "passwd",
    "pwd",
    "secret",
    "sig",
    "signature",
    "auth",
];

/// Authorization schemes kept in front of the masked credentials.
const SCHEMES: &[&str] = &["bearer", "basic", "token", "digest", "apikey"];

/// Remembers `secret` so that [`redact`] hides it wherever it appears.
pub fn register(secret: &str) {
    let s = secret.trim();
    if s.len() < MIN_KNOWN_LEN || s.contains(MASK) {
        return;
    }
    let mut known = KNOWN.lock().unwrap_or_else(|e| e.into_inner());
    if !known.iter().any(|k| k == s) {
        known.push(s.to_string());
        known.sort_by_key(|k| std::cmp::Reverse(k.len()));
    }
}

/// Registers the secrets in a URL: the password of its user information (the user name too
/// where there is no password) and the values of credential query parameters.
pub fn register_url(url: &str) {
    for range in url_credentials(url.as_bytes()) {
        register(&url[range]);
    }
    for range in query_values(url.as_bytes()) {
        register(&url[range]);
    }
}

/// `text` with every secret this module knows of replaced by [`MASK`].
pub fn redact(text: &str) -> String {
    let mut out = mask_known(text);
    for rule in [url_credentials, named_values, query_values, bearer_tokens] {
        let ranges = rule(out.as_bytes());
        if !ranges.is_empty() {
            out = splice(&out, ranges);
        }
    }
    out
}

fn mask_known(text: &str) -> String {
    let known = KNOWN.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = text.to_string();
    for k in known.iter() {
        if out.contains(k.as_str()) {
            out = out.replace(k.as_str(), MASK);
        }
    }
    out
}

type Range = std::ops::Range<usize>;

/// `text` with each of `ranges` (any order, may overlap) replaced by [`MASK`].
fn splice(text: &str, mut ranges: Vec<Range>) -> String {
    ranges.sort_by_key(|r| r.start);
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for r in ranges {
        if r.start < at {
            at = at.max(r.end);
            continue;
        }
        out.push_str(&text[at..r.start]);
        out.push_str(MASK);
        at = r.end;
    }
    out.push_str(&text[at..]);
    out
}

/// Whether `b` ends a secret value.
fn ends_value(b: u8) -> bool {
    b.is_ascii_whitespace() || b"\"'`\\,;&#<>(){}[]".contains(&b)
}

/// The end of the value starting at `start`.
fn value_end(t: &[u8], start: usize) -> usize {
    t[start..]
        .iter()
        .position(|&b| ends_value(b))
        .map_or(t.len(), |n| start + n)
}

/// The range of a value at `start`, unless it is empty or already masked.
fn value_at(t: &[u8], start: usize) -> Option<Range> {
    let end = value_end(t, start);
    (end > start && &t[start..end] != MASK.as_bytes()).then_some(start..end)
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// Positions where `name` (lowercase) occurs in `t` as a whole word, case-insensitively.
/// On the left any non-alphanumeric byte bounds it (so `x-api-key` and `OPENAI_API_KEY` hold
/// `api-key` and `api_key`); on the right, no word byte may follow.
fn word_matches<'t>(t: &'t [u8], name: &'t str) -> impl Iterator<Item = usize> + 't {
    let n = name.len();
    (0..t.len().saturating_sub(n - 1)).filter(move |&i| {
        t[i..i + n].eq_ignore_ascii_case(name.as_bytes())
            && (i == 0 || !t[i - 1].is_ascii_alphanumeric())
            && t.get(i + n).is_none_or(|&b| !is_word(b))
    })
}

/// The user information of every `scheme://user:password@host` in `t`: the password, or the
/// whole of it where there is no password (not in PostgreSQL URLs, whose user is a role).
fn url_credentials(t: &[u8]) -> Vec<Range> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(n) = find(&t[from..], b"://") {
        let sep = from + n;
        from = sep + 3;
        let scheme_start = t[..sep]
            .iter()
            .rposition(|&b| !(b.is_ascii_alphanumeric() || b"+.-".contains(&b)))
            .map_or(0, |p| p + 1);
        let scheme = &t[scheme_start..sep];
        let auth_start = sep + 3;
        let auth_end = t[auth_start..]
            .iter()
            .position(|&b| b"/?#\\\"'`<>".contains(&b) || b.is_ascii_whitespace())
            .map_or(t.len(), |p| auth_start + p);
        let Some(at) = t[auth_start..auth_end].iter().rposition(|&b| b == b'@') else {
            continue;
        };
        let at = auth_start + at;
        let user = &t[auth_start..at];
        let range = match user.iter().position(|&b| b == b':') {
            Some(c) => auth_start + c + 1..at,
            None if scheme.eq_ignore_ascii_case(b"postgres")
                || scheme.eq_ignore_ascii_case(b"postgresql") =>
            {
                continue
            }
            None => auth_start..at,
        };
        if !range.is_empty() && &t[range.clone()] != MASK.as_bytes() {
            out.push(range);
        }
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Skips bytes of `set` from `i`, and backslashes that escape a quote (`\"` in JSON text).
fn skip(t: &[u8], mut i: usize, set: &[u8]) -> usize {
    loop {
        match t.get(i) {
            Some(b) if set.contains(b) => i += 1,
            Some(b'\\') if matches!(t.get(i + 1), Some(b'"' | b'\'')) => i += 2,
            _ => return i,
        }
    }
}

/// The values of `NAME: value`, `NAME=value`, `"NAME": "value"` for the names in [`NAMES`].
fn named_values(t: &[u8]) -> Vec<Range> {
    let mut out = Vec::new();
    for name in NAMES {
        for i in word_matches(t, name) {
            let j = skip(t, i + name.len(), b" \t\"'");
            if !matches!(t.get(j), Some(b':' | b'=')) {
                continue;
            }
            let start = skip(t, j + 1, b" \t\"'[");
            let Some(first) = value_at(t, start) else {
                continue;
            };
            // `Bearer TOKEN`, `Basic CREDENTIALS`: the scheme stays, the credentials go.
            let is_scheme = *name == "authorization"
                && SCHEMES
                    .iter()
                    .any(|s| t[first.clone()].eq_ignore_ascii_case(s.as_bytes()));
            let after = skip(t, first.end, b" \t");
            match value_end(t, after) {
                _ if !is_scheme || after == first.end => out.push(first),
                end if end > after => {
                    if let Some(r) = value_at(t, after) {
                        out.push(r);
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// The values of credential query parameters (`?key=...`, `&token=...`).
fn query_values(t: &[u8]) -> Vec<Range> {
    let mut out = Vec::new();
    for (i, &b) in t.iter().enumerate() {
        if b != b'?' && b != b'&' {
            continue;
        }
        let name_end = t[i + 1..]
            .iter()
            .position(|&b| !(is_word(b) || b == b'.'))
            .map_or(t.len(), |p| i + 1 + p);
        if t.get(name_end) != Some(&b'=') {
            continue;
        }
        let name = &t[i + 1..name_end];
        if QUERY_NAMES
            .iter()
            .any(|q| name.eq_ignore_ascii_case(q.as_bytes()))
        {
            out.extend(value_at(t, name_end + 1));
        }
    }
    out
}

/// The token after every `Bearer `.
fn bearer_tokens(t: &[u8]) -> Vec<Range> {
    word_matches(t, "bearer")
        .filter_map(|i| {
            let start = skip(t, i + "bearer".len(), b" \t");
            (start > i + "bearer".len())
                .then(|| value_at(t, start))
                .flatten()
        })
        .collect()
}

#[cfg(test)]
mod tests;
