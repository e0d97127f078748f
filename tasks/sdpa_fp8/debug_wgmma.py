#!/usr/bin/env python3
"""Layout checks of the USE_WGMMA=1 path, to run on the GPU machine when the full check fails.

  python3 tasks/sdpa_fp8/debug_wgmma.py [--configs K=V,...;...]

For each config and D in {64, 128} it compiles kernel.cu twice more:
  EVO_DEBUG=1  the raw scores of the first key tile are written to O[row][key] (key < D): this
               checks Q·Kᵀ alone (smem layouts, swizzle, descriptors, the accumulator layout);
  EVO_DEBUG=2  every visible score is replaced by 0, so O is the mean of the V rows: this checks
               the V transpose, the P fragments and P·V without the softmax.
and prints the max abs error of each against PyTorch on fresh e4m3 inputs (non-causal, S = 256).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", default="USE_WGMMA=1,TILE_M=128,TILE_N=128;USE_WGMMA=1,TILE_M=64,TILE_N=64;"
                                         "USE_WGMMA=1,TILE_M=128,TILE_N=128,USE_WARP_SPECIALIZATION=1")
    a = ap.parse_args()
    import torch
    task = check.load_task()
    L = check.Launcher()
    os.makedirs(check.BUILD, exist_ok=True)
    B, H, S = 1, 2, 256
    for cfg in check.knob_configs(task, a.configs):
        for D in (64, 128):
            q, k, v = L.inputs(B, H, S, D, seed=1234 + D)
            qf, kf, vf = (x.float().view(B, H, S, D) for x in (q, k, v))
            scores = qf @ kf.transpose(-1, -2)  # unscaled
            mean_v = vf.mean(dim=2, keepdim=True).expand(B, H, S, D)
            for dbg in (1, 2):
                cub, info, err = check.compile_one(os.path.join(check.HERE, "kernel.cu"),
                                                   {**cfg, "D": D, "CAUSAL": 0, "EVO_DEBUG": dbg}, check.BUILD)
                name = f"[{check.cfg_short(cfg)}] D{D} debug{dbg}"
                if not cub:
                    print(name, "COMPILE ERROR", err[-400:])
                    continue
                f = L.fn(cub, task["kernel"]["entry"])
                o = torch.full((B * H * S * D,), float("nan"), dtype=torch.bfloat16, device="cuda")
                L.run_kernel(f, cfg, L.args(q, k, v, o, (1.0, 1.0, 1.0), B, H, S, D, 0), B, H, S, D)
                torch.cuda.synchronize()
                o = o.float().view(B, H, S, D)
                if dbg == 1:
                    n = min(D, cfg["TILE_N"])
                    got, want = o[..., :n], scores[..., :n]
                else:
                    got, want = o, mean_v
                bad = ~torch.isfinite(got)
                diff = (got - want).abs()
                worst = diff.nan_to_num(float("inf")).max().item()
                print(f"{name}: max abs err {worst:.4g} (|want| max {want.abs().max().item():.3g}); "
                      f"nonfinite {int(bad.sum())}", flush=True)
                if worst > 0.05 * max(1.0, want.abs().max().item()):
                    r = diff.nan_to_num(float("inf")).flatten().argmax().item()
                    idx = []
                    for dim in reversed(got.shape):
                        idx.append(r % dim)
                        r //= dim
                    idx = tuple(reversed(idx))
                    print(f"    worst at {idx}: got {got[idx].item():.4g} want {want[idx].item():.4g}; "
                          f"row 0 got {[round(x, 2) for x in got[0, 0, 0, :8].tolist()]} "
                          f"want {[round(x, 2) for x in want[0, 0, 0, :8].tolist()]}")


if __name__ == "__main__":
    main()
