use super::*;

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/ptxas/gate/",
            $name
        ))
    };
}

#[test]
fn excerpt_keeps_front_end_errors() {
    let e = excerpt(fixture!("nvcc_error_sm90a.txt"));
    assert!(
        e.starts_with("error.cu(3): error: identifier \"undefined_scale\" is undefined"),
        "{e}"
    );
    assert!(
        e.contains("error.cu(4): error: expected an expression"),
        "{e}"
    );
    assert!(e.contains("2 errors detected"), "{e}");
    assert!(!e.contains("\n\n\n"), "{e}");
    assert_eq!(excerpt(fixture!("nvrtc_error_sm90a.txt")), e);
}

#[test]
fn excerpt_keeps_ptxas_errors_and_drops_the_report() {
    let e = excerpt(fixture!("nvcc_smem_error_sm90a.txt"));
    assert_eq!(
        e,
        "ptxas error   : Entry function 'too_much_static_smem' uses too much shared data \
         (0x3a980 bytes, 0x38c00 max)"
    );
    let e = excerpt(fixture!("nvrtc_ptxas_error_sm90a.txt"));
    assert!(e.contains("Unknown symbol '%no_such_register'"), "{e}");
    assert!(
        e.ends_with("ptxas fatal   : Ptx assembly aborted due to errors"),
        "{e}"
    );
}

#[test]
fn excerpt_is_bounded() {
    let long: String = (0..100)
        .map(|i| format!("k.cu({i}): error: e{i}\n"))
        .collect();
    let e = excerpt(&long);
    assert_eq!(e.lines().count(), 31);
    assert!(e.ends_with("… (70 more lines)"), "{e}");
    assert_eq!(excerpt(""), "the compiler printed nothing");
    let wide = format!("error: {}", "x".repeat(5000));
    assert!(excerpt(&wide).len() < 3100);
}

#[test]
fn arch_forms() {
    for ok in ["sm_90a", "sm_90", "sm_80", "sm_100f", "sm_120"] {
        assert!(check_arch(ok).is_ok(), "{ok}");
    }
    for bad in ["compute_90a", "90", "sm_", "sm_9x", "sm_90ab", "sm90"] {
        assert!(
            matches!(check_arch(bad), Err(CompileError::Setup(_))),
            "{bad}"
        );
    }
}

fn job() -> CompileJob {
    CompileJob {
        source: "extern \"C\" __global__ void k(float* x) { x[0] = BM; }".into(),
        file_name: "kernel.cu".into(),
        include_dir: None,
        entry: "k".into(),
        compiler: Compiler::Nvcc,
        arch: "sm_90a".into(),
        defines: vec![("BM".into(), "64".into())],
        flags: vec!["-O3".into()],
        launch: None,
        max_spill_bytes: 0,
    }
}

#[test]
fn cache_key_covers_every_input() {
    let base = cache_key(&job(), Compiler::Nvcc, "nvcc|13.0", &job().flags);
    assert_eq!(
        base,
        cache_key(&job(), Compiler::Nvcc, "nvcc|13.0", &job().flags)
    );
    assert_eq!(base.len(), 64);
    let mut keys = vec![base];
    let variants: [fn(&mut CompileJob); 6] = [
        |j| j.source.push(' '),
        |j| j.defines[0].1 = "128".into(),
        |j| j.defines.push(("D".into(), "64".into())),
        |j| j.arch = "sm_80".into(),
        |j| j.entry = "k2".into(),
        |j| j.file_name = "other.cu".into(),
    ];
    for v in variants {
        let mut j = job();
        v(&mut j);
        keys.push(cache_key(&j, Compiler::Nvcc, "nvcc|13.0", &j.flags));
    }
    keys.push(cache_key(
        &job(),
        Compiler::Nvrtc,
        "nvcc|13.0",
        &job().flags,
    ));
    keys.push(cache_key(&job(), Compiler::Nvcc, "nvcc|13.1", &job().flags));
    keys.push(cache_key(
        &job(),
        Compiler::Nvcc,
        "nvcc|13.0",
        &["-O2".to_string()],
    ));
    let mut unique = keys.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), keys.len());
}

#[test]
fn side_files_change_the_key() {
    let dir = nvcc::TempDir::new("side").unwrap();
    std::fs::write(
        dir.path().join("kernel.cu"),
        "ignored: the job's text counts",
    )
    .unwrap();
    std::fs::write(dir.path().join("common.cuh"), "#define X 1").unwrap();
    std::fs::write(dir.path().join("task.toml"), "not a header").unwrap();
    let mut j = job();
    j.include_dir = Some(dir.path().to_path_buf());
    assert_eq!(side_files(dir.path(), "kernel.cu").len(), 1);
    let k1 = cache_key(&j, Compiler::Nvcc, "n", &[]);
    std::fs::write(dir.path().join("task.toml"), "changed").unwrap();
    std::fs::write(dir.path().join("kernel.cu"), "changed").unwrap();
    assert_eq!(k1, cache_key(&j, Compiler::Nvcc, "n", &[]));
    std::fs::write(dir.path().join("common.cuh"), "#define X 2").unwrap();
    assert_ne!(k1, cache_key(&j, Compiler::Nvcc, "n", &[]));
}

const TASK: &str = r#"
[[knob]]
name = "BM"
values = [32, 64, 2048]

[[knob]]
name = "SMEM_KB"
values = [0, 300]

[[shape]]
name = "small"
params = { N = 4096, D = 64 }

[[shape]]
name = "odd"
params = { N = 4000, D = 128 }

[kernel]
source = "kernel.cu"
entry = "scale"
flags = ["-O3"]
shape_defines = ["D"]
grid = ["ceil_div(N, BM)"]
block = ["BM"]
shared_mem = "SMEM_KB * 1024"
max_spill_bytes = 16

[[kernel.arg]]
name = "x"
kind = "buffer"
dtype = "f32"
len = "N"
role = "inout"
"#;

fn task(dir: &Path) -> Task {
    std::fs::write(dir.join("task.toml"), TASK).unwrap();
    std::fs::write(
        dir.join("kernel.cu"),
        "extern \"C\" __global__ void scale(float* x) { x[threadIdx.x] *= BM + D; }\n",
    )
    .unwrap();
    Task::load(dir).unwrap()
}

#[test]
fn job_for_a_candidate() {
    let dir = nvcc::TempDir::new("job").unwrap();
    let task = task(dir.path());
    let shape = task.shape("odd").unwrap();
    let job =
        CompileJob::for_candidate(&task, &Config(vec![64, 0]), shape, "sm_90a", None).unwrap();
    assert_eq!(
        job.defines,
        [
            ("BM".to_string(), "64".to_string()),
            ("SMEM_KB".into(), "0".into()),
            ("D".into(), "128".into())
        ]
    );
    assert_eq!(job.file_name, "kernel.cu");
    assert!(job.source.contains("void scale"));
    assert_eq!(job.include_dir.as_deref(), Some(dir.path()));
    assert_eq!(job.flags, ["-O3"]);
    assert_eq!(job.max_spill_bytes, 16);
    assert_eq!(job.compiler, Compiler::Nvcc);
    let launch = job.launch.unwrap();
    assert_eq!(
        (launch.grid, launch.block, launch.smem),
        ([63, 1, 1], [64, 1, 1], 0)
    );

    let variant = CompileJob::for_candidate(
        &task,
        &Config(vec![64, 0]),
        shape,
        "sm_90a",
        Some("// variant"),
    )
    .unwrap();
    assert_eq!(variant.source, "// variant");
}

#[test]
fn launch_errors_reject_the_candidate() {
    let dir = nvcc::TempDir::new("job").unwrap();
    let task = task(dir.path());
    // A config of the wrong length is a setup error.
    let err = CompileJob::for_candidate(
        &task,
        &Config(vec![64]),
        task.default_shape(),
        "sm_90a",
        None,
    )
    .unwrap_err();
    assert!(matches!(err, CompileError::Setup(_)), "{err}");
    // Shared memory that overflows 32 bits.
    let mut t = task.clone();
    t.kernel.as_mut().unwrap().launch.shared_mem =
        crate::task::expr::Expr::compile("SMEM_KB * 1024 * 1024 * 1024", ["SMEM_KB"]).unwrap();
    let err = CompileJob::for_candidate(
        &t,
        &Config(vec![64, 300]),
        t.default_shape(),
        "sm_90a",
        None,
    )
    .unwrap_err();
    let r = err.rejection().expect("a rejection");
    assert_eq!(r.reason, RejectReason::LaunchDims);
    assert!(r.message.contains("shared_mem"), "{}", r.message);
    let eval = err.into_evaluation().unwrap();
    assert_eq!(eval.outcome, Outcome::CompileError);
}

#[test]
fn toolchain_errors_end_the_evaluation() {
    let err = CompileError::Toolchain("nvcc not found".into());
    assert!(matches!(err.into_evaluation(), Err(EvalError::Other(m)) if m == "nvcc not found"));
}

#[test]
fn missing_explicit_nvcc_is_a_toolchain_error() {
    let gate = CompileGate::new(CompilerSettings {
        nvcc: Some(PathBuf::from("/no/such/nvcc")),
        cache: CacheSetting::Off,
        ..CompilerSettings::default()
    });
    let err = gate.compile(&job()).unwrap_err();
    assert!(
        matches!(&err, CompileError::Toolchain(m) if m.contains("/no/such/nvcc")),
        "{err}"
    );
    let err = gate
        .compile(&CompileJob {
            arch: "compute_90".into(),
            ..job()
        })
        .unwrap_err();
    assert!(matches!(err, CompileError::Setup(_)), "{err}");
}
