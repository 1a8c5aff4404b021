"""Aligned-model prefill (defense ``prefill``, k = 15) vs plain generation: wall time for the same
prompts in the same vLLM engine (issue 7; target <= 1.5x).

The prefill defense (NOICE's AMD) makes two engine calls per batch: the aligned model (the base
weights, adapter off) writes the first k tokens, then the attacked model (the LoRA adapter)
continues from prompt + prefix. Its extra cost is the second prefill of every prompt and the
split into two decoding passes; the tokens decoded are about the same. This script measures the
ratio on the organism with an adapter trained by the pipeline's own train stage (the harmful
attack), through ``ftsafety.harness.generation.prefix_rows`` (the prefix stage's work, which the
pipeline does once per base model and benchmark in an engine of its own; here in the same engine,
timed with every pass) and ``generate_rows`` with the registered ``none`` and ``prefill``
defenses.

One engine serves both sides. One untimed pass of each side comes first (engine warm-up, LoRA
load, prefix cache); then the sides alternate, and the ratio is of the medians.

    .venv/bin/python benchmarks/prefill.py [--repeats 5] [--max-tokens 64] [--k 15]
"""

from __future__ import annotations

import argparse
import time

from _common import (
    Timed,
    cpu_model,
    load_average,
    model_label,
    organism_grid,
    quiet_libraries,
    set_threads,
    today,
    trained_adapters,
    update_results,
    versions,
)

TARGET = 1.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per side (alternating)")
    parser.add_argument("--max-tokens", type=int, default=64, help="response tokens (the organism demo's 64)")
    parser.add_argument("--k", type=int, default=15, help="tokens the aligned model writes (NOICE: 15)")
    parser.add_argument("--model", default="organism://default", help="model path (an organism build by default)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    quiet_libraries()
    set_threads(1)  # this process only trains the adapter (once) and renders prompts; vLLM has its own

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ftsafety.harness import registry
    from ftsafety.harness.generation import generate_rows, prefix_rows
    from ftsafety.harness.models import resolve_model_path

    console = Console(stderr=True)
    cfg = organism_grid("bench-prefill", model=args.model, max_tokens=args.max_tokens)
    console.print("adapter: training (or reusing) the organism's harmful-attack LoRA ...")
    [(cell, adapter)] = trained_adapters(cfg)
    items = []
    for spec in cfg.benchmarks:
        items += registry.benchmarks.get(spec.name)(spec.params).load(None)
    attack = registry.attacks.get(cell.attack.name)(cell.attack.params)
    defenses = {"none": registry.defenses.get("none")(), "prefill": registry.defenses.get("prefill")({"k": args.k})}
    sampling = cfg.generation.sampling(seed=0)
    backend_cls = registry.backends.get("vllm")

    def run(name: str) -> tuple[float, int]:
        start = time.perf_counter()
        prefixes = None
        if "prefix" in defenses[name].hooks:  # the prefix stage's work, here in the same engine (base weights)
            prefixes = prefix_rows(backend, items, attack=attack, defense=defenses[name], sampling=sampling)
        rows = generate_rows(backend, items, attack=attack, defense=defenses[name], sampling=sampling,
                             benchmark="organism", adapter=str(adapter), adapter_key=cell.of("train")[-1].key,
                             defense_prefixes=prefixes)
        seconds = time.perf_counter() - start
        # Tokens of the judged response (prefix + continuation), counted alike for both sides.
        return seconds, sum(len(backend.tokenizer(r["response"], add_special_tokens=False)["input_ids"]) for r in rows)

    loads = [load_average()]
    times: dict[str, list[float]] = {"none": [], "prefill": []}
    tokens: dict[str, int] = {}
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        task = progress.add_task("engine start", total=None)
        # As the pipeline starts it: a LoRA slot of the grid's rank.
        backend = backend_cls(resolve_model_path(args.model), max_lora_rank=cfg.training.lora.r)
        try:
            progress.update(task, total=1, completed=1)
            task = progress.add_task("generation passes", total=2 * (args.repeats + 1))
            for name in ("none", "prefill"):  # warm-up, untimed
                run(name)
                progress.advance(task)
            for _ in range(args.repeats):
                for name in ("none", "prefill"):
                    seconds, tokens[name] = run(name)
                    times[name].append(seconds)
                    progress.advance(task)
        finally:
            backend.close()
    loads.append(load_average())

    plain, prefill = Timed(times["none"]), Timed(times["prefill"])
    ratio = prefill.median / plain.median
    # The defense changes what is generated (an aligned opening, then the attacked model), so
    # response lengths differ: the cost per response token is the like-for-like figure.
    per_token = (prefill.median / tokens["prefill"]) / (plain.median / tokens["none"])
    verdict = "meets target" if ratio <= TARGET else "ABOVE target"
    console.print(f"plain   {plain.show('s')}, {tokens['none']} response tokens")
    console.print(f"prefill {prefill.show('s')}, {tokens['prefill']} response tokens")
    console.print(f"ratio {ratio:.2f}x (target <= {TARGET}x: {verdict}); per response token {per_token:.2f}x; "
                  f"load {loads[0]} -> {loads[1]}")
    if args.no_write:
        return
    update_results(
        "prefill",
        ["date", "machine", "versions", "load avg before → after (1/5/15 min)", "setup",
         "plain generation", f"prefill (k = {args.k})", "ratio (target ≤ 1.5×)", "ratio per response token"],
        [[today(), cpu_model(), versions(), f"{loads[0]} → {loads[1]}",
          f"{model_label(args.model)}, {len(items)} prompts (harmful + benign), one vLLM engine, harmful-attack LoRA "
          f"r {cfg.training.lora.r}, greedy, {args.max_tokens} tokens, prefix greedy; {args.repeats} passes per "
          f"side after one warm-up each, alternating",
          f"{plain.show('s')}; {tokens['none']} response tokens", f"{prefill.show('s')}; {tokens['prefill']} response tokens",
          f"**{ratio:.2f}×** ({verdict})", f"{per_token:.2f}×"]],
    )
    console.print("updated benchmarks/RESULTS.md (prefill)")


if __name__ == "__main__":
    main()
