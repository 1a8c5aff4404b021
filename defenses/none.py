"""No defense."""

from __future__ import annotations

from ftsafety.harness.plugins import Defense
from ftsafety.harness.registry import defenses


@defenses.register("none")
class NoDefense(Defense):
    """No defense: the attacked model answers as it is."""
