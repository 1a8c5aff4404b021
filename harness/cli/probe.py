"""``ftsafety probe``: a per-layer linear probe of the request's harmful concept (J23's wrapper)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from ftsafety.harness.errors import UserError


def parse_named(spec: str) -> tuple[str, str]:
    """``NAME=MODEL[:ADAPTER]`` -> (name, model spec)."""
    name, sep, model = spec.partition("=")
    if not sep or not name.strip() or not model.strip() or "://" in name:
        raise UserError(f"--model '{spec}': expected NAME=MODEL[:ADAPTER], e.g. aligned=organism://default")
    return name.strip(), model.strip()


def probe(
    base: str = typer.Option(..., "--base", help="MODEL\\[:ADAPTER] the probe is trained on (e.g. organism://default/base)."),
    model: list[str] | None = typer.Option(
        None, "--model", help="NAME=MODEL\\[:ADAPTER] the base model's probe is applied to (repeatable); ADAPTER a PEFT "
        "directory or a run cell RUN_DIR/cells/CELL_ID."
    ),
    benchmark: str = typer.Option(..., "--benchmark", help="Prompt set with a label per prompt (e.g. organism-harmful)."),
    out: Path = typer.Option(Path("probe"), "--out", help="Directory for probe.json and probe.png."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="First N prompts only."),
    param: list[str] | None = typer.Option(None, "--param", help="Benchmark param KEY=VALUE (repeatable)."),
    label_field: str | None = typer.Option(
        None, "--label-field", help="What the probe predicts: 'category' or a meta key (default: concept when every "
        "prompt has one, else category)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the stratified train/held-out split."),
    train_fraction: float = typer.Option(0.5, "--train-fraction", min=0.05, max=0.95, help="Share of each label's prompts that train the probe."),
    c: float = typer.Option(1.0, "--c", min=1e-6, help="Inverse L2 strength of the probe (scikit-learn's C)."),
    max_new_tokens: int = typer.Option(32, "--max-new-tokens", min=1, help="Greedy answer length for the refusal decision."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Prompts per forward pass."),
) -> None:
    """Linear probe per layer of the request's label (harmful concept), fitted on --base's hidden
    states at the last prompt token and applied to every --model; plus its accuracy on the prompts
    each model refuses (J23: does the capability survive under the refusal wrapper?).

    Writes OUT/probe.json (accuracy, Wilson 95% interval and n per model and layer, refused subset,
    chance) and OUT/probe.png.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ftsafety.harness.cli.common import load_benchmark
    from ftsafety.harness.kl import parse_side
    from ftsafety.harness.probe import ProbeSettings, item_labels, run_probe, write_outputs

    if out.exists() and not out.is_dir():
        raise UserError(f"--out '{out}' is a file; give a directory")
    named = [parse_named(m) for m in model or []]
    names = ["base", *(n for n, _ in named)]
    if len(set(names)) != len(names):
        raise UserError(f"--model names must be unique and not 'base' (got {', '.join(names[1:])})")
    bench, items = load_benchmark(benchmark, param, limit)
    field, labels = item_labels(items, benchmark, label_field)
    base_side = parse_side(base, what="--base")
    sides = [(n, parse_side(spec, what=f"--model {n}")) for n, spec in named]
    settings = ProbeSettings(benchmark=benchmark, label_field=field, seed=seed, train_fraction=train_fraction, c=c,
                             max_new_tokens=max_new_tokens, batch_size=batch_size, system_prompt=bench.system_prompt())

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    console = Console(stderr=True)
    console.print(f"{len(items)} prompt(s) from {benchmark}; probing '{field}' ({len(set(labels))} labels) "
                  f"on {len(sides) + 1} model(s)")
    with Progress(TextColumn("[bold]probe"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("probe", total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        result = run_probe(base_side, sides, items, labels, settings, progress=advance)
    json_path, png_path = write_outputs(result, out)

    chance = result.chance()
    table = Table(title=f"held-out accuracy of the base model's probe\n({len(result.split.test)} prompts, "
                        f"{len(result.split.classes)} labels, chance {chance['uniform']:.3f})")
    table.add_column("layer", justify="right")
    for m in result.models:
        table.add_column(m.name, justify="right")
        if m.name != "base":
            table.add_column(f"{m.name}\nrefused (n)", justify="right", no_wrap=True)
            table.add_column(f"{m.name}\nown probe", justify="right")
    for layer in range(result.n_layers):
        row = [str(layer)]
        for m in result.models:
            e = m.layers[layer]
            row.append(f"{e['accuracy']:.2f}")
            if m.name != "base":
                r = e["refused"]
                row.append(f"{r['accuracy']:.2f} ({r['n']})" if r["accuracy"] is not None else "- (0)")
                row.append(f"{e['own_probe']['accuracy']:.2f}" if "own_probe" in e else "")
        table.add_row(*row)
    Console().print(table)
    rates = ", ".join(f"{m.name} {m.refusal_rate:.2f}" for m in result.models)
    console.print(f"refusal rate ({result.refusal_rule}): {rates}")
    if result.split.dropped:
        console.print(f"dropped {len(result.split.dropped)} label(s) with a single prompt: {', '.join(result.split.dropped)}")
    console.print(f"wrote {json_path} and {png_path}")


def register(app: typer.Typer) -> None:
    app.command("probe")(probe)
