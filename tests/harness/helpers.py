"""Shared helpers for harness tests: write configs, run the CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def canned_config(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    """A grid on the canned test backend (orchestration tests only)."""
    cfg: dict[str, Any] = {
        "name": "t",
        "output_dir": str(tmp_path / "runs"),
        "models": [{"name": "m", "path": "org/some-model"}],
        "attacks": [{"name": "none"}],
        "defenses": [{"name": "none"}],
        "benchmarks": [{"name": "canned-prompts"}],
        "scorers": [{"name": "canned-harm"}],
        "generation": {"backend": "canned", "max_tokens": 8},
        "seeds": [0, 1],
    }
    cfg.update(overrides)
    return cfg


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python -m ftsafety.harness ARGS`` in a fresh interpreter."""
    full_env = {**os.environ, "FTSAFETY_PLUGINS": "tests.plugins.canned", "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "ftsafety.harness", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd or REPO, timeout=timeout)


HEAVY_MODULES = ("torch", "vllm", "transformers", "trl", "peft")


def run_on_organism(config_file: Path, organism_dir: Path, tmp: Path) -> tuple[Path, Path]:
    """``ftsafety run`` of a shipped organism grid config on the test session's organism build,
    into ``tmp/runs``; (its run directory, the grid file it ran). Fails the test on a non-zero exit."""
    import yaml

    config = yaml.safe_load(config_file.read_text())
    config["output_dir"] = str(tmp / "runs")
    config["models"][0]["path"] = str(organism_dir / "aligned")  # the session's organism build
    path = write_config(tmp / "grid.yaml", config)
    r = cli("run", str(path), timeout=1500)
    assert r.returncode == 0, r.stderr[-3000:]
    return tmp / "runs" / config["name"], path


def heavy_modules_after(args: list[str], env: dict[str, str] | None = None, timeout: float = 120) -> list[str]:
    """The heavy modules (torch, vllm, ...) imported by running ``ftsafety ARGS`` in a fresh interpreter.

    The command's own output goes to this test's stdout/stderr, so pytest shows it on a failure.
    """
    probe = (
        "import sys, runpy\n"
        f"sys.argv = ['ftsafety', *{args!r}]\n"
        "try:\n    runpy.run_module('ftsafety.harness', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        f"heavy = sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules)\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=full_env, cwd=REPO,
                       timeout=timeout)
    sys.stdout.write(r.stdout)
    sys.stderr.write(r.stderr)
    found = [ln for ln in r.stdout.splitlines() if ln.startswith("HEAVY=")]
    assert found, f"the probe printed no HEAVY= line:\n{r.stdout}{r.stderr}"
    return [m for m in found[-1].removeprefix("HEAVY=").split(",") if m]
