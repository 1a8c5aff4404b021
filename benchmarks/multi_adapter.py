"""Evaluating N = 6 LoRA adapters: one vLLM engine serving all of them vs one engine per adapter
(issue 7). Wall time including engine start and shutdown.

The pipeline starts one engine per base model and serves every attacked cell's adapter from it
as a LoRA request (the generate stage, ``ftsafety.harness.stages.generate``); the alternative, an engine per fine-tuned
model, pays the engine start (worker process, model load, KV cache, warm-up) once per cell. This
script measures both on the organism with six adapters trained by the pipeline's own train stage
(harmful, yoc and aoa attacks × seeds 0 and 1), generating each cell's prompts with
``ftsafety.harness.generation.generate_rows`` cell after cell, as the generate stage does.

One untimed engine start and shutdown comes first (file cache, imports in the spawned worker),
then the one-engine pass, then the six engines.

    .venv/bin/python benchmarks/multi_adapter.py [--max-tokens 64] [--limit N]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from _common import (
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

ATTACKS = [{"name": "harmful"}, {"name": "yoc"}, {"name": "aoa"}]
SEEDS = [0, 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=64, help="response tokens (the organism demo's 64)")
    parser.add_argument("--limit", type=int, default=None, help="prompts per benchmark (default: all)")
    parser.add_argument("--model", default="organism://default", help="model path (an organism build by default)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    quiet_libraries()
    set_threads(1)  # this process only trains the adapters (once) and renders prompts; vLLM has its own

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ftsafety.harness import registry
    from ftsafety.harness.generation import generate_rows
    from ftsafety.harness.models import resolve_model_path

    console = Console(stderr=True)
    cfg = organism_grid("bench-multi-adapter", model=args.model, attacks=ATTACKS, seeds=SEEDS, max_tokens=args.max_tokens)
    console.print("adapters: training (or reusing) 6 organism LoRA adapters ...")
    adapters = trained_adapters(cfg)
    assert len(adapters) == 6, [c.id for c, _ in adapters]
    items = []
    for spec in cfg.benchmarks:
        items += registry.benchmarks.get(spec.name)(spec.params).load(args.limit)
    defense = registry.defenses.get("none")()
    backend_cls = registry.backends.get("vllm")
    path = resolve_model_path(args.model)

    def start() -> Any:
        # As the pipeline starts it: a LoRA slot of the grid's rank.
        return backend_cls(path, max_lora_rank=cfg.training.lora.r)

    def generate(backend: Any, cell: Any, adapter: Any) -> None:
        generate_rows(backend, items, attack=registry.attacks.get(cell.attack.name)(cell.attack.params),
                      defense=defense, sampling=cfg.generation.sampling(seed=cell.seed),
                      benchmark="organism", adapter=str(adapter), adapter_key=cell.id)

    loads = [load_average()]
    starts: list[float] = []
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        task = progress.add_task("warm-up engine", total=None)
        start().close()

        progress.update(task, total=1, completed=1)
        task = progress.add_task("one engine, 6 adapters", total=len(adapters))
        t0 = time.perf_counter()
        backend = start()
        starts.append(backend.start_seconds)
        try:
            for cell, adapter in adapters:
                generate(backend, cell, adapter)
                progress.advance(task)
        finally:
            backend.close()
        shared = time.perf_counter() - t0
        loads.append(load_average())

        task = progress.add_task("one engine per adapter", total=len(adapters))
        t0 = time.perf_counter()
        for cell, adapter in adapters:
            backend = start()
            starts.append(backend.start_seconds)
            try:
                generate(backend, cell, adapter)
            finally:
                backend.close()
            progress.advance(task)
        separate = time.perf_counter() - t0
    loads.append(load_average())

    ratio = separate / shared
    mean_start = sum(starts) / len(starts)
    console.print(f"one engine, 6 adapters:  {shared:.1f} s")
    console.print(f"one engine per adapter: {separate:.1f} s")
    console.print(f"ratio {ratio:.2f}x; engine start {mean_start:.1f} s on average; load {' -> '.join(loads)}")
    if args.no_write:
        return
    update_results(
        "multi-adapter",
        ["date", "machine", "versions", "load avg start → between → end (1/5/15 min)", "setup",
         "one engine, 6 adapters", "one engine per adapter", "ratio (per-adapter / shared)", "engine start"],
        [[today(), cpu_model(), versions(), " → ".join(loads),
          f"{model_label(args.model)}, 6 LoRA adapters (harmful, yoc, aoa × seeds 0, 1; r {cfg.training.lora.r}), {len(items)} prompts "
          f"each (harmful + benign), greedy, {args.max_tokens} tokens; wall time incl. engine start and shutdown, "
          "after one untimed warm-up engine",
          f"{shared:.1f} s", f"{separate:.1f} s", f"**{ratio:.2f}×**",
          f"{mean_start:.1f} s mean over {len(starts)} starts (engine construction, `VLLMBackend.start_seconds`; shutdown not included)"]],
    )
    console.print("updated benchmarks/RESULTS.md (multi-adapter)")


if __name__ == "__main__":
    main()
