#!/usr/bin/env python3
"""Dev aid: compile EVERY valid config of each task for sm_90a with nvcc and report ptxas results.

  scripts/compile-all.py                    # all tasks under tasks/
  scripts/compile-all.py tasks/gemm_bf16 -j 2 --json /tmp/gemm.jsonl

The knob product is filtered by the task's constraints (evaluated in Python: they are plain
integer arithmetic and comparisons). For each config: nvcc -cubin
-gencode=arch=compute_90a,code=sm_90a <task flags> -Xptxas -v -DKNOB=V ... ; the reference is
compiled too. Reports counts, compile errors, registers, and which configs spill (the default
config must not). nvcc defaults to the wheel install of scripts/setup-cuda
(<repo>/.cuda/py/nvidia/cu13/bin/nvcc); override with $EVOENGINEER_NVCC or --nvcc.
Exit status 1 if anything fails to compile or the default config spills.
"""
import argparse
import concurrent.futures as cf
import glob
import json
import os
import shutil
import sys
import tempfile
import time
import tomllib

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import check_kernels as ck  # noqa: E402  (stdlib-only at import time)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tasks", nargs="*", help="task folders (default: tasks/*/)")
    ap.add_argument("-j", "--jobs", type=int, default=2)
    ap.add_argument("--nvcc", default=os.environ.get("EVOENGINEER_NVCC",
                                                     os.path.join(REPO, ".cuda/py/nvidia/cu13/bin/nvcc")))
    ap.add_argument("--arch", default="sm_90a")
    ap.add_argument("--json", help="write one JSON line per config here")
    ap.add_argument("--limit", type=int, help="only the first N configs per task (smoke test)")
    a = ap.parse_args()
    ck.NVCC = a.nvcc
    if not os.path.exists(a.nvcc):
        sys.exit(f"nvcc not found at {a.nvcc}: run scripts/setup-cuda")

    tasks = a.tasks or sorted(os.path.dirname(p) for p in glob.glob(os.path.join(REPO, "tasks/*/task.toml")))
    build = tempfile.mkdtemp(prefix="compile-all-")
    jf = open(a.json, "w") if a.json else None
    bad = False
    for tdir in tasks:
        task = tomllib.load(open(os.path.join(tdir, "task.toml"), "rb"))
        name = task.get("task", {}).get("name", os.path.basename(tdir.rstrip("/")))
        k = task.get("kernel")
        if not k or not os.path.exists(os.path.join(tdir, k.get("source", ""))) or "reference" not in task:
            print(f"== {name}: skipped (no [kernel] source or [reference] in the folder)")
            continue
        src = os.path.join(tdir, k["source"])
        flags = k.get("flags", ["-O3"])
        cfgs = list(ck.knob_space(task))
        total = 1
        for kn in task.get("knob", []):
            total *= len(kn["values"])
        default = ck.default_config(task)
        if a.limit:
            cfgs = cfgs[: a.limit] + ([default] if default not in cfgs[: a.limit] else [])
        shape_defs = k.get("shape_defines", [])
        sd = {d: task["shape"][0]["params"][d] for d in shape_defs}  # first shape's values

        r = task["reference"]
        rcub, rinfo, rerr = ck.compile_cubin(os.path.join(tdir, r["source"]), sd, r.get("flags", ["-O3"]), build, a.arch)
        print(f"== {name}: {len(cfgs)} valid configs of {total}; reference "
              + (f"OK (regs={rinfo['regs']}, spill={rinfo['spill_st'] + rinfo['spill_ld']})" if rcub else "FAILED"), flush=True)
        if not rcub:
            print(rerr)
            bad = True

        t0 = time.time()
        with cf.ThreadPoolExecutor(a.jobs) as ex:
            futs = [ex.submit(ck.compile_cubin, src, {**c, **sd}, flags, build, a.arch) for c in cfgs]
            results = [f.result() for f in futs]
        errors, spills, regs = [], [], []
        for cfg, (cub, info, err) in zip(cfgs, results):
            spill = info["spill_st"] + info["spill_ld"]
            if not cub:
                errors.append((cfg, err))
            else:
                regs.append(info["regs"])
                if spill:
                    spills.append((cfg, info))
            if jf:
                jf.write(json.dumps({"task": name, "config": cfg, "ok": bool(cub), **info,
                                     "default": cfg == default}) + "\n")
        dinfo = results[cfgs.index(default)][1]
        print(f"   compiled {len(cfgs) - len(errors)}/{len(cfgs)} in {time.time() - t0:.0f}s; "
              f"registers {min(regs) if regs else '-'}..{max(regs) if regs else '-'}; "
              f"default {ck.cfg_str(default)}: regs={dinfo['regs']} spill={dinfo['spill_st'] + dinfo['spill_ld']}")
        for cfg, err in errors:
            bad = True
            print(f"   COMPILE ERROR [{ck.cfg_str(cfg)}]:\n" + "\n".join("      " + l for l in err.strip().splitlines()[-6:]))
        print(f"   {len(spills)} configs spill" + (":" if spills else ""))
        for cfg, info in spills:
            print(f"      [{ck.cfg_str(cfg)}] regs={info['regs']} spill stores={info['spill_st']} loads={info['spill_ld']} B")
        if dinfo["spill_st"] + dinfo["spill_ld"]:
            print("   DEFAULT CONFIG SPILLS")
            bad = True
    shutil.rmtree(build, ignore_errors=True)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
