"""(b) The second `make demo` vs the first, and (c) the first one's wall time by stage.

Runs ``make demo`` twice in a row from an empty organism cache and an empty run directory (the
venv must exist: the install is not timed), so the first run builds the organism and does every
stage, and the second should find everything cached. Stage times come from the first run's
``manifest.json`` (``timings``, written by the pipeline; the organism is built on first use,
inside the first data stage); the KL curves and start-up are the rest of the wall time. Target (issue 7): the second run ≤ 5% of the first.

    .venv/bin/python benchmarks/demo.py [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from _common import REPO, cpu_model, load_average, today, update_results, versions

TARGET = 0.05
STAGES = ("align", "data", "screen", "train", "generate", "score", "report")


def run_demo(env: dict[str, str], log: Path) -> float:
    start = time.perf_counter()
    with log.open("w") as f:
        proc = subprocess.run(["make", "demo"], cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"make demo failed (exit {proc.returncode}); see {log}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the organism cache and logs (printed)")
    parser.add_argument("--no-write", action="store_true", help="print, do not update RESULTS.md")
    args = parser.parse_args()

    run_dir = REPO / "runs" / "organism-demo"
    scratch = Path(tempfile.mkdtemp(prefix="ftsafety-demo-bench-"))
    env = {**os.environ, "FTSAFETY_CACHE": str(scratch / "cache")}
    shutil.rmtree(run_dir, ignore_errors=True)
    shutil.rmtree(REPO / "runs" / ".cache", ignore_errors=True)
    loads = [load_average()]
    first = run_demo(env, scratch / "first.log")
    loads.append(load_average())
    timings = json.loads((run_dir / "manifest.json").read_text()).get("timings", {})
    second = run_demo(env, scratch / "second.log")
    loads.append(load_average())
    ratio = second / first
    verdict = "meets target" if ratio <= TARGET else "ABOVE target"
    stages = {s: float(timings.get(s, 0.0)) for s in STAGES}
    other = first - sum(stages.values())
    print(f"first {first:.0f} s, second {second:.1f} s: {ratio:.1%} (target <= {TARGET:.0%}: {verdict})")
    print("stages: " + ", ".join(f"{s} {v:.0f} s" for s, v in stages.items()) + f", rest {other:.0f} s")
    if args.keep:
        print(f"kept {scratch}")
    else:
        shutil.rmtree(scratch, ignore_errors=True)
    if args.no_write:
        return
    machine, vers, when = cpu_model(), versions(), today()
    update_results(
        "demo-rerun",
        ["date", "machine", "versions", "load avg start → between → end", "first run", "second run", "ratio (target ≤ 5%)"],
        [[when, machine, vers, " → ".join(loads), f"{first:.0f} s (organism build included, install not)",
          f"{second:.1f} s", f"**{ratio:.1%}** ({verdict})"]],
    )
    update_results(
        "demo-stages",
        ["date", "machine", "versions", *STAGES, "rest: KL curves, start-up", "total"],
        [[when, machine, vers, *(f"{stages[s]:.0f} s" for s in STAGES), f"{other:.0f} s", f"{first:.0f} s"]],
    )
    print("updated benchmarks/RESULTS.md (demo-rerun, demo-stages)")


if __name__ == "__main__":
    main()
