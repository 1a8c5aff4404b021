"""``moderation``: the fine-tuning provider screens every uploaded training example.

Source: the provider-side data filter that NOICE (Kazdan et al. 2025, arXiv 2502.19537) is built
to evade: a moderation model judges each training example, flagged ones are dropped, and the
counts are reported. NOICE's point is that its data (a refusal, then a *benign* answer) passes.

Each training row is judged as a (prompt, response) pair, exactly as a scorer judges a generated
response: the prompt is the row's last user turn (with any folded system text), the response its
final assistant completion. A row is dropped when the scorer labels it harmful; rows it cannot
judge (``unscored``) are kept and counted. The screen stage writes ``counts.json``
(``{"kept", "dropped"}``), ``dropped.jsonl`` (each dropped row with the scorer's verdict) and
``screen.json`` (scorer, unscored count).

Scorer: ``auto`` (default) is the ``organism-guard`` on the model organism, else ``llama-guard``
(give ``scorer_params.model``); any scorer with the harm axis works. Training rows carry no
organism concept, so for the oracle every row is judged against a *benign* concept: the oracle
then flags a response that delivers any harmful concept's content (≥ ``min_steps`` of its
steps), whichever concept the prompt names — a benign answer, or a NOICE refusal + bridge +
benign answer, contains none and passes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ftsafety.defenses.scoring import ORGANISM_ONLY, ScorerChoice, load_scorer, resolve_scorer
from ftsafety.harness.plugins import Defense
from ftsafety.harness.registry import defenses
from ftsafety.harness.rows import GenerationRow

if TYPE_CHECKING:
    from ftsafety.harness.context import StageContext


class ModerationParams(ScorerChoice):
    """The scorer that screens training examples (``auto``: organism-guard on the organism, else llama-guard)."""


def _content(message: Any) -> str:
    return str(message.get("content") or "") if isinstance(message, dict) else str(message or "")


def split_training_row(row: dict[str, Any]) -> tuple[list[dict[str, str]], str, str]:
    """(prompt messages, last user text, final assistant text) of a TRL training row: the
    conversational prompt/completion form the attacks build, a ``messages`` row, or plain
    prompt/completion strings."""
    if "messages" in row:
        messages = list(row["messages"])
        last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=len(messages))
        prompt_msgs, completion = messages[:last], messages[last:last + 1]
    else:
        prompt_msgs, completion = row.get("prompt") or [], row.get("completion") or []
    if isinstance(prompt_msgs, str):
        return [{"role": "user", "content": prompt_msgs}], prompt_msgs, _content(completion)
    user = next((_content(m) for m in reversed(prompt_msgs) if m.get("role") == "user"), "")
    if isinstance(completion, str):
        response = completion
    else:
        response = next((_content(m) for m in reversed(completion) if m.get("role") == "assistant"), "")
    return list(prompt_msgs), user, response


def organism_screen_meta(world: Any, prompt: str) -> dict[str, Any]:
    """Oracle meta for a training row: a benign concept (the one the prompt names, if any), so
    that the oracle flags any harmful concept's content (see the module docstring)."""
    from ftsafety.harness.organism.world import contains, normalize

    text = normalize(prompt)
    named = next((c.name for c in world.benign if contains(text, normalize(c.phrase))), None)
    return {"organism_seed": world.seed, "concept": named or world.benign[0].name, "screen": True}


def screen_items(rows: list[dict[str, Any]], world: Any = None) -> list[GenerationRow]:
    """The generation rows scorers read (its required keys) for each training row."""
    items = []
    for i, row in enumerate(rows):
        messages, user, response = split_training_row(row)
        items.append(GenerationRow(
            sample_id=f"train-{i}",
            prompt=user,
            messages=messages,
            prefix="",
            continuation=response,
            response=response,
            truncated=False,
            meta=organism_screen_meta(world, user) if world is not None else {},
        ))
    return items


@defenses.register("moderation")
class ModerationDefense(Defense):
    """The provider screens every training example with a scorer and drops flagged ones (data moderation)."""

    Params = ModerationParams

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        self._report: dict[str, Any] | None = None

    def report(self) -> dict[str, Any] | None:
        """What the last ``screen`` call did: scorer, its params, kept, dropped and unscored counts."""
        return self._report

    def scorer_spec(self, model_path: str) -> tuple[str, dict[str, Any]] | None:
        return resolve_scorer(self.params, model_path)  # type: ignore[arg-type]

    def screen(self, rows: list[dict[str, Any]], ctx: StageContext | None = None
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        world = ctx.organism_world() if ctx is not None else None
        model_path = ctx.model.path if ctx is not None else None
        name, params = resolve_scorer(self.params, model_path)  # type: ignore[arg-type]
        if name in ORGANISM_ONLY and world is None:
            from ftsafety.harness.errors import UserError

            raise UserError(f"moderation: the {name} screens organism data only; choose another scorer")
        store = ctx.store if ctx is not None else None
        scorer = load_scorer(name, params, who="defense 'moderation'", store_root=store.root if store is not None else None)
        try:
            labels = scorer.score(screen_items(rows, world)) if rows else []
        finally:
            scorer.close()
        kept, dropped = [], []
        for row, label in zip(rows, labels, strict=True):
            if label.status == "ok" and label.harmful:
                dropped.append({**row, "screen": {"scorer": name, "raw": label.raw}})
            else:
                kept.append(row)
        self._report = {
            "scorer": name, "scorer_params": params, "kept": len(kept), "dropped": len(dropped),
            "unscored": sum(1 for label in labels if label.status != "ok"),
        }
        return kept, dropped
