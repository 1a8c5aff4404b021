"""The grouped CPU LoRA ops write exactly what vLLM's per-token ops write (same shapes, same
index semantics, ``-1`` included), and the plugin entry point installs them."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest

from ftsafety.harness.backends import vllm_cpu_lora

torch = pytest.importorskip("torch")


def _original_ops():  # vLLM's own, read from its source file (the plugin may have replaced the module's names)
    pytest.importorskip("vllm")
    import importlib.util

    from vllm.lora.ops.torch_ops import lora_ops

    spec = importlib.util.spec_from_file_location("vllm_lora_ops_original", lora_ops.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


INDEX_SETS = {
    "one adapter": [2] * 7,
    "mixed, with no-adapter tokens (-1)": [0, -1, 2, 2, -1, 1, 0],
    "every token the same no-adapter index": [-1] * 7,
}


@pytest.mark.vllm
@pytest.mark.parametrize("indices", list(INDEX_SETS.values()), ids=list(INDEX_SETS))
@pytest.mark.parametrize("stacked", [3, 4], ids=["weights (slots, out, in)", "weights (slots, 1, out, in)"])
def test_grouped_ops_write_what_vllms_ops_write(indices: list[int], stacked: int) -> None:
    original = _original_ops()
    gen = torch.Generator().manual_seed(0)
    slots, rank, hidden, out = 4, 8, 24, 40
    idx = torch.tensor(indices)
    x = torch.randn(len(indices), hidden, generator=gen)
    a = torch.randn(slots, rank, hidden, generator=gen)
    b = torch.randn(slots, out, rank, generator=gen)
    if stacked == 4:
        a, b = a.unsqueeze(1), b.unsqueeze(1)

    def both(name: str, *args: object, y: torch.Tensor) -> None:
        ours, theirs = y.clone(), y.clone()
        getattr(vllm_cpu_lora, name)(args[0], args[1], ours, *args[2:])
        getattr(original, name)(args[0], args[1], theirs, *args[2:])
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)

    shrunk = torch.zeros(len(indices), rank)
    both("bgmv_shrink", x, a, idx, 0.5, y=shrunk)
    vllm_cpu_lora.bgmv_shrink(x, a, shrunk, idx, 0.5)
    base = torch.randn(len(indices), out + 6, generator=gen)
    for add in (True, False):
        both("bgmv_expand", shrunk, b, idx, add, y=base)
        both("bgmv_expand_slice", shrunk, b, idx, 3, out, add, y=base)


@pytest.mark.vllm
def test_the_plugin_is_registered_and_replaces_the_cpu_ops() -> None:
    pytest.importorskip("vllm")
    from vllm.lora.punica_wrapper import punica_cpu

    names = {e.name: e.value for e in entry_points(group="vllm.general_plugins")}
    assert names.get("ftsafety_cpu_lora") == "ftsafety.harness.backends.vllm_cpu_lora:install"
    assert vllm_cpu_lora.install() is True
    assert punica_cpu.bgmv_shrink is vllm_cpu_lora.bgmv_shrink
    assert punica_cpu.bgmv_expand_slice is vllm_cpu_lora.bgmv_expand_slice


def test_original_ops_can_be_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FTSAFETY_VLLM_CPU_LORA", "original")
    assert vllm_cpu_lora.install() is False
