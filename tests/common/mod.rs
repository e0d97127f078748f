//! Helpers shared by the integration tests of `study` and `report`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use assert_cmd::cargo::CommandCargoExt;
use serde_json::Value;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The seed's Stage-5 space exactly (seven knobs, 128 configs): `tasks/sdpa_fp8`'s manifest
/// without what the task adds beyond the seed (the `USE_WGMMA` knob, tiles of 128, 4 producer
/// warps and the constraints that pair them), written once into a temporary folder with the
/// task's kernel and reference.
pub fn seed_task() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let root = repo().join("tasks/sdpa_fp8");
        let text = std::fs::read_to_string(root.join("task.toml")).unwrap();
        let mut out = String::new();
        for (i, block) in text.split("\n[[").enumerate() {
            let b = if i == 0 {
                block.to_string()
            } else {
                format!("\n[[{block}")
            };
            if b.starts_with("\n[[constraint]]") || b.contains("name = \"USE_WGMMA\"") {
                continue;
            }
            out += &b
                .replace("values = [32, 64, 128]", "values = [32, 64]")
                .replace("values = [1, 2, 4]", "values = [1, 2]");
        }
        let out = out.replace("USE_WGMMA", "0");
        let dir = tempfile::tempdir().unwrap().keep().join("sdpa_fp8");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("task.toml"), out).unwrap();
        for f in ["kernel.cu", "reference.cu"] {
            std::fs::copy(root.join(f), dir.join(f)).unwrap();
        }
        dir
    })
    .clone()
}

pub fn evo() -> Command {
    Command::cargo_bin("evoengineer").unwrap()
}

/// A landscape over the seed space (128 configs) with every kind of outcome, like the one in
/// tests/cli.rs: latency from a fixed formula, every 7th config a compile error, every 11th
/// incorrect, every 13th missing from the file; `ok` lines carry registers, shared memory and
/// a bottleneck class.
pub fn write_landscape(dir: &Path) -> PathBuf {
    let names = [
        "USE_WARP_SPECIALIZATION",
        "USE_PERSISTENT_CTA",
        "TILE_M",
        "TILE_N",
        "NUM_PRODUCER_WARPS",
        "USE_FAST_EXP",
        "USE_CP_ASYNC_3STAGE",
    ];
    let mut lines = Vec::new();
    for i in 0..128u32 {
        let bits: Vec<i64> = (0..7).map(|b| ((i >> (6 - b)) & 1) as i64).collect();
        let values = [
            bits[0],
            bits[1],
            32 << bits[2],
            32 << bits[3],
            1 + bits[4],
            bits[5],
            bits[6],
        ];
        let config: serde_json::Map<String, Value> = names
            .iter()
            .zip(values)
            .map(|(n, v)| (n.to_string(), v.into()))
            .collect();
        if i % 13 == 5 {
            continue;
        }
        let mut obj = serde_json::json!({ "config": config, "shape": "mission" });
        if i % 7 == 3 {
            obj["outcome"] = "compile_error".into();
        } else if i % 11 == 4 {
            obj["outcome"] = "incorrect".into();
            obj["max_abs_err"] = 0.5.into();
        } else {
            let p50 = 656.0
                - 40.0 * bits[0] as f64
                - 30.0 * bits[1] as f64
                - 20.0 * bits[2] as f64
                - 10.0 * bits[3] as f64
                - 5.0 * bits[4] as f64
                + 3.0 * bits[5] as f64
                + ((i * 37) % 17) as f64;
            obj["outcome"] = "ok".into();
            obj["p50_us"] = p50.into();
            obj["p90_us"] = (p50 * 1.05).into();
            obj["registers"] = (96 + 8 * (i % 5)).into();
            obj["smem_bytes"] = (values[2] * values[3] * 2 * (2 + bits[6])).into();
            obj["max_abs_err"] = (0.01 + 0.001 * (i % 9) as f64).into();
            obj["bottleneck"] =
                ["compute", "memory", "occupancy", "balanced"][(i % 4) as usize].into();
        }
        lines.push(obj.to_string());
    }
    let path = dir.join("landscape.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

/// The best p50 among the `ok` lines of a landscape.
pub fn best_ok(landscape: &Path) -> f64 {
    std::fs::read_to_string(landscape)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["outcome"] == "ok")
        .map(|l| l["p50_us"].as_f64().unwrap())
        .fold(f64::INFINITY, f64::min)
}
