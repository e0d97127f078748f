//! The known cheats of LLM-written kernels (`tests/fixtures/cheats/*.cu`, one per cheat, each
//! stating `// expect: KIND` on its first line) against the static defences, as the task
//! softmax_bf16 sets them up. `expect: dynamic` marks a cheat no static check can see (outputs
//! left unwritten): the test asserts that the static check lets it through, so nobody believes
//! otherwise; the correctness gate (NaN-poisoned outputs, unwritten count) is what catches it.

use std::path::Path;

use evoengineer::llm::defence::{check, DefenceContext};
use evoengineer::task::Task;

#[test]
fn every_known_cheat_is_caught_statically_where_possible() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let task = Task::load(&root.join("tasks/softmax_bf16")).unwrap();
    let ctx = DefenceContext::for_task(&task);
    let mut files: Vec<_> = std::fs::read_dir(root.join("tests/fixtures/cheats"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        .collect();
    files.sort();
    assert!(files.len() >= 8, "fixtures missing");
    for f in files {
        let code = std::fs::read_to_string(&f).unwrap();
        let expect = code
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("// expect: "))
            .unwrap_or_else(|| panic!("{}: no `// expect:` line", f.display()))
            .trim();
        let got = check(&code, &ctx);
        match expect {
            "dynamic" => assert_eq!(
                got,
                Ok(()),
                "{}: expected to pass the static check (caught by the correctness gate)",
                f.display()
            ),
            kind => assert_eq!(
                got.as_ref().map_err(|r| r.kind),
                Err(kind),
                "{}: {got:?}",
                f.display()
            ),
        }
    }
}
