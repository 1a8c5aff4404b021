"""The CPU kernels are pinned (harness/determinism.py), and the organism's weights and a LoRA
fine-tune of it match hashes recorded in the repository.

Records are per version set of the libraries that do the arithmetic (torch, transformers, peft,
trl) and per CPU (vendor, family, model). Pinning takes the instruction-set choice out of the
bits, but MKL's vectorised sqrt (AdamW's second moment) is not correctly rounded and rests on
the CPU's approximate reciprocal square root, which CPU vendors implement differently
(docs/organism.md): bitwise equality across CPU vendors is not established, so a CPU without a
record skips, saying so, and the regression gate's tolerances (measured spread) cover the rest.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

RECORDED = Path(__file__).parent / "weight_hashes.json"
LIBRARIES = ("torch", "transformers", "peft", "trl")

x86_only = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                              reason="kernels are pinned on x86-64 only")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cpu_id() -> str:
    """``vendor family F model M`` from /proc/cpuinfo (the CPU a record was made on)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().split("\n\n")[0].splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    fields = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return f"{fields.get('vendor_id', '?')} family {fields.get('cpu family', '?')} model {fields.get('model', '?')}"


def _recorded(what: str) -> str:
    """The recorded hash of ``what`` for the installed library versions on this CPU (skip if none)."""
    if os.environ.get("FTSAFETY_CPU_KERNELS", "").lower() == "native":
        pytest.skip("FTSAFETY_CPU_KERNELS=native: kernels not pinned, bits depend on the machine")
    versions = {name: importlib.metadata.version(name) for name in LIBRARIES}
    for record in json.loads(RECORDED.read_text())["records"]:
        if record["versions"] == versions and record["cpu"] == cpu_id():
            return record["hashes"][what]
    pytest.skip(f"no hash recorded for {versions} on '{cpu_id()}' in {RECORDED.name}: record one (see its 'how')")


@x86_only
def test_importing_ftsafety_pins_the_cpu_kernels():
    code = ("import ftsafety.harness, torch; print(torch.backends.cpu.get_cpu_capability()); "
            "import os; print(os.environ['MKL_CBWR'])")
    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "FTSAFETY_CPU_KERNELS")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["AVX2", "COMPATIBLE"]
    # opting out leaves every library to pick its own path
    env["FTSAFETY_CPU_KERNELS"] = "native"
    out = subprocess.run([sys.executable, "-c", "import ftsafety.harness, os; print(os.environ.get('MKL_CBWR'))"],
                         env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["None"]


@x86_only
@pytest.mark.slow
def test_organism_weights_are_the_recorded_bits(organism_dir):
    assert _sha(organism_dir / "base" / "model.safetensors") == _recorded("organism-seed0-base")
    assert _sha(organism_dir / "aligned" / "model.safetensors") == _recorded("organism-seed0-aligned")


@x86_only
@pytest.mark.slow
def test_a_lora_fine_tune_is_the_recorded_bits(organism_dir, tmp_path):
    """The pipeline's own data and train stages (TRL SFTTrainer + PEFT LoRA), 20 steps."""
    from ftsafety.harness.config import validate_config
    from ftsafety.harness.planner import plan_cells
    from ftsafety.harness.stages import run_task
    from ftsafety.harness.stages.train import train_into
    from ftsafety.harness.store import ArtifactStore
    from ftsafety.harness.tasks import build_tasks

    cfg = validate_config({
        "name": "determinism",
        "output_dir": str(tmp_path / "runs"),
        "models": [{"name": "organism", "path": str(organism_dir / "aligned")}],
        "attacks": [{"name": "harmful"}],
        "defenses": [{"name": "none"}],
        "training": {"method": "lora", "lora": {"r": 16, "alpha": 32}, "max_steps": 20, "lr": 3.0e-3, "batch_size": 8},
        "benchmarks": [{"name": "organism-harmful"}],
        "scorers": [{"name": "organism-oracle"}],
        "generation": {"backend": "hf", "max_tokens": 40},
    })
    store = ArtifactStore(tmp_path / "store")
    tasks = {t.kind: t for t in build_tasks(cfg, plan_cells(cfg), store)}
    run_task(tasks["data"], store)
    (tmp_path / "out").mkdir()
    train_into(tasks["train"], store, tmp_path / "out")
    assert _sha(tmp_path / "out" / "adapter" / "adapter_model.safetensors") == _recorded("lora-harmful-20-steps")
