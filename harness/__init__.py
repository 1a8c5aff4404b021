"""ftsafety harness: config, registries, run store, planner, stages, backends, CLI.

The distribution is ``ftsafety``; its top-level packages are ``harness`` (this one),
``attacks``, ``defenses`` and ``evals``. ``harness`` imports nothing heavy at import time:
torch, transformers and vllm load only inside the functions that need them.
"""

__version__ = "0.1.0"
#: Version of the on-disk run-store layout. A run directory written with another major
#: version is refused with a clear error instead of being misread.
STORE_FORMAT = 1
#: Marker proving these packages are ftsafety's, not the unrelated PyPI ``harness``.
DISTRIBUTION = "ftsafety"

# Before anything imports torch: the same CPU kernels on every x86-64 machine (see determinism.py).
from ftsafety.harness.determinism import pin_cpu_kernels as _pin_cpu_kernels  # noqa: E402

_pin_cpu_kernels()
