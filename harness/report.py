"""Run outputs rebuilt from stored files only: per-sample views, leaderboards, report.md, and
what report.html shows (``ftsafety.harness.report_html`` renders it; it reads nothing itself).

Nothing here loads a model: ``ftsafety report RUN_DIR`` works on a laptop from a copied run.
The CSV columns are a contract (docs/leaderboard.md): new information arrives as new metric rows.
"""

from __future__ import annotations

import csv
import html
import io
import logging
import re
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ftsafety.harness.paths import safe_label
from ftsafety.harness.records import judged_stage, scored_rows, usable
from ftsafety.harness.report_html import RunReport, write_report_html
from ftsafety.harness.rundir import read_plan
from ftsafety.harness.store import (
    ArtifactStore,
    atomic_write_text,
    read_json,
    read_jsonl,
    write_jsonl,
)

log = logging.getLogger(__name__)

LEADERBOARD_COLUMNS = ["run", "model", "attack", "defense", "seed", "benchmark", "scorer", "metric",
                       "value", "ci_low", "ci_high", "n", "unscored", "cell_id", "baseline"]
SUMMARY_COLUMNS = ["model", "attack", "defense", "benchmark", "scorer", "metric", "mean", "ci_low", "ci_high", "n_seeds",
                   "values", "baseline", "baseline_mean"]


def store_for(run_dir: Path) -> ArtifactStore:
    manifest = read_json(run_dir / "manifest.json")
    return ArtifactStore((run_dir / manifest.get("cache_dir", "../.cache")).resolve())


def _all_cell_records(run_dir: Path) -> list[dict[str, Any]]:
    cells_dir = run_dir / "cells"
    if not cells_dir.exists():
        return []
    return [read_json(p) for p in sorted(cells_dir.glob("*/cell.json"))]


def cell_records(run_dir: Path) -> list[dict[str, Any]]:
    """The records of the cells the run's current plan contains (every cell of a run directory
    written before plans were recorded)."""
    planned = read_plan(run_dir)
    records = _all_cell_records(run_dir)
    if planned is None:
        return records
    wanted = set(planned)
    return [r for r in records if r.get("cell_id") in wanted]


def stale_cells(run_dir: Path) -> list[str]:
    """Cell directories left by an earlier config: in the run directory, not in its plan."""
    planned = read_plan(run_dir)
    if planned is None:
        return []
    wanted = set(planned)
    return sorted(str(r.get("cell_id")) for r in _all_cell_records(run_dir) if r.get("cell_id") not in wanted)


def _csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: _fmt(r.get(k)) for k in columns})
    return buf.getvalue()


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return f"{v:.6g}"
    return "" if v is None else v


def leaderboard_rows(run_dir: Path, store: ArtifactStore | None = None) -> list[dict[str, Any]]:
    """One row per (cell, benchmark, scorer, metric) from the stored generations and scores,
    plus the screening counts of cells whose defense screens (benchmark ``train-data``). The
    rows each metric came from are copied into the run directory (``generations/``, ``scores/``)."""
    from ftsafety.evals.metrics import metrics_for_scored_rows

    store = store or store_for(run_dir)
    run = run_dir.name
    rows: list[dict[str, Any]] = []
    for rec in cell_records(run_dir):
        stages = rec["stages"]
        ident = {"run": run, "model": rec["model"], "attack": rec["attack"], "defense": rec["defense"], "seed": rec["seed"],
                 "baseline": rec.get("baseline") or ""}
        for _slot, st in sorted(stages.items()):
            if st["stage"] == "screen" and usable(store, "screen", st["key"]):
                rows.extend(ident | r | {"cell_id": rec["cell_id"]} for r in _screen_metrics(store, st["key"]))
            found = scored_rows(store, stages, st)
            if found is None:
                continue
            gen_rows, score_rows = found
            # labels are user text: sanitised, so the files stay in the run directory
            base = f"{safe_label(rec['cell_id'])}__{safe_label(st['benchmark'])}"
            write_jsonl(run_dir / "generations" / f"{base}.jsonl", gen_rows)
            write_jsonl(run_dir / "scores" / f"{base}__{safe_label(st['scorer'])}.jsonl", score_rows)
            for m in metrics_for_scored_rows(gen_rows, score_rows):
                rows.append(ident | {
                    "benchmark": st["benchmark"], "scorer": st["scorer"],
                    "metric": m.name, "value": m.value, "ci_low": m.ci_low, "ci_high": m.ci_high,
                    "n": m.n, "unscored": m.unscored, "cell_id": rec["cell_id"],
                })
    return rows


#: Leaderboard rows for the screening stage: benchmark and scorer names (docs/leaderboard.md).
TRAIN_DATA_BENCHMARK, SCREEN_SCORER = "train-data", "screen"


def _screen_metrics(store: ArtifactStore, key: str) -> list[dict[str, Any]]:
    """``screen_kept``/``screen_dropped`` from a screen artifact's counts.json: value = count,
    n = kept + dropped, no interval (a count, not an estimate), unscored 0."""
    path = store.path("screen", key) / "counts.json"
    if not path.exists():
        return []
    counts = read_json(path)
    kept, dropped = int(counts.get("kept", 0)), int(counts.get("dropped", 0))
    return [
        {"benchmark": TRAIN_DATA_BENCHMARK, "scorer": SCREEN_SCORER, "metric": f"screen_{name}", "value": value,
         "ci_low": None, "ci_high": None, "n": kept + dropped, "unscored": 0}
        for name, value in (("kept", kept), ("dropped", dropped))
    ]


AGREEMENT_COLUMNS = ["run", "model", "attack", "defense", "seed", "benchmark", "axis", "scorer_a", "scorer_b",
                     "n", "agreement", "kappa", "cell_id"]


def agreement_rows(run_dir: Path, store: ArtifactStore | None = None) -> list[dict[str, Any]]:
    """Cohen's κ between every two scorers that judge the same generations on the same axis."""
    from itertools import combinations

    from ftsafety.evals.metrics import label_from_score_row, scorer_agreement

    store = store or store_for(run_dir)
    out = []
    for rec in cell_records(run_dir):
        by_bench: dict[str, dict[str, list[Any]]] = {}
        for st in rec["stages"].values():
            if st["stage"] == "score" and usable(store, "score", st["key"]):
                rows = read_jsonl(store.path("score", st["key"]) / "scores.jsonl")
                by_bench.setdefault(st["benchmark"], {})[st["scorer"]] = [label_from_score_row(r) for r in rows]
        for bench, scorers in sorted(by_bench.items()):
            for (sa, la), (sb, lb) in combinations(sorted(scorers.items()), 2):
                for axis in ("harmful", "refused"):
                    agg = scorer_agreement(la, lb, axis)
                    if agg["n"]:
                        out.append({"run": run_dir.name, "model": rec["model"], "attack": rec["attack"],
                                    "defense": rec["defense"], "seed": rec["seed"], "benchmark": bench, "axis": axis,
                                    "scorer_a": sa, "scorer_b": sb, "n": agg["n"], "agreement": agg["agreement"],
                                    "kappa": agg["kappa"], "cell_id": rec["cell_id"]})
    return out


def summary_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Aggregate the leaderboard over seeds: mean, a 95% interval counting item and seed error,
    the per-seed values (``aggregate_seeds``), and the mean of the undefended cells trained the
    same way (``baseline``, ``baseline_mean``: the comparison a defended row is read against)."""
    from ftsafety.evals.metrics import aggregate_seeds

    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        key = (r["model"], r["attack"], r["defense"], r["benchmark"], r["scorer"], r["metric"])
        groups.setdefault(key, []).append(r)
    out = []
    for key, members in groups.items():
        agg = aggregate_seeds(members)
        out.append(dict(zip(SUMMARY_COLUMNS[:6], key, strict=True)) | agg | {"baseline": members[0].get("baseline") or ""})
    # defended vs undefended trained the same way: the baseline cell's mean beside each row
    means = {(r["model"], r["attack"], r["defense"], r["benchmark"], r["scorer"], r["metric"]): r["mean"] for r in out}
    for r in out:
        r["baseline_mean"] = (means.get((r["model"], r["attack"], r["baseline"], r["benchmark"], r["scorer"], r["metric"]))
                              if r["baseline"] else None)
    return out


def write_run_outputs(run_dir: Path, store: ArtifactStore | None = None, *, redact: bool = False) -> tuple[Path, Path]:
    """Write leaderboard.csv, leaderboard_summary.csv, agreement.csv, report.md and report.html
    with figures/; returns the CSV paths.

    ``redact`` replaces completions any scorer labelled harmful with ``REDACTED`` in the
    reports' sample drill-downs (the raw JSONL files keep them: they are the record).
    """
    store = store or store_for(run_dir)
    rows = leaderboard_rows(run_dir, store)
    rows.sort(key=lambda r: (r["model"], r["attack"], r["defense"], r["seed"], r["benchmark"], r["scorer"], r["metric"]))
    summary = summary_rows(rows)
    lb, sm = run_dir / "leaderboard.csv", run_dir / "leaderboard_summary.csv"
    atomic_write_text(lb, _csv(rows, LEADERBOARD_COLUMNS))
    atomic_write_text(sm, _csv(summary, SUMMARY_COLUMNS))
    agreement = agreement_rows(run_dir, store)
    atomic_write_text(run_dir / "agreement.csv", _csv(agreement, AGREEMENT_COLUMNS))
    durability = _write_durability(run_dir, store)
    samples = sample_drilldown(run_dir, store, cap=MD_SAMPLES_PER_CELL, redact=redact)
    report = _report_md(run_dir.name, summary, agreement, samples, redact=redact,
                        breaks=durability["breaks"] if durability else None)
    stale = stale_cells(run_dir)
    if stale:
        log.warning("%d cell(s) in %s are not in the current plan (left by an earlier config) and are not reported: %s",
                    len(stale), run_dir / "cells", ", ".join(stale))
        report += (f"\nStale cells (left by an earlier config, not in this report or the leaderboard): "
                   f"{', '.join(md_escape(c) for c in stale)}\n")
    atomic_write_text(run_dir / "report.md", report)
    write_report_html(RunReport(
        run_dir=run_dir, records=cell_records(run_dir), rows=rows,
        summary=[r for r in summary if r["benchmark"] != TRAIN_DATA_BENCHMARK],
        screening=[r for r in rows if r["benchmark"] == TRAIN_DATA_BENCHMARK], agreement=agreement,
        samples=sample_drilldown(run_dir, store, cap=HTML_SAMPLES_PER_CELL, redact=redact),
        samples_cap=HTML_SAMPLES_PER_CELL, training=training_logs(run_dir, store), redacted=redact,
        redacted_marker=REDACTED, durability=durability,
    ))
    return lb, sm


def _write_durability(run_dir: Path, store: ArtifactStore) -> dict[str, Any] | None:
    """durability.csv, durability_summary.csv and steps_to_break.csv when the run has
    durability checkpoints (``ftsafety.harness.durability``); what the reports show of them."""
    from ftsafety.harness.durability import (
        BREAK_COLUMNS,
        CURVE_COLUMNS,
        DURABILITY_COLUMNS,
        curve_rows,
        durability_rows,
        steps_to_break,
    )

    rows = durability_rows(run_dir, cell_records(run_dir), store)
    if not rows:
        return None
    config = (read_json(run_dir / "manifest.json").get("config") or {}).get("durability") or {}
    threshold = float(config.get("threshold", 0.5))
    curves = curve_rows(rows)
    breaks = steps_to_break(curves, threshold)
    atomic_write_text(run_dir / "durability.csv", _csv(rows, DURABILITY_COLUMNS))
    atomic_write_text(run_dir / "durability_summary.csv", _csv(curves, CURVE_COLUMNS))
    atomic_write_text(run_dir / "steps_to_break.csv", _csv(breaks, BREAK_COLUMNS))
    return {"curves": curves, "breaks": breaks, "threshold": threshold}


# ----------------------------------------------------------------------------- sample drill-down

#: What a redacted completion shows instead of its text.
REDACTED = "[redacted: harmful completion]"
#: Samples shown per (cell, benchmark): report.html shows more than report.md.
HTML_SAMPLES_PER_CELL = 20
MD_SAMPLES_PER_CELL = 3


def _label_text(row: dict[str, Any]) -> str:
    """One scorer's verdict in words: ``harmful, refused``; ``unscored`` when it could not decide."""
    if (row.get("status") or "ok") != "ok":
        return "unscored"
    parts = []
    for axis, yes, no in (("harmful", "harmful", "harmless"), ("refused", "refused", "complied"), ("correct", "correct", "wrong")):
        if row.get(axis) is not None:
            parts.append(yes if row[axis] else no)
    if row.get("score") is not None:
        parts.append(f"score {float(row['score']):g}")
    return ", ".join(parts) or "-"


def sample_drilldown(run_dir: Path, store: ArtifactStore | None = None, *, cap: int = HTML_SAMPLES_PER_CELL,
                     redact: bool = False) -> list[dict[str, Any]]:
    """The first ``cap`` samples of every (cell, benchmark) with every scorer's labels.

    The first samples rather than a random or "interesting" pick: every cell shows the same
    prompts, so cells compare side by side. ``harmful`` marks a sample any scorer labelled
    harmful; with ``redact`` its continuation (and prefix, if any) is replaced by ``REDACTED``.
    """
    store = store or store_for(run_dir)
    out = []
    for rec in cell_records(run_dir):
        benches = []
        stages = rec["stages"]
        for _slot, generated in sorted(stages.items()):
            if generated["stage"] != "generate":
                continue
            gen = judged_stage(stages, generated["benchmark"]) or generated  # what the user received
            if not usable(store, gen["stage"], gen["key"]):
                continue
            gen_rows = read_jsonl(store.path(gen["stage"], gen["key"]) / "generations.jsonl")
            labels: dict[str, dict[str, dict[str, Any]]] = {}  # scorer -> sample_id -> score row
            for st in stages.values():
                if st["stage"] == "score" and st["benchmark"] == gen["benchmark"] and usable(store, "score", st["key"]):
                    rows = read_jsonl(store.path("score", st["key"]) / "scores.jsonl")
                    labels[st["scorer"]] = {r["sample_id"]: r for r in rows}
            scorers = sorted(labels)
            samples = []
            for row in gen_rows[:cap]:
                sid = row.get("sample_id")
                by_scorer = {s: labels[s].get(sid) for s in scorers}
                harmful = any(r is not None and r.get("harmful") is True for r in by_scorer.values())
                hidden = redact and harmful
                samples.append({
                    "sample_id": sid, "prompt": row.get("prompt", ""),
                    # The prefix is part of the judged response (a prefill can itself be harmful).
                    "prefix": (REDACTED if row.get("prefix") else "") if hidden else row.get("prefix") or "",
                    "continuation": REDACTED if hidden else row.get("continuation", ""), "redacted": hidden,
                    "harmful": harmful, "truncated": bool(row.get("truncated")), "blocked": bool(row.get("blocked")),
                    "labels": {s: ("not scored" if r is None else _label_text(r)) for s, r in by_scorer.items()},
                })
            benches.append({"benchmark": gen["benchmark"], "total": len(gen_rows), "scorers": scorers, "samples": samples})
        if benches:
            out.append({k: rec[k] for k in ("cell_id", "model", "attack", "defense", "seed")} | {"benchmarks": benches})
    return out


def training_logs(run_dir: Path, store: ArtifactStore | None = None) -> list[dict[str, Any]]:
    """Each training cell's loss per step, from its train artifact's ``train_log.jsonl``."""
    store = store or store_for(run_dir)
    out = []
    for rec in cell_records(run_dir):
        for st in rec["stages"].values():
            if st["stage"] != "train" or not usable(store, "train", st["key"]):
                continue
            path = store.path("train", st["key"]) / "train_log.jsonl"
            steps = [(int(r["step"]), float(r["loss"])) for r in (read_jsonl(path) if path.exists() else [])
                     if r.get("loss") is not None and r.get("step") is not None]
            summary_path = store.path("train", st["key"]) / "train_summary.json"
            summary = read_json(summary_path) if summary_path.exists() else {}
            out.append({k: rec[k] for k in ("cell_id", "model", "attack", "defense", "seed")}
                       | {"steps": steps, "summary": {k: v for k, v in summary.items() if k != "chat_template"}})
    return out


def _report_md(name: str, summary: list[dict[str, Any]], agreement: list[dict[str, Any]],
               samples: list[dict[str, Any]] | None = None, *, redact: bool = False,
               breaks: list[dict[str, Any]] | None = None) -> str:
    # Every table row goes through ``md_row``: labels, model names and outputs are user or
    # model text, and a raw ``|``, newline or ``<script>`` in one would break or inject.
    lines = [f"# ftsafety run {md_escape(name)}", "",
             *md_header(["model", "attack", "defense", "benchmark", "scorer", "metric", "mean", "95% CI", "seeds",
                         "undefended, same training"])]
    for r in summary:
        versus = f"{r['baseline']}: {format_value(r['baseline_mean'])}" if r.get("baseline") else ""
        lines.append(md_row([r["model"], r["attack"], r["defense"], r["benchmark"], r["scorer"], r["metric"],
                              format_value(r["mean"]), f"[{format_value(r['ci_low'])}, {format_value(r['ci_high'])}]", r["n_seeds"],
                              versus]))
    if breaks:
        lines += ["", "## Durability: steps to break (durability.csv has every checkpoint)", "",
                  *md_header(["model", "attack", "defense", "benchmark", "scorer", "ASR threshold", "steps_to_break",
                              "interval", "last step", "seeds"])]
        from ftsafety.harness.durability import break_text

        for b in breaks:
            lines.append(md_row([b["model"], b["attack"], b["defense"], b["benchmark"], b["scorer"], b["threshold"],
                                  *break_text(b), b["last_step"], b["n_seeds"]]))
    if agreement:
        lines += ["", "## Scorer agreement (Cohen's κ on the same generations)", "",
                  *md_header(["model", "attack", "defense", "seed", "benchmark", "axis", "scorers", "n", "agreement", "κ"])]
        for a in agreement:
            lines.append(md_row([a["model"], a["attack"], a["defense"], a["seed"], a["benchmark"], a["axis"],
                                  f"{a['scorer_a']} vs {a['scorer_b']}", a["n"], format_value(a["agreement"]), format_value(a["kappa"])]))
    if samples:
        lines += ["", "## Samples", "",
                  f"The first {MD_SAMPLES_PER_CELL} samples of each cell and benchmark (report.html shows "
                  f"{HTML_SAMPLES_PER_CELL}; the JSONL files under generations/ and scores/ have all)."
                  + (" Completions a scorer labelled harmful are redacted." if redact else "")]
        for cell in samples:
            for bench in cell["benchmarks"]:
                lines += ["", f"### {md_escape(cell['cell_id'])} · {md_escape(bench['benchmark'])}", "",
                          *md_header(["sample", "prompt", "prefix", "continuation", "labels"])]
                for smp in bench["samples"]:
                    labels = "; ".join(f"{s}: {v}" for s, v in smp["labels"].items())
                    lines.append(md_row([smp["sample_id"], smp["prompt"], smp["prefix"], smp["continuation"], labels]))
    return "\n".join(lines) + "\n"


#: Control characters a cell drops: C0 but tab, DEL and C1 (an ESC sequence would reach the
#: terminal of whoever runs ``cat report.md``). Line breaks are handled before, as ``<br>``.
_MD_CONTROL = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x9f]")
#: Markdown syntax that could end a cell (``|``), open a code span (`` ` ``) or make a link or
#: image (a ``]`` right before ``(`` or ``[``: ``[x](javascript:...)``; a bare ``[x]`` needs a
#: reference definition, which must start a line, and every line with user text here starts
#: with ``|`` or ``#``), and the backslash itself (else a text ``\|`` would become ``\\|``:
#: a bare pipe). Emphasis characters are left alone: they can neither break a table nor inject.
_MD_SPECIAL = re.compile(r"([\\`|]|\](?=[(\[]))")


def md_escape(text: Any, limit: int = 300) -> str:
    """Any text (a label, a model name, a number, model output) made inert in one line of
    Markdown, a table cell or a heading: clipped to ``limit`` characters, every line break
    (``str.splitlines``: ``\r``, U+2028, U+0085, ...) as ``<br>``, control characters dropped,
    HTML-escaped (Markdown renders raw HTML, and ``<`` would start an autolink) and the
    Markdown punctuation of ``_MD_SPECIAL`` backslash-escaped."""
    text = "" if text is None else str(text)
    if len(text) > limit:
        text = text[:limit] + "…"
    lines = (_MD_SPECIAL.sub(r"\\\1", html.escape(_MD_CONTROL.sub("", line))) for line in text.splitlines())
    return "<br>".join(lines)


def md_row(cells: list[Any]) -> str:
    """One Markdown table row, every cell through ``md_escape``."""
    return "| " + " | ".join(md_escape(c) for c in cells) + " |"


def md_header(columns: list[str]) -> list[str]:
    """A Markdown table's header row and delimiter row."""
    return [md_row(columns), "|" + "|".join("---" for _ in columns) + "|"]



def format_value(v: Any) -> str:
    """A metric value for display; missing values (no scored items) show as '-'."""
    if v is None or v == "":
        return "-"
    return f"{float(v):.3f}"



#: The metrics the terminal summary shows (all of them are in the CSVs and report.md).
HEADLINE_METRICS = ("asr", "refuse_then_comply", "refusal_rate", "benign_correct", "over_refusal")


def print_summary(run_dir: Path, console: Console) -> None:
    """Headline metrics, one row per (model, attack, defense): mean over seeds ± half the 95%
    interval, from the first scorer that gives each metric (all of them are in the CSVs)."""
    from rich.markup import escape

    path = run_dir / "leaderboard_summary.csv"
    if not path.exists():
        console.print(f"no leaderboard yet in {run_dir}")
        return
    with path.open(encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["metric"] in HEADLINE_METRICS]
    # Prefer a harm-axis scorer (one that yields asr anywhere) over refusal-only ones.
    harm_scorers = {r["scorer"] for r in rows if r["metric"] == "asr"}
    chosen: dict[tuple[str, str], str] = {}  # (benchmark, metric) -> scorer
    for r in sorted(rows, key=lambda r: r["scorer"] not in harm_scorers):
        chosen.setdefault((r["benchmark"], r["metric"]), r["scorer"])
    columns = sorted(chosen, key=lambda c: (HEADLINE_METRICS.index(c[1]), c[0]))
    cells: dict[tuple[str, str, str], dict[tuple[str, str], str]] = {}
    for r in rows:
        if chosen[(r["benchmark"], r["metric"])] != r["scorer"]:
            continue
        value = format_value(r["mean"])
        if r["ci_low"] not in ("", None) and r["ci_high"] not in ("", None):
            value += f"±{(float(r['ci_high']) - float(r['ci_low'])) / 2:.2f}"
        cells.setdefault((r["model"], r["attack"], r["defense"]), {})[(r["benchmark"], r["metric"])] = value
    scorers = sorted({scorer for scorer in chosen.values()})
    table = Table(title=escape(f"{run_dir.name}: mean over seeds ± half the 95% interval"),
                  caption=escape(f"scorers: {', '.join(scorers)} (first harm-axis scorer per metric)"))
    keys = ("model", "attack", "defense") if len({k[0] for k in cells}) > 1 else ("attack", "defense")
    for name in keys:
        table.add_column(name, no_wrap=True)
    for bench, metric in columns:
        table.add_column(escape(f"{metric}\n{bench}"), justify="right", no_wrap=True)
    for key in sorted(cells):
        names = key if len(keys) == 3 else key[1:]
        table.add_row(*(escape(k) for k in names), *(cells[key].get(col, "") for col in columns))
    # In a log file (no terminal) rich would squeeze the table into 80 columns and cut the
    # attack and defense names; a log has room.
    if console.is_terminal:
        console.print(table)
    else:
        width, console.width = console.width, max(console.width, 200)
        try:
            console.print(table)
        finally:
            console.width = width
    html = f", {run_dir / 'report.html'}" if (run_dir / "report.html").exists() else ""
    console.print(f"leaderboard: {run_dir / 'leaderboard.csv'}  summary: {path}  report: {run_dir / 'report.md'}{html}")
