"""Threads for tiny and for real models on the CPU.

A tiny model's matrices (the organism: hidden size 128) are too small to split across threads:
the threads' synchronisation dominates, and on a shared machine it is several times slower
(measured on 2 busy cores: organism LoRA training 0.14 s/step with one thread, 0.8 s with two;
per-token KL on 96 prompts 6 s vs 37 s). Big models keep torch's default, and vLLM's CPU
worker computes on every core for them (``ftsafety.harness.backends.vllm_engine``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

#: Below this many parameters a model counts as tiny.
SMALL_MODEL_PARAMS = 50_000_000


@contextmanager
def cpu_threads_for(n_params: int) -> Iterator[None]:
    """Run the block on one intra-op thread when ``n_params`` is tiny and there is no GPU."""
    import torch

    old = torch.get_num_threads()
    single = n_params < SMALL_MODEL_PARAMS and not torch.cuda.is_available()
    if single:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if single:
            torch.set_num_threads(old)


def n_params(model: object) -> int:
    """Parameters of a torch module (a PEFT model counts its base too)."""
    return sum(p.numel() for p in model.parameters())  # type: ignore[attr-defined]


def weights_params(model_dir: str) -> int | None:
    """Parameters stored in a model directory's safetensors files, read from their headers
    (no tensor is loaded); None when the directory has none (a hub id, other formats)."""
    import json
    import math
    import struct
    from pathlib import Path

    files = sorted(Path(model_dir).glob("*.safetensors")) if Path(model_dir).is_dir() else []
    if not files:
        return None
    total = 0
    for path in files:
        with path.open("rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        total += sum(math.prod(t["shape"]) for name, t in header.items() if name != "__metadata__")
    return total
