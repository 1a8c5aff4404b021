"""``report.html``: one self-contained page per run, rebuilt from stored files only.

Everything a reader needs to judge a run without the run directory: the attack × defense table
of every metric with its interval, the tables plugins declare for their papers
(``ftsafety.harness.plugins.ReportTable``), the training-data screening counts, training curves,
figures (PNG embedded as base64), scorer agreement, per-cell samples and provenance. No
JavaScript and no external resources: the file opens offline and can be attached to a paper
review. What it shows is read from the run's files by ``ftsafety.harness.report`` (a
``RunReport``); this module only draws it.

Model output is untrusted text: the template is rendered by a Jinja2 environment with
``autoescape=True`` and nothing in the context is marked safe, so a completion containing
``<script>`` shows as text. The only non-text content, figures, are base64 data URIs.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftsafety.harness.plugins import ReportTable
from ftsafety.harness.store import atomic_write_text, read_json

#: Shown first and open; every other metric is in a collapsed "diagnostic metrics" block.
HEADLINE = ("asr", "refuse_then_comply", "refusal_rate", "harm_score", "judge_refusal", "benign_correct", "over_refusal")
#: Order of the remaining metrics (then alphabetical).
DIAGNOSTIC = ("comply_harmless", "kw_refusal", "kw2x2_refused_harmful", "kw2x2_refused_harmless",
              "kw2x2_complied_harmful", "kw2x2_complied_harmless")
MISSING = "not in this run"


@dataclass
class RunReport:
    """What report.html shows, as ``ftsafety.harness.report`` reads it from a run's files."""

    run_dir: Path
    #: Cell records (``cells/*/cell.json``) of the run's current plan.
    records: list[dict[str, Any]]
    #: Leaderboard rows: every metric of every cell, seed and scorer.
    rows: list[dict[str, Any]]
    #: Leaderboard summary over seeds, evaluation benchmarks only.
    summary: list[dict[str, Any]]
    #: Leaderboard rows of the screen stage (kept and dropped counts).
    screening: list[dict[str, Any]]
    #: Scorer agreement rows.
    agreement: list[dict[str, Any]]
    #: Sample drill-down (``report.sample_drilldown``), the first ``samples_cap`` per cell and benchmark.
    samples: list[dict[str, Any]]
    samples_cap: int
    #: Training logs (``report.training_logs``).
    training: list[dict[str, Any]]
    #: Harmful completions were replaced by ``redacted_marker``.
    redacted: bool
    redacted_marker: str
    #: Durability curves (``durability.curve_rows``), ``steps_to_break`` rows and the threshold.
    durability: dict[str, Any] | None = None


def write_report_html(report: RunReport) -> Path:
    """Render report.html (and the figures as PNG files under figures/) for a run."""
    run_dir = report.run_dir
    context = build_context(report)
    figures_dir = run_dir / "figures"
    for fig in context["figures"] + context["training"]["figures"] + context["durability"]["figures"]:
        figures_dir.mkdir(exist_ok=True)
        (figures_dir / f"{fig['name']}.png").write_bytes(base64.b64decode(fig["data"]))
    path = run_dir / "report.html"
    atomic_write_text(path, render(context))
    return path


def render(context: dict[str, Any]) -> str:
    """The page from its context (autoescaped: model text is never markup)."""
    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(loader=PackageLoader("ftsafety.harness", "templates"), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    return env.get_template("report.html.j2").render(**context)


# ----------------------------------------------------------------------------- context


def _num(v: Any, digits: int = 3) -> str | None:
    if v is None or v == "":
        return None
    return f"{float(v):.{digits}f}"


def _display_labels(specs: list[dict[str, Any]]) -> list[str]:
    """Leaderboard labels of a config section, as ``ftsafety.harness.config.display_label`` makes them
    (re-done on the manifest's plain dicts: a copied run directory needs no plugin installed)."""
    out = []
    for spec in specs:
        if spec.get("label"):
            out.append(spec["label"])
            continue
        same = [s for s in specs if s.get("name") == spec.get("name") and not s.get("label")]
        params = spec.get("params") or {}
        suffix = ",".join(f"{k}={v}" for k, v in sorted(params.items()))
        out.append(f"{spec['name']}[{suffix}]" if len(same) > 1 and suffix else spec.get("name", "?"))
    return out


def _ordered(preferred: list[str], seen: set[str]) -> list[str]:
    """Labels in config order, then any others the files contain (sorted)."""
    return [x for x in preferred if x in seen] + sorted(seen - set(preferred))


class _Run:
    """Lookups over one run's summary: orders, plugin names behind labels, scorer of record."""

    def __init__(self, report: RunReport) -> None:
        manifest_path = report.run_dir / "manifest.json"
        self.manifest: dict[str, Any] = read_json(manifest_path) if manifest_path.exists() else {}
        config = self.manifest.get("config") or {}
        records = self.records = report.records
        rows, summary = report.rows, report.summary
        self.attack_name = {r["attack"]: r.get("attack_name", r["attack"]) for r in records}
        self.defense_name = {r["defense"]: r.get("defense_name", r["defense"]) for r in records}
        self.summary = summary
        self.by_key = {(r["model"], r["attack"], r["defense"], r["benchmark"], r["scorer"], r["metric"]): r
                       for r in self.summary}
        self.n_items: dict[tuple[Any, ...], int] = {}
        for r in rows:
            k = (r["model"], r["attack"], r["defense"], r["benchmark"], r["scorer"], r["metric"])
            self.n_items[k] = self.n_items.get(k, 0) + int(r["n"] or 0)
        self.models = _ordered([m.get("name") for m in config.get("models", [])], {r["model"] for r in summary} |
                               {r["model"] for r in records})
        self.attacks = _ordered(_display_labels(config.get("attacks", [])), {r["attack"] for r in summary} |
                                {r["attack"] for r in records})
        self.defenses = _ordered(_display_labels(config.get("defenses", [])), {r["defense"] for r in summary} |
                                 {r["defense"] for r in records})
        self.benchmarks = _ordered(_display_labels(config.get("benchmarks", [])), {r["benchmark"] for r in self.summary})
        self.scorers = _ordered(_display_labels(config.get("scorers", [])), {r["scorer"] for r in self.summary})

    def record_scorer(self, model: str, benchmark: str, metric: str) -> str | None:
        """The scorer of record for a metric: the first scorer in config order that gives it."""
        have = {r["scorer"] for r in self.summary if (r["model"], r["benchmark"], r["metric"]) == (model, benchmark, metric)
                and r["mean"] is not None}
        return next((s for s in self.scorers if s in have), None)

    def estimate(self, model: str, attack: str, defense: str, benchmark: str, scorer: str, metric: str
                 ) -> tuple[float, float | None, float | None] | None:
        r = self.by_key.get((model, attack, defense, benchmark, scorer, metric))
        if r is None or r["mean"] is None:
            return None
        return float(r["mean"]), r["ci_low"], r["ci_high"]

    def cell(self, model: str, attack: str, defense: str, benchmark: str, scorer: str, metric: str) -> dict[str, Any] | None:
        key = (model, attack, defense, benchmark, scorer, metric)
        r = self.by_key.get(key)
        if r is None:
            return None
        ci = None
        if r["ci_low"] is not None and r["ci_high"] is not None:
            ci = f"[{_num(r['ci_low'])}, {_num(r['ci_high'])}]"
        return {"mean": _num(r["mean"]) or "–", "ci": ci, "n": self.n_items.get(key, 0), "seeds": r["n_seeds"]}

    def cell_order(self, cell: dict[str, Any]) -> tuple[Any, ...]:
        """Cells in config order (model, attack, defense), then seed."""
        def pos(items: list[str], x: str) -> int:
            return items.index(x) if x in items else len(items)

        return (pos(self.models, cell["model"]), pos(self.attacks, cell["attack"]), pos(self.defenses, cell["defense"]),
                cell["seed"], cell["cell_id"])

    def label_for(self, labels: list[str], names: dict[str, str], wanted: str) -> str | None:
        """The first label whose plugin is ``wanted`` (or that is labelled so)."""
        return next((lab for lab in labels if names.get(lab) == wanted), None) or next(
            (lab for lab in labels if lab == wanted or lab.startswith(f"{wanted}[")), None)


def _metric_order(metric: str) -> tuple[int, str]:
    order = HEADLINE + DIAGNOSTIC
    return (order.index(metric), "") if metric in order else (len(order), metric)


def _metric_tables(run: _Run) -> list[dict[str, Any]]:
    """One group per (model, benchmark, scorer); in each, one attack × defense table per metric."""
    groups = []
    for model in run.models:
        for bench in run.benchmarks:
            for scorer in run.scorers:
                metrics = sorted({r["metric"] for r in run.summary
                                  if (r["model"], r["benchmark"], r["scorer"]) == (model, bench, scorer)}, key=_metric_order)
                if not metrics:
                    continue
                present = [r for r in run.summary if (r["model"], r["benchmark"], r["scorer"]) == (model, bench, scorer)]
                attacks = [a for a in run.attacks if any(r["attack"] == a for r in present)]
                defenses = [d for d in run.defenses if any(r["defense"] == d for r in present)]
                tables = [{
                    "metric": m, "headline": m in HEADLINE, "defenses": defenses,
                    "rows": [{"attack": a, "cells": [run.cell(model, a, d, bench, scorer, m) for d in defenses]} for a in attacks],
                } for m in metrics]
                groups.append({"model": model, "benchmark": bench, "scorer": scorer,
                               "headline": [t for t in tables if t["headline"]],
                               "diagnostic": [t for t in tables if not t["headline"]]})
    return groups


def _plugin_tables(run: _Run) -> list[dict[str, Any]]:
    """The tables plugins declare (``ReportTable``) that concern this run: each shows its metrics
    for its attacks × defenses per (model, benchmark), from the scorer of record of its first
    metric; a cell the run lacks reads ``MISSING``."""
    from ftsafety.harness.registry import report_tables

    return [t for t in (_plugin_table(run, table) for table in report_tables.values()) if t is not None]


def _plugin_table(run: _Run, table: ReportTable) -> dict[str, Any] | None:
    attack_rows = [(name, run.label_for(run.attacks, run.attack_name, name)) for name in table.attacks]
    defense_cols = [(name, run.label_for(run.defenses, run.defense_name, name)) for name in table.defenses]
    if not any(label is not None for name, label in attack_rows + defense_cols if name != "none"):
        return None
    grids = []
    for model in run.models:
        for bench in run.benchmarks:
            scorer = run.record_scorer(model, bench, table.metrics[0][0])
            if scorer is None:
                continue
            rows = []
            for want_a, attack in attack_rows:
                cells = []
                for _want_d, defense in defense_cols:
                    values = []
                    if attack is not None and defense is not None:
                        for metric, title in table.metrics:
                            c = run.cell(model, attack, defense, bench, scorer, metric)
                            if c is not None:
                                values.append({"title": title, **c})
                    cells.append(values or None)
                rows.append({"attack": attack or want_a, "cells": cells})
            grids.append({"model": model, "benchmark": bench, "scorer": scorer,
                          "defenses": [d or want for want, d in defense_cols], "rows": rows})
    present = [lab for _, lab in attack_rows + defense_cols if lab is not None]
    return {"id": table.id, "title": table.title, "note": table.note, "metric": table.metrics[0][0], "grids": grids,
            "complete": len(present) == len(attack_rows) + len(defense_cols)}


def _figure(name: str, title: str, png: bytes | None) -> dict[str, str] | None:
    if png is None:
        return None
    return {"name": name, "title": title, "data": base64.b64encode(png).decode("ascii")}


def _figures(run: _Run) -> list[dict[str, str]]:
    from ftsafety.harness.figures import BarPanel, ScatterPoint, grouped_bars, scatter

    panels = []
    harm_benches: list[tuple[str, str, str]] = []  # (model, benchmark, scorer)
    benign_benches: list[tuple[str, str, str]] = []
    for model in run.models:
        for bench in run.benchmarks:
            scorer = run.record_scorer(model, bench, "asr")
            if scorer is not None:
                harm_benches.append((model, bench, scorer))
                values = {}
                for a in run.attacks:
                    for d in run.defenses:
                        est = run.estimate(model, a, d, bench, scorer, "asr")
                        if est is not None:
                            values[(a, d)] = est
                panels.append(BarPanel(f"{model} · {bench} (ASR by {scorer})", run.attacks, run.defenses, values))
            good = run.record_scorer(model, bench, "benign_correct")
            if good is not None:
                benign_benches.append((model, bench, good))
    figs = [_figure("asr_by_attack_defense", "ASR by attack and defense (95% intervals)", grouped_bars(panels[:6]))]
    points = []
    for model in run.models:
        harm = next((h for h in harm_benches if h[0] == model), None)
        good = next((g for g in benign_benches if g[0] == model), None)
        if harm is None or good is None:
            continue
        for a in run.attacks:
            for d in run.defenses:
                y = run.estimate(model, a, d, harm[1], harm[2], "asr")
                x = run.estimate(model, a, d, good[1], good[2], "benign_correct")
                if x is not None and y is not None:
                    label = f"{a}/{d}" if len(run.models) == 1 else f"{model}:{a}/{d}"
                    points.append(ScatterPoint(label, x, y))
    if points:
        h, g = harm_benches[0], benign_benches[0]
        figs.append(_figure("asr_vs_benign_correct", "ASR against benign correctness",
                            scatter(points, f"benign_correct ({g[1]}, {g[2]})", f"ASR ({h[1]}, {h[2]})",
                                    "Safety against capability, one point per attack/defense")))
    return [f for f in figs if f is not None]


def _training(logs: list[dict[str, Any]]) -> dict[str, Any]:
    from ftsafety.harness.figures import line_curves

    table = [{
        "cell_id": t["cell_id"], "steps": len(t["steps"]),
        "first": _num(t["steps"][0][1]) if t["steps"] else None,
        "last": _num(t["steps"][-1][1]) if t["steps"] else None,
        "examples": t["summary"].get("examples"), "seconds": t["summary"].get("seconds"),
        "trainer": t["summary"].get("trainer"),
    } for t in logs]
    fig = _figure("training_loss", "Training loss per step", line_curves({t["cell_id"]: t["steps"] for t in logs}))
    return {"table": table, "figures": [fig] if fig else []}


def _durability(found: dict[str, Any] | None) -> dict[str, Any]:
    """The durability section: one figure per (model, attack), and the steps_to_break table."""
    from ftsafety.harness.durability import break_text, curve_panels
    from ftsafety.harness.figures import durability_curves

    if not found or not found["breaks"]:
        return {"breaks": [], "figures": [], "threshold": None}
    figures = []
    for i, ((model, attack), panels) in enumerate(sorted(curve_panels(found["curves"]).items())):
        title = f"{model} · {attack}: metrics along the fine-tune"
        fig = _figure(f"durability_{i}", title, durability_curves(panels, title, found["threshold"]))
        if fig:
            figures.append(fig)

    breaks = [b | dict(zip(("steps_to_break", "interval"), break_text(b), strict=True)) for b in found["breaks"]]
    return {"breaks": breaks, "figures": figures, "threshold": found["threshold"]}


def _screening(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    cells: dict[str, dict[str, Any]] = {}
    for r in rows:
        entry = cells.setdefault(r["cell_id"], {k: r[k] for k in ("cell_id", "model", "attack", "defense", "seed")})
        entry[r["metric"].removeprefix("screen_")] = int(r["value"])
    for entry in cells.values():
        total = entry.get("kept", 0) + entry.get("dropped", 0)
        entry["dropped_pct"] = f"{100 * entry.get('dropped', 0) / total:.1f}%" if total else "–"
    return list(cells.values())


def _command_figures(run_dir: Path, folder: str) -> list[dict[str, str]]:
    """PNG files another command left under ``RUN_DIR/<folder>/`` (``ftsafety kl --out
    RUN_DIR/kl/NAME``, ``ftsafety probe --out RUN_DIR/probe/NAME``), embedded as they are."""
    root = run_dir / folder
    if not root.is_dir():
        return []
    return [{"name": str(p.relative_to(root).with_suffix("")), "title": str(p.relative_to(root)),
             "data": base64.b64encode(p.read_bytes()).decode("ascii")}
            for p in sorted(root.rglob("*.png"))]


def _json(value: Any) -> str:
    import json

    return json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False)


def _provenance(manifest: dict[str, Any]) -> dict[str, Any]:
    config = manifest.get("config") or {}
    host = manifest.get("host") or {}
    facts = [
        ("ftsafety", manifest.get("ftsafety_version")),
        ("git revision", manifest.get("git_revision")),
        ("status", manifest.get("status")),
        ("started", manifest.get("started_at")),
        ("finished", manifest.get("finished_at")),
        ("host", ", ".join(f"{k} {v}" for k, v in host.items() if k != "user")),
        ("store format", manifest.get("store_format")),
        ("cache", manifest.get("cache_dir")),
    ]
    return {
        "facts": [(k, "" if v is None else str(v)) for k, v in facts if v not in (None, "")],
        "models": [{"name": m.get("name"), "path": m.get("path"), "revision": m.get("revision")}
                   for m in config.get("models", [])],
        "datasets": [{"label": k, **{f: _json(v) if isinstance(v, dict | list) else v for f, v in d.items()}}
                     for k, d in (manifest.get("datasets") or {}).items()],
        "judges": [{"label": k, "detail": _json(v)} for k, v in (manifest.get("judges") or {}).items()],
        "packages": sorted((manifest.get("packages") or {}).items()),
        "timings": sorted((manifest.get("timings") or {}).items()),
        "engines": _json(manifest.get("engines") or {}),
        "config": _json(config),
    }


def build_context(report: RunReport) -> dict[str, Any]:
    """Everything the template shows, as plain strings, numbers, lists and dicts."""
    run = _Run(report)
    return {
        "name": report.run_dir.name,
        "generated": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "redacted": report.redacted,
        "redacted_marker": report.redacted_marker,
        "missing": MISSING,
        "n_cells": len(run.records),
        "attacks": run.attacks,
        "defenses": run.defenses,
        "groups": _metric_tables(run),
        "tables": _plugin_tables(run),
        "figures": _figures(run),
        "screening": _screening(report.screening),
        "training": _training(report.training),
        "durability": _durability(report.durability),
        "kl": _command_figures(report.run_dir, "kl"),
        "probe": _command_figures(report.run_dir, "probe"),
        "agreement": [a | {"agreement": _num(a["agreement"]), "kappa": _num(a["kappa"])} for a in report.agreement],
        "samples": sorted(report.samples, key=run.cell_order),
        "samples_cap": report.samples_cap,
        "provenance": _provenance(run.manifest),
    }
