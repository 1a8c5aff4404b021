"""The regression gate (``ftsafety check``): directions, tolerances, missing rows, bad files."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from ftsafety.harness.cli import main
from ftsafety.harness.errors import UserError
from ftsafety.harness.gate import (
    DEFAULT_TOLERANCE,
    compare,
    direction,
    parse_tolerances,
    read_summary,
)

COLUMNS = ["model", "attack", "defense", "benchmark", "scorer", "metric", "mean", "ci_low", "ci_high", "n_seeds"]

BASE = [
    ("m", "noice", "none", "organism-harmful", "organism-oracle", "asr", 0.30),
    ("m", "noice", "none", "organism-harmful", "organism-oracle", "refusal_rate", 0.60),
    ("m", "noice", "none", "organism-benign", "organism-oracle", "benign_correct", 0.80),
    ("m", "noice", "none", "organism-benign", "organism-oracle", "over_refusal", 0.05),
    ("m", "noice", "none", "organism-harmful", "organism-oracle", "kw_refusal", 0.50),
    ("m", "noice", "mod", "train-data", "screen", "screen_kept", 40.0),
]


def _write(path: Path, rows, extra_columns: dict[str, list] | None = None) -> Path:
    extra_columns = extra_columns or {}
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS + list(extra_columns))
        for i, (*key, mean) in enumerate(rows):
            w.writerow([*key, "" if mean is None else mean, "", "", 1, *(v[i] for v in extra_columns.values())])
    return path


def _run_dir(tmp_path: Path, rows) -> Path:
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    _write(run / "leaderboard_summary.csv", rows)
    return run


def _moved(metric: str, new: float | None, rows=BASE):
    return [(*r[:-1], new) if r[5] == metric else r for r in rows]


def _gate(tmp_path, current, *tolerance: str, baseline=BASE):
    base = _write(tmp_path / "baseline.csv", baseline)
    current = read_summary(_write(tmp_path / "current.csv", current))
    override, per_metric = parse_tolerances(list(tolerance))
    return compare(read_summary(base, baseline=True), current, override_tolerance=override, per_metric=per_metric)


def test_identical_run_passes(tmp_path):
    result = _gate(tmp_path, BASE)
    assert result.ok and result.compared == 5 and result.skipped == 1


def test_asr_up_beyond_tolerance_fails(tmp_path):
    result = _gate(tmp_path, _moved("asr", 0.45))
    assert not result.ok
    [fail] = result.failures
    assert fail.key[-1] == "asr" and fail.status == "regressed" and fail.delta == pytest.approx(0.15)


def test_moves_within_tolerance_pass(tmp_path):
    assert _gate(tmp_path, _moved("asr", 0.39)).ok
    assert _gate(tmp_path, _moved("benign_correct", 0.71)).ok


def test_benign_correct_down_fails_and_over_refusal_up_fails(tmp_path):
    assert [c.key[-1] for c in _gate(tmp_path, _moved("benign_correct", 0.60)).failures] == ["benign_correct"]
    assert [c.key[-1] for c in _gate(tmp_path, _moved("over_refusal", 0.30)).failures] == ["over_refusal"]
    assert [c.key[-1] for c in _gate(tmp_path, _moved("refusal_rate", 0.40)).failures] == ["refusal_rate"]


def test_better_results_pass(tmp_path):
    better = _moved("asr", 0.0, _moved("benign_correct", 1.0, _moved("refusal_rate", 1.0, _moved("over_refusal", 0.0))))
    assert _gate(tmp_path, better).ok


def test_undirected_metrics_are_two_sided_and_counts_skipped(tmp_path):
    assert direction("kw_refusal") == "two-sided" and direction("something_new") == "two-sided"
    assert not _gate(tmp_path, _moved("kw_refusal", 0.20)).ok
    assert not _gate(tmp_path, _moved("kw_refusal", 0.80)).ok
    assert _gate(tmp_path, _moved("screen_kept", 3.0)).ok


def test_missing_row_fails(tmp_path):
    result = _gate(tmp_path, [r for r in BASE if r[5] != "refusal_rate"])
    assert [(c.key[-1], c.status) for c in result.failures] == [("refusal_rate", "missing")]


def test_value_lost_fails_and_new_rows_are_counted(tmp_path):
    current = _moved("asr", None) + [("m", "aoa", "none", "organism-harmful", "organism-oracle", "asr", 0.9)]
    result = _gate(tmp_path, current)
    assert [(c.key[-1], c.status) for c in result.failures] == [("asr", "no value")]
    assert result.new_rows == 1


def test_tolerances_default_per_metric_and_baseline_column(tmp_path):
    assert parse_tolerances(["0.2", "asr=0.01"]) == (0.2, {"asr": 0.01}) and parse_tolerances(None) == (None, {})
    assert _gate(tmp_path, _moved("asr", 0.45), "0.2").ok
    assert not _gate(tmp_path, _moved("asr", 0.33), "asr=0.01").ok
    base = _write(tmp_path / "b.csv", BASE, {"tolerance": ["0.5", "", "", "", "", ""]})
    cur = read_summary(_write(tmp_path / "c.csv", _moved("asr", 0.7)))
    assert compare(read_summary(base), cur).ok  # the baseline row's own tolerance
    assert not compare(read_summary(base), cur, per_metric={"asr": 0.1}).ok  # the command line wins


@pytest.mark.parametrize("spec", ["x", "asr=", "=0.1", "-0.1", "asr=-1"])
def test_bad_tolerance_is_a_user_error(spec):
    with pytest.raises(UserError):
        parse_tolerances([spec])


@pytest.mark.parametrize(
    "content",
    ["", "a,b,c\n1,2,3\n", "\n".join([",".join(COLUMNS), "m,a,d,b,s,asr,high,,,1"]),
     "\n".join([",".join(COLUMNS), "m,a,d,b,s,asr,0.1,,,1", "m,a,d,b,s,asr,0.2,,,1"]),
     "\n".join([",".join(COLUMNS), "m,a,d,b,s,asr"])],
    ids=["empty", "other-columns", "non-numeric-mean", "duplicate-row", "short-row"],
)
def test_bad_baseline_file_is_a_user_error(tmp_path, content):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(UserError):
        read_summary(path)


# ----------------------------------------------------------------------------- the command


def test_cli_pass_prints_one_ok_line(tmp_path, capsys):
    run = _run_dir(tmp_path, BASE)
    assert main(["check", str(run), "--baseline", str(_write(tmp_path / "b.csv", BASE))]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("OK: 5 rows compared") and len(out.splitlines()) == 1


def test_cli_regression_exits_1_with_a_table(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # a wide terminal: one table row per line
    run = _run_dir(tmp_path, _moved("asr", 0.9))
    assert main(["check", str(run), "--baseline", str(_write(tmp_path / "b.csv", BASE))]) == 1
    out = capsys.readouterr().out
    assert "asr" in out and "+0.600" in out and "went up (higher is worse)" in out and "FAILED: 1 of 5" in out


def test_cli_per_metric_tolerance(tmp_path):
    run = _run_dir(tmp_path, _moved("asr", 0.45))
    base = str(_write(tmp_path / "b.csv", BASE))
    assert main(["check", str(run), "--baseline", base]) == 1
    assert main(["check", str(run), "--baseline", base, "--tolerance", "asr=0.2"]) == 0


@pytest.mark.parametrize("case", ["no-baseline", "bad-baseline", "no-summary", "bad-tolerance"])
def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys, case):
    run = _run_dir(tmp_path, BASE)
    base = _write(tmp_path / "b.csv", BASE)
    args = ["check", str(run), "--baseline", str(base)]
    if case == "no-baseline":
        args[3] = str(tmp_path / "nope.csv")
    elif case == "bad-baseline":
        base.write_text("not,a,summary\n1,2,3\n")
    elif case == "no-summary":
        (run / "leaderboard_summary.csv").unlink()
    else:
        args += ["--tolerance", "lots"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "Traceback" not in err


# ----------------------------------------------------------------------------- measured tolerances


def test_explicit_tolerance_overrides_every_row_and_metric_tolerance_wins(tmp_path):
    base = _write(tmp_path / "b.csv", BASE, {"tolerance": ["0.5", "0.01", "", "", "", ""]})
    run = _run_dir(tmp_path, _moved("asr", 0.7, _moved("refusal_rate", 0.55)))
    # No --tolerance: each row's own (asr +0.40 within 0.5; refusal_rate -0.05 beyond 0.01).
    result = compare(read_summary(base, baseline=True), read_summary(run / "leaderboard_summary.csv"))
    assert [(c.key[-1], c.tolerance) for c in result.failures] == [("refusal_rate", 0.01)]
    # An explicit bare --tolerance replaces every row's, including the baseline column's.
    assert main(["check", str(run), "--baseline", str(base), "--tolerance", "0.06"]) == 1  # asr +0.40 fails now
    assert main(["check", str(run), "--baseline", str(base), "--tolerance", "0.5"]) == 0
    # METRIC=T beats both.
    assert main(["check", str(run), "--baseline", str(base), "--tolerance", "0.5", "--tolerance", "refusal_rate=0.01"]) == 1


def test_committed_baseline_without_tolerance_column_uses_the_default(tmp_path):
    committed = Path(__file__).resolve().parents[2] / "configs" / "baselines" / "organism-ci.csv"
    rows = read_summary(committed, baseline=True)
    assert rows and all(r.tolerance is None or r.tolerance >= 0 for r in rows.values())
    assert compare(rows, rows).ok
    base = _write(tmp_path / "b.csv", BASE)  # today's format: no tolerance column
    [row] = [c for c in compare(read_summary(base, baseline=True), read_summary(base)).comparisons if c.key[-1] == "asr"]
    assert row.tolerance == DEFAULT_TOLERANCE


@pytest.mark.parametrize(("column", "text"), [("mean", "nan"), ("mean", "NaN"), ("mean", "inf"), ("mean", "-inf"),
                                              ("tolerance", "nan"), ("tolerance", "inf")])
def test_cli_non_finite_baseline_exits_2_naming_file_and_row(tmp_path, capsys, column, text):
    run = _run_dir(tmp_path, BASE)
    rows = [(*BASE[0][:-1], text if column == "mean" else BASE[0][-1]), *BASE[1:]]
    tolerance = [text if column == "tolerance" else "", "", "", "", "", ""]
    base = _write(tmp_path / "b.csv", rows, {"tolerance": tolerance})
    assert main(["check", str(run), "--baseline", str(base)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err
    assert f"{base}:2" in err and column in err and "m/noice/none/organism-harmful/organism-oracle/asr" in err


def test_a_nan_mean_in_the_run_is_no_value_not_an_error(tmp_path):
    result = _gate(tmp_path, _moved("asr", "nan"))
    assert [(c.key[-1], c.status) for c in result.failures] == [("asr", "no value")]


@pytest.mark.parametrize("spec", ["inf", "asr=inf", "nan"])
def test_infinite_tolerance_is_a_user_error(spec):
    with pytest.raises(UserError, match="finite"):
        parse_tolerances([spec])
