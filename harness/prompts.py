"""Prompts from registered benchmarks as training material: loaded by spec, kept disjoint from
the prompts a grid evaluates on, and answered by a model when the data has no answers.

Used by the attack recipes (``prompts:`` in ``SourceParams``) and by alignment-stage defenses
that train on benchmark prompts. Two prompts are the same when their normalised text is: lower case,
punctuation dropped, whitespace collapsed — JBB, HarmBench and AdvBench share behaviours with
small differences in case and punctuation, and a training prompt that is an evaluation prompt
makes the evaluation meaningless.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from ftsafety.harness.context import StageContext
    from ftsafety.harness.plugins import EvalPrompt

_NOT_WORD = re.compile(r"[^\w\s]+")
_SPACE = re.compile(r"\s+")


class BenchmarkRef(BaseModel):
    """A registered benchmark and its params, as in the grid's ``benchmarks:`` list."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    name: str
    """Registered benchmark name (``ftsafety ls benchmarks``)."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Its params (``path:`` for a local copy, ``limit``, filters)."""


def normalise(text: str) -> str:
    """The text two prompts are compared by."""
    return _SPACE.sub(" ", _NOT_WORD.sub(" ", text.lower())).strip()


def load_prompts(refs: list[BenchmarkRef], *, who: str) -> tuple[list[EvalPrompt], list[str]]:
    """Every prompt of ``refs`` (in order, duplicates by normalised text dropped) and the
    benchmarks' fingerprints."""
    from ftsafety.harness import registry

    prompts: list[EvalPrompt] = []
    fingerprints: list[str] = []
    seen: set[str] = set()
    for ref in refs:
        bench = registry.benchmarks.get(ref.name)(ref.params)  # an unknown name is a UserError
        for item in bench.load():
            norm = normalise(item.prompt)
            if norm not in seen:
                seen.add(norm)
                prompts.append(item)
        fingerprints.append(bench.fingerprint())
    return prompts, fingerprints


def disjoint(prompts: list[EvalPrompt], excluded: list[EvalPrompt]) -> tuple[list[EvalPrompt], int]:
    """``prompts`` without those whose normalised text is an excluded prompt's, and how many
    were removed."""
    banned = {normalise(p.prompt) for p in excluded}
    kept = [p for p in prompts if normalise(p.prompt) not in banned]
    return kept, len(prompts) - len(kept)


def training_prompts(refs: list[BenchmarkRef], exclude: list[BenchmarkRef], *,
                     who: str) -> tuple[list[EvalPrompt], list[str], int]:
    """The prompts of ``refs`` that are none of ``exclude``'s (by normalised text), the
    benchmarks' fingerprints, and how many were removed: training prompts kept apart from the
    prompts a grid evaluates on."""
    prompts, fingerprints = load_prompts(refs, who=who)
    excluded, _ = load_prompts(exclude, who=f"{who} exclude")
    kept, removed = disjoint(prompts, excluded)
    return kept, fingerprints, removed


def model_answers(ctx: StageContext, prompts: list[str], *, model_path: str, model_identity: Any,
                  max_tokens: int, what: str, fingerprint: Any) -> list[str]:
    """Greedy answers of the model at ``model_path`` (identified by ``model_identity`` in the
    cache key, not by its path) to ``prompts`` as plain user turns (no system prompt: the
    model's own default), through the grid's generation backend, cached in the store under
    (model, prompts, budget, backend) so every cell and run reuses them."""
    from ftsafety.harness.plugins import GenerationRequest
    from ftsafety.harness.sampling import SamplingParams

    def generate() -> list[str]:
        sampling = SamplingParams(temperature=0.0, max_tokens=max_tokens, seed=0)
        requests = [GenerationRequest(messages=[{"role": "user", "content": x}]) for x in prompts]
        with ctx.open_backend(model_path) as backend:
            results = backend.generate(requests, sampling)
        return [outs[0].continuation.strip() for outs in results]

    # the prompts themselves, not just their source: a filter or a limit changes which are asked
    asked = hashlib.sha256("\x00".join(prompts).encode()).hexdigest()
    inputs: dict[str, Any] = {"what": what, "answered_by": model_identity, "data": fingerprint, "n": len(prompts),
                              "prompts_sha256": asked, "max_tokens": max_tokens, "backend": ctx.backend}
    engine = ctx.engine.identity() if ctx.engine is not None else {}
    if engine:
        inputs["engine"] = engine
    return ctx.cached("model-answers", inputs, "answers.json", generate)


def unaligned_answers(ctx: StageContext, prompts: list[str], *, max_tokens: int, fingerprint: Any) -> list[str]:
    """Greedy answers of the grid's model as released (``models[].path``, before any provider
    alignment), cached as ``model_answers``: on a real model, the harmful answers an attack trains
    on and a defense scores or pushes away from are the model's own unaligned ones."""
    from ftsafety.harness.models import resolve_model_path

    # the cache entry's name since the attacks introduced it: renaming it would only regenerate
    return model_answers(ctx, prompts, model_path=resolve_model_path(ctx.model.path),
                         model_identity={"unaligned": ctx.model.path, "revision": ctx.model.revision},
                         max_tokens=max_tokens, what="attack-unaligned-answers", fingerprint=fingerprint)
