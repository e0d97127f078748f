#!/usr/bin/env python3
"""Sanity checker for a task folder, to run ON THE GPU MACHINE (CUDA 13.0, PyTorch, CuPy; no Rust).

For each config: compile kernel.cu with nvcc to a cubin, load it with CuPy, launch it and the
reference on random inputs built from task.toml, report errors against the tolerance and the
median time (CUDA events, L2 flushed before every timed launch), plus the first baseline.

  python3 scripts/check_kernels.py tasks/gemm_bf16                       # default config
  python3 scripts/check_kernels.py tasks/gemm_bf16 -c BLOCK_M=64,STAGES=4 -c BLOCK_N=128
  python3 scripts/check_kernels.py tasks/gemm_bf16 --all --shape mission  # every valid config
  python3 scripts/check_kernels.py tasks/adversarial --all --isolate      # one process each

Correctness is checked twice per config: on the first launch, and again after the timed
launches with fresh inputs and re-poisoned (NaN) outputs, which catches kernels that cache
results between calls or spread work over launches.
"""
import argparse
import concurrent.futures as cf
import hashlib
import itertools
import json
import os
import re
import subprocess
import sys
import tomllib

NVCC = os.environ.get("NVCC", "/usr/local/cuda/bin/nvcc")


# ---- task.toml expressions (rhai subset: integer arithmetic, comparisons, && || !) --------------
def ceil_div(a, b):
    return -(-a // b)


def expr_eval(expr, env):
    e = str(expr)
    if "if " in e:
        raise ValueError(f"if-expressions not supported here: {e}")
    e = e.replace("&&", " and ").replace("||", " or ")
    e = re.sub(r"!(?!=)", " not ", e)
    e = re.sub(r"(?<![/])/(?![/])", "//", e)  # integer division (operands are non-negative)
    return eval(e, {"__builtins__": {}}, {"ceil_div": ceil_div, "min": min, "max": max, **env})


def knob_space(task):
    knobs = task.get("knob", [])
    names = [k["name"] for k in knobs]
    for vals in itertools.product(*[k["values"] for k in knobs]):
        cfg = dict(zip(names, vals))
        if all(expr_eval(c["expr"], cfg) for c in task.get("constraint", [])):
            yield cfg


def default_config(task):
    return {k["name"]: k.get("default", k["values"][0]) for k in task.get("knob", [])}


def parse_config(s, task):
    cfg = default_config(task)
    for part in filter(None, s.split(",")):
        k, v = part.split("=")
        if k not in cfg:
            sys.exit(f"unknown knob {k}")
        cfg[k] = int(v)
    bad = [c for c in task.get("constraint", []) if not expr_eval(c["expr"], cfg)]
    if bad:
        sys.exit(f"config {cfg} violates: " + "; ".join(c.get("reason", c["expr"]) for c in bad))
    return cfg


def cfg_str(cfg):
    return ",".join(f"{k}={v}" for k, v in cfg.items()) or "(no knobs)"


# ---- compile -----------------------------------------------------------------------------------
def compile_cubin(src, defines, flags, outdir, arch="sm_90a"):
    """Returns (cubin path or None, ptxas info dict, stderr text)."""
    defs = [f"-D{k}={v}" for k, v in defines.items()]
    key = hashlib.sha1(json.dumps([os.path.abspath(src), open(src).read(), defs, flags, arch]).encode()).hexdigest()[:16]
    out = os.path.join(outdir, f"{os.path.basename(src)}.{key}.cubin")
    cmd = [NVCC, "-cubin", f"-gencode=arch=compute_{arch[3:]},code={arch}", *flags, "-Xptxas", "-v", *defs, src, "-o", out]
    p = subprocess.run(cmd, capture_output=True, text=True)
    info = {"regs": None, "spill_st": 0, "spill_ld": 0}
    m = re.search(r"Used (\d+) registers", p.stderr)
    if m:
        info["regs"] = int(m.group(1))
    for st, ld in re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", p.stderr):
        info["spill_st"] += int(st)
        info["spill_ld"] += int(ld)
    return (out if p.returncode == 0 else None), info, p.stderr


# ---- run ---------------------------------------------------------------------------------------
class Runner:
    def __init__(self, task, tdir, shape, seed):
        import cupy
        import torch

        self.cp, self.torch = cupy, torch
        self.task, self.tdir, self.shape = task, tdir, shape
        self.params = dict(shape["params"])
        self.dt = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16,
                   "e4m3": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2, "i32": torch.int32}
        self.flush = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
        self.new_inputs(seed)

    def ev(self, e, extra=None):
        return expr_eval(e, {**self.params, **(extra or {})})

    def new_inputs(self, seed):
        torch = self.torch
        g = torch.Generator(device="cuda").manual_seed(seed)
        self.inputs = {}
        for a in self.task["kernel"]["arg"]:
            if a["kind"] != "buffer" or a.get("role", "input") == "output":
                continue
            n = self.ev(a["len"])
            ini = a.get("init", {"dist": "normal", "mean": 0.0, "std": 1.0})
            if ini["dist"] == "normal":
                t = torch.randn(n, generator=g, device="cuda") * ini.get("std", 1.0) + ini.get("mean", 0.0)
            else:
                lo, hi = ini.get("low", -1.0), ini.get("high", 1.0)
                t = torch.rand(n, generator=g, device="cuda") * (hi - lo) + lo
            self.inputs[a["name"]] = (t * ini.get("scale", 1.0)).to(self.dt[a["dtype"]])
        # Reference outputs (every output/inout is f32 there).
        self.ref = self.launch_module(self.ref_kernel(), self.task["reference"], {}, ref=True)

    def ref_kernel(self):
        if not hasattr(self, "_ref"):
            r = self.task["reference"]
            cub, _, err = compile_cubin(os.path.join(self.tdir, r["source"]), {}, r.get("flags", ["-O3"]), BUILD)
            if not cub:
                sys.exit(f"reference does not compile:\n{err}")
            self._ref = self.cp.RawModule(path=cub).get_function(r["entry"])
        return self._ref

    def make_args(self, cfg, ref):
        import numpy as np

        torch = self.torch
        outs, args = {}, []
        for a in self.task["kernel"]["arg"]:
            if a["kind"] == "scalar":
                v = self.ev(a["value"], cfg)
                args.append({"i32": np.int32, "i64": np.int64, "f32": np.float32}[a["dtype"]](v))
                continue
            role = a.get("role", "input")
            if role == "input":
                t = self.inputs[a["name"]]
            else:
                dt = torch.float32 if ref else self.dt[a["dtype"]]
                t = torch.full((self.ev(a["len"]),), float("nan"), dtype=dt, device="cuda")
                if role == "inout":
                    t.copy_(self.inputs[a["name"]].to(dt))
                outs[a["name"]] = t
            args.append(np.uint64(t.data_ptr()))  # a pointer parameter is 8 bytes
        return outs, tuple(args)

    def launch_module(self, fn, spec, cfg, ref=False):
        outs, args = self.make_args(cfg, ref)
        grid = tuple(self.ev(x, cfg) for x in spec["grid"])
        block = tuple(self.ev(x, cfg) for x in spec["block"])
        smem = self.ev(spec.get("shared_mem", "0"), cfg)
        if smem > 48 * 1024:
            fn.max_dynamic_shared_size_bytes = smem
        fn(grid, block, args, shared_mem=smem)
        self.torch.cuda.synchronize()
        return outs

    def compare(self, outs):
        worst = {"max_abs_err": 0.0, "rel_l2_err": 0.0, "mean_abs_err": 0.0}
        for name, t in outs.items():
            c, r = t.float(), self.ref[name]
            d = (c - r).abs()
            bad = ~self.torch.isfinite(c)
            if bad.any():
                return {"max_abs_err": float("inf"), "rel_l2_err": float("inf"), "mean_abs_err": float("inf"),
                        "nonfinite": int(bad.sum())}
            worst["max_abs_err"] = max(worst["max_abs_err"], d.max().item())
            worst["mean_abs_err"] = max(worst["mean_abs_err"], d.mean().item())
            worst["rel_l2_err"] = max(worst["rel_l2_err"], (d.norm() / r.norm().clamp_min(1e-30)).item())
        return worst

    def ok(self, errs):
        tol = self.task.get("tolerance", {})
        return all(errs.get(k, float("inf")) <= v for k, v in tol.items())

    def time(self, launch, iters, warmup):
        cp = self.cp
        for _ in range(warmup):
            launch()
        times = []
        for _ in range(iters):
            self.flush.zero_()  # same (legacy default) stream as the launches
            s, e = cp.cuda.Event(), cp.cuda.Event()
            s.record()
            launch()
            e.record()
            e.synchronize()
            times.append(cp.cuda.get_elapsed_time(s, e) * 1e3)
        times.sort()
        return times[len(times) // 2]


def check_config(runner, task, tdir, cfg, cub, iters, warmup, seed):
    k = task["kernel"]
    fn = runner.cp.RawModule(path=cub).get_function(k["entry"])
    res = {}
    outs = runner.launch_module(fn, k, cfg)
    res["first"] = runner.compare(outs)
    outs, args = runner.make_args(cfg, False)
    grid = tuple(runner.ev(x, cfg) for x in k["grid"])
    block = tuple(runner.ev(x, cfg) for x in k["block"])
    smem = runner.ev(k.get("shared_mem", "0"), cfg)
    res["us"] = runner.time(lambda: fn(grid, block, args, shared_mem=smem), iters, warmup)
    runner.new_inputs(seed + 1)  # fresh inputs + reference, outputs re-poisoned
    outs = runner.launch_module(fn, k, cfg)
    res["again"] = runner.compare(outs)
    runner.new_inputs(seed)
    res["pass"] = runner.ok(res["first"]) and runner.ok(res["again"])
    return res


def baseline_time(runner, task, iters, warmup):
    bl = task.get("baseline", [])
    if not bl:
        return None, None
    torch = runner.torch
    import torch.nn.functional as F
    scope = {"torch": torch, "F": F}
    for a in task["kernel"]["arg"]:
        if a["kind"] == "scalar":
            scope[a["name"]] = runner.ev(a["value"])
        elif a["name"] in runner.inputs:
            shp = [runner.ev(s) for s in a.get("shape", [a["len"]])]
            scope[a["name"]] = runner.inputs[a["name"]].view(*shp)
    code = compile(bl[0]["expr"], "<baseline>", "eval")
    return bl[0]["name"], runner.time(lambda: eval(code, scope), iters, warmup)


def main():
    global BUILD
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("task_dir")
    ap.add_argument("-c", "--config", action="append", default=[], help="K=V,K=V (unset knobs: defaults)")
    ap.add_argument("--all", action="store_true", help="every valid config")
    ap.add_argument("--shape", action="append", help="shape name(s); default: the first")
    ap.add_argument("--all-shapes", action="store_true")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 4, help="parallel nvcc jobs")
    ap.add_argument("--build", default="/tmp/check_kernels_build")
    ap.add_argument("--isolate", action="store_true", help="run each config in a child process")
    ap.add_argument("--timeout", type=float, default=60.0, help="per child process (--isolate)")
    ap.add_argument("--json", help="append one JSON line per result to this file")
    a = ap.parse_args()
    BUILD = a.build
    os.makedirs(BUILD, exist_ok=True)

    tdir = a.task_dir
    task = tomllib.load(open(os.path.join(tdir, "task.toml"), "rb"))
    cfgs = list(knob_space(task)) if a.all else [parse_config(c, task) for c in a.config] or [default_config(task)]
    shapes = task["shape"] if a.all_shapes else [s for s in task["shape"] if s["name"] in (a.shape or [task["shape"][0]["name"]])]

    if a.isolate:
        rc = 0
        for cfg in cfgs:
            cmd = [sys.executable, __file__, tdir, "-c", cfg_str(cfg), "--iters", str(a.iters), "--warmup", str(a.warmup),
                   "--build", BUILD, "--seed", str(a.seed)] + sum([["--shape", s["name"]] for s in shapes], [])
            if a.json:
                cmd += ["--json", a.json]
            try:
                p = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout)
                tail = (p.stdout + p.stderr).strip().splitlines()
                print(f"[{cfg_str(cfg)}] rc={p.returncode}: " + (tail[-1] if tail else ""))
                if p.returncode:
                    print("    " + "\n    ".join(tail[-4:]))
            except subprocess.TimeoutExpired:
                print(f"[{cfg_str(cfg)}] TIMEOUT after {a.timeout}s (killed)")
                rc = 1
        sys.exit(rc)

    src = os.path.join(tdir, task["kernel"]["source"])
    flags = task["kernel"].get("flags", ["-O3"])
    shape_defs = task["kernel"].get("shape_defines", [])
    jobs = {}
    with cf.ThreadPoolExecutor(a.jobs) as ex:
        for shape in shapes:
            sd = {k: shape["params"][k] for k in shape_defs}
            for i, cfg in enumerate(cfgs):
                jobs[(shape["name"], i)] = ex.submit(compile_cubin, src, {**cfg, **sd}, flags, BUILD)
    print(f"compiled {len(jobs)} cubins with {NVCC}", flush=True)

    failures = 0
    for shape in shapes:
        runner = Runner(task, tdir, shape, a.seed)
        p = runner.params
        flops = expr_eval(shape["flops"], p) if "flops" in shape else None
        nbytes = expr_eval(shape["bytes"], p) if "bytes" in shape else None

        def rate(us):
            s = []
            if flops:
                s.append(f"{flops / us / 1e6:7.1f} TFLOP/s")
            if nbytes:
                s.append(f"{nbytes / us / 1e3:7.1f} GB/s")
            return " ".join(s)

        bname, bus = baseline_time(runner, task, a.iters, a.warmup)
        print(f"== {task['task'].get('name', tdir)} shape {shape['name']} {p}")
        if bus:
            print(f"   baseline {bname}: {bus:9.1f} us {rate(bus)}")
        for i, cfg in enumerate(cfgs):
            cub, info, err = jobs[(shape["name"], i)].result()
            tag = f"[{cfg_str(cfg)}]"
            if not cub:
                failures += 1
                print(f"{tag} COMPILE ERROR\n{err[-2000:]}")
                continue
            spill = info["spill_st"] + info["spill_ld"]
            res = check_config(runner, task, tdir, cfg, cub, a.iters, a.warmup, a.seed)
            failures += not res["pass"]
            f, g = res["first"], res["again"]
            print(f"{tag} regs={info['regs']} spill={spill} {'PASS' if res['pass'] else 'FAIL'} "
                  f"max_abs={f['max_abs_err']:.3g}/{g['max_abs_err']:.3g} rel_l2={f['rel_l2_err']:.3g}/{g['rel_l2_err']:.3g} "
                  f"{res['us']:9.1f} us {rate(res['us'])}" + (f" ({bus / res['us']:.2f}x baseline)" if bus else ""),
                  flush=True)
            if a.json:
                with open(a.json, "a") as fh:
                    fh.write(json.dumps({"task": task["task"].get("name"), "shape": shape["name"], "config": cfg,
                                         "regs": info["regs"], "spill": spill, **res, "baseline_us": bus}) + "\n")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
