"""The typed context a stage hands to a plugin hook (``Attack.build_dataset``, ``Defense.align``,
``Defense.screen``, ``Defense.post_train``, ``Defense.training``): which model, where to
write, and the run's engine settings. Plain fields a stage task carries; nothing of the grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftsafety.harness.store import read_json

if TYPE_CHECKING:
    from ftsafety.harness.config import ModelSpec
    from ftsafety.harness.models import EngineSpec
    from ftsafety.harness.store import ArtifactStore


@dataclass
class StageContext:
    """What a plugin hook may use."""

    #: The grid's model spec of the cell (its name, original ``path``, system prompt).
    model: ModelSpec
    #: Local directory (or hub id) of the weights this stage works on: the aligned model for
    #: ``data``/``screen``/``train`` when an alignment-stage defense made one.
    model_path: str
    seed: int
    #: This stage's artifact directory (write outputs and intermediate files here).
    workdir: Path
    #: The shared artifact store, for intermediate results cached on their own key.
    store: ArtifactStore | None = None
    #: Fingerprint of the model (part of keys of intermediate artifacts).
    model_key: dict[str, Any] = field(default_factory=dict)
    #: Generation backend name of the grid (``vllm``, ``hf``) for hooks that generate.
    backend: str = "vllm"
    #: The grid's ``engine:`` settings, for hooks that open an engine.
    engine: EngineSpec | None = None
    #: Upstream artifacts by role (``adapter``, ``model``, ``train_dir``: a ``post_train`` hook
    #: reads the trained weights from them).
    inputs: dict[str, str] = field(default_factory=dict)
    _tokenizer: Any = None

    def organism_world(self) -> Any:
        """The organism's world when the model is an organism, else None."""
        from ftsafety.harness.organism.resolve import build_meta, is_organism, parse

        seed = parse(self.model.path)[0] if is_organism(self.model.path) else None
        if seed is None:
            meta = build_meta(self.model_path)
            if meta is None:
                return None
            seed = int(read_json(meta)["seed"])
        from ftsafety.harness.organism.world import get_world

        return get_world(seed)

    def tokenizer(self) -> Any:
        """The model's tokenizer (its chat template decides how system text is placed)."""
        if self._tokenizer is None:
            from ftsafety.harness.models import load_tokenizer

            self._tokenizer = load_tokenizer(self.model_path, trust_remote_code=self.model.trust_remote_code)
        return self._tokenizer

    def open_backend(self, path: str | None = None) -> Any:
        """A generation backend on ``path`` (default: this stage's model) with the grid's backend
        and engine settings, serving the base weights only (a stage's own generations never go
        through an adapter); use it as a context manager so its memory is released."""
        from ftsafety.harness.models import open_backend

        return open_backend(path or self.model_path, self.engine, backend=self.backend,
                            trust_remote_code=self.model.trust_remote_code, base_only=True)

    def cached(self, stage: str, inputs: dict[str, Any], filename: str, compute: Any) -> Any:
        """``compute()``'s JSON result, cached in the store under a key of ``inputs`` + the model
        (e.g. refusals an attack generates are reused by every cell and run that needs the same ones)."""
        import json

        from ftsafety.harness.store import content_key

        if self.store is None:
            return compute()
        full = {"model": self.model_key, **inputs}
        key = content_key(full)
        if not self.store.is_complete(stage, key):
            with self.store.writing(stage, key, full) as out:
                (out / filename).write_text(json.dumps(compute(), ensure_ascii=False))
        return read_json(self.store.path(stage, key) / filename)
