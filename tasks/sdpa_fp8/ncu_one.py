#!/usr/bin/env python3
"""Launch ONE sdpa_fp8 config twice at a timing shape, for `ncu` to attach to (dev tool, GPU machine).

  ncu --launch-skip 1 --launch-count 1 -k sdpa_fp8_kernel --set full --import-source yes -o rep \
      python3 tasks/sdpa_fp8/ncu_one.py --cfg "USE_WARP_SPECIALIZATION=1,..." [--src FILE] [--causal]

The cubin is built with -lineinfo so that ncu's source page maps SASS to kernel.cu lines.
Outputs are poisoned with NaN and checked against the fp32 reference after the launches, so a
profile of a wrong kernel is flagged.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--cfg", required=True)
ap.add_argument("--src", default=os.path.join(check.HERE, "kernel.cu"))
ap.add_argument("--causal", action="store_true")
ap.add_argument("--launches", type=int, default=2)
a = ap.parse_args()
if not os.path.isfile(a.src):
    ap.error(f"--src {a.src}: no such file")

cfg = check.knob_configs(check.load_task(), a.cfg)[0]
B, H, S, D, C = 8, 16, 2048, 128, int(a.causal)
os.makedirs(check.BUILD, exist_ok=True)
cub, info, err = check.compile_one(a.src, {**cfg, "D": D, "CAUSAL": C, "EVO_LINEINFO": 1}, check.BUILD)
if not cub:
    sys.exit("compile error:\n" + err)
rcub, _, rerr = check.compile_one(os.path.join(check.HERE, "reference.cu"), {}, check.BUILD)
L = check.Launcher()
torch = L.torch
q, k, v = L.inputs(B, H, S, D, seed=11 + C)
ref = L.reference(L.fn(rcub, "sdpa_fp8_ref"), q, k, v, (1.0, 1.0, 1.0), B, H, S, D, C)
f = L.fn(cub, "sdpa_fp8_kernel")
o = torch.full((B * H * S * D,), float("nan"), dtype=torch.bfloat16, device="cuda")
args = L.args(q, k, v, o, (1.0, 1.0, 1.0), B, H, S, D, C)
for _ in range(a.launches):
    L.run_kernel(f, cfg, args, B, H, S, D)
torch.cuda.synchronize()
e = L.compare(o, ref)
print(f"[{check.cfg_short(cfg)}] regs {info['regs']} spill {info['spill']} max_abs {e['max_abs']:.4f} "
      f"rel_l2 {e['rel_l2']:.4f}", file=sys.stderr)
