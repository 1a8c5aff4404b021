"""``ftsafety baseline RUN_DIR --out FILE``: the file ``ftsafety check`` compares against, with
per-row tolerances measured from the run's seeds (and other runs of the same grid)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from ftsafety.harness.gate import DEFAULT_FLOOR, DEFAULT_K

#: Rows the summary names as the noisiest: enough to see where a grid sits on a knife edge.
NOISIEST_SHOWN = 3


def baseline(
    run_dir: Path = typer.Argument(..., help="A run directory (runs/<name>) with leaderboard.csv and leaderboard_summary.csv; best with 3+ seeds."),
    out: Path = typer.Option(..., "--out", help="The baseline CSV to write (and OUT.meta.json next to it)."),
    k: float = typer.Option(DEFAULT_K, "--k", help="Tolerance = max(floor, k × sd) per row."),
    floor: float = typer.Option(DEFAULT_FLOOR, "--floor", help="Smallest tolerance of any row (absolute)."),
    extra_runs: list[Path] | None = typer.Option(
        None, "--extra-runs",
        help="Another run of the same grid (other world seeds, another machine) whose seeds widen the spread; repeatable.",
    ),
) -> None:
    """Write a regression-gate baseline from a run: its means, and per row a tolerance measured
    from the spread over seeds (statistic: docs/leaderboard.md)."""
    from ftsafety.harness.gate import build_baseline, write_baseline

    build = build_baseline(run_dir, extra_runs=extra_runs or [], k=k, floor=floor)
    meta = write_baseline(build, out)
    measured = [r for r in build.rows if r.get("tolerance") not in (None, "")]
    sources = " + ".join(f"{len(r['seeds'])} seed(s) of {r['run']}" for r in build.runs)
    console = Console()

    def say(text: str) -> None:
        console.print(text, markup=False, highlight=False, soft_wrap=True)

    say(f"wrote {out}: {len(build.rows)} rows, {len(measured)} with a measured tolerance "
        f"(k={k:g}, floor={floor:g}) from {sources}; provenance in {meta}")
    if sum(len(r["seeds"]) for r in build.runs) < 2:
        say("note: one seed only, so each tolerance comes from that seed's own interval; a baseline from 3+ seeds "
            "(or --extra-runs) also measures how seeds and machines disagree")
    if measured:
        say("widest tolerances (the noisiest rows):")
    for r in sorted(measured, key=lambda r: -r["tolerance"])[:NOISIEST_SHOWN]:
        key = "/".join(r[c] for c in ("model", "attack", "defense", "benchmark", "scorer", "metric"))
        say(f"  tolerance {r['tolerance']:.3f} (sd {r['sd']:.3f} over {r['n_spread']} seeds): {key}")


def register(app: typer.Typer) -> None:
    app.command("baseline")(baseline)
