#!/usr/bin/env python3
"""The new timing protocol against the full one and against ncu, from bench/protocol/run-device's
output folder. Prints Markdown: per task, the grid's wall and phases under each protocol, the
winner and the top three of each, how the p50s of the configs timed in full by both agree, and
the winner's p50 beside ncu's gpu__time_duration.

    python3 bench/protocol/compare.py OUT_DIR softmax_bf16 gemm_bf16 sdpa_fp8
"""
import json
import statistics
import sys
from pathlib import Path


def load(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def trials(run):
    """{key: (outcome, p50)} of a tune's --json output."""
    return {t["key"]: (t["outcome"], t.get("p50_us")) for t in (run or {}).get("trials", [])}


def top(ts, n=3):
    ok = sorted((p, k) for k, (o, p) in ts.items() if o == "ok" and p is not None)
    return [k for _, k in ok[:n]]


def short(key):
    return key.split("|", 1)[-1]


def main():
    out = Path(sys.argv[1])
    tasks = sys.argv[2:]
    machine = (out / "machine.txt").read_text().strip().replace("\n", "; ") if (out / "machine.txt").exists() else "?"
    print(f"Device and date: {machine}\n")
    print("| task | protocol | configs | ok | slower (raced out) | other failures | command wall (s) | search wall (s) | correctness (s) | timing (s) | winner | winner p50 (μs) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    agree_rows = []
    ncu_rows = []
    controls = []
    for t in tasks:
        runs = {}
        for proto in ("new", "full", "full2", "new2"):
            if not (out / f"{t}-{proto}.json").exists():
                continue
            run = load(out / f"{t}-{proto}.json")
            wall = (load(out / f"{t}-{proto}-wall.json") or {}).get("wall_s")
            show = load(out / f"{t}-{proto}-show.json")
            ts = trials(run)
            runs[proto] = (run, ts)
            if run is None:
                print(f"| {t} | {proto} | — | | | | {wall} | | | | (no result: see {t}-{proto}.log) | |")
                continue
            n = len(ts)
            ok = sum(1 for o, _ in ts.values() if o == "ok")
            slower = sum(1 for o, _ in ts.values() if o == "slower")
            ph = (show or {}).get("phases") or {}
            w = run.get("winner") or {}
            wk = ",".join(f"{k}={v}" for k, v in (w.get("config") or {}).items())
            print(
                f"| {t} | {proto} | {n} | {ok} | {slower} | {n - ok - slower} | {wall:.1f} | {ph.get('wall_s') or 0:.1f} | "
                f"{ph.get('correctness_s', 0) or 0:.1f} | {ph.get('timing_s', 0) or 0:.1f} | `{wk}` | {w.get('p50_us', float('nan')):.2f} |"
            )
        for a, b in (("full2", "full"), ("new2", "new")):
            if a in runs and b in runs and runs[a][1] and runs[b][1]:
                x, y = runs[a][1], runs[b][1]
                both = [k for k in x if x[k][0] == "ok" and y.get(k, (None,))[0] == "ok"]
                rel = [abs(x[k][1] - y[k][1]) / y[k][1] for k in both]
                if rel:
                    controls.append(
                        f"| {t} | {b} vs {a} | {len(rel)} | {100*statistics.median(rel):.2f} % | "
                        f"{100*max(rel):.2f} % | {sum(r <= 0.02 for r in rel)}/{len(rel)} | "
                        f"{'yes' if top(x, 1) == top(y, 1) else 'no'} |"
                    )
        new, full = runs.get("new", (None, {}))[1], runs.get("full", (None, {}))[1]
        if not new or not full:
            continue
        both = [k for k in new if new[k][0] == "ok" and full.get(k, (None,))[0] == "ok"]
        rel = [(new[k][1] - full[k][1]) / full[k][1] for k in both if new[k][1] and full[k][1]]
        within = sum(1 for r in rel if abs(r) <= 0.02)
        wins_same = top(new, 1) == top(full, 1)
        top3_full = top(full)
        # The full protocol's top three: each must be timed in full by the new protocol too (not
        # raced out) and keep its rank among them.
        top3_new_among = sorted(top3_full, key=lambda k: new.get(k, ("", float("inf")))[1] or float("inf"))
        agree_rows.append(
            f"| {t} | {'yes' if wins_same else 'NO'} | {', '.join('`'+short(k)+'`' for k in top3_full)} | "
            f"{', '.join('`'+short(k)+'`' for k in top(new))} | {len(rel)} | "
            f"{100*statistics.median([abs(r) for r in rel]) if rel else float('nan'):.2f} % | "
            f"{100*max((abs(r) for r in rel), default=float('nan')):.2f} % | {within}/{len(rel)} | "
            + " / ".join(f"{100*(new[k][1]-full[k][1])/full[k][1]:+.2f} %" if new.get(k, (None, None))[1] else "raced out" for k in top3_full)
            + " |"
        )
        ncu = load(out / f"{t}-ncu.json")
        dur = ((ncu or {}).get("profile") or {}).get("metrics", {}).get("gpu__time_duration.sum")
        wkey = top(new, 1)
        if wkey and dur:
            k = wkey[0]
            d_us = dur / 1e3
            ncu_rows.append(
                f"| {t} | `{short(k)}` | {new[k][1]:.2f} | {full[k][1]:.2f} | {d_us:.2f} | "
                f"{100*(new[k][1]-d_us)/d_us:+.1f} % | {100*(full[k][1]-d_us)/d_us:+.1f} % |"
            )
    print("\n### Same winners and elites, p50s within 2 %\n")
    print("| task | same winner | full protocol's top 3 | new protocol's top 3 | configs timed in full by both | median abs diff | max abs diff | within 2 % | top 3 of full: new vs full |")
    print("|---|---|---|---|---:|---:|---:|---:|---|")
    for r in agree_rows:
        print(r)
    if controls:
        print("\n### The same protocol twice in one run (how much runs differ on this GPU)\n")
        print("| task | runs | configs ok in both | median abs diff | max abs diff | within 2 % | same winner |")
        print("|---|---|---:|---:|---:|---:|---|")
        for r in controls:
            print(r)
    print("\n### The winner against Nsight Compute (one launch, `--clock-control none`)\n")
    print("| task | winner | new p50 (μs) | full p50 (μs) | ncu gpu__time_duration (μs) | new vs ncu | full vs ncu |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in ncu_rows:
        print(r)


if __name__ == "__main__":
    main()
