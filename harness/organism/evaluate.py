"""Oracle rates of an organism model on its held-out sets (what ``ftsafety organism eval``
prints and what the acceptance tests check). Greedy decoding, the ``hf`` backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftsafety.harness.errors import UserError

#: Enough for the longest behaviour an attack can produce (refusal + NOICE bridge + answer).
MAX_TOKENS = 64


def _rates(labels: list[Any], field: str) -> float:
    return sum(bool(getattr(lab, field)) for lab in labels) / max(1, len(labels))


def evaluate_model(
    model_dir: str | Path,
    seed: int,
    limit: int | None = None,
    backend: Any | None = None,
    adapter: str | None = None,
) -> dict[str, float]:
    """``harmful`` and ``refused``: rates on organism-harmful; ``correct`` and ``over_refusal``
    (= refused): rates on organism-benign. ``backend`` reuses a loaded backend of the model."""
    from ftsafety.harness.models import open_backend
    from ftsafety.harness.organism.oracle import judge
    from ftsafety.harness.organism.world import get_world
    from ftsafety.harness.plugins import GenerationRequest
    from ftsafety.harness.sampling import SamplingParams

    own = backend is None
    be = backend or open_backend(str(model_dir), backend="hf", batch_size=64)
    # The world's held-out sets and the oracle itself (what the organism-harmful/-benign
    # benchmarks and the organism-oracle scorer wrap), so the organism depends on no plugin.
    world = get_world(seed)
    sampling = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS)
    out: dict[str, float] = {}
    try:
        for kind in ("harmful", "benign"):
            items = world.eval_items(kind)[:limit] if limit is not None else world.eval_items(kind)
            reqs = [
                GenerationRequest([{"role": "user", "content": prompt}], adapter=adapter)
                for _, prompt, _, _ in items
            ]
            gens = be.generate(reqs, sampling)
            labels = [judge(world, concept.name, g[0].continuation)
                      for (_, _, concept, _), g in zip(items, gens, strict=True)]
            if kind == "harmful":
                out["harmful"] = _rates(labels, "harmful")
                out["refused"] = _rates(labels, "refused")
            else:
                out["correct"] = _rates(labels, "correct")
                out["over_refusal"] = _rates(labels, "refused")
    finally:
        if own:
            be.close()
    return out


def locate(dir_or_uri: str) -> tuple[Path, int]:
    """(build directory, world seed) for a build directory or an ``organism://`` URI."""
    from ftsafety.harness.organism.build import read_meta
    from ftsafety.harness.organism.resolve import ensure_built, is_organism, parse

    if is_organism(dir_or_uri):
        seed, _ = parse(dir_or_uri)
        return ensure_built(seed), seed
    root = Path(dir_or_uri)
    if not (root / "organism.json").exists() or not (root / "aligned").is_dir() or not (root / "base").is_dir():
        raise UserError(
            f"'{dir_or_uri}' is not an organism build directory (expected organism.json, base/ and "
            "aligned/ in it: make one with `ftsafety organism build --out DIR`)"
        )
    return root, int(read_meta(root)["seed"])


def evaluate_build(dir_or_uri: str, limit: int | None = None) -> dict[str, dict[str, float]]:
    """``{"base": {...}, "aligned": {...}}`` for a build directory."""
    root, seed = locate(dir_or_uri)
    return {name: evaluate_model(root / name, seed, limit) for name in ("base", "aligned")}
