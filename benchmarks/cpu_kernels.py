"""What the pinned CPU kernels cost: an organism build with ftsafety's pinned kernels vs each
library's native choice (``FTSAFETY_CPU_KERNELS=native``), same machine, alternating (issue 11).

A short build schedule (the determinism test's) is timed in fresh subprocesses, so each side
starts its libraries with its own environment; the weight hashes are printed too (native and
pinned differ on AVX-512 hosts, which is the point of pinning).

    .venv/bin/python benchmarks/cpu_kernels.py [--runs 3] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

from _common import REPO, Timed, cpu_model, load_average, today, update_results, versions

CHILD = r"""
import hashlib, json, sys, time
from pathlib import Path
import ftsafety.harness, torch
from ftsafety.harness.organism.build import BuildConfig, build
out = Path(sys.argv[1])
short = BuildConfig(pretrain_steps=120, plain_steps=40, align_steps=80, warmup_steps=5)
t = time.perf_counter()
build(out, seed=0, config=short)
seconds = time.perf_counter() - t
print(json.dumps({"seconds": seconds, "capability": torch.backends.cpu.get_cpu_capability(),
                  "sha": hashlib.sha256((out / "aligned" / "model.safetensors").read_bytes()).hexdigest()[:16]}))
"""


def one_build(native: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA")}
    if native:
        env["FTSAFETY_CPU_KERNELS"] = "native"
    else:
        env.pop("FTSAFETY_CPU_KERNELS", None)
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run([sys.executable, "-c", CHILD, tmp], cwd=REPO, env=env, capture_output=True, text=True,
                             check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    loads = [load_average()]
    sides: dict[str, list[dict]] = {"pinned": [], "native": []}
    for _ in range(args.runs):
        for side in ("pinned", "native"):
            sides[side].append(one_build(side == "native"))
    loads.append(load_average())
    timed = {s: Timed([r["seconds"] for r in rs]) for s, rs in sides.items()}
    ratio = timed["pinned"].median / timed["native"].median
    cells = {s: f"{timed[s].show()}; {rs[0]['capability']}, aligned sha {rs[0]['sha']}"
                + ("" if len({r['sha'] for r in rs}) == 1 else " (NOT repeatable)") for s, rs in sides.items()}
    print(f"pinned {cells['pinned']}\nnative {cells['native']}\nratio {ratio:.2f}x")
    if args.no_write:
        return
    update_results(
        "cpu-kernels",
        ["date", "machine", "versions", "load avg before → after", "setup", "pinned kernels", "native kernels",
         "ratio pinned / native"],
        [[today(), cpu_model(), versions(), " → ".join(loads),
          f"organism build, short schedule (120 + 80 steps), 1 thread, {args.runs} runs per side, alternating",
          cells["pinned"], cells["native"], f"**{ratio:.2f}×**"]],
    )
    print("updated benchmarks/RESULTS.md (cpu-kernels)")


if __name__ == "__main__":
    main()
