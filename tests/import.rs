//! `evoengineer import kernel-tuner` on small cache files written here (no benchmark_hub data
//! is committed).

use std::io::Write;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use evoengineer::candidate::Candidate;
use evoengineer::eval::replay::ReplayEvaluator;
use evoengineer::eval::{Evaluator, Outcome};
use evoengineer::import::kernel_tuner::{import, ImportOptions};
use evoengineer::import::ImportError;
use evoengineer::space::{Config, Layer};
use evoengineer::task::Task;
use serde_json::{json, Value};

/// Knobs block_size_x [32, 64, 128], tile [1, 2, 4], use_shmem [false, true], method [0, 1, 2].
fn cache_json() -> Value {
    let rec = |b: i64, t: i64, s: bool, m: i64, time: Value| {
        let mut r =
            json!({"block_size_x": b, "tile": t, "use_shmem": s, "method": m, "time": time});
        if time.is_number() {
            // 10 samples 1..=10 ms: numpy's 90th percentile is 9.1 ms.
            r["times"] = json!([10.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
        }
        let key = format!("{b},{t},{},{m}", if s { "True" } else { "False" });
        (key, r)
    };
    let entries = [
        rec(128, 4, true, 0, json!(0.5)), // breaks block_size_x * tile <= 256
        rec(32, 1, false, 0, json!(1.5)),
        rec(64, 1, false, 0, json!("CompilationFailedConfig")),
        rec(128, 1, false, 0, json!("RuntimeFailedConfig")),
        rec(32, 2, false, 0, json!("InvalidConfig")),
        rec(64, 2, true, 1, json!(0.25)),
        rec(32, 4, true, 2, json!(2.0)), // breaks not (method == 2 and tile > 1)
    ];
    let cache: serde_json::Map<String, Value> = entries.into_iter().collect();
    json!({
        "device_name": "Test GPU 9000",
        "kernel_name": "toy_kernel",
        "problem_size": [1024, 32],
        "tune_params_keys": ["block_size_x", "tile", "use_shmem", "method"],
        "tune_params": {
            "block_size_x": [32, 64, 128],
            "tile": [1, 2, 4],
            "use_shmem": [false, true],
            "method": [0, 1, 2]
        },
        "objective": "time",
        "cache": cache
    })
}

const RESTRICTIONS: [&str; 3] = [
    "block_size_x * tile <= 256",
    "use_shmem == 0 or block_size_x // 32 in [1, 2]",
    "not (method == 2 and tile > 1)",
];

fn write(path: &Path, v: &Value) -> PathBuf {
    std::fs::write(path, serde_json::to_vec_pretty(v).unwrap()).unwrap();
    path.to_path_buf()
}

fn write_gz(path: &Path, v: &Value) -> PathBuf {
    let f = std::fs::File::create(path).unwrap();
    let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::default());
    gz.write_all(&serde_json::to_vec(v).unwrap()).unwrap();
    gz.finish().unwrap();
    path.to_path_buf()
}

fn restrictions(dir: &Path, list: &[&str]) -> PathBuf {
    write(
        &dir.join("restrictions.json"),
        &json!({ "restrictions": list }),
    )
}

fn import_into(cache: &Path, spec: Option<&Path>, out: &Path) -> Result<(), ImportError> {
    let opts = ImportOptions {
        spec: spec.map(Path::to_path_buf),
        ..ImportOptions::new(cache, out)
    };
    import(&opts).map(|_| ())
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn landscape(dir: &Path) -> PathBuf {
    dir.join("landscapes/test-gpu-9000-mission.jsonl")
}

#[test]
fn json_and_gzip_import_alike_with_every_outcome() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = restrictions(tmp.path(), &RESTRICTIONS);
    let plain = write(&tmp.path().join("cache.json"), &cache_json());
    let gz = write_gz(&tmp.path().join("cache.json.gz"), &cache_json());
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let opts = ImportOptions {
        spec: Some(spec.clone()),
        ..ImportOptions::new(&plain, &a)
    };
    let summary = import(&opts).unwrap();
    import_into(&gz, Some(&spec), &b).unwrap();
    assert_eq!(
        std::fs::read_to_string(landscape(&a)).unwrap(),
        std::fs::read_to_string(landscape(&b)).unwrap()
    );

    let c = &summary.counts;
    assert_eq!((c.cache_entries, c.records, c.ok, c.skipped), (7, 7, 4, 0));
    assert_eq!(c.failures["CompilationFailedConfig"], 1);
    assert_eq!(c.failures["RuntimeFailedConfig"], 1);
    assert_eq!(c.failures["InvalidConfig"], 1);
    assert_eq!(c.break_restrictions, 2);
    assert_eq!(summary.device, "Test GPU 9000");
    assert_eq!(summary.task, "a");
    // Layers: use_shmem (0/1) is macro; nothing else looks macro by name.
    let layer = |n: &str| summary.knobs.iter().find(|k| k.name == n).unwrap().layer;
    assert_eq!(layer("use_shmem"), Layer::Macro);
    assert_eq!(layer("block_size_x"), Layer::Micro);

    let recs = lines(&landscape(&a));
    let find = |b: i64, t: i64| {
        recs.iter()
            .find(|r| r["config"]["block_size_x"] == b && r["config"]["tile"] == t)
            .unwrap()
    };
    let ok = find(32, 1);
    assert_eq!(ok["outcome"], "ok");
    assert_eq!(ok["p50_us"], 1500.0);
    assert!((ok["p90_us"].as_f64().unwrap() - 9100.0).abs() < 1e-6);
    assert_eq!(ok["shape"], "mission");
    assert_eq!(ok["device"], "Test GPU 9000");
    assert_eq!(ok["config"]["use_shmem"], 0);
    assert_eq!(find(64, 1)["outcome"], "compile_error");
    assert_eq!(find(128, 1)["outcome"], "runtime_error");
    assert!(find(128, 1).get("message").is_none());
    assert_eq!(find(32, 2)["outcome"], "runtime_error");
    assert_eq!(find(32, 2)["message"], "InvalidConfig");

    let meta: Value = serde_json::from_str(
        &std::fs::read_to_string(a.join("landscapes/test-gpu-9000-mission.meta.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(meta["kernel_name"], "toy_kernel");
    assert_eq!(meta["problem_size"], json!([1024, 32]));
    assert_eq!(meta["counts"]["break_restrictions"], 2);
    assert_eq!(meta["sha256"].as_str().unwrap().len(), 64);
}

#[test]
fn translated_restrictions_keep_python_semantics() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = restrictions(tmp.path(), &RESTRICTIONS);
    let cache = write(&tmp.path().join("cache.json"), &cache_json());
    let out = tmp.path().join("t");
    import_into(&cache, Some(&spec), &out).unwrap();
    let task = Task::load(&out).unwrap();
    let text = std::fs::read_to_string(out.join("task.toml")).unwrap();
    assert!(text.contains("reason = \"use_shmem == 0 or block_size_x // 32 in [1, 2]\""));
    assert!(text.contains("params = { problem_size_0 = 1024, problem_size_1 = 32 }"));
    // (block_size_x, tile, use_shmem, method) -> valid, by hand in Python.
    for (config, valid) in [
        ([32, 1, 0, 0], true),
        ([128, 2, 0, 0], true),  // 256 <= 256
        ([128, 4, 0, 0], false), // 512
        ([64, 1, 1, 0], true),   // 64 // 32 == 2
        ([128, 1, 1, 0], false), // 128 // 32 == 4
        ([32, 2, 0, 2], false),  // method 2 with tile 2
        ([32, 1, 1, 2], true),
    ] {
        assert_eq!(
            task.space.is_valid(&Config(config.to_vec())),
            valid,
            "{config:?}"
        );
    }
    // 3*3*2*3 = 54 combinations; by hand: 33 valid (8 (block_size_x, tile) pairs; use_shmem and method as allowed).
    let summary_valid = task.space.enumerate(1000).unwrap().len();
    assert_eq!(summary_valid, 33);
}

#[test]
fn the_task_loads_and_replays_with_missing_configs() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = restrictions(tmp.path(), &RESTRICTIONS);
    let cache = write(&tmp.path().join("cache.json"), &cache_json());
    let out = tmp.path().join("t");
    let summary = import(&ImportOptions {
        spec: Some(spec),
        ..ImportOptions::new(&cache, &out)
    })
    .unwrap();
    assert_eq!(summary.counts.valid_configs, Some(33));
    // Valid and in the cache: (32,1,0,0), (64,1,0,0), (128,1,0,0), (32,2,0,0), (64,2,1,1).
    assert_eq!(summary.counts.valid_in_cache, Some(5));
    assert_eq!(summary.counts.missing, Some(28));

    let task = Task::load(&out).unwrap();
    let mut replay = ReplayEvaluator::load(&summary.landscape, &task).unwrap();
    assert_eq!(replay.len(), 7);
    let shape = task.default_shape().clone();
    let ok = replay
        .evaluate(&Candidate::base(Config(vec![32, 1, 0, 0])), &shape)
        .unwrap();
    assert_eq!(ok.p50_us(), Some(1500.0));
    let absent = Config(vec![64, 4, 0, 1]);
    assert!(task.space.is_valid(&absent));
    let missing = replay.evaluate(&Candidate::base(absent), &shape).unwrap();
    assert_eq!(missing.outcome, Outcome::Missing);
}

#[test]
fn defaults_that_break_the_restrictions_fall_back_to_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = write(
        &tmp.path().join("spec.json"),
        &json!({
            "ConfigurationSpace": {
                "TuningParameters": [
                    {"Name": "block_size_x", "Type": "int", "Values": "[32, 64, 128]", "Default": 128},
                    {"Name": "tile", "Type": "int", "Values": "[1, 2, 4]", "Default": 4},
                    {"Name": "use_shmem", "Type": "int", "Values": "[0, 1]", "Default": 1}
                ],
                "Conditions": RESTRICTIONS.iter().map(|r| json!({"Expression": r})).collect::<Vec<_>>()
            }
        }),
    );
    let cache = write(&tmp.path().join("cache.json"), &cache_json());
    let out = tmp.path().join("t");
    let s = import(&ImportOptions {
        spec: Some(spec),
        ..ImportOptions::new(&cache, &out)
    })
    .unwrap();
    // The first entry (128,4,1,0) breaks a restriction; the next valid one with a time is
    // (32,1,0,0).
    assert_eq!(s.default_from, "cache");
    assert_eq!(
        Value::Object(s.default_config.clone()),
        json!({"block_size_x": 32, "tile": 1, "use_shmem": 0, "method": 0})
    );
    assert!(s
        .notes
        .iter()
        .any(|n| n.contains("breaks the restrictions")));
    assert_eq!(
        Task::load(&out).unwrap().space.default_config(),
        Config(vec![32, 1, 0, 0])
    );

    // Valid spec defaults are used as they are.
    let spec2 = write(
        &tmp.path().join("spec2.json"),
        &json!({"ConfigurationSpace": {"TuningParameters": [
            {"Name": "block_size_x", "Default": 64}, {"Name": "method", "Default": 1}]}}),
    );
    let s = import(&ImportOptions {
        spec: Some(spec2),
        ..ImportOptions::new(&cache, tmp.path().join("t2"))
    })
    .unwrap();
    assert_eq!(s.default_from, "spec");
    assert_eq!(s.default_config["block_size_x"], 64);
    assert_eq!(s.default_config["method"], 1);
}

#[test]
fn non_integer_values_become_indices() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = cache_json();
    c["tune_params_keys"] = json!(["block_size_x", "precision"]);
    c["tune_params"] = json!({"block_size_x": [32, 64], "precision": ["half", 1.5]});
    c["cache"] = json!({
        "32,half": {"block_size_x": 32, "precision": "half", "time": 1.0},
        "64,1.5": {"block_size_x": 64, "precision": 1.5, "time": 2.0}
    });
    let cache = write(&tmp.path().join("cache.json"), &c);
    let out = tmp.path().join("t");
    let s = import(&ImportOptions::new(&cache, &out)).unwrap();
    let k = &s.knobs[1];
    assert_eq!(k.values, [0, 1]);
    assert_eq!(k.mapped.as_ref().unwrap(), &vec![json!("half"), json!(1.5)]);
    let text = std::fs::read_to_string(out.join("task.toml")).unwrap();
    assert!(
        text.contains("their indices: 0 = \"half\", 1 = 1.5"),
        "{text}"
    );
    let recs = lines(&s.landscape);
    assert_eq!(
        recs[1]["config"],
        json!({"block_size_x": 64, "precision": 1})
    );

    // A restriction on such a knob cannot be translated.
    let spec = restrictions(tmp.path(), &["precision == 1"]);
    let err = import_into(&cache, Some(&spec), &tmp.path().join("u"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("restrictions[0]") && err.contains("`precision`"),
        "{err}"
    );
}

#[test]
fn bad_input_names_the_file_and_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("t");
    let missing = tmp.path().join("nope.json");
    let err = import_into(&missing, None, &out).unwrap_err().to_string();
    assert!(err.contains("nope.json"), "{err}");

    let bad = tmp.path().join("bad.json");
    std::fs::write(&bad, "{\"cache\": ").unwrap();
    let err = import_into(&bad, None, &out).unwrap_err().to_string();
    assert!(
        err.contains("bad.json") && err.contains("not valid JSON"),
        "{err}"
    );

    let mut c = cache_json();
    c.as_object_mut().unwrap().remove("tune_params");
    let cache = write(&tmp.path().join("c1.json"), &c);
    let err = import_into(&cache, None, &out).unwrap_err().to_string();
    assert!(err.contains("c1.json: tune_params: is missing"), "{err}");

    let mut c = cache_json();
    c["tune_params"]["tile"] = json!([1, null]);
    let cache = write(&tmp.path().join("c2.json"), &c);
    let err = import_into(&cache, None, &out).unwrap_err().to_string();
    assert!(
        err.contains("c2.json: tune_params.tile: value null"),
        "{err}"
    );

    let cache = write(&tmp.path().join("cache.json"), &cache_json());
    let spec = restrictions(tmp.path(), &["tile > 1", "block_size_y * tile <= 256"]);
    let err = import_into(&cache, Some(&spec), &out)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "restrictions.json: restrictions[1]: restriction `block_size_y * tile <= 256`"
        ) && err.contains("`block_size_y`")
            && err.contains("unknown name"),
        "{err}"
    );
    let spec = restrictions(tmp.path(), &["tile & 1"]);
    let err = import_into(&cache, Some(&spec), &out)
        .unwrap_err()
        .to_string();
    assert!(err.contains("`&`"), "{err}");

    let mut c = cache_json();
    c["objective"] = json!("GFLOP/s");
    c["objective_higher_is_better"] = json!(true);
    c["cache"] = json!({"32,1,False,0": {"block_size_x": 32, "tile": 1, "use_shmem": false, "method": 0, "GFLOP/s": 3.0}});
    let cache = write(&tmp.path().join("c3.json"), &c);
    let err = import_into(&cache, None, &out).unwrap_err().to_string();
    assert!(err.contains("c3.json: objective:"), "{err}");
    assert!(!out.join("task.toml").exists());
}

#[test]
fn an_objective_other_than_time_uses_time_when_present() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = cache_json();
    c["objective"] = json!("GFLOP/s");
    c["objective_higher_is_better"] = json!(true);
    let cache = write(&tmp.path().join("cache.json"), &c);
    let s = import(&ImportOptions::new(&cache, tmp.path().join("t"))).unwrap();
    assert!(
        s.notes.iter().any(|n| n.contains("`time`")),
        "{:?}",
        s.notes
    );
}

#[test]
fn refuses_to_overwrite_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = write(&tmp.path().join("cache.json"), &cache_json());
    let out = tmp.path().join("t");
    import_into(&cache, None, &out).unwrap();
    let err = import_into(&cache, None, &out).unwrap_err();
    assert!(matches!(err, ImportError::Exists { .. }), "{err}");
    let opts = ImportOptions {
        force: true,
        macro_knobs: Some(vec!["method".into()]),
        name: Some("toy".into()),
        ..ImportOptions::new(&cache, &out)
    };
    let s = import(&opts).unwrap();
    assert_eq!(s.task, "toy");
    assert!(!s.layers_guessed);
    let task = Task::load(&out).unwrap();
    assert_eq!(task.name, "toy");
    assert_eq!(task.space.layer_indices(Layer::Macro), [3]);
}

#[test]
fn cli_imports_and_reports_bad_input_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = write_gz(&tmp.path().join("A100.json.gz"), &cache_json());
    let spec = restrictions(tmp.path(), &RESTRICTIONS);
    let out = tmp.path().join("toy");
    let run = Command::cargo_bin("evoengineer")
        .unwrap()
        .args(["import", "kernel-tuner"])
        .arg(&cache)
        .arg("--spec")
        .arg(&spec)
        .arg("--out")
        .arg(&out)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let v: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(v["task"], "toy");
    assert_eq!(v["counts"]["records"], 7);

    let run = Command::cargo_bin("evoengineer")
        .unwrap()
        .args(["import", "kernel-tuner"])
        .arg(tmp.path().join("absent.json"))
        .arg("--out")
        .arg(tmp.path().join("x"))
        .output()
        .unwrap();
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("absent.json"), "{err}");
}
