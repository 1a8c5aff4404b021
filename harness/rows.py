"""The two row types of the run store: a generation row (``generate``/``guard`` artifacts,
``generations.jsonl``) and a score row (``score`` artifacts, ``scores.jsonl``).

They are ``TypedDict``s, not pydantic models: a row is written and read as a plain JSON object
(by the stages, by scorers and defenses in third-party packages, by ``ftsafety report`` on a
copied run), so a ``TypedDict`` types every reader and writer at no cost at run time, keeps the
JSONL byte for byte as written (keys in the order the writer builds them, ``null`` where the
writer puts ``None``), and lets a plugin keep passing plain dicts. A pydantic model would copy
and re-serialise every row, and decide the key order and defaults itself.

Writers build rows with these constructors (``GenerationRow(sample_id=..., ...)``), in the key
order shown, which is the order on disk.
"""

from __future__ import annotations

from typing import Any, Literal, Required, TypedDict

#: A benchmark item's kind: a request to refuse, or one to answer.
Kind = Literal["harmful", "benign"]


class GenerationRow(TypedDict, total=False):
    """One sample: the request, what the model wrote, and what the user receives.

    The generate stage (``ftsafety.harness.generation.generate_rows``) writes every key from
    ``sample_id`` to ``meta``. An output-hook defense (``Defense.guard``) returns the rows as
    the user receives them: it may set ``blocked`` and replace the text keys, keeping what the
    model wrote in the ``original_*`` keys. A screening defense hands its training rows to a
    scorer in this shape too, with the ``Required`` keys only.
    """

    sample_id: Required[str]
    """``<item id>`` or, with several samples per item, ``<item id>#<j>``."""
    item_id: str
    """The benchmark item's id."""
    cell_id: str | None
    """The grid cell (None outside a grid: ``ftsafety generate``)."""
    benchmark: str
    """The benchmark's label in the grid."""
    kind: Kind
    """The benchmark item's kind."""
    category: str | None
    """The item's category (the organism's concept), when the benchmark gives one."""
    prompt: Required[str]
    """The benchmark request (the last user turn)."""
    messages: Required[list[dict[str, str]]]
    """The chat sent to the model (the attack's evaluation template applied)."""
    rendered_prompt: str
    """The prompt text after the chat template, as the backend saw it."""
    prefix: Required[str]
    """Everything prefilled at the start of the assistant turn (the attacker's and an
    inference-hook defense's)."""
    attack_prefix: str
    """The attacker's part of ``prefix`` (an attack's or a prefilling benchmark's)."""
    continuation: Required[str]
    """What the model wrote after ``prefix``."""
    response: Required[str]
    """The text scorers judge (``ftsafety.harness.generation.judged_response``)."""
    truncated: Required[bool]
    """Generation stopped at ``max_tokens``."""
    n_tokens: int
    """Tokens generated."""
    sampling: dict[str, Any]
    """The decoding settings (``SamplingParams``) the sample was drawn with."""
    adapter: str | None
    """Key of the train artifact whose weights answered (None: the untouched model)."""
    meta: Required[dict[str, Any]]
    """The benchmark item's ``meta`` (what scorers need: the organism's concept, ...)."""
    blocked: bool
    """An output-hook defense withheld the response: it is never an attack success and always a
    refusal (``ftsafety.evals.metrics``). Present only on rows an output hook judged."""
    guard: dict[str, Any]
    """The output hook's verdict on the response (its scorer, label, parse status, raw output)."""
    original_prefix: str
    """``prefix`` as the model wrote it, when an output hook replaced it."""
    original_continuation: str
    """``continuation`` as the model wrote it, when an output hook replaced it."""
    original_response: str
    """``response`` as the model wrote it, when an output hook replaced it."""


class ScoreRow(TypedDict):
    """One scorer's verdict on one sample (``ftsafety.harness.generation.score_rows``); the
    labels are a ``ScoreLabel``'s fields, ``None`` on an axis the scorer does not judge."""

    sample_id: str
    """The generation row it judges."""
    scorer: str
    """The scorer's label in the grid."""
    harmful: bool | None
    refused: bool | None
    correct: bool | None
    score: float | None
    status: Literal["ok", "unscored"]
    """``unscored``: the scorer could not decide (never imputed)."""
    raw: str | None
    """The judge's raw output (or the reason it is unscored)."""
