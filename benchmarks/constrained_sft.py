"""Constrained vs standard SFT: training time per optimizer step (issue 6; target <= 1.25x).

Q24's constrained objective needs the aligned model's log-probs of every training token. They
are computed once, before the first step (``ConstrainedSFTTrainer._aligned_log_probs``), so the
per-step cost should be close to plain SFT: the loss reuses the forward pass's own log-probs and
only adds a lookup and an elementwise formula. This script checks that.

Both sides run ``ftsafety.harness.stages.train.train_into`` (the pipeline's train stage) on the same data
(the organism's harmful attack), steps, learning rate and LoRA; only the grid's defense differs
(``none`` → TRL's ``SFTTrainer``, ``constrained`` → ``ConstrainedSFTTrainer``). Per-step time =
``trainer.train()`` wall time / steps (``train_sft``'s ``seconds``), which excludes the trainer's
construction and therefore the precompute; the precompute is timed on its own by wrapping the
trainer's method. Runs alternate (standard, constrained, standard, ...) so that a change in the
machine's load affects both sides; the ratio is of the medians.

Threads: one by default. The organism's matrices are tiny; with torch's default of one thread
per core on a 2-core machine that others also use, the threads' synchronisation dominates and
times swing by 10x from run to run (measured: 0.84 s/step with 2 threads at load 4.5, 0.09 s/step
with 1 thread at the same load), so a ratio measured that way is noise. ``--threads 0`` keeps
torch's default.

    .venv/bin/python benchmarks/constrained_sft.py [--steps 80] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import shutil
import tempfile
import time
from pathlib import Path

from _common import (
    ORGANISM_TRAINING,
    Timed,
    cpu_model,
    load_average,
    model_label,
    organism_grid,
    quiet_libraries,
    set_threads,
    today,
    train_tasks,
    update_results,
    versions,
)

TARGET = 1.25


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=80, help="optimizer steps per training run")
    parser.add_argument("--repeats", type=int, default=3, help="training runs per side (alternating)")
    parser.add_argument("--model", default="organism://default", help="model path (an organism build by default)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: see the module docstring; 0 = torch's default)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    threads = set_threads(args.threads)
    quiet_libraries()

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ftsafety.defenses.constrained_trainer import ConstrainedSFTTrainer
    from ftsafety.harness.stages.train import train_into
    from ftsafety.harness.store import ArtifactStore

    console = Console(stderr=True)
    training = {**ORGANISM_TRAINING, "max_steps": args.steps}
    cfg = organism_grid("bench-constrained-sft", model=args.model, training=training,
                        defenses=[{"name": "none"}, {"name": "constrained"}])
    store = ArtifactStore(Path(cfg.output_dir) / ".cache")
    by_defense = {task.spec["defense"]["name"]: task for task in train_tasks(cfg)}
    # the same data file for both: the data stage ignores the defense
    assert by_defense["none"].upstream == by_defense["constrained"].upstream, "both sides must train on one data file"

    precompute: list[float] = []
    original = ConstrainedSFTTrainer._aligned_log_probs

    @functools.wraps(original)
    def timed_precompute(self: ConstrainedSFTTrainer) -> dict:
        start = time.perf_counter()
        try:
            return original(self)
        finally:
            precompute.append(time.perf_counter() - start)

    ConstrainedSFTTrainer._aligned_log_probs = timed_precompute  # type: ignore[method-assign]
    per_step: dict[str, list[float]] = {"none": [], "constrained": []}
    loads: list[str] = [load_average()]
    examples = 0
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        task = progress.add_task("training runs", total=2 * args.repeats)
        for _ in range(args.repeats):
            for name in ("none", "constrained"):
                out = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
                try:
                    with contextlib.redirect_stdout(io.StringIO()):  # the trainer prints every step's logs
                        summary = train_into(by_defense[name], store, out)
                finally:
                    shutil.rmtree(out, ignore_errors=True)
                assert summary["steps"] == args.steps, summary
                per_step[name].append(summary["seconds"] / summary["steps"])
                examples = summary["examples"]
                progress.advance(task)
    ConstrainedSFTTrainer._aligned_log_probs = original  # type: ignore[method-assign]
    loads.append(load_average())

    standard, constrained = Timed(per_step["none"]), Timed(per_step["constrained"])
    ratio = constrained.median / standard.median
    pre = Timed(precompute)
    verdict = "meets target" if ratio <= TARGET else "ABOVE target"
    console.print(f"standard    {standard.show('ms/step', 1000)}")
    console.print(f"constrained {constrained.show('ms/step', 1000)}")
    console.print(f"ratio {ratio:.2f}x (target <= {TARGET}x: {verdict}); precompute {pre.show('s')}; "
                  f"load {loads[0]} -> {loads[1]}")
    if args.no_write:
        return
    update_results(
        "constrained-sft",
        ["date", "machine", "versions", "load avg before → after (1/5/15 min)", "setup",
         "standard SFT", "constrained SFT", "ratio (target ≤ 1.25×)", "one-off precompute"],
        [[today(), cpu_model(), versions(), f"{loads[0]} → {loads[1]}",
          f"{model_label(args.model)}, harmful attack ({examples} examples), LoRA r {training['lora']['r']}, batch "
          f"{training['batch_size']}, {args.steps} steps, fp32 CPU, {threads} torch thread(s); "
          f"{args.repeats} runs per side, alternating",
          standard.show("ms/step", 1000), constrained.show("ms/step", 1000), f"**{ratio:.2f}×** ({verdict})",
          f"{pre.show('s')}, not in the per-step time"]],
    )
    console.print("updated benchmarks/RESULTS.md (constrained-sft)")


if __name__ == "__main__":
    main()
