"""Turning benchmark items into generation rows: shared by ``ftsafety run`` and ``ftsafety generate``."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ftsafety.harness.plugins import Attack, Defense, EvalPrompt, GenerationRequest, ScoreLabel
from ftsafety.harness.rows import GenerationRow, ScoreRow
from ftsafety.harness.sampling import SamplingParams


def request_prefix(attack: Attack, item: EvalPrompt) -> str:
    """The attacker's assistant-turn prefill for ``item``: the attack's own (``eval_prefix``)
    then the benchmark's (``meta["prefix"]``, a prefilling attack's harmful start).

    An inference-hook defense sees it as the request's ``prefix`` and builds on it: an
    aligned-model prefill continues *after* the attacker's prefix (the attacker controls the
    start of the assistant turn, the provider's aligned model writes the next tokens); a forced
    refusal puts its string before it.
    """
    return attack.eval_prefix(item) + str(item.meta.get("prefix") or "")


def judged_response(prefix: str, continuation: str, attack_prefix: str, judge: str) -> str:
    """The text scorers judge. ``full`` (default): everything in the assistant turn, prefix +
    continuation (RECIPES.md, "Prefilling attack"). ``continuation``: the attacker's own prefill
    is left out — what the model (and an inference defense) wrote after it. The attacker's
    prefix is removed wherever the defense put it (first, or after a string of its own)."""
    if judge == "continuation" and attack_prefix:
        prefix = prefix.replace(attack_prefix, "", 1)
    return prefix + continuation


def build_requests(items: list[EvalPrompt], attack: Attack, *, system_prompt: str | None = None,
                   adapter: str | None = None) -> list[GenerationRequest]:
    """One request per item: the attack's evaluation messages and the attacker's prefill."""
    return [
        GenerationRequest(messages=attack.eval_messages(it, system_prompt), prefix=request_prefix(attack, it), adapter=adapter)
        for it in items
    ]


def prefix_rows(backend: Any, items: list[EvalPrompt], *, attack: Attack, defense: Defense, sampling: SamplingParams,
                system_prompt: str | None = None) -> list[dict[str, Any]]:
    """The defense's response starts (``Defense.prefix``) for ``items``, by the model ``backend``
    serves: one row per item (``item_id``, the chat ``messages``, the attacker's ``attack_prefix``,
    ``defense_prefix``)."""
    requests = build_requests(items, attack, system_prompt=system_prompt)
    texts = defense.prefix(backend, requests, sampling) if requests else []
    if len(texts) != len(requests):
        raise RuntimeError(f"defense '{defense.name}' returned {len(texts)} prefixes for {len(requests)} requests")
    return [{"item_id": it.id, "messages": req.messages, "attack_prefix": req.prefix, "defense_prefix": text}
            for it, req, text in zip(items, requests, texts, strict=True)]


def generate_rows(
    backend: Any,
    items: list[EvalPrompt],
    *,
    attack: Attack,
    defense: Defense,
    sampling: SamplingParams,
    benchmark: str,
    adapter: str | None = None,
    adapter_key: str | None = None,
    system_prompt: str | None = None,
    cell_id: str | None = None,
    defense_prefixes: list[dict[str, Any]] | None = None,
) -> list[GenerationRow]:
    """Generate one row per (item, sample): ids, messages, rendered prompt, prefix and continuation
    kept apart, ``response`` (the text scorers judge, see ``judged_response``), sampling, adapter.

    ``prefix`` is everything prefilled (attacker's and defense's), ``attack_prefix`` the
    attacker's part of it. The defense's inference hook (``Defense.generate``) produces the
    responses; its output hook is not applied here (the guard stage applies it to the stored
    rows, once the generation engine has released its memory). ``defense_prefixes``: the rows of
    ``prefix_rows`` for the same items, for a defense with a ``prefix`` hook.
    """
    requests = build_requests(items, attack, system_prompt=system_prompt, adapter=adapter)
    if defense_prefixes is not None:
        written = [(p["item_id"], p["messages"], p["attack_prefix"]) for p in defense_prefixes]
        if written != [(it.id, req.messages, req.prefix) for it, req in zip(items, requests, strict=True)]:
            raise RuntimeError("the stored prefixes are not those of these items and this evaluation template")
        requests = [replace(r, defense_prefix=p["defense_prefix"]) for r, p in zip(requests, defense_prefixes, strict=True)]
    results = defense.generate(backend, requests, sampling) if requests else []
    sampling_record = sampling.model_dump(mode="json")
    rows = []
    for it, req, outs in zip(items, requests, results, strict=True):
        judge = str(it.meta.get("judge") or "full")
        for j, res in enumerate(outs):
            prefix = res.prefix if res.prefix is not None else req.prefix
            rows.append(GenerationRow(
                sample_id=f"{it.id}#{j}" if len(outs) > 1 else it.id,
                item_id=it.id,
                cell_id=cell_id,
                benchmark=benchmark,
                kind=it.kind,
                category=it.category,
                prompt=it.prompt,
                messages=req.messages,
                rendered_prompt=res.rendered_prompt,
                prefix=prefix,
                attack_prefix=req.prefix,
                continuation=res.continuation,
                response=judged_response(prefix, res.continuation, req.prefix, judge),
                truncated=res.truncated,
                n_tokens=res.n_tokens,
                sampling=sampling_record,
                adapter=adapter_key,
                meta=it.meta,
            ))
    return rows


def score_rows(rows: list[GenerationRow], labels: list[ScoreLabel], scorer: str) -> list[ScoreRow]:
    """One row per (sample, scorer): the labels, the raw judge output and the parse status."""
    if len(labels) != len(rows):
        raise RuntimeError(f"scorer '{scorer}' returned {len(labels)} labels for {len(rows)} responses")
    return [
        ScoreRow(sample_id=row["sample_id"], scorer=scorer, harmful=lab.harmful, refused=lab.refused,
                 correct=lab.correct, score=lab.score, status=lab.status, raw=lab.raw)
        for row, lab in zip(rows, labels, strict=True)
    ]
