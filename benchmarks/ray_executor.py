"""The organism demo under the Ray executor vs in one process (issue 15; target: train stage
>= 1.6x faster on 2 cores).

Runs ``ftsafety run configs/organism-demo.yaml`` twice on this machine, each from an empty run
store (the organism, built once before either run, is shared): in process, then with
``--executor ray`` (a local Ray cluster of every core). Reports each run's train-stage time and
wall time from its ``manifest.json``, the ratio, the engines each started (it must not grow:
one engine per base model per run) and whether the two leaderboards are byte-identical.

    .venv/bin/python benchmarks/ray_executor.py [--config configs/organism-demo.yaml] [--limit N] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, cpu_model, load_average, today, update_results, versions, work_dir  # noqa: E402

TARGET = 1.6


def run_grid(config: Path, out: Path, executor: str, limit: int | None, log: Path) -> dict:
    """One ``ftsafety run`` into a fresh output directory; its wall time and manifest."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "ftsafety.harness", "run", str(config), "--set", f"output_dir={out}",
           "--executor", executor]
    if limit:
        cmd += ["--limit", str(limit)]
    start = time.perf_counter()
    with log.open("w") as f:
        proc = subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"ftsafety run --executor {executor} failed (exit {proc.returncode}); see {log}")
    [run_dir] = [d for d in out.iterdir() if not d.name.startswith(".")]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    return {"wall": wall, "timings": manifest.get("timings", {}), "run_dir": run_dir,
            "engines": sum(int(e.get("count", 0)) for e in manifest.get("engines", {}).values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "organism-demo.yaml"))
    parser.add_argument("--limit", type=int, default=None, help="samples per benchmark (the train stage is unchanged)")
    parser.add_argument("--no-write", action="store_true", help="print, do not update RESULTS.md")
    args = parser.parse_args()

    from ftsafety.harness.models import resolve_model_path

    resolve_model_path("organism://default")  # built once, outside both timings
    scratch = work_dir() / "ray-executor"
    scratch.mkdir(parents=True, exist_ok=True)
    loads = [load_average()]
    sides = {}
    for executor in ("local", "ray"):
        print(f"running {Path(args.config).name} with --executor {executor} ...", flush=True)
        sides[executor] = run_grid(Path(args.config), scratch / executor, executor, args.limit, scratch / f"{executor}.log")
        loads.append(load_average())
    local, ray = sides["local"], sides["ray"]
    train_local, train_ray = float(local["timings"].get("train", 0)), float(ray["timings"].get("train", 0))
    ratio = train_local / train_ray if train_ray else float("nan")
    identical = all((local["run_dir"] / n).read_bytes() == (ray["run_dir"] / n).read_bytes()
                    for n in ("leaderboard.csv", "leaderboard_summary.csv"))
    verdict = "meets target" if ratio >= TARGET else "BELOW target"
    print(f"train: in process {train_local:.0f} s, ray {train_ray:.0f} s: {ratio:.2f}x (target >= {TARGET}x: {verdict})")
    print(f"wall: in process {local['wall']:.0f} s, ray {ray['wall']:.0f} s; engines started {local['engines']} / "
          f"{ray['engines']}; leaderboards identical: {identical}; load {' -> '.join(loads)}")
    if args.no_write:
        return
    header = ["date", "machine", "versions", "load avg before → after (1/5/15 min)", "setup", "train stage",
              "whole run (wall)", "engines started", "leaderboards"]
    setup = (f"{Path(args.config).name}{f' --limit {args.limit}' if args.limit else ''}, fresh store each "
             f"(organism prebuilt), in process then Ray (local cluster, {os.cpu_count()} CPUs)")
    update_results("ray-executor", header, [[
        today(), cpu_model(), versions(), f"{loads[0]} → {loads[-1]}", setup,
        f"{train_local:.0f} s → {train_ray:.0f} s: **{ratio:.2f}×** ({verdict}, target ≥ {TARGET}×)",
        f"{local['wall']:.0f} s → {ray['wall']:.0f} s ({local['wall'] / ray['wall']:.2f}×)",
        f"{local['engines']} / {ray['engines']}",
        "byte-identical" if identical else "DIFFER",
    ]])


if __name__ == "__main__":
    main()
