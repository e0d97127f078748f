//! The compile gate on real tasks, on a machine with no GPU. The flagship task: every config of
//! its space (the seed's 128 and the 192 wgmma ones beyond the seed) compiles for sm_90a, and
//! any two configs that differ in one knob give different cubins (each knob really changes the
//! code).

mod common;

use serde_json::Value;

#[test]
fn all_seed_configs_compile_and_every_knob_changes_the_cubin() {
    let out = common::evo()
        .arg("compile")
        .arg(common::repo().join("tasks/sdpa_fp8"))
        .args(["--all", "--arch", "sm_90a", "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && stderr.contains("nvcc") && stderr.contains("not found") {
        eprintln!("SKIPPED: nvcc not found (run scripts/setup-cuda): {stderr}");
        return;
    }
    assert!(out.status.success(), "{stderr}");
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 320);
    for r in &rows {
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(r["spill_bytes"], 0, "{r}");
    }
    let mut pairs = 0;
    let mut seed_pairs = 0;
    for (i, a) in rows.iter().enumerate() {
        for b in &rows[i + 1..] {
            let (ca, cb) = (
                a["config"].as_object().unwrap(),
                b["config"].as_object().unwrap(),
            );
            let differing = ca.iter().filter(|(k, v)| cb[k.as_str()] != **v).count();
            if differing == 1 {
                pairs += 1;
                if ca["USE_WGMMA"] == 0 && cb["USE_WGMMA"] == 0 {
                    seed_pairs += 1;
                }
                assert_ne!(
                    a["cubin_sha256"], b["cubin_sha256"],
                    "{} and {}",
                    a["key"], b["key"]
                );
            }
        }
    }
    // The seed's 128 configs of 7 binary knobs: 128 · 7 / 2 pairs one knob apart.
    assert_eq!(seed_pairs, 448);
    assert!(pairs > seed_pairs);
}

#[test]
fn gemm_compiles_every_config_and_reports_its_resources() {
    let out = common::evo()
        .arg("compile")
        .arg(common::repo().join("tasks/gemm_bf16"))
        .args(["--all", "--arch", "sm_90a", "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && stderr.contains("nvcc") && stderr.contains("not found") {
        eprintln!("SKIPPED: nvcc not found (run scripts/setup-cuda): {stderr}");
        return;
    }
    assert!(out.status.success(), "{stderr}");
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 270, "every valid config of the space");
    for r in &rows {
        for key in ["registers", "smem_bytes", "spill_bytes", "cubin_sha256"] {
            assert!(!r[key].is_null(), "no {key} in {r}");
        }
        // A config either passes or says why not (spills over the task's limit).
        assert!(
            r["ok"] == true || r["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{r}"
        );
    }
    assert!(rows.iter().filter(|r| r["ok"] == true).count() >= 260);
}
