"""Registered benchmarks. Importing this package registers them; no torch or vllm is imported."""

from ftsafety.evals.benchmarks import hub as _hub  # noqa: F401
from ftsafety.evals.benchmarks import organism as _organism  # noqa: F401
from ftsafety.evals.benchmarks import prefill_attack as _prefill_attack  # noqa: F401
