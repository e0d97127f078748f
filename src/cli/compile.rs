//! `evoengineer compile`: the compile gate alone, no GPU needed.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use evoengineer::eval::compile::{compile_command, CacheSetting, CompilerSettings, DEFAULT_ARCH};
use evoengineer::task::Task;

#[derive(clap::Args)]
#[command(
    after_help = "Prints each config's registers, shared memory, spills and cubin hash. \
Compiles in parallel on every core and caches cubins (~/.cache/evoengineer/cubins). Needs no \
GPU: nvcc is found through --nvcc, $EVOENGINEER_NVCC, PATH, /usr/local/cuda, or the wheels \
scripts/setup-cuda installs."
)]
pub struct CompileArgs {
    /// The task folder (holding task.toml)
    task_dir: PathBuf,
    /// One config, K=V,... (knobs not named keep their defaults) [default: the defaults]
    #[arg(long, value_name = "K=V,...", conflicts_with = "all")]
    config: Vec<String>,
    /// Every valid config of the space
    #[arg(long)]
    all: bool,
    /// Target architecture
    #[arg(long, default_value = DEFAULT_ARCH)]
    arch: String,
    /// Shape whose parameters feed launch sizes and shape defines [default: the task's first]
    #[arg(long, value_name = "NAME")]
    shape: Option<String>,
    /// The nvcc to use
    #[arg(long, value_name = "PATH")]
    nvcc: Option<PathBuf>,
    /// Compile again even if the cubin cache has it
    #[arg(long)]
    no_cache: bool,
    /// Parallel compiles [default: one per core]
    #[arg(long, short, value_name = "N", default_value_t = 0)]
    jobs: usize,
    /// One JSON array instead of a table
    #[arg(long)]
    json: bool,
}

pub fn run(a: CompileArgs) -> anyhow::Result<ExitCode> {
    let task = Task::load(&a.task_dir)?;
    let shape = super::shape(&task, a.shape.as_deref())?;
    let configs = if a.all {
        task.space
            .enumerate(1_000_000)
            .context("--all lists the whole space")?
    } else if a.config.is_empty() {
        vec![task.space.default_config()]
    } else {
        a.config
            .iter()
            .map(|c| task.space.parse(c).with_context(|| format!("--config {c}")))
            .collect::<anyhow::Result<_>>()?
    };
    let settings = CompilerSettings {
        nvcc: a.nvcc.clone(),
        jobs: a.jobs,
        cache: if a.no_cache {
            CacheSetting::Off
        } else {
            CacheSetting::Default
        },
        ..CompilerSettings::default()
    };
    if !a.json {
        eprintln!(
            "compiling {} configs of {} for {}",
            configs.len(),
            task.name,
            a.arch
        );
    }
    let rows = compile_command(&task, &configs, shape, &a.arch, &settings)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!(
            "{:<5} {:>5} {:>8} {:>6} {:>8} {:<16} config",
            "ok", "regs", "smem", "spill", "secs", "cubin"
        );
        for r in &rows {
            let n = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
            println!(
                "{:<5} {:>5} {:>8} {:>6} {:>8} {:<16} {}{}",
                if r.ok { "yes" } else { "NO" },
                n(r.registers.map(u64::from)),
                n(r.smem_bytes),
                n(r.spill_bytes),
                r.compile_s
                    .map(|s| format!("{s:.2}"))
                    .unwrap_or_else(|| "-".into()),
                r.cubin_sha256.as_deref().map(|h| &h[..16]).unwrap_or("-"),
                r.key.split_once('|').map(|(_, c)| c).unwrap_or(&r.key),
                r.error
                    .as_deref()
                    .map(|e| format!("\n      {}", e.replace('\n', "\n      ")))
                    .unwrap_or_default()
            );
        }
        let failed = rows.iter().filter(|r| !r.ok).count();
        println!("{} configs, {} rejected", rows.len(), failed);
    }
    Ok(ExitCode::SUCCESS)
}
