"""What the scorer-based defenses (``moderation``, ``output-guard``) share: choosing their scorer.

Any registered scorer with the harm axis works as a screen or a guard. ``scorer: auto`` (the
default) picks the one that can judge the model at hand without anything to download: the
``organism-guard`` for the model organism (``organism://`` paths and local organism builds) —
an imperfect classifier independent of the oracle that scores the grid, so a screen or a guard
is not right by construction — else ``llama-guard``, which needs ``scorer_params: {model:
<local Llama-Guard directory>}``. ``scorer: organism-oracle`` gives a perfect guard (an upper
bound, not a defense anyone can deploy).
The chosen scorer's identity (name, params, judge provenance) enters the keys of the stages
the defense hooks (``ftsafety.harness.planner``), so changing the judge reruns the screen/guard.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ftsafety.harness.errors import UserError
from ftsafety.harness.organism.resolve import build_meta, is_organism
from ftsafety.harness.plugins import Scorer

AUTO = "auto"
#: What ``auto`` means outside the organism (NOICE's output guard: Llama-Guard).
DEFAULT_GUARD = "llama-guard"
ORGANISM_SCORER = "organism-guard"
#: Scorers that judge organism items only (``meta.organism_seed``).
ORGANISM_ONLY = frozenset({"organism-guard", "organism-oracle"})


class ScorerChoice(BaseModel):
    """A registered scorer and its params; ``auto`` picks one for the model (see module doc)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    scorer: str = AUTO
    """Registered scorer with the harm axis (``ftsafety ls scorers``); ``auto``: ``organism-guard``
    on the organism, else ``llama-guard``."""
    scorer_params: dict[str, Any] = Field(default_factory=dict)
    """Params of that scorer (``llama-guard`` needs ``model``: a local directory)."""

    @model_validator(mode="after")
    def _known_scorer(self) -> ScorerChoice:
        # Caught by `ftsafety validate`: an unknown scorer or bad scorer params is a config error.
        if self.scorer == AUTO:
            return self
        from ftsafety.harness import registry

        if self.scorer not in registry.scorers:
            raise ValueError(registry.scorers.unknown_message(self.scorer))
        cls = registry.scorers.get(self.scorer)
        if "harmful" not in cls.axes:
            raise ValueError(f"scorer '{self.scorer}' has no harm axis: it cannot screen or guard")
        try:
            cls.Params.model_validate(self.scorer_params)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"scorer_params for '{self.scorer}': {problems}") from None
        return self


def is_organism_model(model_path: str | None) -> bool:
    """An ``organism://`` path or a local organism build (``DIR/aligned`` beside ``organism.json``)."""
    if not model_path:
        return False
    return is_organism(model_path) or build_meta(model_path) is not None


def resolve_scorer(choice: ScorerChoice, model_path: str | None, *, organism: bool | None = None) -> tuple[str, dict[str, Any]]:
    """(scorer name, params) for a model path; ``organism`` overrides the path test (used when
    only the rows are at hand)."""
    if choice.scorer != AUTO:
        return choice.scorer, dict(choice.scorer_params)
    on_organism = is_organism_model(model_path) if organism is None else organism
    return (ORGANISM_SCORER if on_organism else DEFAULT_GUARD), dict(choice.scorer_params)


def load_scorer(name: str, params: dict[str, Any], *, who: str, store_root: Path | None = None) -> Scorer:
    """An instance of the scorer, with a clear error when ``auto`` chose one that needs params.
    ``store_root``: the run store, where an API judge caches its judgments (as in the score stage)."""
    from ftsafety.harness import registry

    cls = registry.scorers.get(name)
    try:
        scorer = cls(cls.Params.model_validate(params))
    except ValidationError as exc:
        fields = ", ".join(".".join(map(str, e["loc"])) for e in exc.errors())
        raise UserError(
            f"{who}: scorer '{name}' needs params ({fields}); set scorer_params (e.g. "
            f"{{model: /path/to/Llama-Guard-3-8B}} for llama-guard) or choose another scorer"
        ) from None
    if store_root is not None:
        scorer.use_store(store_root)
    return scorer
