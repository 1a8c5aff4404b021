"""Pin the CPU kernels torch uses, so CPU runs give the same bits on any x86-64 machine.

Why: torch picks its vectorised kernels (ATen) and MKL its GEMM code path by the CPU it finds
(AVX2 or AVX-512, Intel or AMD). Each path rounds differently, and a few hundred training steps
turn one-ulp differences into different models: the organism built on an AVX-512 machine and
on an AVX2-only one were different models whose fine-tunes disagreed (issue 11). Measured on one
AMD EPYC with AVX-512, a short organism build gave three different weight hashes under ATen's
AVX-512, AVX2 and scalar kernels, and two more under MKL's AVX2 and SSE2 paths.

What is pinned (set only where the user has not set it, and before torch runs its first op):

- ``ATEN_CPU_CAPABILITY=avx2``: ATen's AVX2 kernels, which every x86-64 CPU of the last decade has;
- ``MKL_CBWR=COMPATIBLE``: MKL's conditional numerical reproducibility mode whose code path is the
  same on Intel and AMD. ``MKL_CBWR=AVX2`` is not enough: under an emulated Intel Haswell
  (qemu-user, which computed bit-identically to this AMD host when it emulated an AMD EPYC-Rome)
  MKL's small GEMMs and its vectorised ``exp`` took Intel-only paths and changed the bits, even
  with ``AVX2,STRICT``; with ``COMPATIBLE`` every probed operation (GEMM, bmm, exp, softmax,
  log-softmax, a linear layer's gradients) agreed;
- ``ONEDNN_MAX_CPU_ISA=AVX2``: oneDNN (used by vLLM's CPU GEMMs) capped at AVX2 kernels.

What remains machine-dependent: MKL's vectorised sqrt (torch.sqrt, hence AdamW's second
moment) is not correctly rounded (15.7% of 1e5 random values differ from the IEEE result) and
its bits changed between this host and an emulated CPU in every mode tried, the mark of an
approximate reciprocal-square-root instruction, which CPU vendors implement differently. So the
organism's bits are pinned per CPU (tests/harness/test_determinism.py records hashes per CPU
model), not proven equal across vendors; the regression gate's tolerances cover that spread.
Multi-threaded reductions (bigger models) also depend on the thread count, and vLLM picks its
own attention kernels by the hardware.

``FTSAFETY_CPU_KERNELS=native`` turns the pinning off (every library picks its fastest path; results
then depend on the machine). On other architectures (aarch64) nothing is pinned.
"""

from __future__ import annotations

import os
import platform

#: The environment that fixes the kernels; values apply only where a variable is unset.
PINNED_ENV: dict[str, str] = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "COMPATIBLE",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
}
#: ``FTSAFETY_CPU_KERNELS=native`` opts out.
SWITCH = "FTSAFETY_CPU_KERNELS"


def _x86_64() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


def pin_cpu_kernels() -> dict[str, str]:
    """Set the pinned kernel environment (without overriding the user's own values); returns
    what is in force. Call it before torch runs its first operation (the CLI's entry does)."""
    if os.environ.get(SWITCH, "").lower() == "native" or not _x86_64():
        return {}
    for name, value in PINNED_ENV.items():
        os.environ.setdefault(name, value)
    return kernel_signature()


def kernel_signature() -> dict[str, str]:
    """The kernel settings in force: part of what identifies a CPU-built model (the organism's
    cache key), since other settings give other bits."""
    return {name: os.environ.get(name, "") for name in (*PINNED_ENV, SWITCH)} | {"machine": platform.machine()}
