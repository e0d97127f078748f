#!/usr/bin/env python3
"""Summarise `evoengineer compile --all --json` outputs: registers, spills, and the acceptance
test that any two configs differing in ONE knob give different cubins (sha256).

  python3 tasks/sdpa_fp8/analyze_compile.py mission.json d128_s2048_causal.json ...
"""
import json
import sys

bad = 0
for path in sys.argv[1:]:
    rows = json.load(open(path))
    ok = [r for r in rows if r["ok"]]
    by = {tuple(sorted(r["config"].items())): r for r in ok}
    spills = [r for r in ok if r["spill_bytes"] or r["stack_frame_bytes"]]
    same = []
    for k, r in by.items():
        cfg = dict(k)
        for name in cfg:
            for k2, r2 in by.items():
                c2 = dict(k2)
                if c2[name] != cfg[name] and all(c2[n] == cfg[n] for n in cfg if n != name) and k < k2:
                    if r["cubin_sha256"] == r2["cubin_sha256"]:
                        same.append((cfg, name, c2[name]))
    regs = [r["registers"] for r in ok]
    print(f"{path}: {len(ok)}/{len(rows)} compiled; registers {min(regs)}..{max(regs)}; "
          f"{len(spills)} spill/stack; {len(set(r['cubin_sha256'] for r in ok))} distinct cubins; "
          f"{len(same)} one-knob pairs with identical cubins")
    for r in rows:
        if not r["ok"]:
            print("  FAILED", r["config"], (r.get("error") or "")[:300])
    for r in spills:
        print("  SPILL", r["config"], r["registers"], r["spill_bytes"], r["stack_frame_bytes"])
    for cfg, name, v in same[:10]:
        print("  SAME", cfg, name, "->", v)
    bad += len(same) + len(spills) + (len(ok) != len(rows))
sys.exit(1 if bad else 0)
