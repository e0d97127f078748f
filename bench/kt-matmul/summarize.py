#!/usr/bin/env python3
"""The table of bench/kt-matmul/run-device: Kernel Tuner 1.5 against evoengineer, one GPU.

    python3 bench/kt-matmul/summarize.py RAW_DIR [--json-out FILE]

RAW_DIR holds what run-device wrote: kt.json (kt_matmul.py), {grid,default}.json (tune --json),
{grid,default}-wall.json (the command's wall), {grid,default}-show.json (show --json),
machine.txt. A missing piece is shown as "not run". Prints Markdown; needs only the standard
library.
"""

import argparse
import json
import math
import os
import statistics
import sys

KNOBS = ["block_size_x", "block_size_y", "tile_size_x", "tile_size_y"]
RUNS = [("grid", "evoengineer grid"), ("default", "evoengineer default (surrogate)")]


def load(raw, name):
    path = os.path.join(raw, name)
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def key_config(key):
    """`base|block_size_x=32,...` -> {knob: int}."""
    part = key.split("|", 1)[-1]
    out = {}
    for kv in part.split(","):
        if "=" in kv:
            k, v = kv.split("=", 1)
            try:
                out[k.strip()] = int(v)
            except ValueError:
                out[k.strip()] = v
    return out


def tup(cfg):
    return "(%s)" % ", ".join(str(cfg.get(k, "?")) for k in KNOBS) if cfg else "—"


def same(a, b):
    return bool(a) and bool(b) and all(a.get(k) == b.get(k) for k in KNOBS)


def fmt(x, digits=1, unit=""):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return ("%." + str(digits) + "f%s") % (x, unit)


def median(xs):
    xs = [x for x in xs if isinstance(x, (int, float)) and math.isfinite(x)]
    return statistics.median(xs) if xs else None


def first_reach(trajectory, cfg):
    """(evaluations, elapsed_s) at the first evaluation of `cfg`, or None."""
    for i, t in enumerate(trajectory or []):
        if same(key_config(t.get("key", "")), cfg):
            return {"evaluations": i + 1, "elapsed_s": t.get("elapsed_s"), "outcome": t.get("outcome"),
                    "p50_us": t.get("p50_us")}
    return None


def evo_run(raw, name, kt_best):
    tune = load(raw, name + ".json")
    wall = load(raw, name + "-wall.json")
    show = load(raw, name + "-show.json")
    if not (tune or wall or show):
        return None
    r = {"command_wall_s": (wall or {}).get("wall_s"), "exit": (wall or {}).get("exit")}
    if show:
        traj = show.get("trajectory") or []
        outcomes = {}
        for t in traj:
            outcomes[t.get("outcome")] = outcomes.get(t.get("outcome"), 0) + 1
        w = show.get("winner") or {}
        r.update(
            evaluations=show.get("evaluations", len(traj)),
            ok=outcomes.get("ok", 0),
            outcomes=outcomes,
            failed=[{"config": key_config(t["key"]), "outcome": t.get("outcome"),
                     "message": (t.get("message") or "")[:200]} for t in traj if t.get("outcome") != "ok"],
            stopped_by=show.get("stopped_by"),
            run_elapsed_s=show.get("elapsed_s"),
            best_config=w.get("config"),
            best_p50_us=w.get("p50_us"),
            best_p90_us=w.get("p90_us"),
            phases=show.get("phases"),
            device=show.get("device"),
            toolchain=show.get("toolchain"),
            median_phase_s={
                p: median([(t.get("phases") or {}).get(p) for t in traj])
                for p in ("compile_s", "wait_s", "correctness_s", "timing_s", "other_s")
            },
            median_wall_per_candidate_s=median([t.get("wall_s") for t in traj]),
            reached_kt_best=first_reach(traj, kt_best) if kt_best else None,
            trajectory=[{"config": key_config(t["key"]), "outcome": t.get("outcome"), "p50_us": t.get("p50_us"),
                         "elapsed_s": t.get("elapsed_s")} for t in traj],
        )
    elif tune:
        w = tune.get("winner") or {}
        r.update(evaluations=tune.get("evaluations"), stopped_by=tune.get("stopped_by"),
                 best_config=w.get("config"), best_p50_us=w.get("p50_us"))
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("raw")
    ap.add_argument("--json-out")
    a = ap.parse_args()
    raw = a.raw

    kt = load(raw, "kt.json")
    kt_script = load(raw, "kt-script.json")
    kt_best = (kt or {}).get("best_config")
    runs = {name: evo_run(raw, name, kt_best) for name, _ in RUNS}
    grid = runs.get("grid")
    if grid and runs.get("default") and grid.get("best_config"):
        runs["default"]["reached_grid_best"] = first_reach(
            [{"key": "|" + ",".join("%s=%s" % kv for kv in t["config"].items()), **t}
             for t in runs["default"].get("trajectory", [])], grid["best_config"])
    if grid and kt_best:
        grid["kt_best_measured"] = first_reach(
            [{"key": "|" + ",".join("%s=%s" % kv for kv in t["config"].items()), **t}
             for t in grid.get("trajectory", [])], kt_best)

    try:
        machine = open(os.path.join(raw, "machine.txt")).read().strip().splitlines()
    except OSError:
        machine = []

    L = []
    L.append("## Kernel Tuner 1.5 against evoengineer on Kernel Tuner's matmul example (4096² fp32), one GPU")
    L.append("")
    gpu = next((m for m in machine if "," in m and ("H200" in m or "H100" in m or "NVIDIA" in m)), None)
    if machine:
        L.append("Run %s on %s; %s." % (machine[0], gpu or "?", next((m for m in machine if m.startswith("evoengineer")), "evoengineer ?")))
        L.append("")
    cols = ["Kernel Tuner %s brute force" % ((kt or {}).get("version") or "1.5")] + [t for _, t in RUNS]
    L.append("| | " + " | ".join(cols) + " |")
    L.append("|---|" + "---|" * len(cols))

    def row(label, ktv, f):
        vals = [ktv if kt else "not run"]
        for name, _ in RUNS:
            r = runs.get(name)
            vals.append(f(r) if r else "not run")
        L.append("| %s | %s |" % (label, " | ".join(vals)))

    def reach(r):
        x = r.get("reached_kt_best")
        if not kt_best:
            return "—"
        if not x:
            return "never"
        return "evaluation %d, %s s in" % (x["evaluations"], fmt(x["elapsed_s"], 1))

    row("wall (s)", fmt((kt or {}).get("wall_s"), 1) + " (tune_kernel call)",
        lambda r: fmt(r.get("command_wall_s"), 1) + " (whole command)")
    row("configs evaluated", str((kt or {}).get("configs")), lambda r: str(r.get("evaluations")))
    row("correct and timed", str((kt or {}).get("valid")), lambda r: str(r.get("ok")))
    row("best config " + tup({k: k.replace("block_size_", "bs").replace("tile_size_", "ts") for k in KNOBS}),
        tup(kt_best), lambda r: tup(r.get("best_config")))
    row("best time (ms)",
        fmt((kt or {}).get("best_time_ms"), 3) + " (mean of %s, no L2 flush)" % (kt or {}).get("iterations"),
        lambda r: fmt((r.get("best_p50_us") or float("nan")) / 1000.0, 3) + " (p50, L2 flushed before each launch)")
    row("Kernel Tuner's best config first measured", "—", reach)
    row("stopped by", "exhausted", lambda r: str(r.get("stopped_by")))
    L.append("")

    g = runs.get("grid") or {}
    d = runs.get("default") or {}
    if g.get("kt_best_measured"):
        x = g["kt_best_measured"]
        L.append("evoengineer's grid measured Kernel Tuner's best config %s at %s ms (p50)." % (
            tup(kt_best), fmt((x.get("p50_us") or float("nan")) / 1000.0, 3)))
    if d.get("reached_grid_best") is not None or (d and g):
        x = d.get("reached_grid_best")
        L.append("The default strategy first measured the grid's best config %s %s." % (
            tup(g.get("best_config")),
            "at evaluation %d, %s s into its run" % (x["evaluations"], fmt(x["elapsed_s"], 1)) if x else "never"))
    L.append("")

    # where the time goes
    L.append("Where the time goes (seconds; Kernel Tuner's own per-config timers summed, "
             "evoengineer's `show` phases):")
    L.append("")
    L.append("| phase | Kernel Tuner | evoengineer grid | evoengineer default |")
    L.append("|---|---|---|---|")

    def ph(r, k):
        p = (r or {}).get("phases") or {}
        return fmt(p.get(k), 1) if r else "not run"

    def ktsum(k):
        return fmt((kt or {}).get("sum_%s_s" % k), 1) if kt else "not run"

    L.append("| compile | %s | %s (on compile threads; %s overlapped GPU work) | %s (%s overlapped) |" % (
        ktsum("compile_time"), ph(g, "compile_s"), ph(g, "compile_overlapped_s"), ph(d, "compile_s"),
        ph(d, "compile_overlapped_s")))
    L.append("| waiting for compiles | — | %s | %s |" % (ph(g, "wait_s"), ph(d, "wait_s")))
    L.append("| correctness / verification | %s | %s | %s |" % (ktsum("verification_time"), ph(g, "correctness_s"), ph(d, "correctness_s")))
    L.append("| timing / benchmark | %s | %s | %s |" % (ktsum("benchmark_time"), ph(g, "timing_s"), ph(d, "timing_s")))
    L.append("| other / framework + strategy | %s + %s | %s | %s |" % (
        ktsum("framework_time"), ktsum("strategy_time"), ph(g, "other_s"), ph(d, "other_s")))
    L.append("| outside the evaluations | — | %s | %s |" % (ph(g, "outside_s"), ph(d, "outside_s")))
    L.append("| run wall | %s | %s | %s |" % (fmt((kt or {}).get("wall_s"), 1) if kt else "not run",
                                               ph(g, "wall_s"), ph(d, "wall_s")))
    L.append("")
    if kt:
        L.append("Kernel Tuner medians per config (ms): compile %s, verification %s, benchmark %s "
                 "(answer checked: %s, atol %s; backend %s). Whole script %s s (imports %s s, inputs %s s, numpy.dot %s s)." % (
                     fmt(kt.get("median_compile_time_ms"), 0), fmt(kt.get("median_verification_time_ms"), 0),
                     fmt(kt.get("median_benchmark_time_ms"), 0), kt.get("answer_checked"), kt.get("atol"),
                     kt.get("backend"), fmt((kt_script or {}).get("script_wall_s"), 1), fmt(kt.get("import_s"), 1),
                     fmt(kt.get("inputs_s"), 1), fmt(kt.get("answer_s"), 1)))
        if kt.get("error"):
            L.append("")
            L.append("Kernel Tuner failed: `%s`" % kt["error"][:300])
    for name, title in RUNS:
        r = runs.get(name)
        if r and r.get("median_phase_s"):
            m = r["median_phase_s"]
            L.append("%s medians per config (ms): compile %s, correctness %s, timing %s, candidate wall %s." % (
                title, fmt((m.get("compile_s") or float("nan")) * 1e3, 0), fmt((m.get("correctness_s") or float("nan")) * 1e3, 0),
                fmt((m.get("timing_s") or float("nan")) * 1e3, 0), fmt((r.get("median_wall_per_candidate_s") or float("nan")) * 1e3, 0)))
        if r and r.get("failed"):
            L.append("%s failures: %s." % (title, "; ".join(
                "%s %s" % (tup(f["config"]), f["outcome"]) for f in r["failed"])))
        if r and r.get("exit") not in (0, None):
            L.append("%s exited %s (see raw/%s.log)." % (title, r["exit"], name))
    if kt and kt.get("failed"):
        L.append("Kernel Tuner failures: %s." % "; ".join("%s %s" % (tup(f["config"]), f["time"]) for f in kt["failed"]))

    text = "\n".join(L) + "\n"
    sys.stdout.write(text)
    if a.json_out:
        summary = {"kernel_tuner": kt, "kernel_tuner_script": kt_script, "machine": machine}
        for name, _ in RUNS:
            r = dict(runs[name]) if runs.get(name) else None
            summary[name] = r
        with open(a.json_out, "w") as f:
            json.dump(summary, f, indent=1)
    ok = kt is not None and all(runs.get(n) for n, _ in RUNS)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
