"""Prefill defenses on a recording backend: who writes what, and what is stored apart."""

from __future__ import annotations

from ftsafety.defenses.prefill import FORCED_REFUSAL, AlignedPrefillDefense, ForcedRefusalDefense
from ftsafety.harness.plugins import GenerationRequest, GenerationResult
from ftsafety.harness.sampling import SamplingParams


class Recorder:
    """Answers with a marker naming the adapter, and records every call (orchestration test)."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[GenerationRequest], SamplingParams]] = []

    def generate(self, requests, sampling):
        self.calls.append((requests, sampling))
        tag = lambda r: "aligned" if r.adapter is None else "attacked"  # noqa: E731
        return [[GenerationResult(rendered_prompt="p" + r.prefix, continuation=f" {tag(r)}-words", truncated=False,
                                  n_tokens=sampling.max_tokens)] for r in requests]


def test_forced_refusal_string_is_noice_frd():
    assert FORCED_REFUSAL == "I'm sorry, I cannot"


def test_aligned_model_writes_k_tokens_then_the_attacked_model_continues():
    backend = Recorder()
    req = GenerationRequest(messages=[{"role": "user", "content": "q"}], adapter="/adapters/a")
    out = AlignedPrefillDefense({"k": 5}).generate(backend, [req], SamplingParams(temperature=0.7, max_tokens=40))
    (first, s1), (second, s2) = backend.calls
    assert first[0].adapter is None and s1.max_tokens == 5 and s1.temperature == 0.0
    assert second[0].adapter == "/adapters/a" and second[0].prefix == " aligned-words" and s2.max_tokens == 35
    assert s2.temperature == 0.7
    assert out[0][0].prefix == " aligned-words" and out[0][0].continuation == " attacked-words"


def test_prefix_decoding_same_keeps_the_run_sampling():
    backend = Recorder()
    req = GenerationRequest(messages=[{"role": "user", "content": "q"}], adapter="a")
    AlignedPrefillDefense({"k": 3, "prefix_decoding": "same"}).generate(backend, [req], SamplingParams(temperature=0.9))
    assert backend.calls[0][1].temperature == 0.9


def test_forced_refusal_prefills_and_stores_the_prefix_apart():
    backend = Recorder()
    req = GenerationRequest(messages=[{"role": "user", "content": "q"}], adapter="a")
    out = ForcedRefusalDefense().generate(backend, [req], SamplingParams())
    assert backend.calls[0][0][0].prefix == FORCED_REFUSAL and backend.calls[0][0][0].adapter == "a"
    assert out[0][0].prefix == FORCED_REFUSAL and out[0][0].continuation == " attacked-words"
