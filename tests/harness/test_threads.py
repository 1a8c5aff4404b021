"""Thread choices by model size: parameter counts read from safetensors headers."""

from __future__ import annotations

import pytest

from ftsafety.harness.threads import SMALL_MODEL_PARAMS, weights_params


def _write(path, tensors):
    import torch
    from safetensors.torch import save_file

    save_file({k: torch.zeros(*shape) for k, shape in tensors.items()}, str(path))


def test_weights_params_sums_every_shard(tmp_path):
    _write(tmp_path / "model-00001-of-00002.safetensors", {"a": (3, 4), "b": (5,)})
    _write(tmp_path / "model-00002-of-00002.safetensors", {"c": (2, 2, 2)})
    assert weights_params(str(tmp_path)) == 12 + 5 + 8


def test_weights_params_is_none_without_safetensors(tmp_path):
    assert weights_params(str(tmp_path)) is None
    assert weights_params("org/hub-id") is None


@pytest.mark.parametrize(("params", "user", "option", "expected"), [
    (10, None, None, None),                      # tiny: vLLM's own reservation
    (SMALL_MODEL_PARAMS, None, None, 0),         # a real model: every core computes
    (SMALL_MODEL_PARAMS, "1", None, 1),          # the user's environment wins over the default
    (SMALL_MODEL_PARAMS, "1", 0, 0),             # the option wins over both
])
def test_vllm_reserved_cores(tmp_path, monkeypatch, params, user, option, expected):
    from ftsafety.harness.backends import vllm_engine

    monkeypatch.setattr("ftsafety.harness.threads.weights_params", lambda _path: params)
    monkeypatch.setattr(vllm_engine, "_USER_RESERVED_CPU", user)
    assert vllm_engine._reserved_cores(str(tmp_path), option) == expected
