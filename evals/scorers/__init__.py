"""Registered scorers. Importing this package registers them; no torch or vllm is imported."""

from ftsafety.evals.scorers import judges as _judges  # noqa: F401
from ftsafety.evals.scorers import keyword as _keyword  # noqa: F401
from ftsafety.evals.scorers import oracle as _oracle  # noqa: F401
from ftsafety.evals.scorers import organism_guard as _organism_guard  # noqa: F401
