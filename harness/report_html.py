"""``report.html``: one self-contained page per run, rebuilt from stored files only.

Everything a reader needs to judge a run without the run directory: the attack × defense table
of every metric with its interval, NOICE's 2×2 (attack none/noice × defense none/prefill), the
training-data screening counts, training curves, figures (PNG embedded as base64), scorer
agreement, per-cell samples and provenance. No JavaScript and no external resources: the file
opens offline and can be attached to a paper review.

Model output is untrusted text: the template is rendered by a Jinja2 environment with
``autoescape=True`` and nothing in the context is marked safe, so a completion containing
``<script>`` shows as text. The only non-text content, figures, are base64 data URIs.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

from harness.report import (
    HTML_SAMPLES_PER_CELL,
    REDACTED,
    TRAIN_DATA_BENCHMARK,
    cell_records,
    sample_drilldown,
    training_logs,
)
from harness.store import ArtifactStore, atomic_write_text, read_json

#: Shown first and open; every other metric is in a collapsed "diagnostic metrics" block.
HEADLINE = ("asr", "refuse_then_comply", "refusal_rate", "harm_score", "judge_refusal", "benign_correct", "over_refusal")
#: Order of the remaining metrics (then alphabetical).
DIAGNOSTIC = ("comply_harmless", "kw_refusal", "kw2x2_refused_harmful", "kw2x2_refused_harmless",
              "kw2x2_complied_harmful", "kw2x2_complied_harmless")
#: NOICE's 2×2: metrics shown in each cell when present.
NOICE_METRICS = (("asr", "ASR"), ("refusal_rate", "refusal"), ("refuse_then_comply", "refuse-then-comply"))
MISSING = "not in this run"


def write_report_html(
    run_dir: Path,
    store: ArtifactStore,
    *,
    rows: list[dict[str, Any]],
    summary: list[dict[str, Any]],
    agreement: list[dict[str, Any]],
    redact: bool = False,
) -> Path:
    """Render report.html (and the figures as PNG files under figures/) for a run."""
    context = build_context(run_dir, store, rows=rows, summary=summary, agreement=agreement, redact=redact)
    figures_dir = run_dir / "figures"
    for fig in context["figures"] + context["training"]["figures"]:
        figures_dir.mkdir(exist_ok=True)
        (figures_dir / f"{fig['name']}.png").write_bytes(base64.b64decode(fig["data"]))
    path = run_dir / "report.html"
    atomic_write_text(path, render(context))
    return path


def render(context: dict[str, Any]) -> str:
    """The page from its context (autoescaped: model text is never markup)."""
    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(loader=PackageLoader("harness", "templates"), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    return env.get_template("report.html.j2").render(**context)


# ----------------------------------------------------------------------------- context


def _num(v: Any, digits: int = 3) -> str | None:
    if v is None or v == "":
        return None
    return f"{float(v):.{digits}f}"


def _display_labels(specs: list[dict[str, Any]]) -> list[str]:
    """Leaderboard labels of a config section, as ``harness.config.display_label`` makes them
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

    def __init__(self, run_dir: Path, rows: list[dict[str, Any]], summary: list[dict[str, Any]]) -> None:
        manifest_path = run_dir / "manifest.json"
        self.manifest: dict[str, Any] = read_json(manifest_path) if manifest_path.exists() else {}
        config = self.manifest.get("config") or {}
        records = cell_records(run_dir)
        self.records = records
        self.attack_name = {r["attack"]: r.get("attack_name", r["attack"]) for r in records}
        self.defense_name = {r["defense"]: r.get("defense_name", r["defense"]) for r in records}
        self.summary = [r for r in summary if r["benchmark"] != TRAIN_DATA_BENCHMARK]
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


def _noice_grids(run: _Run) -> dict[str, Any]:
    """NOICE's 2×2 per (model, harmful benchmark): attack none/noice × defense none/prefill."""
    attack_rows = [("none", run.label_for(run.attacks, run.attack_name, "none")),
                   ("noice", run.label_for(run.attacks, run.attack_name, "noice"))]
    defense_cols = [("none", run.label_for(run.defenses, run.defense_name, "none")),
                    ("prefill", run.label_for(run.defenses, run.defense_name, "prefill"))]
    grids = []
    for model in run.models:
        for bench in run.benchmarks:
            scorer = run.record_scorer(model, bench, "asr")
            if scorer is None:
                continue
            rows = []
            for want_a, attack in attack_rows:
                cells = []
                for _want_d, defense in defense_cols:
                    values = []
                    if attack is not None and defense is not None:
                        for metric, title in NOICE_METRICS:
                            c = run.cell(model, attack, defense, bench, scorer, metric)
                            if c is not None:
                                values.append({"title": title, **c})
                    cells.append(values or None)
                rows.append({"attack": attack or want_a, "cells": cells})
            grids.append({"model": model, "benchmark": bench, "scorer": scorer,
                          "defenses": [d or want for want, d in defense_cols], "rows": rows})
    present = [lab for _, lab in attack_rows + defense_cols if lab is not None]
    return {"grids": grids, "complete": len(present) == 4}


def _figure(name: str, title: str, png: bytes | None) -> dict[str, str] | None:
    if png is None:
        return None
    return {"name": name, "title": title, "data": base64.b64encode(png).decode("ascii")}


def _figures(run: _Run) -> list[dict[str, str]]:
    from harness.figures import BarPanel, ScatterPoint, grouped_bars, scatter

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


def _training(run_dir: Path, store: ArtifactStore) -> dict[str, Any]:
    from harness.figures import line_curves

    logs = training_logs(run_dir, store)
    table = [{
        "cell_id": t["cell_id"], "steps": len(t["steps"]),
        "first": _num(t["steps"][0][1]) if t["steps"] else None,
        "last": _num(t["steps"][-1][1]) if t["steps"] else None,
        "examples": t["summary"].get("examples"), "seconds": t["summary"].get("seconds"),
        "trainer": t["summary"].get("trainer"),
    } for t in logs]
    fig = _figure("training_loss", "Training loss per step", line_curves({t["cell_id"]: t["steps"] for t in logs}))
    return {"table": table, "figures": [fig] if fig else []}


def _screening(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    cells: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["benchmark"] != TRAIN_DATA_BENCHMARK:
            continue
        entry = cells.setdefault(r["cell_id"], {k: r[k] for k in ("cell_id", "model", "attack", "defense", "seed")})
        entry[r["metric"].removeprefix("screen_")] = int(r["value"])
    for entry in cells.values():
        total = entry.get("kept", 0) + entry.get("dropped", 0)
        entry["dropped_pct"] = f"{100 * entry.get('dropped', 0) / total:.1f}%" if total else "–"
    return list(cells.values())


def _kl_figures(run_dir: Path) -> list[dict[str, str]]:
    """PNG files another command (``ftsafety kl --out RUN_DIR/kl/NAME``) left under ``kl/``,
    embedded as they are."""
    kl = run_dir / "kl"
    if not kl.is_dir():
        return []
    return [{"name": str(p.relative_to(kl).with_suffix("")), "title": str(p.relative_to(kl)),
             "data": base64.b64encode(p.read_bytes()).decode("ascii")}
            for p in sorted(kl.rglob("*.png"))]


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


def build_context(
    run_dir: Path,
    store: ArtifactStore,
    *,
    rows: list[dict[str, Any]],
    summary: list[dict[str, Any]],
    agreement: list[dict[str, Any]],
    redact: bool = False,
) -> dict[str, Any]:
    """Everything the template shows, as plain strings, numbers, lists and dicts."""
    run = _Run(run_dir, rows, summary)
    return {
        "name": run_dir.name,
        "generated": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "redacted": redact,
        "redacted_marker": REDACTED,
        "missing": MISSING,
        "n_cells": len(run.records),
        "attacks": run.attacks,
        "defenses": run.defenses,
        "groups": _metric_tables(run),
        "noice": _noice_grids(run),
        "figures": _figures(run),
        "screening": _screening(rows),
        "training": _training(run_dir, store),
        "kl": _kl_figures(run_dir),
        "agreement": [a | {"agreement": _num(a["agreement"]), "kappa": _num(a["kappa"])} for a in agreement],
        "samples": sorted(sample_drilldown(run_dir, store, cap=HTML_SAMPLES_PER_CELL, redact=redact), key=run.cell_order),
        "samples_cap": HTML_SAMPLES_PER_CELL,
        "provenance": _provenance(run.manifest),
    }
