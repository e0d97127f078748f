//! The known cheats of LLM-written kernels (`tests/fixtures/cheats/*.cu`, one per cheat, each
//! stating `// expect: KIND` on its first line) against the static defences, as the task
//! softmax_bf16 sets them up. `expect: dynamic` marks a cheat no static check can see (outputs
//! left unwritten): the test asserts that the static check lets it through, so nobody believes
//! otherwise; the correctness gate (NaN-poisoned outputs, unwritten count) is what catches it.
//!
//! `tests/fixtures/cheats/hidden/*.cu` are cheats hidden from the first pass (a macro, a line
//! splice, digraphs, token pasting, a fake line marker): each passes `check` and is caught by
//! the preprocessed pass (`nvcc -E` with the task's defines; without nvcc the test prints
//! `SKIPPED: nvcc not found` and passes).

use std::path::Path;

use evoengineer::eval::compile::{CompileJob, CompilerSettings};
use evoengineer::llm::defence::{check, check_preprocessed, DefenceContext, Preprocessor};
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

fn fixtures(dir: &Path) -> Vec<(std::path::PathBuf, String, String)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let code = std::fs::read_to_string(&f).unwrap();
            let expect = code
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("// expect: "))
                .unwrap_or_else(|| panic!("{}: no `// expect:` line", f.display()))
                .trim()
                .to_string();
            (f, code, expect)
        })
        .collect()
}

#[test]
fn cheats_hidden_from_the_text_are_caught_after_preprocessing() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let pp = Preprocessor::new(&CompilerSettings::default(), "sm_90a");
    if let Some(why) = pp.unavailable_reason() {
        // Straight to stderr, in one write: libtest captures `eprintln!` of passing tests.
        let line = format!("\nSKIPPED: nvcc not found (run scripts/setup-cuda) [cheats: {why}]\n");
        let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
        return;
    }
    let task = Task::load(&root.join("tasks/softmax_bf16")).unwrap();
    let ctx = DefenceContext::for_task(&task);
    let hidden = fixtures(&root.join("tests/fixtures/cheats/hidden"));
    assert!(hidden.len() >= 6, "fixtures missing");
    for (f, code, expect) in hidden {
        assert_eq!(check(&code, &ctx), Ok(()), "{}: not hidden", f.display());
        let job = CompileJob::for_candidate(
            &task,
            &task.space.default_config(),
            task.default_shape(),
            "sm_90a",
            Some(&code),
        )
        .unwrap();
        let got = check_preprocessed(&job, &ctx, &pp);
        assert_eq!(
            got.as_ref().map_err(|r| r.kind),
            Err(expect.as_str()),
            "{}: {got:?}",
            f.display()
        );
        let message = got.unwrap_err().message;
        assert!(message.contains("after preprocessing"), "{message}");
    }
}
