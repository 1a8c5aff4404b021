"""The model/engine layer (``ftsafety.harness.models``): model references, engine settings merged
into backend options, option validation, and the backends' shared stop rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest

from ftsafety.harness.backends.base import BackendOptions, GenerationBackend
from ftsafety.harness.errors import UserError
from ftsafety.harness.models import EngineSpec, ModelRef, open_backend, resolve_model_path
from ftsafety.harness.plugins import GenerationRequest
from ftsafety.harness.registry import backends
from ftsafety.harness.sampling import SamplingParams
from tests.harness.backends.tiny_model import END, build_tiny_model

# ----------------------------------------------------------------------------- ModelRef


def test_model_ref_kinds(tmp_path):
    (tmp_path / "m").mkdir()
    assert ModelRef(path="organism://default").kind == "organism"
    assert ModelRef(path=str(tmp_path / "m")).kind == "local"
    assert ModelRef(path="./not/yet").kind == "local"
    assert ModelRef(path="~/models/x").kind == "local"
    assert ModelRef(path=str(tmp_path / "w.Q4_K_M.gguf")).kind == "gguf"
    assert ModelRef(path="meta-llama/Llama-3.1-8B-Instruct").kind == "hub"


def test_model_ref_resolves_once(tmp_path, monkeypatch):
    import ftsafety.harness.organism.resolve as organism

    calls = []

    def build(path: str) -> str:
        calls.append(path)
        return str(tmp_path / "aligned")

    monkeypatch.setattr(organism, "resolve_model_path", build)
    ref = ModelRef(path="organism://3")
    assert ref.resolve() == ref.resolve() == str(tmp_path / "aligned")
    assert calls == ["organism://3"]
    assert resolve_model_path("organism://3/base") == str(tmp_path / "aligned")
    assert ModelRef(path="org/name", revision="abc").resolve() == "org/name"
    home = str(Path("~").expanduser())
    assert ModelRef(path="~/m").resolve() == f"{home}/m"


def test_model_ref_from_spec_and_revision(tmp_path):
    from ftsafety.harness.config import ModelSpec

    spec = ModelSpec(name="m", path="org/name", revision="abc123", trust_remote_code=True)
    ref = ModelRef.from_spec(spec)
    assert (ref.path, ref.revision, ref.trust_remote_code) == ("org/name", "abc123", True)
    assert ref.hub_revision == "abc123"
    # a directory has no revision to load
    assert ModelRef(path=str(tmp_path), revision="abc123").hub_revision is None


def test_a_missing_gguf_file_is_a_clear_user_error(tmp_path):
    with pytest.raises(UserError, match=r"w\.gguf.*GGUF file not found"):
        ModelRef(path=str(tmp_path / "w.gguf")).resolve()


# ----------------------------------------------------------------------------- engine settings


class RecordingOptions(BackendOptions):
    """Options of the recording test backend."""

    dtype: str | None = None
    """Weights dtype."""
    max_model_len: int | None = None
    """Context length."""
    max_lora_rank: int | None = None
    """LoRA slots."""
    batch_size: int = 1
    """A backend-only option."""
    revision: str | None = None
    """Hub revision."""
    serve_adapters: bool = True
    """Adapter slots (turned off for base-only engines)."""


@backends.register("test-recording")
class RecordingBackend(GenerationBackend):
    """Records the options it was opened with (test only)."""

    Options = RecordingOptions
    ignored_engine_fields: ClassVar[frozenset[str]] = frozenset({"max_loras"})
    no_adapter_options: ClassVar[dict[str, Any]] = {"serve_adapters": False}

    def __init__(self, model_path: str, *, trust_remote_code: bool = False, **options: Any) -> None:
        super().__init__(model_path, trust_remote_code=trust_remote_code, **options)
        self.raw = options


def test_engine_spec_passes_only_settings_that_differ_from_defaults(tmp_path):
    backend = open_backend(str(tmp_path), EngineSpec(), backend="test-recording")
    assert backend.raw == {}
    spec = EngineSpec.model_validate(EngineSpec(dtype="bfloat16", max_lora_rank=16).model_dump(mode="json"))
    backend = open_backend(str(tmp_path), spec, backend="test-recording")
    assert backend.raw == {"dtype": "bfloat16", "max_lora_rank": 16}
    assert backend.options.dtype == "bfloat16" and backend.options.batch_size == 1


def test_explicit_options_win_over_the_engine_spec(tmp_path):
    spec = EngineSpec(dtype="bfloat16", max_model_len=256)
    backend = open_backend(str(tmp_path), spec, backend="test-recording", dtype="float32", batch_size=4)
    assert backend.raw == {"dtype": "float32", "max_model_len": 256, "batch_size": 4}


def test_a_base_only_engine_gets_the_backends_no_adapter_options(tmp_path):
    backend = open_backend(str(tmp_path), EngineSpec(max_lora_rank=16), backend="test-recording", base_only=True)
    assert backend.raw == {"max_lora_rank": 16, "serve_adapters": False}
    # an explicit option still wins
    backend = open_backend(str(tmp_path), backend="test-recording", base_only=True, serve_adapters=True)
    assert backend.raw == {"serve_adapters": True}


def test_engine_settings_a_backend_cannot_apply(tmp_path):
    # meaningless there: dropped
    backend = open_backend(str(tmp_path), EngineSpec(max_loras=8), backend="test-recording")
    assert backend.raw == {}
    # not applicable: an error naming the setting and the backend
    with pytest.raises(UserError, match="'test-recording' backend cannot apply engine.tensor_parallel_size=2"):
        open_backend(str(tmp_path), EngineSpec(tensor_parallel_size=2), backend="test-recording")


def test_hub_revision_reaches_the_backend(tmp_path):
    backend = open_backend(ModelRef(path="org/name", revision="abc"), backend="test-recording")
    assert backend.model_path == "org/name" and backend.raw == {"revision": "abc"}


def test_unknown_backend_option_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="test-recording backend: unknown option 'batchsize'") as err:
        open_backend(str(tmp_path), backend="test-recording", batchsize=3)
    assert "batch_size" in str(err.value)  # the known options are listed
    with pytest.raises(UserError, match="option 'batch_size'"):
        RecordingBackend(str(tmp_path), batch_size="many")


def test_real_backends_reject_unknown_options_before_loading(tmp_path):
    for name in ("hf", "vllm"):
        with pytest.raises(UserError, match=f"{name} backend: unknown option 'gpu_mem'"):
            backends.get(name)(str(tmp_path), gpu_mem=0.5)


def test_grid_engine_section():
    from ftsafety.harness.config import validate_config
    from ftsafety.harness.errors import ConfigError

    base = {"name": "g", "models": [{"name": "m", "path": "organism://0"}],
            "benchmarks": [{"name": "organism-harmful"}], "scorers": [{"name": "organism-oracle"}],
            "training": {"lora": {"r": 16}}}
    cfg = validate_config(base)
    assert cfg.engine == EngineSpec()
    assert cfg.engine_for_generation().model_dump(exclude_defaults=True) == {"max_lora_rank": 16}
    cfg = validate_config(base | {"engine": {"max_lora_rank": 64, "tensor_parallel_size": 2}})
    assert cfg.engine_for_generation().model_dump(exclude_defaults=True) == {"max_lora_rank": 64, "tensor_parallel_size": 2}
    with pytest.raises(ConfigError) as err:
        validate_config(base | {"engine": {"tensor_parallel": 2, "gpu_memory_utilization": 1.5}})
    assert any(p.startswith("engine.tensor_parallel: unknown key") for p in err.value.problems)
    assert any(p.startswith("engine.gpu_memory_utilization:") for p in err.value.problems)


def test_engine_identity_leaves_out_capacity_settings():
    assert EngineSpec(max_lora_rank=8, max_loras=2, gpu_memory_utilization=0.5).identity() == {}
    assert EngineSpec(dtype="bfloat16", max_lora_rank=8).identity() == {"dtype": "bfloat16"}


# ----------------------------------------------------------------------------- shared stop rules


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)


def test_hf_backend_stop_tokens_and_info(tiny_dir):
    """``stop_tokens`` (which hf lacked): generation stops at the extra token, which counts in
    ``n_tokens`` and is not in the text; the engine records its settings."""
    from ftsafety.harness.backends.hf import HFBackend

    requests = [GenerationRequest([{"role": "user", "content": t}])
                for t in ("how do i make a cake ?", "write a guide for a garden", "hello ! how do i make a bomb")]
    sampling = SamplingParams(max_tokens=24)
    with open_backend(str(tiny_dir), EngineSpec(max_lora_rank=8), backend="hf") as plain:
        assert isinstance(plain, HFBackend) and plain.tokenizer is not None
        assert plain.stop_ids == [plain.tokenizer.convert_tokens_to_ids(END)]
        info = plain.info()
        assert info["backend"] == "hf" and info["dtype"] == "float32" and info["model"] == str(tiny_dir)
        base = [r[0] for r in plain.generate(requests, sampling)]
        # a word some answer writes before it ends: stop there instead
        word = next(w for r in base for w in r.continuation.split()[1:] if w.isalpha())
        with open_backend(str(tiny_dir), backend="hf", stop_tokens=[word]) as stopping:
            stopped = [r[0] for r in stopping.generate(requests, sampling)]
    for before, after in zip(base, stopped, strict=True):
        words = before.continuation.split()
        if word in words:
            k = words.index(word)
            assert after.continuation.split() == words[:k] and not after.truncated
            assert before.n_tokens > after.n_tokens >= k + 1
        else:
            assert after == before
    assert any(word in r.continuation.split() for r in base)
    with pytest.raises(UserError, match="stop token"):
        open_backend(str(tiny_dir), backend="hf", stop_tokens=["<|no such token|>"])
