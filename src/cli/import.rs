//! `evoengineer import`: bring another autotuner's measurements in as a task and a landscape.

use std::path::PathBuf;
use std::process::ExitCode;

use evoengineer::import::kernel_tuner::{self, ImportOptions, ImportSummary};
use evoengineer::space::Layer;

#[derive(clap::Args)]
pub struct ImportArgs {
    #[command(subcommand)]
    source: ImportSource,
}

#[derive(clap::Subcommand)]
enum ImportSource {
    /// A Kernel Tuner cache file (tune_kernel's `cache=`, benchmark_hub's cachefiles):
    /// writes OUT/task.toml and OUT/landscapes/<device>-<shape>.jsonl (+ .meta.json).
    KernelTuner(KernelTunerArgs),
}

#[derive(clap::Args)]
#[command(after_help = "Example:
  evoengineer import kernel-tuner hub/cachefiles/convolution_milo/A100.json.gz \\
      --spec hub/kernels/convolution_milo.json --out tasks/convolution-a100
  evoengineer tune tasks/convolution-a100 --replay tasks/convolution-a100/landscapes/*.jsonl
  evoengineer study tasks/convolution-a100

Knobs are the cache's tune_params in tune_params_keys order (booleans as 0/1; values that are \
not integers become their indices, listed in a comment). Restrictions (the spec's \
ConfigurationSpace.Conditions, or a {\"restrictions\": [...]} file) are translated from Python \
into constraints, each with its original text as `reason`. `time` (ms) becomes p50_us; the \
90th percentile of `times` becomes p90_us; CompilationFailedConfig is compile_error, \
RuntimeFailedConfig and any other failure string runtime_error. Valid configs absent from \
the cache replay as `missing`.")]
struct KernelTunerArgs {
    /// The cache file (.json or .json.gz)
    #[arg(value_name = "CACHE")]
    cache: PathBuf,

    /// A benchmark_hub kernel spec (for restrictions and defaults), or a JSON file
    /// {"restrictions": ["python expression", ...]}
    #[arg(long, value_name = "SPEC.json")]
    spec: Option<PathBuf>,

    /// The task folder to write
    #[arg(long, value_name = "DIR")]
    out: PathBuf,

    /// The task's name [default: the folder's name]
    #[arg(long, value_name = "NAME")]
    name: Option<String>,

    /// The shape's name (its params are problem_size_0, problem_size_1, ...)
    #[arg(long, value_name = "NAME", default_value = "mission")]
    shape: String,

    /// Exactly these knobs are macro, the rest micro [default: a guess, printed]
    #[arg(long = "macro", value_name = "KNOBS", value_delimiter = ',')]
    macro_knobs: Option<Vec<String>>,

    /// Overwrite an existing DIR/task.toml
    #[arg(long)]
    force: bool,

    /// Print a summary object (JSON) instead of text
    #[arg(long)]
    json: bool,
}

pub fn run(a: ImportArgs) -> anyhow::Result<ExitCode> {
    match a.source {
        ImportSource::KernelTuner(k) => kernel_tuner(k),
    }
}

fn kernel_tuner(a: KernelTunerArgs) -> anyhow::Result<ExitCode> {
    let opts = ImportOptions {
        spec: a.spec,
        name: a.name,
        shape: a.shape,
        macro_knobs: a.macro_knobs,
        force: a.force,
        command_line: Some(std::env::args().collect::<Vec<_>>().join(" ")),
        ..ImportOptions::new(a.cache, a.out)
    };
    let summary = kernel_tuner::import(&opts)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        for n in &summary.notes {
            eprintln!("note: {n}");
        }
        print!("{}", text(&summary));
    }
    Ok(ExitCode::SUCCESS)
}

fn text(s: &ImportSummary) -> String {
    let c = &s.counts;
    let names = |layer: Layer| {
        s.knobs
            .iter()
            .filter(|k| k.layer == layer)
            .map(|k| k.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = format!(
        "imported {} ({} on {}) into {}\n",
        s.cache.display(),
        if s.kernel.is_empty() { "?" } else { &s.kernel },
        s.device,
        s.manifest.display()
    );
    out += &format!(
        "  landscape {}: {} records ({} ok{}) of {} cache entries{}\n",
        s.landscape.display(),
        c.records,
        c.ok,
        c.failures
            .iter()
            .map(|(k, v)| format!(", {v} {k}"))
            .collect::<String>(),
        c.cache_entries,
        if c.skipped > 0 {
            format!(", {} left out", c.skipped)
        } else {
            String::new()
        }
    );
    out += &format!(
        "  space: {} knobs, {} constraints, {} combinations{}; {} cache entries break the restrictions\n",
        s.knobs.len(),
        s.constraints.len(),
        c.raw_configs,
        match (c.valid_configs, c.missing) {
            (Some(v), Some(m)) => format!(", {v} valid ({m} absent from the cache: they replay as missing)"),
            _ => String::new(),
        },
        c.break_restrictions
    );
    out += &format!(
        "  layers{}: macro [{}], micro [{}]\n",
        if s.layers_guessed {
            " (a guess; set them with --macro a,b,c)"
        } else {
            ""
        },
        names(Layer::Macro),
        names(Layer::Micro)
    );
    out += &format!(
        "  default config ({}): {}\n",
        s.default_from,
        s.default_config
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    out
}
