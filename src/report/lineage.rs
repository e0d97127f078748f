//! The "Code evolution" section: the lineage tree of a run's model-written sources, from the
//! task's own kernel (`base`), and each source's unified diff against its first parent.

use std::collections::{HashMap, HashSet};
use std::fmt::Write;

use similar::TextDiff;

use crate::candidate::SourceRef;
use crate::eval::Outcome;
use crate::search::Trial;
use crate::store::SourceRecord;

use super::fmt_us;
use super::svg::escape;

pub(crate) const CSS: &str = r#"
ul.lineage { list-style: none; padding-left: 1.2em; border-left: 1px solid var(--line); margin: 0.2em 0; }
ul.lineage li { margin: 0.2em 0; }
pre.diff { background: #fff; border: 1px solid var(--line); padding: 0.5em; overflow-x: auto; font-size: 12px; }
pre.diff .add { color: #1e7b34; background: #e6f6ea; }
pre.diff .del { color: #b3261e; background: #fbe9e7; }
pre.diff .hunk { color: #5d6776; }
"#;

/// How a source did in the run: the best p50 over its trials, or the outcome of its first
/// failed one.
struct Score {
    outcome: String,
    p50: Option<f64>,
}

fn score(s: &SourceRecord, trials: &[Trial]) -> Score {
    let mine: Vec<&Trial> = trials
        .iter()
        .filter(|t| matches!(&t.candidate.source, SourceRef::Variant(h) if *h == s.hash))
        .collect();
    let p50 = mine
        .iter()
        .filter_map(|t| t.evaluation.p50_us())
        .min_by(f64::total_cmp);
    let outcome = if p50.is_some() {
        Outcome::Ok.as_str().to_string()
    } else if let Some(t) = mine.first() {
        t.evaluation.outcome.as_str().to_string()
    } else if let Some(r) = &s.rejection {
        format!("rejected: {r}")
    } else {
        "not evaluated".to_string()
    };
    Score { outcome, p50 }
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

/// The unified diff of `new` against `old`, escaped, one `<span>` per changed line.
pub(crate) fn diff_html(old: &str, new: &str, old_name: &str, new_name: &str) -> String {
    let diff = TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(old_name, new_name)
        .to_string();
    let mut o = String::from("<pre class=\"diff\">");
    for line in diff.lines() {
        let class = if line.starts_with("+++") || line.starts_with("---") {
            None
        } else if line.starts_with('+') {
            Some("add")
        } else if line.starts_with('-') {
            Some("del")
        } else if line.starts_with("@@") {
            Some("hunk")
        } else {
            None
        };
        match class {
            Some(c) => {
                let _ = writeln!(o, "<span class=\"{c}\">{}</span>", escape(line));
            }
            None => {
                let _ = writeln!(o, "{}", escape(line));
            }
        }
    }
    o.push_str("</pre>");
    o
}

/// The section, or nothing when the run has no sources. `base_code` is the task's kernel
/// source (`None` when it cannot be read: the diffs of base's children are then against an
/// empty file).
pub(crate) fn section<'a>(
    sources: &'a [SourceRecord],
    trials: &[Trial],
    base_code: Option<&str>,
) -> String {
    if sources.is_empty() {
        return String::new();
    }
    let by_hash: HashMap<&str, &SourceRecord> =
        sources.iter().map(|s| (s.hash.as_str(), s)).collect();
    // The first parent when it is one of the run's sources, else base.
    fn first_parent<'a>(
        s: &'a SourceRecord,
        by_hash: &HashMap<&str, &SourceRecord>,
    ) -> Option<&'a str> {
        s.parents
            .first()
            .map(String::as_str)
            .filter(|p| *p != s.hash && by_hash.contains_key(p))
    }
    let parent = |s: &'a SourceRecord| first_parent(s, &by_hash);
    let mut children: HashMap<Option<&str>, Vec<&SourceRecord>> = HashMap::new();
    for s in sources {
        children.entry(parent(s)).or_default().push(s);
    }
    let base_p50 = trials
        .iter()
        .filter(|t| t.candidate.source == SourceRef::Base)
        .filter_map(|t| t.evaluation.p50_us())
        .min_by(f64::total_cmp);

    let mut o = String::new();
    o.push_str("<h2 id=\"evolution\">Code evolution</h2>\n");
    let _ = writeln!(
        o,
        "<p>The {} model-written source(s) of this run, each under its first parent. p50 is the best over the source's trials; the speedup is against the base kernel's best p50 ({}).</p>",
        sources.len(),
        escape(&base_p50.map(fmt_us).unwrap_or_else(|| "-".into()))
    );
    o.push_str("<ul class=\"lineage\" id=\"lineage\">\n<li><b>base</b> — the task's kernel");
    let mut seen = HashSet::new();
    tree(&mut o, None, &children, trials, base_p50, &mut seen);
    o.push_str("</li>\n</ul>\n");
    // Sources in a parent cycle are not reached from base: list them at the top level.
    for s in sources {
        if !seen.contains(s.hash.as_str()) {
            o.push_str("<ul class=\"lineage\">\n");
            node(&mut o, s, &children, trials, base_p50, &mut seen);
            o.push_str("</ul>\n");
        }
    }

    o.push_str("<h3>Diffs against the first parent</h3>\n");
    for s in sources {
        let (pname, pcode) = match parent(s) {
            Some(p) => (format!("src:{}", short(p)), by_hash[p].code.as_str()),
            None => ("base".to_string(), base_code.unwrap_or("")),
        };
        let sc = score(s, trials);
        let _ = writeln!(
            o,
            "<details id=\"diff-{}\"><summary><code>src:{}</code> from <code>{}</code> — {}, {}</summary>",
            escape(&s.hash),
            escape(short(&s.hash)),
            escape(&pname),
            escape(s.operator.as_deref().unwrap_or("-")),
            escape(&sc.outcome)
        );
        o.push_str(&diff_html(
            pcode,
            &s.code,
            &pname,
            &format!("src:{}", short(&s.hash)),
        ));
        o.push_str("</details>\n");
    }
    o
}

fn tree<'a>(
    o: &mut String,
    at: Option<&'a str>,
    children: &HashMap<Option<&'a str>, Vec<&'a SourceRecord>>,
    trials: &[Trial],
    base_p50: Option<f64>,
    seen: &mut HashSet<&'a str>,
) {
    let Some(kids) = children.get(&at) else {
        return;
    };
    o.push_str("\n<ul class=\"lineage\">\n");
    for s in kids {
        node(o, s, children, trials, base_p50, seen);
    }
    o.push_str("</ul>\n");
}

fn node<'a>(
    o: &mut String,
    s: &'a SourceRecord,
    children: &HashMap<Option<&'a str>, Vec<&'a SourceRecord>>,
    trials: &[Trial],
    base_p50: Option<f64>,
    seen: &mut HashSet<&'a str>,
) {
    if !seen.insert(s.hash.as_str()) {
        return;
    }
    let sc = score(s, trials);
    let speedup = match (base_p50, sc.p50) {
        (Some(b), Some(p)) => format!("{:.2}×", b / p),
        _ => "-".into(),
    };
    let _ = write!(
        o,
        "<li><a href=\"#diff-{}\"><code>src:{}</code></a> {} · {} · {} · p50 {} · speedup {}",
        escape(&s.hash),
        escape(short(&s.hash)),
        escape(s.operator.as_deref().unwrap_or("-")),
        escape(s.model.as_deref().unwrap_or("-")),
        escape(&sc.outcome),
        escape(&sc.p50.map(fmt_us).unwrap_or_else(|| "-".into())),
        escape(&speedup)
    );
    tree(o, Some(s.hash.as_str()), children, trials, base_p50, seen);
    o.push_str("</li>\n");
}
