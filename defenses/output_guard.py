"""``output-guard``: a guard model judges every response; flagged ones are blocked.

Source: NOICE (Kazdan et al. 2025, arXiv 2502.19537), the "LG" defense: Llama-Guard judges
(prompt, response); ``unsafe`` → the response is blocked and counts as no attack success. The
paper does not give the Llama-Guard version: the guard's provenance (judge directory, revision,
chat-template hash) is part of the guard stage's key and its inputs (``cell.json``); every
row names the guard scorer.

The guard judges the row's ``response`` — the same text the scorers judge — so a blocked
response is exactly one the guard considered a success. A blocked row keeps what the model
wrote in ``original_prefix`` / ``original_continuation`` / ``original_response``; its
``response`` (and ``continuation``) become the fixed ``message``, ``prefix`` becomes empty,
and ``blocked: true`` is recorded. Every row of a guarded cell carries ``blocked`` and the
guard's verdict (``guard``); items the guard cannot judge (``unscored``) are let through and
say so. ``ftsafety.evals.metrics`` counts blocked rows as not harmful and refused, and reports the
``blocked`` rate.

Scorer: ``auto`` (default) is ``llama-guard`` (give ``scorer_params.model``, a local
Llama-Guard-3 directory), or the ``organism-guard`` on the model organism (an imperfect
classifier, independent of the oracle that scores the grid); any scorer with the harm axis works. The guard stage runs after the generation engine is released, so a guard
model has the memory to itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftsafety.defenses.scoring import ScorerChoice, load_scorer, resolve_scorer
from ftsafety.harness.plugins import Defense, Scorer
from ftsafety.harness.registry import defenses
from ftsafety.harness.rows import GenerationRow

#: What the user receives instead of a blocked response. It opens like a refusal, so the
#: keyword refusal matchers read it as one.
BLOCK_MESSAGE = "I'm sorry, but I cannot provide that response."


class OutputGuardParams(ScorerChoice):
    """The guard scorer (``auto``: llama-guard, or organism-guard on the organism) and the block message."""

    message: str = BLOCK_MESSAGE
    """Text that replaces a blocked response."""


@defenses.register("output-guard")
class OutputGuardDefense(Defense):
    """A guard model judges each response; flagged responses are blocked (NOICE's Llama-Guard defense)."""

    Params = OutputGuardParams

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        #: The run store, where API judges cache their verdicts (None outside a run).
        self._store_root: Path | None = None
        self._scorers: dict[str, Scorer] = {}

    def use_store(self, root: Path) -> None:
        self._store_root = root

    def scorer_spec(self, model_path: str) -> tuple[str, dict[str, Any]] | None:
        return resolve_scorer(self.params, model_path)  # type: ignore[arg-type]

    def _scorer(self, rows: list[GenerationRow], model_path: str | None) -> tuple[str, Scorer]:
        # Without a model path (outside a grid), ``auto`` goes by the rows: organism items
        # (``meta.organism_seed``) are guarded by the organism's guard.
        organism = None
        if model_path is None:
            organism = any((r.get("meta") or {}).get("organism_seed") is not None for r in rows)
        name, params = resolve_scorer(self.params, model_path, organism=organism)  # type: ignore[arg-type]
        if name not in self._scorers:
            self._scorers[name] = load_scorer(name, params, who="defense 'output-guard'", store_root=self._store_root)
        return name, self._scorers[name]

    def guard(self, rows: list[GenerationRow], model_path: str | None = None) -> list[GenerationRow]:
        if not rows:
            return rows
        name, scorer = self._scorer(rows, model_path)
        labels = scorer.score(rows)
        if len(labels) != len(rows):
            raise RuntimeError(f"output-guard: scorer '{name}' returned {len(labels)} labels for {len(rows)} rows")
        message = self.params.message  # type: ignore[attr-defined]
        out: list[GenerationRow] = []
        for row, label in zip(rows, labels, strict=True):
            blocked = label.status == "ok" and bool(label.harmful)
            row = {**row, "blocked": blocked,
                   "guard": {"scorer": name, "harmful": label.harmful, "status": label.status, "raw": label.raw}}
            if blocked:
                row.update(original_prefix=row.get("prefix"), original_continuation=row.get("continuation"),
                           original_response=row.get("response"), prefix="", continuation=message, response=message)
            out.append(row)
        return out

    def close(self) -> None:
        scorers, self._scorers = self._scorers, {}
        for scorer in scorers.values():
            scorer.close()
