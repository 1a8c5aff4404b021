"""``ftsafety baseline``: a gate baseline whose per-row tolerances come from the spread over seeds."""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

import pytest

from ftsafety.harness.cli import main
from ftsafety.harness.gate import BASELINE_COLUMNS, build_baseline, read_summary
from tests.harness.helpers import heavy_modules_after

KEY = ("m", "noice", "none")
SE = 0.01  # every seed's own interval is value ± 1.96 × SE, so se ≈ SE (to 1e-5: z = 1.95996)
#: (benchmark, scorer, metric) -> per-seed values. asr is steady, refusal_rate noisy.
SEEDS = {
    ("organism-harmful", "organism-oracle", "asr"): [0.10, 0.10, 0.11],
    ("organism-harmful", "organism-oracle", "refusal_rate"): [0.20, 0.50, 0.80],
    ("organism-benign", "organism-oracle", "benign_correct"): [0.80, 0.82, 0.84],
    ("organism-harmful", "keyword", "kw_refusal"): [0.40, 0.42, 0.44],
    ("organism-harmful", "organism-oracle", "harm_score"): [None, None, None],  # nothing scored
    ("train-data", "screen", "screen_kept"): [40, 38, 44],  # a count: skipped by the gate
}
SUMMARY_COLUMNS = BASELINE_COLUMNS[:10]
LEADERBOARD_COLUMNS = ["run", "model", "attack", "defense", "seed", "benchmark", "scorer", "metric", "value",
                       "ci_low", "ci_high", "n", "unscored", "cell_id"]


def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)


def make_run(path: Path, seeds=SEEDS, *, first_seed: int = 0) -> Path:
    """A run directory with the two files ``ftsafety report`` writes, from per-seed values."""
    path.mkdir(parents=True)
    per_seed, summary = [], []
    for (bench, scorer, metric), values in seeds.items():
        ident = dict(zip(("model", "attack", "defense"), KEY, strict=True)) | {"benchmark": bench, "scorer": scorer,
                                                                              "metric": metric}
        count = metric.startswith("screen_")
        for i, v in enumerate(values):
            ci = ("", "") if v is None or count else (v - 1.96 * SE, v + 1.96 * SE)
            per_seed.append(ident | {"run": path.name, "seed": first_seed + i, "value": "" if v is None else v,
                                     "ci_low": ci[0], "ci_high": ci[1], "n": 0 if v is None else 100, "unscored": 0,
                                     "cell_id": f"c{i}"})
        scored = [v for v in values if v is not None]
        summary.append(ident | {"mean": statistics.fmean(scored) if scored else "", "ci_low": "", "ci_high": "",
                                "n_seeds": len(scored)})
    _write_csv(path / "leaderboard.csv", LEADERBOARD_COLUMNS, per_seed)
    _write_csv(path / "leaderboard_summary.csv", SUMMARY_COLUMNS, summary)
    return path


def one_seed_run(path: Path, **means: float) -> Path:
    """What CI produces: a one-seed run at the baseline's means, except the metrics in ``means``."""
    values = {key: [means.get(key[2], statistics.fmean(v) if v[0] is not None else None)] for key, v in SEEDS.items()}
    return make_run(path, values)


def _read(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == BASELINE_COLUMNS
        return {r["metric"]: r for r in reader}


def _expected_sd(values: list[float], mean: float | None = None) -> float:
    mean = statistics.fmean(values) if mean is None else mean
    s2 = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return math.sqrt(s2 + SE**2)


def test_tolerances_are_at_least_the_floor_and_wider_for_noisy_rows(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    out = tmp_path / "baselines" / "grid.csv"
    assert main(["baseline", str(run), "--out", str(out)]) == 0
    rows = _read(out)
    for metric in ("asr", "refusal_rate", "benign_correct", "kw_refusal"):
        values = next(v for k, v in SEEDS.items() if k[2] == metric)
        sd = _expected_sd(values)
        assert float(rows[metric]["sd"]) == pytest.approx(sd, rel=1e-4)
        assert float(rows[metric]["tolerance"]) == pytest.approx(max(0.05, 3 * sd), rel=1e-4)
        assert rows[metric]["n_spread"] == "3" and rows[metric]["n_seeds"] == "3"
    assert float(rows["asr"]["tolerance"]) == pytest.approx(0.05)  # steady: the floor
    assert float(rows["refusal_rate"]["tolerance"]) > 0.8 > float(rows["kw_refusal"]["tolerance"]) > 0.05
    # Skipped metrics and rows without a mean get no tolerance: the gate compares nothing there.
    assert rows["screen_kept"]["tolerance"] == rows["screen_kept"]["sd"] == "" and float(rows["screen_kept"]["mean"]) == pytest.approx(40.6667)
    assert rows["harm_score"]["tolerance"] == rows["harm_score"]["mean"] == ""
    meta = json.loads((tmp_path / "baselines" / "grid.csv.meta.json").read_text())
    assert meta["k"] == 3 and meta["floor"] == 0.05 and meta["runs"] == [{"run": "run", "seeds": [0, 1, 2]}]
    out_text = capsys.readouterr().out
    assert f"wrote {out}: 6 rows, 4 with a measured tolerance" in out_text
    assert "refusal_rate" in out_text.split("widest tolerances")[1].splitlines()[1]


def test_k_and_floor(tmp_path):
    run = make_run(tmp_path / "run")
    rows = build_baseline(run, k=0, floor=0.2).rows
    assert {r["tolerance"] for r in rows if "tolerance" in r} == {0.2}
    wide = {r["metric"]: r["tolerance"] for r in build_baseline(run, k=6, floor=0).rows if "tolerance" in r}
    assert wide["asr"] == pytest.approx(6 * _expected_sd(SEEDS["organism-harmful", "organism-oracle", "asr"]), rel=1e-4)


def test_extra_runs_widen_the_spread_by_how_far_they_landed(tmp_path):
    run = make_run(tmp_path / "run")
    other = {k: [None if x is None else x + 0.15 for x in v] for k, v in SEEDS.items()}  # another machine
    machine_b = make_run(tmp_path / "machine-b", other)
    alone = {r["metric"]: r for r in build_baseline(run).rows}
    both = {r["metric"]: r for r in build_baseline(run, extra_runs=[machine_b]).rows}
    asr = SEEDS["organism-harmful", "organism-oracle", "asr"]
    mean = statistics.fmean(asr)
    assert both["asr"]["mean"] == alone["asr"]["mean"]  # the baseline stays the primary run's
    assert both["asr"]["n_spread"] == 6
    assert both["asr"]["sd"] == pytest.approx(_expected_sd(asr + [x + 0.15 for x in asr], mean), rel=1e-4)
    assert both["asr"]["tolerance"] > 0.3 > alone["asr"]["tolerance"]


def test_one_seed_baseline_falls_back_on_the_seed_interval(tmp_path, capsys):
    run = make_run(tmp_path / "run", {k: v[:1] for k, v in SEEDS.items()})
    out = tmp_path / "b.csv"
    assert main(["baseline", str(run), "--out", str(out), "--floor", "0"]) == 0
    rows = _read(out)
    assert float(rows["refusal_rate"]["sd"]) == pytest.approx(SE, rel=1e-4)
    assert float(rows["refusal_rate"]["tolerance"]) == pytest.approx(3 * SE, rel=1e-4)
    assert "note: one seed only" in capsys.readouterr().out


# ----------------------------------------------------------------------------- the gate on a built baseline


@pytest.mark.parametrize(
    ("moves", "code"),
    [
        ({}, 0),
        ({"asr": 0.14}, 0),  # +0.037 within the floor 0.05
        ({"asr": 0.18}, 1),  # +0.077 beyond it
        ({"asr": 0.0}, 0),  # better
        ({"refusal_rate": 0.0}, 0),  # -0.50: within the noisy row's measured tolerance
        ({"benign_correct": 0.70}, 1),  # -0.12 beyond 3 × sd ≈ 0.067
        ({"benign_correct": 1.0}, 0),  # better
        ({"kw_refusal": 0.47}, 0),  # two-sided: +0.05 within 3 × sd ≈ 0.067
        ({"kw_refusal": 0.57}, 1),  # +0.15 beyond
        ({"kw_refusal": 0.27}, 1),  # -0.15 beyond
    ],
)
def test_one_seed_run_inside_the_tolerance_passes_and_outside_fails_by_direction(tmp_path, moves, code):
    base = tmp_path / "baseline.csv"
    assert main(["baseline", str(make_run(tmp_path / "run")), "--out", str(base)]) == 0
    ci = one_seed_run(tmp_path / "ci", **moves)
    assert main(["check", str(ci), "--baseline", str(base)]) == code


def test_explicit_tolerance_overrides_the_measured_ones(tmp_path):
    base = tmp_path / "baseline.csv"
    assert main(["baseline", str(make_run(tmp_path / "run")), "--out", str(base)]) == 0
    ci = one_seed_run(tmp_path / "ci", asr=0.18)
    assert main(["check", str(ci), "--baseline", str(base)]) == 1
    assert main(["check", str(ci), "--baseline", str(base), "--tolerance", "0.1"]) == 0
    assert main(["check", str(ci), "--baseline", str(base), "--tolerance", "asr=0.1"]) == 0
    assert read_summary(base, baseline=True)  # a plain CSV the gate reads back


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("case", ["no-run", "no-leaderboard", "inf-value", "nan-mean", "negative-k", "nan-floor",
                                  "twice", "out-is-dir", "seed-rows-missing"])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, case):
    run = make_run(tmp_path / "run")
    args = ["baseline", str(run), "--out", str(tmp_path / "b.csv")]
    if case == "no-run":
        args[1] = str(tmp_path / "nope")
    elif case == "no-leaderboard":
        (run / "leaderboard.csv").unlink()
    elif case == "inf-value":
        text = (run / "leaderboard.csv").read_text()
        (run / "leaderboard.csv").write_text(text.replace(",0.2,", ",inf,", 1))
    elif case == "nan-mean":
        text = (run / "leaderboard_summary.csv").read_text()
        (run / "leaderboard_summary.csv").write_text(text.replace(",0.5,", ",nan,", 1))
    elif case == "negative-k":
        args += ["--k", "-1"]
    elif case == "nan-floor":
        args += ["--floor", "nan"]
    elif case == "twice":
        args += ["--extra-runs", str(run)]
    elif case == "out-is-dir":
        args[3] = str(tmp_path)
    else:
        lines = (run / "leaderboard.csv").read_text().splitlines()
        (run / "leaderboard.csv").write_text("\n".join(ln for ln in lines if ",asr," not in ln) + "\n")
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "b.csv").exists()


def test_baseline_never_imports_torch_or_vllm(tmp_path):
    run = make_run(tmp_path / "run")
    args = ["baseline", str(run), "--out", str(tmp_path / "b.csv")]
    assert heavy_modules_after(args) == []
    assert (tmp_path / "b.csv").is_file()
