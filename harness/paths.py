"""Turning user-chosen labels into file-name components that stay inside their directory."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

#: Longest component we produce: well under the 255-byte file-name limit of common file
#: systems, leaving room for suffixes such as ``.log`` or ``.jsonl``.
MAX_LABEL_LENGTH = 120


def safe_label(text: str) -> str:
    """A file-name component for a model/attack/defense/benchmark/scorer label.

    Every character outside ``[A-Za-z0-9._=-]`` becomes ``-`` (so no ``/`` or ``\\``), and
    leading/trailing ``-`` and ``.`` are dropped, so the result is never ``.``, ``..``, hidden,
    empty or absolute: joined to a directory it always names a child of that directory. Two
    labels may sanitise to the same text; the config validation reports such collisions.
    """
    slug = re.sub(r"[^A-Za-z0-9._=-]+", "-", text).strip("-.")
    if not slug:
        return "_"
    if len(slug) > MAX_LABEL_LENGTH:
        # Keep truncated labels distinct: a short hash of the full text.
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]
        slug = f"{slug[: MAX_LABEL_LENGTH - 9]}-{digest}"
    return slug


class NotAnInput:
    """Marks a plugin param that names a place the plugin writes to (a cache directory), not
    an input: the planner does not fingerprint its content. Use it as
    ``cache_dir: Annotated[str | None, NOT_AN_INPUT] = None``."""

    def __repr__(self) -> str:
        return "NOT_AN_INPUT"


NOT_AN_INPUT = NotAnInput()


def checkpoint_dir(train_dir: Path | str, step: int) -> Path:
    """Where a train artifact keeps the adapter it had after ``step`` optimizer steps
    (durability curves). It has a train artifact's layout (``adapter/``, ``train_summary.json``),
    so the post_train and generate stages read a checkpoint as they read a finished fine-tune."""
    return Path(train_dir) / "checkpoints" / f"step-{step}"
