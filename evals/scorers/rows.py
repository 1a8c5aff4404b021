"""Reading the fields scorers and metrics need from a generation row.

Generation rows are ``ftsafety.harness.rows.GenerationRow`` (written by the generate stage,
returned by output hooks, built by screening defenses from training rows). Scorers rely on
this small part of it, and read plain mappings too (a row from another tool's JSONL):

- ``response`` (str): the full text to judge. When absent it is ``prefix + completion`` — the
  prefill (a defense's aligned prefix or a prefilling attack's harmful start) is part of what
  the user sees, and RECIPES.md ("Prefilling attack") judges prefix + continuation.
  ``continuation`` is accepted as an alias of ``completion``.
- ``prompt`` (str): the benchmark request. When absent, the content of the last ``user``
  message in ``messages``.
- ``truncated`` (bool, optional): the response hit ``max_tokens``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def response_text(item: Mapping[str, Any]) -> str:
    """The text a scorer judges: ``item["response"]``, else ``prefix + completion``."""
    response = item.get("response")
    if isinstance(response, str):
        return response
    completion = item.get("completion")
    if completion is None:
        completion = item.get("continuation")
    prefix = item.get("prefix") or ""
    return f"{prefix}{completion or ''}"


def prompt_text(item: Mapping[str, Any]) -> str:
    """The request the response answers: ``item["prompt"]``, else the last user message."""
    prompt = item.get("prompt")
    if isinstance(prompt, str):
        return prompt
    for message in reversed(item.get("messages") or []):
        if isinstance(message, Mapping) and message.get("role") == "user":
            return str(message.get("content") or "")
    return ""


def is_truncated(item: Mapping[str, Any]) -> bool:
    """Whether generation stopped at ``max_tokens`` (the response may be cut mid-sentence)."""
    return bool(item.get("truncated", False))
