"""Report figures, drawn with matplotlib's Agg renderer into PNG bytes.

Figures are built on ``matplotlib.figure.Figure`` with an Agg canvas, never through pyplot: no
global state, no display needed, safe to call from a worker. Inputs are plain data (the report
module picks metrics and scorers), so each function can be tested on its own.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

#: A value with its 95% interval (either bound may be missing).
Estimate = tuple[float, float | None, float | None]


@dataclass
class BarPanel:
    """One panel of grouped bars: ``values[(attack, defense)]`` is an ``Estimate``."""

    title: str
    attacks: list[str]
    defenses: list[str]
    values: dict[tuple[str, str], Estimate] = field(default_factory=dict)


@dataclass
class ScatterPoint:
    label: str
    x: Estimate
    y: Estimate


def new_figure(width: float, height: float) -> Any:
    """An empty figure on its own Agg canvas (the commands' plots, ``kl`` and ``probe``, use it too)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def to_png(fig: Any) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _err(est: Estimate) -> tuple[float, float]:
    """Error-bar lengths below and above the value (0 where an interval bound is missing)."""
    v, lo, hi = est
    # max(0, ...): a Wilson bound at p = 1 can land a rounding error below the value itself
    return (max(0.0, v - lo) if lo is not None else 0.0), (max(0.0, hi - v) if hi is not None else 0.0)


def grouped_bars(panels: Sequence[BarPanel], ylabel: str = "ASR") -> bytes | None:
    """Bars per attack, one per defense, with 95% interval error bars; one panel per
    (model, benchmark). None when no panel has a value."""
    panels = [p for p in panels if p.values]
    if not panels:
        return None
    cols = min(2, len(panels))
    rows = (len(panels) + cols - 1) // cols
    widest = max(len(p.attacks) * max(1, len(p.defenses)) for p in panels)
    fig = new_figure(max(6.0, min(16.0, 1.2 + 0.45 * widest * cols)), 3.6 * rows)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        width = 0.8 / max(1, len(panel.defenses))
        for j, defense in enumerate(panel.defenses):
            xs, ys, lows, highs = [], [], [], []
            for i, attack in enumerate(panel.attacks):
                est = panel.values.get((attack, defense))
                if est is None:
                    continue
                lo, hi = _err(est)
                xs.append(i - 0.4 + width * (j + 0.5))
                ys.append(est[0])
                lows.append(lo)
                highs.append(hi)
            if xs:
                ax.bar(xs, ys, width=width * 0.95, yerr=[lows, highs], capsize=3, label=defense)
        ax.set_xticks(range(len(panel.attacks)), panel.attacks, rotation=20, ha="right")
        ax.set_ylim(0, 1.05)
        ax.set_ylabel(ylabel)
        ax.set_title(panel.title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(title="defense", fontsize=8, title_fontsize=8)
    return to_png(fig)


def scatter(points: Sequence[ScatterPoint], xlabel: str, ylabel: str, title: str) -> bytes | None:
    """One labelled point per (model, attack, defense) with interval error bars in both axes."""
    if not points:
        return None
    # Points at the same place (common: identical cells) share one dot and one joined label.
    merged: dict[tuple[float, float], ScatterPoint] = {}
    for p in points:
        key = (round(p.x[0], 4), round(p.y[0], 4))
        if key in merged:
            merged[key] = ScatterPoint(f"{merged[key].label}\n{p.label}", merged[key].x, merged[key].y)
        else:
            merged[key] = p
    fig = new_figure(6.5, 5.0)
    ax = fig.subplots()
    for p in merged.values():
        xlo, xhi = _err(p.x)
        ylo, yhi = _err(p.y)
        ax.errorbar([p.x[0]], [p.y[0]], xerr=[[xlo], [xhi]], yerr=[[ylo], [yhi]], fmt="o", capsize=3, alpha=0.8)
        ax.annotate(p.label, (p.x[0], p.y[0]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlim(-0.05, 1.05)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    return to_png(fig)


def line_curves(curves: dict[str, list[tuple[int, float]]], xlabel: str = "step", ylabel: str = "training loss",
                title: str = "Training loss per step") -> bytes | None:
    """One line per training cell (loss against optimiser step)."""
    curves = {k: v for k, v in curves.items() if v}
    if not curves:
        return None
    fig = new_figure(7.5, 4.2)
    ax = fig.subplots()
    for label, points in curves.items():
        ax.plot([s for s, _ in points], [v for _, v in points], marker="." if len(points) < 40 else None, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if len(curves) <= 12:
        ax.legend(fontsize=7)
    return to_png(fig)


#: One point of a curve: (step, value, interval low, interval high).
CurvePoint = tuple[int, float, float | None, float | None]


def durability_curves(panels: dict[str, dict[str, list[CurvePoint]]], title: str,
                      threshold: float | None = None) -> bytes | None:
    """Metric against fine-tuning step, one line per defense with its 95% band, one panel per
    (benchmark, metric, scorer); the ``steps_to_break`` threshold dashed on the ASR panels."""
    panels = {k: v for k, v in panels.items() if any(v.values())}
    if not panels:
        return None
    cols = min(2, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig = new_figure(6.0 * cols, 3.6 * rows)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (name, lines) in zip(axes.flat, sorted(panels.items()), strict=False):
        for defense, points in sorted(lines.items()):
            points = sorted(points)
            xs = [p[0] for p in points]
            line = ax.plot(xs, [p[1] for p in points], marker="o", markersize=3, label=defense)[0]
            lows = [p[2] if p[2] is not None else p[1] for p in points]
            highs = [p[3] if p[3] is not None else p[1] for p in points]
            ax.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.15, linewidth=0)
        if threshold is not None and " · asr " in name:
            ax.axhline(threshold, color="grey", linestyle="--", linewidth=1)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("fine-tuning step")
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(title="defense", fontsize=8, title_fontsize=8)
    fig.suptitle(title, fontsize=11)
    return to_png(fig)
