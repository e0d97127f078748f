//! `evoengineer study` end to end on a generated landscape.

mod common;

use common::{best_ok, evo, seed_task, write_landscape};
use serde_json::Value;

fn arm<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["arms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["arm"] == name)
        .unwrap_or_else(|| panic!("no arm {name}"))
}

#[test]
fn study_json_has_every_arm_and_sane_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let land = write_landscape(dir.path());
    let out = evo()
        .arg("study")
        .arg(seed_task())
        .arg("--replay")
        .arg(&land)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["optimum"]["p50_us"].as_f64().unwrap(), best_ok(&land));
    assert_eq!(v["space_size"], 128);
    assert_eq!(v["spec"]["seeds"], 50);
    assert_eq!(v["spec"]["budget"], 128);
    let names: Vec<&str> = v["arms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["arm"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "surrogate",
            "full",
            "full-no-insights",
            "full-no-elites",
            "full-no-two-layer",
            "insight",
            "free",
            "random",
            "grid"
        ]
    );
    for a in v["arms"].as_array().unwrap() {
        let name = a["arm"].as_str().unwrap();
        let t = &a["trajectory"];
        assert_eq!(a["trajectory_runs"].as_array().unwrap().len(), 50, "{name}");
        assert_eq!(a["default_runs"].as_array().unwrap().len(), 50, "{name}");
        assert_eq!(a["settings"]["limits"]["patience"], 0, "{name}");
        // Every run is a budget-128 walk of a 128-config space: every arm finds the optimum
        // (patience 0 never stops one early), within 2% no later than the optimum itself.
        assert_eq!(t["reached_optimum"], 1.0, "{name}");
        let to_opt = t["to_optimum_median"].as_f64().unwrap();
        let to_near = t["to_near_median"].as_f64().unwrap();
        assert!(to_near <= to_opt && to_opt <= 128.0, "{name}: {t}");
        for c in t["at"].as_array().unwrap() {
            let r = c["ratio"].as_f64().unwrap();
            assert!((1.0..1.2).contains(&r), "{name}: {c}");
        }
        let d = &a["default"];
        assert!(d["evaluations_median"].as_f64().unwrap() <= 128.0);
        assert!(d["median_gap_pct"].as_f64().unwrap() >= 0.0);
    }
    // The grid walks the space in order and always gets there, at the same evaluation.
    let grid = &arm(&v, "grid")["trajectory"];
    assert_eq!(grid["to_optimum_p90"], grid["to_optimum_median"]);
    assert!(grid["to_optimum_p90"].as_f64().unwrap() <= 128.0);
    // Random without replacement: the optimum's position is uniform over the space, so its
    // median is near half the space (64.5; 50 seeds put the sample median within ~±15).
    let random = arm(&v, "random")["trajectory"]["to_optimum_median"]
        .as_f64()
        .unwrap();
    assert!((40.0..=90.0).contains(&random), "random: {random}");
    // With default settings, random and grid never converge: they spend the budget.
    for name in ["random", "grid"] {
        assert_eq!(
            arm(&v, name)["default"]["stopped_by"]["budget"],
            50,
            "{name}"
        );
    }
    // Full converges under default settings.
    assert!(
        arm(&v, "full")["default"]["stopped_by"]["converged"]
            .as_u64()
            .unwrap()
            > 0
    );
}

#[test]
fn study_markdown_says_where_its_numbers_come_from() {
    let dir = tempfile::tempdir().unwrap();
    let land = write_landscape(dir.path());
    let md = dir.path().join("study.md");
    let out = evo()
        .arg("study")
        .arg(seed_task())
        .arg("--replay")
        .arg(&land)
        .args(["--seeds", "5", "--arms", "full,random,grid", "--out"])
        .arg(&md)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());
    let text = std::fs::read_to_string(&md).unwrap();
    let sha = evoengineer::task::sha256_hex(&std::fs::read(&land).unwrap());
    for needle in [
        "--arms full,random,grid",
        &land.display().to_string(),
        &sha[..12],
        "5 seeds per arm",
        "| full |",
        "| random |",
        "| grid |",
        "after 16",
        "after 64",
        "patience 10",
    ] {
        assert!(text.contains(needle), "no `{needle}` in:\n{text}");
    }
    assert!(!text.contains("| insight |"));
    // Four tables, each with a row per arm: evaluations to the optimum, best after N, default
    // settings, and the score against random search.
    assert_eq!(text.matches("\n| full |").count(), 4, "{text}");
    assert!(text.contains("Score against random search"), "{text}");
}

#[test]
fn study_refuses_bad_flags() {
    let dir = tempfile::tempdir().unwrap();
    let land = write_landscape(dir.path());
    for (args, expected) in [
        (vec!["--arms", "fast"], "unknown arm `fast`"),
        (vec!["--seeds", "0"], "--seeds"),
        (vec!["--budget", "0"], "--budget"),
        (vec!["--shape", "huge"], "no shape `huge`"),
    ] {
        let out = evo()
            .arg("study")
            .arg(seed_task())
            .arg("--replay")
            .arg(&land)
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(expected), "{args:?}: no `{expected}` in {err}");
    }
}

/// A copy of the seed task in `dir/name` (files only), with no landscapes of its own.
fn copy_task(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let to = dir.join(name);
    std::fs::create_dir_all(&to).unwrap();
    for e in std::fs::read_dir(seed_task()).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
    }
    to
}

#[test]
fn several_tasks_get_an_overview_and_one_without_a_landscape_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let with = copy_task(dir.path(), "with");
    let without = copy_task(dir.path(), "without");
    std::fs::create_dir_all(with.join("landscapes")).unwrap();
    let land = write_landscape(dir.path());
    std::fs::copy(&land, with.join("landscapes/h100-mission.jsonl")).unwrap();
    let out = evo()
        .arg("study")
        .arg(&with)
        .arg(&without)
        .args(["--seeds", "3", "--arms", "full,random"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let md = String::from_utf8(out.stdout).unwrap();
    assert!(md.starts_with("<!-- generated by: "), "{md}");
    assert!(md.contains("### Search study, every task"), "{md}");
    assert!(md.contains("| full |") && md.contains("| random |"), "{md}");
    // The task with a landscape has its own section; the other is named as skipped.
    assert_eq!(md.matches("### Search study: sdpa_fp8").count(), 1, "{md}");
    let skipped = format!(
        "no recorded landscape for shape `mission` in {}",
        without.join("landscapes").display()
    );
    assert!(md.contains(&skipped), "{md}");
    assert!(
        stderr.contains("skipped") && stderr.contains(&skipped),
        "{stderr}"
    );

    // JSON: the study and the skipped task.
    let out = evo()
        .arg("study")
        .arg(&with)
        .arg(&without)
        .args(["--seeds", "2", "--arms", "full", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["studies"].as_array().unwrap().len(), 1);
    assert_eq!(v["skipped"][0]["task"], "sdpa_fp8");

    // Nothing to study at all, or --replay with several tasks: an error that says so.
    let out = evo().arg("study").arg(&without).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no recorded landscape"));
    let out = evo()
        .arg("study")
        .arg(&with)
        .arg(&without)
        .arg("--replay")
        .arg(&land)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--replay names one landscape"));
}
