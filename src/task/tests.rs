//! Manifest loading: the seed task, and a clear error for each kind of mistake.

use super::*;

fn load(text: &str) -> Result<Task, TaskError> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("task.toml"), text).unwrap();
    Task::load(dir.path())
}

const KNOB: &str = "[[knob]]\nname = \"A\"\nvalues = [1, 2]\n";
const SHAPE: &str = "[[shape]]\nname = \"mission\"\nparams = { N = 8 }\n";

fn err(text: &str) -> String {
    load(text).unwrap_err().to_string()
}

#[test]
fn the_seed_task_has_the_seeds_space() {
    let t = crate::task::seed_space_task();
    assert_eq!(t.name, "sdpa_fp8");
    assert_eq!(t.space.raw_size(), 128);
    assert_eq!(t.space.enumerate(1000).unwrap().len(), 128);
    assert_eq!(
        t.space.raw_size_of(&t.space.layer_indices(Layer::Macro)),
        16
    );
    assert_eq!(t.space.raw_size_of(&t.space.layer_indices(Layer::Micro)), 8);
    let names: Vec<_> = t.space.knobs().iter().map(|k| k.name.as_str()).collect();
    assert_eq!(names, SEED_KNOBS);
    assert!(t.space.knobs().iter().all(|k| !k.addresses.is_empty()));
    assert_eq!(t.default_shape().name, "mission");
    assert_eq!(t.tolerance.max_abs_err, Some(0.06));
    // 4·B·H·S²·D at the mission shape.
    assert_eq!(
        t.default_shape().flops(),
        Some(4.0 * 8.0 * 16.0 * 2048.0 * 2048.0 * 128.0)
    );
}

const SEED_KNOBS: [&str; 7] = [
    "USE_WARP_SPECIALIZATION",
    "USE_PERSISTENT_CTA",
    "TILE_M",
    "TILE_N",
    "NUM_PRODUCER_WARPS",
    "USE_FAST_EXP",
    "USE_CP_ASYNC_3STAGE",
];

/// The real task goes beyond the seed (USE_WGMMA, 128-row/-key tiles) and keeps the seed's 128
/// configs as a subset under their seed names.
#[test]
fn the_sdpa_task_keeps_the_seeds_configs_as_a_subset() {
    let t = Task::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tasks/sdpa_fp8")).unwrap();
    let names: Vec<_> = t.space.knobs().iter().map(|k| k.name.as_str()).collect();
    for k in SEED_KNOBS {
        assert!(names.contains(&k), "{k} missing");
    }
    let all = t.space.enumerate(10_000).unwrap();
    assert_eq!(all.len(), 320);
    let json: Vec<_> = all.iter().map(|c| t.space.to_json(c)).collect();
    let seed: Vec<_> = json.iter().filter(|j| j["USE_WGMMA"] == 0).collect();
    assert_eq!(seed.len(), 128);
    for j in &seed {
        assert!([32, 64].contains(&j["TILE_M"].as_i64().unwrap()));
        assert!([32, 64].contains(&j["TILE_N"].as_i64().unwrap()));
    }
    // The seed's default config is still valid.
    let d = t.space.default_config();
    assert!(t.space.is_valid(&d));
}

#[test]
fn a_minimal_task_loads_with_defaults() {
    let t = load(&format!("{KNOB}{SHAPE}")).unwrap();
    let k = &t.space.knobs()[0];
    assert_eq!((k.default, k.layer), (1, Layer::Macro));
    assert_eq!(t.insight, InsightRules::default());
    assert!(t.kernel.is_none());
}

#[test]
fn verification_shapes_default_to_every_shape_but_the_runs() {
    let three = format!(
        "{KNOB}{SHAPE}[[shape]]\nname = \"tail\"\nparams = {{ N = 7 }}\n[[shape]]\nname = \"wide\"\nparams = {{ N = 9 }}\n"
    );
    let names = |t: &Task, run: &str| -> Vec<String> {
        t.verification_shapes(t.shape(run).unwrap())
            .into_iter()
            .map(|s| s.name)
            .collect()
    };
    let t = load(&three).unwrap();
    assert_eq!(t.verify_shapes, ["mission", "tail", "wide"]);
    assert_eq!(names(&t, "mission"), ["tail", "wide"]);
    assert_eq!(names(&t, "tail"), ["mission", "wide"]);
    // A list of its own: only those (the run's shape is checked anyway).
    let t = load(&format!("[task]\nverify_shapes = [\"wide\"]\n{three}")).unwrap();
    assert_eq!(t.verify_shapes, ["wide"]);
    assert_eq!(names(&t, "mission"), ["wide"]);
    assert!(names(&t, "wide").is_empty());
    // An empty list: the run's shape only.
    let t = load(&format!("[task]\nverify_shapes = []\n{three}")).unwrap();
    assert!(names(&t, "mission").is_empty());
}

#[test]
fn errors_name_the_file_and_the_key() {
    let e = err(&format!("[[knob]]\nname = \"A\"\nvalues = []\n{SHAPE}"));
    assert!(
        e.contains("task.toml") && e.contains("knob[0] (A).values") && e.contains("empty"),
        "{e}"
    );
}

#[test]
fn each_malformed_manifest_gets_its_own_message() {
    let cases: &[(&str, &str)] = &[
        (SHAPE, "at least one [[knob]]"),
        (KNOB, "at least one [[shape]]"),
        (&format!("{KNOB}{KNOB}{SHAPE}"), "declared twice"),
        (
            &format!("[[knob]]\nname = \"A\"\nvalues = [1, 1]\n{SHAPE}"),
            "listed twice",
        ),
        (
            &format!("[[knob]]\nname = \"A\"\nvalues = [1, 2]\ndefault = 3\n{SHAPE}"),
            "not one of the values",
        ),
        (
            &format!("[[knob]]\nname = \"2A\"\nvalues = [1]\n{SHAPE}"),
            "not a C identifier",
        ),
        (
            &format!("[[knob]]\nname = \"A\"\nvalues = [1]\naddresses = [\"speed\"]\n{SHAPE}"),
            "unknown bottleneck class `speed`",
        ),
        (
            &format!("[[knob]]\nname = \"A\"\nvalues = [1]\nlayer = \"mezzo\"\n{SHAPE}"),
            "mezzo",
        ),
        (
            &format!("{KNOB}[[constraint]]\nexpr = \"A * B < 4\"\n{SHAPE}"),
            "constraint[0].expr",
        ),
        (
            &format!("{KNOB}[[constraint]]\nexpr = \"A * (2\"\n{SHAPE}"),
            "constraint[0].expr",
        ),
        (
            &format!("{KNOB}[[constraint]]\nexpr = \"A > 5\"\n{SHAPE}"),
            "the default config A=1 breaks",
        ),
        (
            &format!("{KNOB}{SHAPE}{SHAPE}"),
            "shape[1] (mission).name: declared twice",
        ),
        (
            &format!("{KNOB}[[shape]]\nname = \"s\"\nparams = {{ A = 1 }}\n"),
            "also a knob's name",
        ),
        (
            &format!("{KNOB}[[shape]]\nname = \"s\"\nparams = {{ N = 1 }}\nflops = \"N * Q\"\n"),
            "flops",
        ),
        (
            &format!("{KNOB}{SHAPE}[tolerance]\nmax_abs_err = -1.0\n"),
            "tolerance.max_abs_err",
        ),
        (
            &format!("{KNOB}{SHAPE}[tolerance]\nmax_abs = 1.0\n"),
            "unknown field `max_abs`",
        ),
        (
            &format!("{KNOB}{SHAPE}[[baseline]]\nname = \"t\"\nexpr = \"\"\n"),
            "baseline[0].expr",
        ),
        (
            &format!("{KNOB}nonsense = 1\n{SHAPE}"),
            "unknown field `nonsense`",
        ),
        ("[[knob]\nname = \"A\"", "task.toml"),
        (
            &format!("[task]\nverify_shapes = [\"mission\", \"tail\"]\n{KNOB}{SHAPE}"),
            "task.verify_shapes[1]: `tail` is not a declared shape (declared: mission)",
        ),
        (
            &format!("[task]\nverify_shapes = [\"mission\", \"mission\"]\n{KNOB}{SHAPE}"),
            "task.verify_shapes[1]: `mission` is listed twice",
        ),
        (
            &format!("[task]\nverify_shapes = \"mission\"\n{KNOB}{SHAPE}"),
            "verify_shapes",
        ),
    ];
    for (text, expected) in cases {
        let e = err(text);
        assert!(
            e.contains(expected),
            "expected `{expected}` in: {e}\n--- manifest:\n{text}"
        );
    }
}

#[test]
fn a_missing_manifest_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let e = Task::load(dir.path()).unwrap_err().to_string();
    assert!(e.contains("cannot read") && e.contains("task.toml"), "{e}");
}

#[test]
fn kernel_sections_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("k.cu"),
        "extern \"C\" __global__ void k(float* y) {}",
    )
    .unwrap();
    let base = format!(
        "{KNOB}{SHAPE}[kernel]\nsource = \"k.cu\"\nentry = \"k\"\ngrid = [\"ceil_div(N, A)\"]\nblock = [\"A * 32\"]\n"
    );
    let arg = "[[kernel.arg]]\nname = \"y\"\nkind = \"buffer\"\ndtype = \"f32\"\nlen = \"N\"\nrole = \"output\"\n";
    let write = |text: &str| {
        std::fs::write(dir.path().join("task.toml"), text).unwrap();
        Task::load(dir.path())
    };
    let t = write(&format!("{base}{arg}")).unwrap();
    let k = t.kernel.unwrap();
    assert_eq!(k.launch.grid[0].eval_int([("A", 2), ("N", 8)]).unwrap(), 4);
    assert_eq!(k.launch.grid[1].eval_int([]).unwrap(), 1);
    let cases = [
        (base.to_string(), "at least one [[kernel.arg]]"),
        (format!("{base}{}", arg.replace("output", "input")), "no argument is an output"),
        (format!("{base}{}", arg.replace("len = \"N\"", "len = \"M\"")), "kernel.arg[0] (y).len"),
        (format!("{base}{}", arg.replace("f32", "f64")), "f64"),
        (format!("{}{arg}", base.replace("k.cu", "missing.cu")), "does not exist"),
        (format!("{}{arg}", base.replace("[\"A * 32\"]", "[]")), "kernel.block: needs 1 to 3"),
        (
            format!("{base}{arg}[[kernel.arg]]\nname = \"n\"\nkind = \"scalar\"\ndtype = \"e4m3\"\nvalue = \"N\"\n"),
            "a scalar cannot be e4m3",
        ),
    ];
    for (text, expected) in cases {
        let e = write(&text).unwrap_err().to_string();
        assert!(e.contains(expected), "expected `{expected}` in: {e}");
    }
}

#[test]
fn the_source_hash_follows_the_kernel_source() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{KNOB}{SHAPE}[kernel]\nsource = \"k.cu\"\nentry = \"k\"\ngrid = [\"1\"]\nblock = [\"32\"]\n[[kernel.arg]]\nname = \"y\"\nkind = \"buffer\"\ndtype = \"f32\"\nlen = \"N\"\nrole = \"output\"\n"
    );
    std::fs::write(dir.path().join("task.toml"), &text).unwrap();
    std::fs::write(dir.path().join("k.cu"), "// one").unwrap();
    let a = Task::load(dir.path()).unwrap().source_hash;
    std::fs::write(dir.path().join("k.cu"), "// two").unwrap();
    let b = Task::load(dir.path()).unwrap().source_hash;
    assert_ne!(a, b);
}
