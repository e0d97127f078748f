"""PyTorch baselines for evoengineer.

Times PyTorch expressions with the protocol of evoengineer's own timing loop: the L2 is
flushed by writing a buffer of twice its size before every launch (outside the timed
interval), every launch has its own pair of CUDA events, warm-up runs for at least
`warmup_ms` of wall time, then `iterations` timed launches (fewer if `budget_ms` would be
exceeded, never fewer than `min_iterations`); p50 and p90 interpolate linearly between ranks.

Usage: python3 -c "<this script>" SPEC.json
SPEC: {"args": [...], "seed": int, "baselines": [{"name", "expr", "setup"?}], "iterations": int,
       "min_iterations": int, "warmup_ms": float, "budget_ms": float, "device": int}
Each arg: {"name", "kind": "buffer"|"scalar", "dtype", "role", "len", "shape", "init",
           "value", "file"}. A buffer with a `file` is loaded from its raw little-endian
bytes (evoengineer writes the same trial-0 inputs its worker uses); one without is drawn
here with torch from the same distribution (not the same numbers).
Prints one JSON line: {"device", "torch", "results": [{"name", "p50_us", "p90_us", "min_us",
"mean_us", "iterations", "error"}]} or {"error", "no_torch": true}.
"""

import json
import math
import sys
import time
import traceback


def quantile(sorted_xs, q):
    pos = q * (len(sorted_xs) - 1)
    lo = int(math.floor(pos))
    hi = int(math.ceil(pos))
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def draw(torch, init, shape, dtype, device, gen):
    dist = init.get("dist", "normal")
    scale = float(init.get("scale", 1.0))
    if dist == "uniform":
        low = float(init.get("low", -1.0))
        high = float(init.get("high", 1.0))
        x = torch.rand(shape, generator=gen, device=device, dtype=torch.float32) * (high - low) + low
    else:
        mean = float(init.get("mean", 0.0))
        std = float(init.get("std", 1.0))
        x = torch.randn(shape, generator=gen, device=device, dtype=torch.float32) * std + mean
    x = x * scale
    if dtype.is_floating_point:
        info = torch.finfo(dtype)
        x = x.clamp(info.min, info.max)
    else:
        info = torch.iinfo(dtype)
        x = x.round().clamp(info.min, info.max)
    return x.to(dtype)


def build_scope(torch, F, spec, device):
    dtypes = {
        "f32": torch.float32,
        "f16": torch.float16,
        "bf16": torch.bfloat16,
        "e4m3": torch.float8_e4m3fn,
        "e5m2": torch.float8_e5m2,
        "i32": torch.int32,
        "i64": torch.int64,
    }
    scope = {"torch": torch, "F": F}
    seed = int(spec.get("seed", 0))
    for i, a in enumerate(spec["args"]):
        name = a["name"]
        if a["kind"] == "scalar":
            v = a["value"]
            scope[name] = float(v) if a["dtype"] == "f32" else int(v)
            continue
        dtype = dtypes[a["dtype"]]
        shape = a.get("shape") or [a["len"]]
        path = a.get("file")
        if path:
            with open(path, "rb") as f:
                raw = bytearray(f.read())
            t = torch.frombuffer(raw, dtype=torch.uint8).view(dtype).reshape(shape).to(device)
        elif a.get("role", "input") == "output":
            t = torch.empty(shape, dtype=dtype, device=device)
        else:
            gen = torch.Generator(device=device)
            gen.manual_seed((seed * 1000003 + i) % (2**63))
            t = draw(torch, a.get("init") or {}, shape, dtype, device, gen)
        scope[name] = t
    return scope


def time_one(torch, fn, flush, spec):
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)

    def sample():
        t0 = time.perf_counter()
        flush.zero_()
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) * 1e3, (time.perf_counter() - t0) * 1e3

    fn()  # errors surface here, and lazy initialisation happens
    torch.cuda.synchronize()
    warmup_ms = float(spec.get("warmup_ms", 25.0))
    t0 = time.perf_counter()
    n = 0
    wall = 0.0
    while n < 3 or (time.perf_counter() - t0) * 1e3 < warmup_ms:
        wall += sample()[1]
        n += 1
    per_sample_ms = wall / n
    iterations = max(1, int(spec.get("iterations", 100)))
    budget_ms = float(spec.get("budget_ms", 0.0))
    if budget_ms > 0 and per_sample_ms > 0:
        fit = int(budget_ms // per_sample_ms)
        iterations = max(1, min(iterations, max(fit, min(int(spec.get("min_iterations", 10)), iterations))))
    samples = sorted(sample()[0] for _ in range(iterations))
    return {
        "p50_us": quantile(samples, 0.5),
        "p90_us": quantile(samples, 0.9),
        "min_us": samples[0],
        "mean_us": sum(samples) / len(samples),
        "iterations": len(samples),
    }


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "--selftest-quantiles":
        xs = sorted(json.loads(sys.argv[2]))
        emit({"p50": quantile(xs, 0.5), "p90": quantile(xs, 0.9)})
        return 0
    if len(sys.argv) < 2:
        emit({"error": "usage: baseline SPEC.json"})
        return 2
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    try:
        import torch
        import torch.nn.functional as F
    except Exception as e:  # noqa: BLE001
        emit({"error": "cannot import torch: %s" % e, "no_torch": True})
        return 0
    if not torch.cuda.is_available():
        emit({"error": "torch %s sees no CUDA device" % torch.__version__, "no_torch": True})
        return 0
    device = torch.device("cuda", int(spec.get("device", 0)))
    torch.cuda.set_device(device)
    props = torch.cuda.get_device_properties(device)
    l2 = int(getattr(props, "L2_cache_size", 0) or (50 << 20))
    flush = torch.empty(max(2 * l2, 8 << 20), dtype=torch.uint8, device=device)
    try:
        scope = build_scope(torch, F, spec, device)
    except Exception as e:  # noqa: BLE001
        emit({"error": "cannot build the inputs: %s: %s" % (type(e).__name__, e)})
        return 1
    results = []
    for b in spec.get("baselines", []):
        r = {"name": b["name"]}
        try:
            if b.get("setup"):
                # Untimed: conversions and helpers, run once in the shared scope.
                exec(compile(b["setup"], "<setup %s>" % b["name"], "exec"), scope)
            code = compile(b["expr"], "<baseline %s>" % b["name"], "eval")
            r.update(time_one(torch, lambda: eval(code, scope), flush, spec))
        except Exception as e:  # noqa: BLE001
            last = traceback.format_exception_only(type(e), e)[-1].strip()
            r["error"] = last
        results.append(r)
    emit({"device": props.name, "torch": torch.__version__, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
