use super::*;
use crate::search::Variant;

fn seed_task() -> Task {
    crate::task::seed_space_task()
}

/// Every config of the seed space, p50 = 100 + its index in lexicographic order, but for the
/// last one (index 127) at 50 μs: the optimum. Index 3 fails to compile, index 9 is absent.
fn landscape(dir: &std::path::Path, task: &Task) -> PathBuf {
    let mut lines = Vec::new();
    for (i, c) in task.space.enumerate(1 << 20).unwrap().iter().enumerate() {
        if i == 9 {
            continue;
        }
        let mut o = serde_json::json!({ "config": task.space.to_json(c), "shape": "mission" });
        if i == 3 {
            o["outcome"] = "compile_error".into();
        } else {
            let p50 = if i == 127 { 50.0 } else { 100.0 + i as f64 };
            o["outcome"] = "ok".into();
            o["p50_us"] = p50.into();
        }
        lines.push(o.to_string());
    }
    let path = dir.join("l.jsonl");
    std::fs::write(&path, lines.join("\n")).unwrap();
    path
}

#[test]
fn arms_have_names_and_settings() {
    let names: Vec<String> = Arm::STANDARD.iter().map(Arm::name).collect();
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
    for a in Arm::STANDARD {
        assert_eq!(Arm::parse(&a.name()), Some(a));
    }
    let limits = Limits {
        budget: 7,
        patience: 0,
        time_limit: None,
    };
    let full = Arm::plain(Variant::Full).settings(3, limits);
    assert!(full.insights && full.two_layer && full.elites == 3);
    assert_eq!((full.seed, full.limits), (3, limits));
    assert!(
        !Arm::ablated(Ablation::NoInsights)
            .settings(0, limits)
            .insights
    );
    assert_eq!(
        Arm::ablated(Ablation::NoElites).settings(0, limits).elites,
        1
    );
    assert!(
        !Arm::ablated(Ablation::NoTwoLayer)
            .settings(0, limits)
            .two_layer
    );
    assert_eq!(
        serde_json::to_value(Arm::ablated(Ablation::NoElites)).unwrap(),
        "full-no-elites"
    );
}

#[test]
fn the_optimum_is_the_best_ok_record_of_the_shape() {
    let task = seed_task();
    let dir = tempfile::tempdir().unwrap();
    let replay = ReplayEvaluator::load(&landscape(dir.path(), &task), &task).unwrap();
    let o = Optimum::of_landscape(&replay, &task, task.default_shape()).unwrap();
    assert_eq!(o.p50_us, 50.0);
    assert_eq!(o.keys.len(), 1);
    assert!(o.keys[0].ends_with("USE_CP_ASYNC_3STAGE=1"), "{:?}", o.keys);
}

#[test]
fn no_ok_record_means_no_optimum() {
    let task = seed_task();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.jsonl");
    let c = task.space.to_json(&task.space.default_config());
    std::fs::write(
        &path,
        serde_json::json!({"config": c, "outcome": "incorrect"}).to_string(),
    )
    .unwrap();
    let mut replay = ReplayEvaluator::load(&path, &task).unwrap();
    let e = run_study(
        &task,
        task.default_shape(),
        &mut replay,
        &StudySpec::default(),
        None,
    )
    .unwrap_err();
    assert!(e.to_string().contains("no `ok` record"), "{e}");
}

#[test]
fn a_small_study_adds_up() {
    let task = seed_task();
    let dir = tempfile::tempdir().unwrap();
    let mut replay = ReplayEvaluator::load(&landscape(dir.path(), &task), &task).unwrap();
    let spec = StudySpec {
        seeds: 4,
        ..StudySpec::default()
    };
    let s = run_study(
        &task,
        task.default_shape(),
        &mut replay,
        &spec,
        Some("evoengineer study x".into()),
    )
    .unwrap();
    assert_eq!(s.space_size, Some(128));
    assert_eq!((s.landscape.records, s.landscape.ok), (127, 126));
    assert_eq!(s.arms.len(), Arm::STANDARD.len());
    for a in &s.arms {
        assert_eq!(a.trajectory_runs.len(), 4);
        assert_eq!(a.default_runs.len(), 4);
        for r in &a.trajectory_runs {
            // Patience 0: only the budget or an exhausted space stops a trajectory run.
            assert!(
                matches!(r.stopped_by, StopReason::Budget | StopReason::Exhausted),
                "{r:?}"
            );
            if let (Some(o), Some(n)) = (r.to_optimum, r.to_near) {
                assert!(n <= o && o <= r.evaluations);
            }
            // The best found never gets worse as the checkpoints grow.
            let b: Vec<f64> = r.best_at.iter().map(|b| b.unwrap()).collect();
            assert!(b.windows(2).all(|w| w[1] <= w[0]), "{b:?}");
        }
        let t = &a.trajectory;
        assert!(t.to_near_median <= t.to_optimum_median);
        assert!(t.at.iter().all(|c| c.ratio >= 1.0));
    }
    // The grid walks the space in order: the optimum is its last config.
    let grid = s.arms.iter().find(|a| a.arm.name() == "grid").unwrap();
    assert_eq!(grid.trajectory.reached_optimum, 1.0);
    assert_eq!(grid.trajectory.to_optimum_median, 128.0);
    // Budget 128 covers the space: random (without replacement) always gets there.
    let random = s.arms.iter().find(|a| a.arm.name() == "random").unwrap();
    assert_eq!(random.trajectory.reached_optimum, 1.0);
    let md = markdown(&s);
    for needle in [
        "evoengineer study x",
        &s.landscape.sha256[..12],
        "| full-no-two-layer |",
        "after 16",
        "50.00 μs",
    ] {
        assert!(md.contains(needle), "no `{needle}` in:\n{md}");
    }
}

fn hand_run(seed: u64, to_optimum: Option<usize>, best_at: [Option<f64>; 3]) -> RunSummary {
    RunSummary {
        seed,
        evaluations: 64,
        stopped_by: StopReason::Budget,
        to_optimum,
        to_near: to_optimum.map(|n| n / 2),
        best_at: best_at.to_vec(),
        final_best: best_at[2],
    }
}

#[test]
fn statistics_of_hand_runs() {
    let spec = StudySpec::default();
    let runs = [
        hand_run(0, Some(10), [Some(120.0), Some(100.0), Some(100.0)]),
        hand_run(1, None, [None, Some(130.0), Some(110.0)]),
        hand_run(2, Some(30), [Some(150.0), Some(100.0), Some(100.0)]),
    ];
    let t = trajectory_stats(&runs, 100.0, &spec);
    assert!((t.reached_optimum - 2.0 / 3.0).abs() < 1e-12);
    assert_eq!(t.to_optimum_median, 30.0);
    assert_eq!(t.to_optimum_p90, f64::INFINITY);
    assert_eq!(t.to_near_median, 15.0);
    let medians: Vec<f64> = t.at.iter().map(|c| c.median_best_p50_us).collect();
    assert_eq!(medians, [150.0, 100.0, 100.0]);
    assert_eq!(t.at[0].ratio, 1.5);
    assert_eq!(t.stopped_by["budget"], 3);
    let d = default_stats(&runs, 100.0, &spec);
    assert!((d.reached_optimum - 2.0 / 3.0).abs() < 1e-12);
    assert_eq!(d.median_final_p50_us, 100.0);
    assert_eq!(d.median_gap_pct, 0.0);
    assert_eq!(d.evaluations_median, 64.0);
    // "Never" is JSON null.
    let v = serde_json::to_value(&t).unwrap();
    assert!(v["to_optimum_p90"].is_null(), "{v}");
    assert_eq!(v["to_optimum_median"], 30.0);
}

#[test]
fn scores_against_random_search_on_a_hand_made_landscape() {
    let task = seed_task();
    let dir = tempfile::tempdir().unwrap();
    let path = landscape(dir.path(), &task);
    // A sidecar naming the cache it came from, and two peer runs of that cache at budget 16.
    std::fs::write(
        path.with_extension("meta.json"),
        r#"{"imported_from": "kernel_tuner", "sha256": "abc"}"#,
    )
    .unwrap();
    let peers = dir.path().join("peers.jsonl");
    std::fs::write(
        &peers,
        [
            r#"{"tool":"kt","strategy":"s","cache_sha256":"abc","budget":16,"seed":0,"best_us":50.0}"#,
            r#"{"tool":"kt","strategy":"s","cache_sha256":"abc","budget":16,"seed":1,"best_us":null}"#,
            r#"{"tool":"kt","strategy":"s","cache_sha256":"other","budget":16,"seed":0,"best_us":60.0}"#,
            r#"{"tool":"kt","strategy":"bad","cache_sha256":"abc","budget":16,"seed":0,"best_us":null,"error":"boom"}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let mut replay = ReplayEvaluator::load(&path, &task).unwrap();
    let spec = StudySpec {
        seeds: 6,
        arms: vec![Arm::plain(Variant::Random), Arm::plain(Variant::Surrogate)],
        ..StudySpec::default()
    };
    let mut s = run_study(&task, task.default_shape(), &mut replay, &spec, None).unwrap();
    // 128 valid configs: 50 μs (the optimum), 100 + i for the others, index 3 failed and
    // index 9 absent (both without a time). Exact medians of random search's best, from
    // 1 − C(M−k−1, n)/C(M, n) ≥ 1/2 (worked out with exact fractions): after 16 the 6th
    // smallest value (105), after 32 the 3rd (101), after 64 the optimum itself.
    let random = s.random.clone().unwrap();
    assert_eq!(random.configs, 128);
    assert_eq!(random.median_best_us, [105.0, 101.0, 50.0]);
    assert_eq!(s.source_sha256.as_deref(), Some("abc"));
    for a in &s.arms {
        // No score after 64: random search's median already holds the optimum.
        let at: Vec<usize> = a.scores.iter().map(|x| x.evaluations).collect();
        assert_eq!(at, [16, 32], "{}", a.arm.name());
        assert!(a.scores.iter().all(|x| x.runs == 6 && x.mean <= 1.0));
    }
    let runs = peers::load(&peers).unwrap();
    assert_eq!(runs.len(), 3, "the errored run is skipped");
    peers::attach(&mut s, &runs);
    assert_eq!(s.peers.len(), 1);
    let p = &s.peers[0];
    assert_eq!(p.name(), "kt:s");
    assert_eq!(p.scores.len(), 1);
    // Scores 1 (the optimum) and (105 − 226) / (105 − 50) = −2.2 (nothing correct: the worst
    // time, 226 μs): mean −0.6, one of two beats random.
    let x = &p.scores[0];
    assert!((x.mean - (-0.6)).abs() < 1e-12, "{x:?}");
    assert_eq!((x.runs, x.beats_random), (2, 0.5));
    let md = markdown(&s);
    for needle in [
        "Score against random search",
        "| kt:s |",
        "random: 105.0 μs",
    ] {
        assert!(md.contains(needle), "no `{needle}` in:\n{md}");
    }
    let overview = score_overview(std::slice::from_ref(&s));
    assert!(overview.contains("| kt:s | -0.600 | 0/1 |"), "{overview}");
}

#[test]
fn a_bad_peer_file_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.jsonl");
    std::fs::write(&p, "{\"tool\":\"kt\"}\n").unwrap();
    let e = peers::load(&p).unwrap_err().to_string();
    assert!(
        e.contains("p.jsonl: line 1") && e.contains("strategy"),
        "{e}"
    );
    std::fs::write(&p, "not json").unwrap();
    assert!(peers::load(&p)
        .unwrap_err()
        .to_string()
        .contains("not JSON"));
    assert!(peers::load(&dir.path().join("none")).is_err());
}
