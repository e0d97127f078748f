#!/usr/bin/env python3
"""Replay Kernel Tuner 1.5.0's search strategies on recorded brute-force caches.

Kernel Tuner's "simulation mode" (tune_kernel(..., simulation_mode=True,
cache=FILE)) serves every configuration a strategy asks for from a cache file
instead of compiling and timing it. Given the benchmark_hub caches (every
valid configuration of a kernel timed on one GPU), this script runs each
strategy with a budget of `max_fevals` evaluations, many seeds, and records
the best time each run found, so our search study can print Kernel Tuner's
scores beside ours.

    kt_sim.py --cache A100.json.gz --spec convolution_milo.json \
              [--cache ... --spec ...] \
              --strategies random_sample,genetic_algorithm,... \
              --budgets 16,32,64 --seeds 20 --out results.jsonl [--jobs 1]

One JSON object per run is appended to --out; runs already there are skipped
(append-and-resume). See bench/kernel-tuner/README.md for what an
"evaluation" is and how the seeds are handled.

Run it with the venv that bench/kernel-tuner/setup creates.
"""

import argparse
import ast
import contextlib
import gzip
import hashlib
import io
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections import OrderedDict

# One BLAS thread: the machine is shared, and bayes_opt's Gaussian process
# should not fan out over cores (nor depend on the core count numerically).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

DEFAULT_STRATEGIES = (
    # cheapest first (measured on the hub caches): partial results are useful early
    "random_sample,genetic_algorithm,firefly_algorithm,pso,greedy_ils,diff_evo,"
    "simulated_annealing,dual_annealing,basinhopping,bayes_opt"
)
CHECKPOINTS = (16, 32, 64)
DUMMY_KERNEL_SOURCE = "/* simulation mode: every configuration is served from the cache */"


# --------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------

def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_json_maybe_gz(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        return json.load(f)


def load_spec(path):
    """benchmark_hub 'T4' kernel spec -> (restrictions, tuning parameters, benchmark name)."""
    spec = read_json_maybe_gz(path)
    space = spec["ConfigurationSpace"]
    restrictions = [c["Expression"] for c in space.get("Conditions", [])]
    params = OrderedDict()
    for p in space["TuningParameters"]:
        values = p["Values"]
        if isinstance(values, str):
            try:
                values = ast.literal_eval(values)
            except ValueError:
                # a Python expression such as "[32 * i for i in range(1, 32)]" (older specs):
                # evaluated with no builtins but range, as benchmark_hub's own loaders do
                values = eval(values, {"__builtins__": {}, "range": range})  # noqa: S307
        params[p["Name"]] = values
    name = spec.get("General", {}).get("BenchmarkName") or spec.get("KernelSpecification", {}).get("BenchmarkName")
    return restrictions, params, name


class CacheInfo:
    """What one --cache/--spec pair needs; picklable, small (no cache records)."""

    def __init__(self, index, cache_path, spec_path, tmpdir):
        self.index = index
        self.cache = cache_path  # as given on the command line
        self.spec = spec_path
        self.sha256 = sha256_of(cache_path)
        data = read_json_maybe_gz(cache_path)
        # some caches (MI250X) have an empty device_name: fall back to the file name
        self.device = data["device_name"] or os.path.basename(cache_path).split(".")[0]
        self.kernel = data["kernel_name"]
        self.problem_size = data["problem_size"]
        self.tune_params_keys = list(data["tune_params_keys"])
        # tune_params in the cache's key order (the order cache keys are built in)
        self.tune_params = OrderedDict((k, data["tune_params"][k]) for k in self.tune_params_keys)
        self.objective = data.get("objective", "time")
        self.cache_keys = frozenset(data["cache"])
        records = data["cache"].values()
        numeric = [r["time"] for r in records if is_numeric_time(r)]
        self.n_records = len(data["cache"])
        self.n_numeric = len(numeric)
        self.optimum_us = min(numeric) * 1000 if numeric else None
        del data, records, numeric

        self.restrictions, spec_params, self.benchmark = load_spec(spec_path)
        if list(spec_params) != self.tune_params_keys:
            raise SystemExit(
                f"{spec_path}: tuning parameters {list(spec_params)} differ from "
                f"{cache_path}'s {self.tune_params_keys}")
        for k, v in spec_params.items():
            if list(v) != list(self.tune_params[k]):
                print(f"warning: {spec_path}: values of {k} differ from {cache_path}; "
                      "using the cache's", file=sys.stderr)

        # Kernel Tuner 1.5 reads the cache with open()/json.loads and appends
        # ".json" to a name that does not end in it, so a .gz cache is
        # decompressed to a temporary .json first.
        if cache_path.endswith(".json"):
            self.json_path = os.path.abspath(cache_path)
        else:
            base = os.path.basename(cache_path)
            if base.endswith(".gz"):
                base = base[:-3]
            if not base.endswith(".json"):
                base += ".json"
            self.json_path = os.path.join(tmpdir, f"{index:02d}_{base}")
            opener = gzip.open if cache_path.endswith(".gz") else open
            with opener(cache_path, "rb") as src, open(self.json_path, "wb") as dst:
                shutil.copyfileobj(src, dst)

    def label(self):
        return f"{self.benchmark or self.kernel}/{os.path.basename(self.cache)}"


def is_numeric_time(record):
    t = record.get("time")
    return (isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t)
            and "__error__" not in record)


def parse_list(text, conv=str):
    return [conv(x) for x in text.split(",") if x.strip()]


def parse_seeds(text):
    """'20' -> seeds 0..19; '3,5,8' -> those seeds; '10-19' -> that range."""
    if "," in text:
        return parse_list(text, int)
    if "-" in text:
        lo, hi = text.split("-")
        return list(range(int(lo), int(hi) + 1))
    return list(range(int(text)))


# --------------------------------------------------------------------------
# Kernel Tuner side (imported lazily so --help works without the venv)
# --------------------------------------------------------------------------

_KT = {}             # module handles, filled by install_hooks()
_LAST_BUDGET = [None]
_LHS = {"seed": None, "calls": 0, "enabled": True}
_MEMO = OrderedDict()  # abs path -> ((mtime_ns, size), data) ; at most _MEMO_MAX entries
_MEMO_MAX = 2


def install_hooks(fast=True, seed_lhs=True):
    """Import kernel_tuner and install the observation/seeding/speed-up hooks.

    Always (observation and seeding only, no change to any strategy):
      * util.TuningBudget is replaced by a subclass that remembers the last
        instance, so the number of evaluations Kernel Tuner itself counted can
        be read back (and cross-checked) after tune_kernel returns or raises.
      * scipy's LatinHypercube, as bayes_opt and Searchspace.get_LHS_sample
        (diff_evo) call it, gets an rng derived from the run's seed (see
        README: unseeded, it draws from OS entropy; seed_lhs=False keeps that).

    fast=True (the default) adds the speed-up:
      * util.read_cache(path, open_cache=False) is memoised per process
        (keyed by path, mtime and size; two caches kept). Kernel Tuner calls it
        once per tune_kernel() in simulation mode and parsing a 5-12 MB JSON cache
        (0.15-0.45 s) was most of a cheap run. The memo returns a new top-level dict and a new
        `cache` dict each call; the per-configuration records are shared, which
        is safe because the simulation runner only reads them (it copies each
        with dict(...) before adding timing fields).
      * util.close_cache(path) skips re-reading a memoised cache: in simulation
        mode the file is opened read-only (open_cache=False) so it is already a
        closed JSON document and close_cache would not write anything.
    --verify checks that runs with these hooks evaluate exactly the same
    configurations in the same order as plain tune_kernel in a fresh process.
    """
    if _KT:
        return
    import numpy as np
    import kernel_tuner
    from kernel_tuner import util
    from kernel_tuner.strategies import bayes_opt
    from importlib.metadata import version

    _KT["np"] = np
    _KT["tune_kernel"] = kernel_tuner.tune_kernel
    _KT["util"] = util
    _KT["version"] = version("kernel_tuner")

    class RecordingBudget(util.TuningBudget):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            _LAST_BUDGET[0] = self

    util.TuningBudget = RecordingBudget

    # Latin hypercube samplers: bayes_opt's initial sample (it imported the
    # class at module import) and Searchspace.get_LHS_sample (imports it from
    # scipy.stats.qmc at each call; used by diff_evo's initial population).
    # Both build LatinHypercube(d) with no rng, i.e. numpy.random.default_rng()
    # from OS entropy, which np.random.seed does not reach.
    import scipy.stats.qmc as qmc
    _LHS["enabled"] = seed_lhs
    original_lhs = qmc.LatinHypercube

    def seeded_latin_hypercube(*args, **kwargs):
        if _LHS["enabled"] and _LHS["seed"] is not None and "rng" not in kwargs and "seed" not in kwargs:
            kwargs["rng"] = np.random.default_rng([_LHS["seed"], _LHS["calls"]])
            _LHS["calls"] += 1
        return original_lhs(*args, **kwargs)

    qmc.LatinHypercube = seeded_latin_hypercube
    bayes_opt.LatinHypercube = seeded_latin_hypercube

    if fast:
        original_read_cache = util.read_cache
        original_close_cache = util.close_cache

        def stat_key(path):
            st = os.stat(path)
            return (st.st_mtime_ns, st.st_size)

        def read_cache_memo(cachefile, open_cache=True):
            if open_cache:  # not simulation mode: leave alone
                return original_read_cache(cachefile, open_cache=open_cache)
            key = os.path.abspath(cachefile)
            stamp = stat_key(key)
            hit = _MEMO.get(key)
            if hit is None or hit[0] != stamp:
                data = original_read_cache(cachefile, open_cache=False)
                _MEMO[key] = (stamp, data)
                while len(_MEMO) > _MEMO_MAX:
                    _MEMO.popitem(last=False)
            _MEMO.move_to_end(key)
            data = _MEMO[key][1]
            out = dict(data)
            out["cache"] = dict(data["cache"])
            return out

        def close_cache_memo(cachefile):
            key = os.path.abspath(cachefile)
            hit = _MEMO.get(key)
            if hit is not None and hit[0] == stat_key(key):
                return None
            return original_close_cache(cachefile)

        util.read_cache = read_cache_memo
        util.close_cache = close_cache_memo


def evaluation_sequence(results, ci):
    """The configurations Kernel Tuner counted as evaluations, in order.

    Mirrors runners/simulation.py: a configuration costs one evaluation the
    first time the runner serves it from the cache (failures such as
    RuntimeFailedConfig included); serving it again is free, and a
    configuration that is not in the cache (only possible when it fails the
    restrictions) is reported as InvalidConfig without being counted.
    `results` is cost_func.results: every record the runner returned, in
    order, repeats included.
    """
    seen = set()
    seq = []
    for r in results or []:
        if not r:
            continue
        key = ",".join(str(r[p]) for p in ci.tune_params_keys)
        if key in ci.cache_keys and key not in seen:
            seen.add(key)
            seq.append((key, r))
    return seq


def run_one(ci, strategy, budget, seed, keep_keys=False):
    """One tune_kernel call in simulation mode -> the JSON record."""
    np = _KT["np"]
    random.seed(seed)
    np.random.seed(seed)
    _LHS["seed"] = seed
    _LHS["calls"] = 0
    _LAST_BUDGET[0] = None
    error = None
    results = None
    t0 = time.perf_counter()
    sink = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink):
            warnings.simplefilter("ignore")
            results, _env = _KT["tune_kernel"](
                ci.kernel,
                DUMMY_KERNEL_SOURCE,
                ci.problem_size,
                [],
                dict(ci.tune_params),
                restrictions=list(ci.restrictions),
                strategy=strategy,
                strategy_options={"max_fevals": budget},
                cache=ci.json_path,
                simulation_mode=True,
                objective=ci.objective,
                quiet=True,
                verbose=False,
                seed=seed,  # only pymoo-based strategies read it; harmless otherwise
            )
    except Exception as e:  # a strategy that raises is recorded and we go on
        error = f"{type(e).__name__}: {e}"
        tb = traceback.format_exc(limit=-3)
        print(f"error: {strategy} {ci.label()} budget={budget} seed={seed}: {error}\n{tb}", file=sys.stderr)
    wall = time.perf_counter() - t0

    kt_budget = _LAST_BUDGET[0]
    kt_count = kt_budget.num_fevals if kt_budget is not None else None
    rec = OrderedDict(
        tool="kernel_tuner",
        version=_KT["version"],
        strategy=strategy,
        cache=ci.cache,
        cache_sha256=ci.sha256,
        device=ci.device,
        kernel=ci.kernel,
        budget=budget,
        seed=seed,
        fevals=None,
        best_us=None,
        wall_s=round(wall, 4),
        benchmark=ci.benchmark,
        spec=ci.spec,
    )
    if error is not None:
        rec["fevals"] = kt_count
        rec["error"] = error
        return rec

    seq = evaluation_sequence(results, ci)
    if kt_count is not None and kt_count != len(seq):
        rec["fevals_kt_counter"] = kt_count  # never seen; kept so a mismatch is visible
    if len(seq) > budget:  # never seen either: the runner stops at max_fevals
        rec["truncated_from"] = len(seq)
        seq = seq[:budget]
    rec["fevals"] = len(seq)
    best = None
    best_at = OrderedDict()
    marks = [n for n in CHECKPOINTS if n <= budget]
    for i, (_key, r) in enumerate(seq, 1):
        if is_numeric_time(r) and (best is None or r["time"] < best):
            best = r["time"]
        if i in marks:
            best_at[str(i)] = None if best is None else best * 1000
    for n in marks:  # the run stopped before n evaluations: its final best
        best_at.setdefault(str(n), None if best is None else best * 1000)
    rec["best_us"] = None if best is None else best * 1000
    rec["best_at"] = best_at
    if keep_keys:
        rec["_keys"] = [k for k, _ in seq]
    return rec


# --------------------------------------------------------------------------
# worker processes (--jobs > 1)
# --------------------------------------------------------------------------

_W = {}


def _worker_init(caches, fast, seed_lhs):
    _W["caches"] = {ci.index: ci for ci in caches}
    install_hooks(fast=fast, seed_lhs=seed_lhs)


def _worker_run(task):
    index, strategy, budget, seed = task
    return run_one(_W["caches"][index], strategy, budget, seed)


# --------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------

def run_key(rec):
    return (rec.get("cache_sha256"), rec.get("strategy"), rec.get("budget"), rec.get("seed"))


def read_done(out_path, retry_errors):
    done = set()
    if not os.path.exists(out_path):
        return done
    with open(out_path, "r") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by an interrupted run: it is redone
            if retry_errors and rec.get("error"):
                continue
            done.add(run_key(rec))
    return done


def open_out(out_path):
    """Append mode. A last line without its newline is a record an interrupted
    run was writing: it is cut off (that run is redone)."""
    d = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(d, exist_ok=True)
    if os.path.exists(out_path) and os.path.getsize(out_path) > 0:
        with open(out_path, "rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.seek(0)
                data = f.read()
                cut = data.rfind(b"\n") + 1  # 0 if there is no complete line at all
                print(f"kt_sim: dropping an unfinished last line of {out_path} "
                      f"({len(data) - cut} bytes)", file=sys.stderr)
                f.truncate(cut)
    return open(out_path, "a")


def fmt_s(s):
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def main_run(args, caches):
    strategies = parse_list(args.strategies)
    budgets = parse_list(args.budgets, int)
    seeds = parse_seeds(args.seeds)
    done = read_done(args.out, args.retry_errors)

    # order: strategy (as given: put cheap ones first), cache, budget, seed
    plan = []
    for s in strategies:
        for ci in caches:
            for b in budgets:
                for seed in seeds:
                    if (ci.sha256, s, b, seed) not in done:
                        plan.append((ci.index, s, b, seed))
    total_all = len(strategies) * len(caches) * len(budgets) * len(seeds)
    skipped = total_all - len(plan)
    print(f"kt_sim: {total_all} runs ({len(strategies)} strategies x {len(caches)} caches x "
          f"{len(budgets)} budgets x {len(seeds)} seeds), {skipped} already in {args.out}, "
          f"{len(plan)} to do, jobs={args.jobs}, fast={not args.no_fast}", file=sys.stderr, flush=True)
    if not plan:
        return 0

    by_index = {ci.index: ci for ci in caches}
    t_start = time.time()
    n_done = 0
    n_err = 0
    out = open_out(args.out)

    def emit(rec):
        nonlocal n_done, n_err
        out.write(json.dumps(rec) + "\n")
        out.flush()
        n_done += 1
        n_err += bool(rec.get("error"))
        el = time.time() - t_start
        eta = el / n_done * (len(plan) - n_done)
        best = "null" if rec["best_us"] is None else f"{rec['best_us']:.2f}"
        print(f"[{skipped + n_done}/{total_all}] {fmt_s(el)} elapsed, ~{fmt_s(eta)} left (at this run mix) | "
              f"{rec['strategy']} {rec['device']} {rec['benchmark'] or rec['kernel']} b={rec['budget']} "
              f"s={rec['seed']} fevals={rec['fevals']} best_us={best} {rec['wall_s']:.2f}s"
              + (f" ERROR {rec['error']}" if rec.get("error") else ""),
              file=sys.stderr, flush=True)

    try:
        if args.jobs <= 1:
            install_hooks(fast=not args.no_fast, seed_lhs=not args.unseeded_lhs)
            for index, s, b, seed in plan:
                emit(run_one(by_index[index], s, b, seed))
        else:
            import multiprocessing as mp
            ctx = mp.get_context("spawn")
            with ctx.Pool(args.jobs, initializer=_worker_init,
                          initargs=(caches, not args.no_fast, not args.unseeded_lhs)) as pool:
                for rec in pool.imap_unordered(_worker_run, plan, chunksize=1):
                    emit(rec)
    except KeyboardInterrupt:
        print(f"kt_sim: interrupted after {n_done} runs; rerun the same command to resume", file=sys.stderr)
        return 130
    finally:
        out.close()
    print(f"kt_sim: done, {n_done} runs in {fmt_s(time.time() - t_start)}, {n_err} errors", file=sys.stderr)
    return 0


def main_verify(args, caches):
    """Same runs with the hooks in this process vs plain tune_kernel in a fresh process."""
    strategies = parse_list(args.strategies)
    budgets = parse_list(args.budgets, int)
    seeds = parse_seeds(args.seeds)
    install_hooks(fast=not args.no_fast, seed_lhs=not args.unseeded_lhs)
    picks = []
    for s in strategies:
        for ci in caches:
            for k in range(args.verify):
                picks.append((ci, s, budgets[k % len(budgets)], seeds[(k * 7 + 3) % len(seeds)]))
    n_ok = 0
    for ci, s, b, seed in picks:
        mine = run_one(ci, s, b, seed, keep_keys=True)
        cmd = [sys.executable, os.path.abspath(__file__), "--cache", ci.cache, "--spec", ci.spec,
               "--_single", json.dumps([s, b, seed]), "--no-fast"]
        if args.unseeded_lhs:
            cmd.append("--unseeded-lhs")
        p = subprocess.run(cmd, capture_output=True, text=True)
        try:
            theirs = json.loads(p.stdout.strip().splitlines()[-1])
        except Exception:
            print(f"verify: subprocess failed: {p.stderr[-2000:]}", file=sys.stderr)
            theirs = {}
        same = (mine.get("_keys") == theirs.get("_keys") and mine.get("best_us") == theirs.get("best_us")
                and mine.get("error") == theirs.get("error"))
        n_ok += same
        print(f"verify {'OK  ' if same else 'DIFF'} {s} {ci.label()} b={b} seed={seed} fevals={mine['fevals']} "
              f"best_us={mine['best_us']} hooked {mine['wall_s']:.2f}s, plain fresh process {theirs.get('wall_s')}s",
              file=sys.stderr, flush=True)
    print(f"verify: {n_ok}/{len(picks)} identical", file=sys.stderr)
    return 0 if n_ok == len(picks) else 1


def main_single(args, caches):
    s, b, seed = json.loads(args._single)
    install_hooks(fast=not args.no_fast, seed_lhs=not args.unseeded_lhs)
    rec = run_one(caches[0], s, b, seed, keep_keys=True)
    print(json.dumps(rec))
    return 0


def main_sanity(args, caches):
    """Optimum, valid-config count under the restrictions vs the cache's records."""
    install_hooks(fast=not args.no_fast)
    from kernel_tuner.searchspace import Searchspace
    for ci in caches:
        ss = Searchspace(dict(ci.tune_params), list(ci.restrictions), 1_000_000_000)
        keys = {",".join(str(v) for v in cfg) for cfg in ss.list}
        print(json.dumps(OrderedDict(
            cache=ci.cache, device=ci.device, benchmark=ci.benchmark,
            optimum_us=ci.optimum_us, kt_valid_configs=ss.size, cache_records=ci.n_records,
            cache_numeric=ci.n_numeric, valid_not_in_cache=len(keys - ci.cache_keys),
            cache_not_valid=len(ci.cache_keys - keys))))
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", action="append", required=True,
                    help="brute-force cache (.json or .json.gz); repeat, paired in order with --spec")
    ap.add_argument("--spec", action="append", required=True,
                    help="benchmark_hub kernel spec whose Conditions become restrictions=[...]")
    ap.add_argument("--strategies", default=DEFAULT_STRATEGIES,
                    help="comma list, run in this order (default: cheapest first)")
    ap.add_argument("--budgets", default="16,32,64", help="comma list of max_fevals")
    ap.add_argument("--seeds", default="20", help="N (seeds 0..N-1), a comma list, or A-B")
    ap.add_argument("--out", help="JSON Lines file to append to (runs already in it are skipped)")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    ap.add_argument("--retry-errors", action="store_true", help="redo runs recorded with an error")
    ap.add_argument("--no-fast", action="store_true",
                    help="plain tune_kernel: no memoised cache reads (same results, slower)")
    ap.add_argument("--unseeded-lhs", action="store_true",
                    help="leave the Latin hypercube samples (bayes_opt, diff_evo) on OS entropy "
                         "(then those runs are not reproducible)")
    ap.add_argument("--verify", type=int, metavar="K", default=0,
                    help="instead of --out: K runs per cache x strategy, each compared with plain "
                         "tune_kernel in a fresh process")
    ap.add_argument("--sanity", action="store_true",
                    help="print the optimum and the valid-config count per cache, then exit")
    ap.add_argument("--_single", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if len(args.cache) != len(args.spec):
        ap.error("give one --spec per --cache (paired in order)")
    if not (args.out or args.verify or args.sanity or args._single):
        ap.error("--out is required")

    tmpdir = tempfile.mkdtemp(prefix="kt_sim_")
    try:
        caches = [CacheInfo(i, c, s, tmpdir) for i, (c, s) in enumerate(zip(args.cache, args.spec))]
        if args._single:
            return main_single(args, caches)
        if args.sanity:
            return main_sanity(args, caches)
        if args.verify:
            return main_verify(args, caches)
        return main_run(args, caches)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
