#!/usr/bin/env python3
"""Kernel Tuner 1.5's own matmul example, brute force, timed as a whole (bench/kt-matmul).

Does what Kernel Tuner's examples/cuda/matmul.py does -- the same kernel (its matmul.cu, which
`prepare` copies to target/kt-matmul/task/kernel.cu), problem size, arguments, tune_params,
grid divisors, restriction, iterations=32, verbose, GFLOP/s metric, default (brute force)
strategy -- with three differences, each said in the output:

* the answer is checked: the example builds `answer = [numpy.dot(A, B), None, None]` but never
  passes it to tune_kernel; here it is passed, with atol=1e-2 (Kernel Tuner's default atol=1e-6
  with numpy.allclose's rtol=1e-5 fails an fp32 sum of 4096 products: ~4 % of the elements of
  a k-order FMA accumulation differ from numpy.dot by more, simulated on 64 rows).
  `--no-answer` runs without the check, as the example does;
* the backend is CuPy (`lang="cupy"`, as in the run recorded in FACTS.md); `--lang` changes it;
* before kernel_tuner is imported, cupy.cuda.runtime.getDeviceProperties is wrapped so that its
  `uuid` is 16 bytes: CuPy 14 returns it in a form Kernel Tuner 1.5's
  `uuid.UUID(bytes=props["uuid"])` refuses ("bytes is not a 16-char string"). The JSON's
  `cupy_uuid` says what it found (on the H200 of 2026-12-03 12:40 UTC, cupy 14.2.0 gave 16
  bytes and the wrapper changed nothing; FACTS.md records a machine where it did not).

numpy's global RNG is seeded (--seed, default 0) before the inputs are drawn, so that reruns
see the same A and B. The whole tune_kernel call is timed with time.perf_counter; the inputs
and numpy.dot are timed apart. Prints one JSON object as its last line (and writes it to
--json-out); --results writes Kernel Tuner's list of results.

    python3 bench/kt-matmul/kt_matmul.py [--kernel target/kt-matmul/task/kernel.cu]
    python3 bench/kt-matmul/kt_matmul.py --check     # no GPU: imports, the space's size only
"""

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections import OrderedDict

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DEFAULT_KERNEL = os.path.join(REPO, "target", "kt-matmul", "task", "kernel.cu")


def uuid16(raw):
    """16 bytes from whatever getDeviceProperties put in `uuid`, and a note of what it was."""
    note = "%s of length %s" % (type(raw).__name__, len(raw) if hasattr(raw, "__len__") else "?")
    if isinstance(raw, str):
        b = raw.encode("latin-1", "replace")
    elif isinstance(raw, (bytes, bytearray)):
        b = bytes(raw)
    else:
        try:
            b = bytes(bytearray(int(x) & 0xFF for x in raw))
        except Exception:
            b = str(raw).encode()
    if len(b) == 16:
        return b, note + ": kept"
    text = b.decode("ascii", "ignore").strip().strip("\x00")
    if text.startswith("GPU-"):
        text = text[4:]
    hexdigits = text.replace("-", "")
    if len(hexdigits) == 32 and all(c in "0123456789abcdefABCDEF" for c in hexdigits):
        return bytes.fromhex(hexdigits), note + ": parsed as hex text"
    return (b + bytes(16))[:16], note + ": cut or padded to 16 bytes"


UUID_NOTES = []


def patch_cupy_uuid():
    import cupy

    runtime = cupy.cuda.runtime
    original = runtime.getDeviceProperties
    if getattr(original, "_kt_matmul_wrapped", False):
        return

    def getDeviceProperties(device):
        props = original(device)
        if isinstance(props, dict) and "uuid" in props:
            fixed, note = uuid16(props["uuid"])
            if not UUID_NOTES:
                UUID_NOTES.append(note)
            props = dict(props)
            props["uuid"] = fixed
        return props

    getDeviceProperties._kt_matmul_wrapped = True
    runtime.getDeviceProperties = getDeviceProperties


def median(xs):
    xs = [x for x in xs if isinstance(x, (int, float)) and math.isfinite(x)]
    return statistics.median(xs) if xs else None


def tune_params():
    # examples/cuda/matmul.py, verbatim
    tp = OrderedDict()
    tp["block_size_x"] = [16 * 2**i for i in range(3)]
    tp["block_size_y"] = [2**i for i in range(6)]
    tp["tile_size_x"] = [2**i for i in range(4)]
    tp["tile_size_y"] = [2**i for i in range(4)]
    return tp


RESTRICT = ["block_size_x==block_size_y*tile_size_y"]


def check_only(args):
    """No GPU: import kernel_tuner and count the space as it will on a device of 1024 threads."""
    import kernel_tuner
    from kernel_tuner.searchspace import Searchspace

    try:
        ss = Searchspace(tune_params(), RESTRICT, 1024)
    except TypeError:  # other signatures of other versions
        ss = Searchspace(tune_params(), RESTRICT, max_threads=1024)
    out = {
        "mode": "check",
        "kernel_tuner": getattr(kernel_tuner, "__version__", None),
        "kernel": args.kernel,
        "kernel_exists": os.path.isfile(args.kernel),
        "configs": ss.size,
        "python": sys.version.split()[0],
    }
    print(json.dumps(out))
    return 0 if out["kernel_exists"] and ss.size == 40 else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kernel", default=DEFAULT_KERNEL, help="Kernel Tuner's matmul.cu (default: %(default)s)")
    ap.add_argument("--lang", default="cupy", help="Kernel Tuner backend (default: cupy; 'none': let Kernel Tuner pick)")
    ap.add_argument("--iterations", type=int, default=32, help="as the example: 32")
    ap.add_argument("--atol", type=float, default=1e-2)
    ap.add_argument("--no-answer", action="store_true", help="do not check the answer (as the example itself)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quiet", action="store_true", help="verbose=False (the example has verbose=True)")
    ap.add_argument("--json-out", help="also write the JSON summary here")
    ap.add_argument("--results", help="write Kernel Tuner's results (list of dicts) here")
    ap.add_argument("--check", action="store_true", help="no GPU: imports and the space's size only")
    args = ap.parse_args()

    if args.check:
        return check_only(args)

    t_start = time.perf_counter()
    import numpy

    lang = None if args.lang.lower() == "none" else args.lang
    if lang is None or lang.lower() == "cupy":
        try:
            patch_cupy_uuid()
        except ImportError:
            pass
    import kernel_tuner

    t_import = time.perf_counter() - t_start

    # examples/cuda/matmul.py from here on (the seed line aside)
    numpy.random.seed(args.seed)
    t0 = time.perf_counter()
    problem_size = (4096, 4096)
    A = numpy.random.randn(*problem_size).astype(numpy.float32)
    B = numpy.random.randn(*problem_size).astype(numpy.float32)
    C = numpy.zeros_like(A)
    argv = [C, A, B]
    tp = tune_params()
    grid_div_x = ["block_size_x", "tile_size_x"]
    grid_div_y = ["block_size_y", "tile_size_y"]
    t_inputs = time.perf_counter() - t0

    t0 = time.perf_counter()
    answer = None if args.no_answer else [numpy.dot(A, B), None, None]
    t_answer = time.perf_counter() - t0

    metrics = OrderedDict()
    metrics["GFLOP/s"] = lambda p: (2 * 4096**3 / 1e9) / (p["time"] / 1e3)

    kwargs = dict(
        grid_div_y=grid_div_y,
        grid_div_x=grid_div_x,
        restrictions=RESTRICT,
        verbose=not args.quiet,
        iterations=args.iterations,
        metrics=metrics,
    )
    if answer is not None:
        kwargs.update(answer=answer, atol=args.atol)
    if lang is not None:
        kwargs["lang"] = lang

    error = None
    res, env = [], {}
    t0 = time.perf_counter()
    try:
        res, env = kernel_tuner.tune_kernel("matmul_kernel", args.kernel, problem_size, argv, tp, **kwargs)
    except Exception as e:  # report it in the JSON rather than lose the run
        error = "%s: %s" % (type(e).__name__, e)
    wall = time.perf_counter() - t0
    sys.stdout.flush()

    keys = list(tp.keys())
    valid = [r for r in res if isinstance(r.get("time"), (int, float)) and math.isfinite(r["time"])]
    failed = [r for r in res if r not in valid]
    best = min(valid, key=lambda r: r["time"]) if valid else None
    out = OrderedDict()
    out["tool"] = "kernel_tuner"
    out["version"] = getattr(kernel_tuner, "__version__", None)
    out["backend"] = lang or "kernel_tuner's default"
    out["device"] = env.get("device_name") if isinstance(env, dict) else None
    out["strategy"] = "brute_force"
    out["iterations"] = args.iterations
    out["answer_checked"] = answer is not None
    out["atol"] = args.atol if answer is not None else None
    out["seed"] = args.seed
    out["wall_s"] = wall
    out["configs"] = len(res)
    out["valid"] = len(valid)
    # A config Kernel Tuner skips before launching it (it prints "skipping config ... reason: too
    # much shared memory used") has no `time` and an empty `__error__`.
    out["failed"] = [
        {"config": {k: r.get(k) for k in keys},
         "time": str(r["time"]) if r.get("time") is not None else "skipped" + (": %s" % r["__error__"] if r.get("__error__") else "")}
        for r in failed
    ]
    out["best_config"] = {k: best[k] for k in keys} if best else None
    out["best_time_ms"] = best["time"] if best else None
    out["best_gflops"] = best.get("GFLOP/s") if best else None
    # Kernel Tuner's own per-config timers (ms), over every config it ran
    for name in ("compile_time", "verification_time", "benchmark_time", "framework_time", "strategy_time"):
        vals = [r.get(name) for r in res]
        out["median_" + name + "_ms"] = median(vals)
        out["sum_" + name + "_s"] = (
            sum(v for v in vals if isinstance(v, (int, float))) / 1000.0 if any(isinstance(v, (int, float)) for v in vals) else None
        )
    out["import_s"] = t_import
    out["inputs_s"] = t_inputs
    out["answer_s"] = t_answer
    out["cupy_uuid"] = UUID_NOTES[0] if UUID_NOTES else None
    out["kernel"] = args.kernel
    out["error"] = error

    if args.results:
        with open(args.results, "w") as f:
            json.dump(res, f, default=str)
    text = json.dumps(out)
    if args.json_out:
        with open(args.json_out, "w") as f:
            f.write(text + "\n")
    print(text)
    return 0 if error is None and best is not None else 1


if __name__ == "__main__":
    sys.exit(main())
