//! The flagship task on a machine with no GPU: every config of the seed's space compiles for
//! sm_90a, and any two configs that differ in one knob give different cubins (each knob
//! really changes the code).

mod common;

use serde_json::Value;

#[test]
fn all_seed_configs_compile_and_every_knob_changes_the_cubin() {
    let out = common::evo()
        .arg("compile")
        .arg(common::seed_task())
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
    assert_eq!(rows.len(), 128);
    for r in &rows {
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(r["spill_bytes"], 0, "{r}");
    }
    let mut pairs = 0;
    for (i, a) in rows.iter().enumerate() {
        for b in &rows[i + 1..] {
            let (ca, cb) = (
                a["config"].as_object().unwrap(),
                b["config"].as_object().unwrap(),
            );
            let differing = ca.iter().filter(|(k, v)| cb[k.as_str()] != **v).count();
            if differing == 1 {
                pairs += 1;
                assert_ne!(
                    a["cubin_sha256"], b["cubin_sha256"],
                    "{} and {}",
                    a["key"], b["key"]
                );
            }
        }
    }
    // 128 configs of 7 binary knobs: 128 · 7 / 2 pairs one knob apart.
    assert_eq!(pairs, 448);
}
