#!/usr/bin/env python3
"""GPU check for tasks/sdpa_fp8, to run ON THE GPU MACHINE (CUDA 13.0 nvcc, PyTorch, CuPy).

  python3 tasks/sdpa_fp8/check.py [--out DIR] [--configs all|seed|wgmma|K=V,K=V;...] [--time N]

1. Compiles kernel.cu for every selected config × (D, CAUSAL) ∈ {64,128} × {0,1} with
   /usr/local/cuda/bin/nvcc (-gencode=arch=compute_90a,code=sm_90a -O3 -Xptxas -v), in parallel.
2. Correctness, in a child process watched for hangs (a config that stops making progress for
   HANG_S seconds is recorded as HANG and the child restarted after it): for each (D, CAUSAL),
   fresh e4m3 inputs on three shapes (S = 1000 with non-unit scales and 4·16 heads, enough items
   for several per persistent CTA; S = 77, shorter than a tile; S = 512, tile-aligned), outputs
   poisoned with NaN before every launch, compared with the fp32 reference (reference.cu) by
   max abs err and rel-L2 (the gates of task.toml's [tolerance]).
3. Timing at the mission shape (B=8, H=16, S=2048, D=128) and its causal twin, for the configs
   that passed: median of --iters launches (CUDA events, 256 MB L2 flush before each), with the
   PyTorch bf16 SDPA cuDNN and flash backends on the dequantised inputs as baselines.
Writes $OUT (or --out) /results.jsonl and prints a short table last.
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
import time
import tomllib
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
NVCC = os.environ.get("NVCC", "/usr/local/cuda/bin/nvcc")
BUILD = "/tmp/sdpa_fp8_build"
TASK = tomllib.load(open(os.path.join(HERE, "task.toml"), "rb"))
HANG_S = 8.0
MAX_ABS, MAX_REL = TASK["tolerance"]["max_abs_err"], TASK["tolerance"]["rel_l2_err"]

CORRECTNESS_SHAPES = [
    # name, B, H, S, (q_scale, k_scale, v_scale)
    ("s1000_scaled", 4, 16, 1000, (0.5, 1.5, 2.0)),
    ("s77", 3, 5, 77, (1.0, 1.0, 1.0)),
    ("s512", 2, 4, 512, (1.0, 1.0, 1.0)),
]
TIMING_SHAPES = [("mission", 8, 16, 2048, 128, 0), ("mission_causal", 8, 16, 2048, 128, 1)]


def ceil_div(a, b):
    return -(-a // b)


def expr_eval(expr, env):
    """task.toml's rhai subset: integer arithmetic, comparisons, && || !, min/max/ceil_div and
    `if c { a } else { b }` (not nested)."""
    e = str(expr)
    e = re.sub(r"if\s+(.+?)\s*\{\s*(.+?)\s*\}\s*else\s*\{\s*(.+?)\s*\}", r"((\2) if (\1) else (\3))", e)
    e = e.replace("&&", " and ").replace("||", " or ")
    e = re.sub(r"!(?!=)", " not ", e)
    e = re.sub(r"(?<![/])/(?![/])", "//", e)
    return eval(e, {"__builtins__": {}}, {"ceil_div": ceil_div, "min": min, "max": max, **env})


def load_task():
    return tomllib.load(open(os.path.join(HERE, "task.toml"), "rb"))


def knob_configs(task, which):
    knobs = task["knob"]
    names = [k["name"] for k in knobs]
    if which in ("all", "seed", "wgmma"):
        seed_vals = {"USE_WARP_SPECIALIZATION": [0, 1], "USE_PERSISTENT_CTA": [0, 1], "TILE_M": [32, 64],
                     "TILE_N": [32, 64], "NUM_PRODUCER_WARPS": [1, 2], "USE_FAST_EXP": [0, 1],
                     "USE_CP_ASYNC_3STAGE": [0, 1], "USE_WGMMA": [0]}
        if which == "wgmma":
            vals = [[1] if k["name"] == "USE_WGMMA" else k["values"] for k in knobs]
        else:
            vals = [k["values"] if which == "all" else seed_vals.get(k["name"], [k.get("default", k["values"][0])])
                    for k in knobs]
        cfgs = [dict(zip(names, v)) for v in itertools.product(*vals)]
        return [c for c in cfgs if all(expr_eval(k["expr"], c) for k in task.get("constraint", []))]
    out = []
    default = {k["name"]: k.get("default", k["values"][0]) for k in knobs}
    for part in which.split(";"):
        c = dict(default)
        for kv in filter(None, part.split(",")):
            k, v = kv.split("=")
            c[k] = int(v)
        out.append(c)
    return out


def parse_combos(text):
    """--combos: 'all' or 'D,CAUSAL;D,CAUSAL...' with D in {64, 128} and CAUSAL in {0, 1}."""
    if text == "all":
        return [(D, C) for D in (64, 128) for C in (0, 1)]
    out = []
    for part in text.split(";"):
        try:
            D, C = (int(x) for x in part.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r} is not a D,CAUSAL pair (e.g. 128,0)") from None
        if D not in (64, 128) or C not in (0, 1):
            raise argparse.ArgumentTypeError(f"{part!r}: D must be 64 or 128 and CAUSAL 0 or 1")
        out.append((D, C))
    return out


def cfg_key(cfg):
    return ",".join(f"{k}={v}" for k, v in cfg.items())


def cfg_short(cfg):
    abbrev = {"USE_WARP_SPECIALIZATION": "ws", "USE_PERSISTENT_CTA": "pe", "TILE_M": "m", "TILE_N": "n",
              "NUM_PRODUCER_WARPS": "p", "USE_FAST_EXP": "fx", "USE_CP_ASYNC_3STAGE": "s3", "USE_WGMMA": "wg"}
    return " ".join(f"{abbrev.get(k, k)}{v}" for k, v in cfg.items())


def compile_one(src, defines, out_dir):
    defines = dict(defines)
    lineinfo = ["-lineinfo"] if defines.pop("EVO_LINEINFO", 0) else []
    defs = [f"-D{k}={v}" for k, v in defines.items()] + lineinfo
    key = hashlib.sha1(json.dumps([open(src).read(), defs]).encode()).hexdigest()[:16]
    out = os.path.join(out_dir, f"{os.path.basename(src)}.{key}.cubin")
    cmd = [NVCC, "-cubin", "-gencode=arch=compute_90a,code=sm_90a", "-O3", "-Xptxas", "-v", *defs, src, "-o", out]
    p = subprocess.run(cmd, capture_output=True, text=True)
    info = {"regs": None, "spill": 0}
    m = re.search(r"Used (\d+) registers", p.stderr)
    if m:
        info["regs"] = int(m.group(1))
    for st, ld in re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", p.stderr):
        info["spill"] += int(st) + int(ld)
    return (out if p.returncode == 0 else None), info, p.stderr[-1500:]


# ---- launching (child and timing) --------------------------------------------------------
class Launcher:
    def __init__(self):
        import cupy
        import torch
        self.cp, self.torch = cupy, torch
        self.mods, self.dims = {}, {}

    def fn(self, cubin, entry):
        # One Function object per (cubin, entry): the launch cache below keys on it, and the
        # shared-memory attribute is set on it (a fresh object per call could reuse a freed
        # one's id() and skip the attribute: CUDA_ERROR_INVALID_VALUE at launch).
        if (cubin, entry) not in self.mods:
            self.mods[(cubin, entry)] = self.cp.RawModule(path=cubin).get_function(entry)
        return self.mods[(cubin, entry)]

    def inputs(self, B, H, S, D, seed):
        torch = self.torch
        g = torch.Generator(device="cuda").manual_seed(seed)
        return [torch.randn(B * H * S * D, generator=g, device="cuda").to(torch.float8_e4m3fn) for _ in range(3)]

    def args(self, q, k, v, o, scales, B, H, S, D, C):
        import numpy as np
        return (np.uint64(q.data_ptr()), np.uint64(k.data_ptr()), np.uint64(v.data_ptr()), np.uint64(o.data_ptr()),
                np.float32(scales[0]), np.float32(scales[1]), np.float32(scales[2]), np.int32(B), np.int32(H),
                np.int32(S), np.int32(D), np.int32(C))

    def launch_dims(self, cfg, B, H, S, D):
        k = TASK["kernel"]
        env = {**cfg, "B": B, "H": H, "S": S, "D": D, "CAUSAL": 0}
        grid = tuple(expr_eval(e, env) for e in k["grid"])
        block = tuple(expr_eval(e, env) for e in k["block"])
        return grid, block, expr_eval(k["shared_mem"], env)

    def run_kernel(self, f, cfg, args, B, H, S, D):
        # Launch sizes are evaluated (and the smem attribute set) once per (kernel, shape): the
        # timed region must hold nothing but the launch. (The first GPU runs of this script
        # evaluated the task.toml expressions on every launch: ~0.1 ms of Python that the L2
        # flush did not cover, a constant bias on every timing of this kernel.)
        key = (id(f), cfg_key(cfg), B, H, S, D)
        dims = self.dims.get(key)
        if dims is None:
            grid, block, smem = self.launch_dims(cfg, B, H, S, D)
            if smem > 48 * 1024:
                f.max_dynamic_shared_size_bytes = smem
            dims = self.dims[key] = (grid, block, smem)
        f(dims[0], dims[1], args, shared_mem=dims[2])

    def reference(self, ref_f, q, k, v, scales, B, H, S, D, C):
        torch = self.torch
        o = torch.full((B * H * S * D,), float("nan"), dtype=torch.float32, device="cuda")
        ref_f((-(-S // 8), B * H, 1), (256, 1, 1), self.args(q, k, v, o, scales, B, H, S, D, C))
        torch.cuda.synchronize()
        return o

    @staticmethod
    def compare(o, ref):
        import torch
        c = o.float()
        if not torch.isfinite(c).all():
            return {"max_abs": float("inf"), "rel_l2": float("inf"), "nonfinite": int((~torch.isfinite(c)).sum())}
        d = (c - ref).abs()
        return {"max_abs": d.max().item(), "rel_l2": (d.norm() / ref.norm()).item()}


def child(spec_path, start, progress_path):
    spec = json.load(open(spec_path))
    L = Launcher()
    torch = L.torch
    ref_f = L.fn(spec["ref_cubin"], "sdpa_fp8_ref")
    items = spec["items"]
    skip = set(spec.get("skip", []))
    cache = {}
    with open(progress_path, "a") as pf:
        for i in range(start, len(items)):
            if i in skip:
                continue
            it = items[i]
            pf.write(json.dumps({"start": i}) + "\n")
            pf.flush()
            D, C = it["D"], it["CAUSAL"]
            name, B, H, S, scales = it["shape"]
            sk = (name, D, C)
            if sk not in cache:
                cache.clear()
                q, k, v = L.inputs(B, H, S, D, seed=zlib.crc32(repr(sk).encode()) % 100000 + 7)
                cache[sk] = (q, k, v, L.reference(ref_f, q, k, v, scales, B, H, S, D, C))
            q, k, v, ref = cache[sk]
            o = torch.full((B * H * S * D,), float("nan"), dtype=torch.bfloat16, device="cuda")
            f = L.fn(it["cubin"], "sdpa_fp8_kernel")
            t0 = time.time()
            L.run_kernel(f, it["cfg"], L.args(q, k, v, o, scales, B, H, S, D, C), B, H, S, D)
            torch.cuda.synchronize()
            res = L.compare(o, ref)
            res["ms"] = (time.time() - t0) * 1e3
            pf.write(json.dumps({"done": i, **res}) + "\n")
            pf.flush()


def run_correctness(items, ref_cubin, out_dir, budget_s, tag):
    """Runs items in a child; a hang (no progress for HANG_S) or crash marks the item and its
    config, and the child restarts after it. Items of a hung config are skipped, and so are
    all items of a (WS, PERSISTENT) group once two of its configs hung."""
    spec_path = os.path.join(out_dir, f"corr_spec_{tag}.json")
    prog = os.path.join(out_dir, f"corr_progress_{tag}.jsonl")
    open(prog, "w").close()
    results, hung_cfgs, group_hangs = {}, set(), {}

    def group(c):
        return (c["USE_WARP_SPECIALIZATION"], c["USE_PERSISTENT_CTA"])

    def skipped(i):
        c = items[i]["cfg"]
        return cfg_key(c) in hung_cfgs or group_hangs.get(group(c), 0) >= 2

    start = 0
    t_end = time.time() + budget_s
    while start < len(items) and time.time() < t_end:
        skip = [i for i in range(len(items)) if skipped(i)]
        json.dump({"items": items, "ref_cubin": ref_cubin, "skip": skip}, open(spec_path, "w"))
        p = subprocess.Popen([sys.executable, __file__, "--child", spec_path, "--start", str(start), "--progress", prog],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        last_size, last_t = -1, time.time()
        while p.poll() is None:
            time.sleep(0.2)
            sz = os.path.getsize(prog)
            if sz != last_size:
                last_size, last_t = sz, time.time()
            elif time.time() - last_t > HANG_S or time.time() > t_end:
                p.kill()
                break
        out = p.stdout.read() if p.stdout else ""
        p.wait()
        cur, progressed = None, False
        for line in open(prog):
            r = json.loads(line)
            if "start" in r:
                cur = r["start"]
                progressed = progressed or cur >= start
            else:
                results[r["done"]] = r
                cur = None
        if not progressed:
            print(f"correctness child made no progress (exit {p.returncode}):\n{out[-1500:]}")
            break
        if cur is not None and cur not in results:
            results[cur] = {"done": cur, "error": "HANG" if p.returncode in (-9, None) else f"crash {p.returncode}",
                            "log": out[-400:]}
            c = items[cur]["cfg"]
            if cfg_key(c) not in hung_cfgs:
                hung_cfgs.add(cfg_key(c))
                group_hangs[group(c)] = group_hangs.get(group(c), 0) + 1
            start = cur + 1
        else:
            start = len(items)
    for i in range(len(items)):
        if i not in results and skipped(i):
            results[i] = {"done": i, "error": "skipped (config or its group hung)"}
    return results, hung_cfgs


def run_timing(cubins, cfgs, iters, out_dir, jf, sweep=True):
    L = Launcher()
    torch = L.torch
    import torch.nn.functional as F
    from torch.nn.attention import sdpa_kernel, SDPBackend
    flush = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
    ref_f = L.fn(cubins["ref"], "sdpa_fp8_ref")

    def timeit(fn, n):
        for _ in range(3):
            fn()
        ts = []
        for _ in range(n):
            flush.zero_()
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            fn()
            e.record()
            e.synchronize()
            ts.append(s.elapsed_time(e) * 1e3)
        ts.sort()
        return ts[len(ts) // 2]

    table = {}
    for name, B, H, S, D, C in TIMING_SHAPES:
        flops = 4 * B * H * S * S * D / (2 if C else 1)
        q, k, v = L.inputs(B, H, S, D, seed=11 + C)
        scales = (1.0, 1.0, 1.0)
        ref = L.reference(ref_f, q, k, v, scales, B, H, S, D, C)
        rows = []
        Qb, Kb, Vb = (x.view(B, H, S, D).to(torch.bfloat16) for x in (q, k, v))
        for bname, backend in (("cudnn_bf16", SDPBackend.CUDNN_ATTENTION), ("flash_bf16", SDPBackend.FLASH_ATTENTION)):
            def call(backend=backend):
                with sdpa_kernel(backend):
                    return F.scaled_dot_product_attention(Qb, Kb, Vb, is_causal=bool(C))
            try:
                ob = call()
                err = L.compare(ob.reshape(-1), ref)
                us = timeit(call, iters)
                rows.append({"shape": name, "name": bname, "us": us, "tflops": flops / us / 1e6, **err})
            except Exception as ex:  # noqa: BLE001
                rows.append({"shape": name, "name": bname, "error": str(ex)[:200]})
            jf.write(json.dumps({"kind": "time", **rows[-1]}) + "\n")
            jf.flush()
        for cfg in cfgs:
            cub = cubins.get((cfg_key(cfg), D, C))
            if not cub:
                continue
            f = L.fn(cub, "sdpa_fp8_kernel")
            o = torch.full((B * H * S * D,), float("nan"), dtype=torch.bfloat16, device="cuda")
            args = L.args(q, k, v, o, scales, B, H, S, D, C)
            L.run_kernel(f, cfg, args, B, H, S, D)
            torch.cuda.synchronize()
            err = L.compare(o, ref)
            us = timeit(lambda: L.run_kernel(f, cfg, args, B, H, S, D), iters)
            r = {"shape": name, "name": cfg_short(cfg), "cfg": cfg, "us": us, "tflops": flops / us / 1e6, **err}
            rows.append(r)
            jf.write(json.dumps({"kind": "time", **r}) + "\n")
            jf.flush()
        table[name] = rows
    # Sweep: the two fastest configs at the mission, and the fastest warp-specialised one, on
    # every shape of task.toml, with correctness and the cuDNN bf16 baseline.
    mine = sorted([r for r in table.get("mission", []) if "cfg" in r and r["max_abs"] <= MAX_ABS
                   and r["rel_l2"] <= MAX_REL], key=lambda r: r["us"])
    pick = [r["cfg"] for r in mine[:2]]
    ws = [r["cfg"] for r in mine if r["cfg"]["USE_WARP_SPECIALIZATION"] == 1][:1]
    pick += [c for c in ws if c not in pick]
    for shp in (TASK["shape"][1:] if sweep else []):
        P = shp["params"]
        B, H, S, D, C = P["B"], P["H"], P["S"], P["D"], P["CAUSAL"]
        flops = 4 * B * H * S * S * D / (2 if C else 1)
        q, k, v = L.inputs(B, H, S, D, seed=101)
        scales = (1.0, 1.0, 1.0)
        ref = L.reference(ref_f, q, k, v, scales, B, H, S, D, C)
        Qb, Kb, Vb = (x.view(B, H, S, D).to(torch.bfloat16) for x in (q, k, v))
        def call():
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                return F.scaled_dot_product_attention(Qb, Kb, Vb, is_causal=bool(C))
        try:
            err = L.compare(call().reshape(-1), ref)
            us = timeit(call, iters)
            r = {"shape": shp["name"], "name": "cudnn_bf16", "us": us, "tflops": flops / us / 1e6, **err}
        except Exception as ex:  # noqa: BLE001
            r = {"shape": shp["name"], "name": "cudnn_bf16", "error": str(ex)[:200]}
        jf.write(json.dumps({"kind": "sweep", **r}) + "\n")
        for cfg in pick:
            if (cfg_key(cfg), D, C) not in cubins:
                continue
            f = L.fn(cubins[(cfg_key(cfg), D, C)], "sdpa_fp8_kernel")
            o = torch.full((B * H * S * D,), float("nan"), dtype=torch.bfloat16, device="cuda")
            args = L.args(q, k, v, o, scales, B, H, S, D, C)
            L.run_kernel(f, cfg, args, B, H, S, D)
            torch.cuda.synchronize()
            err = L.compare(o, ref)
            us = timeit(lambda: L.run_kernel(f, cfg, args, B, H, S, D), iters)
            jf.write(json.dumps({"kind": "sweep", "shape": shp["name"], "name": cfg_short(cfg), "cfg": cfg, "us": us,
                                 "tflops": flops / us / 1e6, **err}) + "\n")
        jf.flush()
    return table


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--child")
    ap.add_argument("--timing-child")
    ap.add_argument("--time-budget", type=float, default=90.0)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--progress")
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp/sdpa_fp8_out"))
    ap.add_argument("--configs", default="all")
    ap.add_argument("--time-configs", default="passing", help="'passing' or ';'-separated K=V lists")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--corr-budget", type=float, default=100.0)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 8)
    ap.add_argument("--src", default=os.path.join(HERE, "kernel.cu"),
                    help="kernel source (default: the task's kernel.cu; another file to A/B a change)")
    ap.add_argument("--combos", default="all", type=parse_combos,
                    help="'all' or ';'-separated D,CAUSAL pairs, e.g. '128,0;64,1'")
    ap.add_argument("--no-sweep", action="store_true", help="time the mission shapes only")
    a = ap.parse_args()
    if not os.path.isfile(a.src):
        ap.error(f"--src {a.src}: no such file")
    if a.child:
        child(a.child, a.start, a.progress)
        return
    if a.timing_child:
        spec = json.load(open(a.timing_child))
        cubins = {(tuple(k) if isinstance(k, list) else k): v for k, v in spec["cubins"]}
        with open(a.progress, "w") as tj:
            run_timing(cubins, spec["cfgs"], spec["iters"], None, tj, spec.get("sweep", True))
        return
    t_start = time.time()
    os.makedirs(a.out, exist_ok=True)
    os.makedirs(BUILD, exist_ok=True)
    task = load_task()
    cfgs = knob_configs(task, a.configs)
    src = a.src
    combos = a.combos
    jf = open(os.path.join(a.out, "results.jsonl"), "w")

    # 1. compile
    cubins, infos, errs = {}, {}, {}
    with cf.ThreadPoolExecutor(a.jobs) as ex:
        futs = {ex.submit(compile_one, src, {**c, "D": D, "CAUSAL": C}, BUILD): (cfg_key(c), D, C)
                for c in cfgs for D, C in combos}
        rfut = ex.submit(compile_one, os.path.join(HERE, "reference.cu"), {}, BUILD)
        for fu, key in futs.items():
            cub, info, err = fu.result()
            infos[key] = info
            if cub:
                cubins[key] = cub
            else:
                errs[key] = err
        rcub, _, rerr = rfut.result()
    if not rcub:
        print("reference does not compile:\n" + rerr)
        sys.exit(1)
    cubins["ref"] = rcub
    print(f"compiled {len(cubins) - 1}/{len(futs)} cubins in {time.time() - t_start:.0f}s", flush=True)
    for key, err in list(errs.items())[:3]:
        print("COMPILE ERROR", key, err[-800:])

    # 2. correctness: a smoke pass (one shape per config) that weeds out hanging configs, then all
    def mk_items(cfg_list, shapes, combos_):
        out = []
        for c in cfg_list:
            for D, C in combos_:
                key = (cfg_key(c), D, C)
                if key in cubins:
                    for shp in shapes:
                        out.append({"cfg": c, "D": D, "CAUSAL": C, "shape": list(shp), "cubin": cubins[key]})
        return out

    t0 = time.time()
    smoke = mk_items(cfgs, CORRECTNESS_SHAPES[:1], [(128, 1) if (128, 1) in combos else combos[0]])
    sres, hung = run_correctness(smoke, rcub, a.out, a.corr_budget / 3, "smoke")
    print(f"smoke: {len(sres)}/{len(smoke)} in {time.time() - t0:.0f}s; hung configs: {len(hung)}", flush=True)
    for i, r in sorted(sres.items()):
        if "error" in r and r["error"].startswith(("HANG", "crash")):
            print(f"  {r['error']} [{cfg_short(smoke[i]['cfg'])}] " + r.get("log", "")[-200:].replace("\n", " | "))
    items = mk_items([c for c in cfgs if cfg_key(c) not in hung], CORRECTNESS_SHAPES, combos)
    res, hung2 = run_correctness(items, rcub, a.out, a.corr_budget, "full")
    for i, it in enumerate(smoke):  # configs that hung in the smoke pass: report that item
        if cfg_key(it["cfg"]) in hung:
            res[len(items)] = sres[i]
            items.append(it)
    print(f"correctness: {len(res)}/{len(items)} checks in {time.time() - t0:.0f}s", flush=True)
    per_cfg = {}
    for i, it in enumerate(items):
        r = res.get(i, {"error": "not run"})
        rec = {"kind": "check", "cfg": it["cfg"], "D": it["D"], "CAUSAL": it["CAUSAL"], "shape": it["shape"][0],
               "regs": infos[(cfg_key(it["cfg"]), it["D"], it["CAUSAL"])]["regs"],
               "spill": infos[(cfg_key(it["cfg"]), it["D"], it["CAUSAL"])]["spill"], **r}
        jf.write(json.dumps(rec) + "\n")
        ok = "error" not in r and r["max_abs"] <= MAX_ABS and r["rel_l2"] <= MAX_REL
        pc = per_cfg.setdefault(cfg_key(it["cfg"]), {"cfg": it["cfg"], "ok": 0, "n": 0, "max_abs": 0.0, "rel": 0.0,
                                                     "fails": []})
        pc["n"] += 1
        pc["ok"] += ok
        if "error" in r:
            pc["fails"].append(f"D{it['D']}C{it['CAUSAL']}/{it['shape'][0]}:{r['error']}")
        else:
            pc["max_abs"] = max(pc["max_abs"], r["max_abs"])
            pc["rel"] = max(pc["rel"], r["rel_l2"])
            if not ok:
                pc["fails"].append(f"D{it['D']}C{it['CAUSAL']}/{it['shape'][0]}:{r['max_abs']:.3g}/{r['rel_l2']:.3g}")
    jf.flush()
    n_pass = sum(pc["ok"] == pc["n"] for pc in per_cfg.values())
    failing = [pc for pc in per_cfg.values() if pc["ok"] < pc["n"]]
    print(f"\n== correctness: {n_pass}/{len(per_cfg)} configs pass all {len(combos) * len(CORRECTNESS_SHAPES)} "
          f"(D, CAUSAL, shape) checks; worst max_abs {max(pc['max_abs'] for pc in per_cfg.values()):.4f}, "
          f"worst rel_l2 {max(pc['rel'] for pc in per_cfg.values()):.4g}")
    for pc in failing[:25]:
        print(f"  FAIL [{cfg_short(pc['cfg'])}] {pc['ok']}/{pc['n']}: " + "; ".join(pc["fails"][:4]))
    regs = {k: v for k, v in infos.items()}
    print("registers: " + ", ".join(f"D{D}C{C} {min(v['regs'] or 0 for k, v in regs.items() if k[1:] == (D, C))}.."
                                     f"{max(v['regs'] or 0 for k, v in regs.items() if k[1:] == (D, C))}"
                                     for D, C in combos)
          + f"; spilling cubins: {sum(1 for v in regs.values() if v['spill'])}")

    # 3. timing
    if a.time_configs == "passing":
        tcfgs = [pc["cfg"] for pc in per_cfg.values() if pc["ok"] == pc["n"]]
    else:
        tcfgs = knob_configs(task, a.time_configs)
    tspec = os.path.join(a.out, "time_spec.json")
    json.dump({"cubins": [[list(k) if isinstance(k, tuple) else k, v] for k, v in cubins.items()], "cfgs": tcfgs,
               "iters": a.iters, "sweep": not a.no_sweep}, open(tspec, "w"))
    tpath = os.path.join(a.out, "timing.jsonl")
    try:
        p = subprocess.run([sys.executable, __file__, "--timing-child", tspec, "--progress", tpath],
                           capture_output=True, text=True, timeout=max(30.0, a.time_budget))
        if p.returncode:
            print("timing child failed:\n" + (p.stdout + p.stderr)[-1500:])
    except subprocess.TimeoutExpired:
        print("timing child TIMED OUT")
    table, sweep = {}, []
    if os.path.exists(tpath):
        for line in open(tpath):
            r = json.loads(line)
            jf.write(json.dumps(r) + "\n")
            if r.get("kind") == "sweep":
                sweep.append(r)
            else:
                table.setdefault(r["shape"], []).append(r)
    import statistics
    for name, rows in table.items():
        mine = [r for r in rows if "cfg" in r]
        print(f"\n== {name}: per-knob min / median us over the timed configs")
        for kn in TASK["knob"]:
            parts = []
            for v in kn["values"]:
                xs = [r["us"] for r in mine if r["cfg"][kn["name"]] == v]
                if xs:
                    parts.append(f"{v}: {min(xs):.0f}/{statistics.median(xs):.0f}")
            print(f"  {kn['name']:24s} " + "  ".join(parts))
    if sweep:
        print("\n== sweep (us; TFLOP/s; max_abs)")
        by = {}
        for r in sweep:
            by.setdefault(r["shape"], []).append(r)
        for shp, rs in by.items():
            print(f"  {shp:22s} " + " | ".join(
                f"{r['name']}: {r['us']:.0f} {r['tflops']:.0f} {r['max_abs']:.3f}" if "us" in r else
                f"{r['name']}: {r.get('error', '')[:40]}" for r in rs))
    for name, rows in table.items():
        good = sorted([r for r in rows if "us" in r], key=lambda r: r["us"])
        base = [r for r in rows if r["name"].endswith("_bf16")]
        print(f"\n== {name}: {len(good) - len(base)} configs timed (median of {a.iters}, L2 flushed)")
        for r in base:
            print(f"  {r['name']:28s} " + (f"{r['us']:8.1f} us {r['tflops']:6.1f} TFLOP/s  max_abs {r['max_abs']:.4f}"
                                          if "us" in r else r.get("error", "")))
        for r in [r for r in good if r not in base][:12]:
            print(f"  {r['name']:28s} {r['us']:8.1f} us {r['tflops']:6.1f} TFLOP/s  max_abs {r['max_abs']:.4f} "
                  f"rel {r['rel_l2']:.2e}")
        ours = [r for r in good if r not in base]
        if ours:
            print(f"  (slowest: {ours[-1]['name']} {ours[-1]['us']:.1f} us)")
    print(f"\ntotal {time.time() - t_start:.0f}s")


if __name__ == "__main__":
    main()
