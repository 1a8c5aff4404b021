"""Generation backends: ``vllm`` (default) and ``hf`` (transformers + peft fallback).

Importing this package registers both without importing torch or vllm.
"""

from ftsafety.harness.backends import hf as _hf  # noqa: F401  (registers "hf")
from ftsafety.harness.backends import vllm_engine as _vllm  # noqa: F401  (registers "vllm")
from ftsafety.harness.backends.base import GenerationBackend

__all__ = ["GenerationBackend"]
