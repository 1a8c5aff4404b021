"""``ftsafety check --junit / --summary / --format markdown``: the gate's verdict in CI formats,
read back with a real JUnit parser (junitparser) and a real Markdown renderer (markdown-it-py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from junitparser import JUnitXml
from markdown_it import MarkdownIt

from ftsafety.harness.cli import main
from ftsafety.harness.gate import Comparison, GateResult
from ftsafety.harness.gate_formats import junit_xml, markdown_summary
from tests.harness.test_check import BASE, _moved, _run_dir, _write

HOSTILE = "a|b<script>alert(1)</script>`x`"  # a model label that would break naive Markdown/HTML


def parse_junit(path: Path) -> list:
    """Every test case of a JUnit file, through junitparser (raises on a file it cannot read)."""
    return [case for suite in JUnitXml.fromfile(str(path)) for case in suite]


def render_markdown(text: str) -> str:
    """HTML as a GitHub-like renderer makes it: CommonMark with raw HTML allowed, plus tables."""
    return MarkdownIt("commonmark", {"html": True}).enable("table").render(text)


def markdown_tables(text: str) -> list[list[list[str]]]:
    """Each table of ``text`` as its body rows of cell texts (inline content, unescaped)."""
    tables, rows, row, cell = [], None, None, False
    for token in MarkdownIt("commonmark").enable("table").parse(text):
        if token.type == "table_open":
            rows = []
        elif token.type == "table_close":
            tables.append(rows)
        elif token.type == "tbody_open":
            cell = True
        elif token.type == "tr_open" and cell:
            row = []
        elif token.type == "tr_close" and cell:
            rows.append(row)
        elif token.type == "inline" and cell and row is not None:
            row.append("".join(child.content for child in token.children or []))
        elif token.type == "tbody_close":
            cell = False
    return tables


def _hostile_case(tmp_path: Path) -> tuple[Path, Path]:
    """A baseline with a hostile model label (missing in the run) and an asr that went up."""
    hostile = ("m", "noice", "none", "organism-harmful", "organism-oracle", "asr", 0.30)
    base = _write(tmp_path / "b.csv", [*BASE, (HOSTILE, *hostile[1:6], 0.8)])
    return _run_dir(tmp_path, _moved("asr", 0.9, _moved("kw_refusal", 0.45))), base


# ----------------------------------------------------------------------------- JUnit


def test_junit_has_one_case_per_baseline_row_and_failures_carry_the_numbers(tmp_path):
    run, base = _hostile_case(tmp_path)
    junit = tmp_path / "reports" / "gate.xml"
    assert main(["check", str(run), "--baseline", str(base), "--junit", str(junit)]) == 1
    cases = {(c.classname, c.name): c for c in parse_junit(junit)}
    assert len(cases) == len(BASE) + 1
    asr = cases[("ftsafety.m.noice.none", "organism-harmful/organism-oracle/asr")]
    [failure] = asr.result
    assert failure.type == "regressed"
    for text in ("baseline 0.300", "now 0.900", "+0.600", "tolerance 0.1", "higher is worse"):
        assert text in failure.message
    hostile = cases[(f"ftsafety.{HOSTILE}.noice.none", "organism-harmful/organism-oracle/asr")]
    assert hostile.result[0].type == "missing" and HOSTILE in hostile.result[0].message
    assert cases[("ftsafety.m.noice.mod", "train-data/screen/screen_kept")].is_skipped
    assert cases[("ftsafety.m.noice.none", "organism-harmful/organism-oracle/kw_refusal")].is_passed
    [suite] = JUnitXml.fromfile(str(junit))
    assert (suite.tests, suite.failures, suite.skipped, suite.errors) == (len(BASE) + 1, 2, 1, 0)


def test_junit_failure_message_has_both_intervals():
    c = Comparison(("m", "a", "d", "b", "s", "asr"), 0.3, 0.9, 0.05, "higher is worse", "regressed",
                   (0.2, 0.4), (0.8, 0.95))
    text = junit_xml(GateResult([c]), run_dir=Path("runs/x"), baseline=Path("b.csv"))
    assert "95% CI 0.200-0.400" in text and "95% CI 0.800-0.950" in text


def test_junit_labels_with_dots_and_control_characters_stay_one_parseable_level(tmp_path):
    key = ("Qwen2.5-0.5B\x1b[31m\x00", "noice", "none", "b", "s", "asr")
    result = GateResult([Comparison(key, 0.1, 0.9, 0.1, "higher is worse", "regressed")])
    path = tmp_path / "j.xml"
    path.write_text(junit_xml(result, run_dir=Path("r"), baseline=Path("b.csv")), encoding="utf-8")
    [case] = parse_junit(path)
    assert case.classname == "ftsafety.Qwen2_5-0_5B\\x1b[31m\\x00.noice.none"  # dots inside a label add no level
    assert case.name == "b/s/asr"


# ----------------------------------------------------------------------------- Markdown


def test_markdown_summary_renders_one_table_worst_first_with_hostile_labels_inert(tmp_path, capsys):
    run, base = _hostile_case(tmp_path)
    assert main(["check", str(run), "--baseline", str(base), "--format", "markdown"]) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("**ftsafety check run**: FAILED: 2 of 6 rows")
    html = render_markdown(out)
    assert html.count("<table>") == 1 and "<script" not in html and "<code>" not in html
    [rows] = markdown_tables(out)
    # failures (missing before regressed), then the rows that moved within tolerance; unmoved rows are left out
    assert [(r[0], r[1], r[6], r[-1]) for r in rows] == [
        ("FAIL", HOSTILE, "asr", "missing in the run"),
        ("FAIL", "m", "asr", "went up (higher is worse)"),
        ("ok", "m", "kw_refusal", "within tolerance"),
    ]
    assert all(len(r) == 12 for r in rows)  # the | in the label did not split a cell


def test_markdown_lists_improvements_last_and_caps_the_passing_rows():
    def row(metric: str, base: float, now: float, how: str) -> Comparison:
        return Comparison(("m", "a", "d", "b", "s", metric), base, now, 0.1, how, "ok")

    result = GateResult([row("asr", 0.3, 0.2, "higher is worse"), row("benign_correct", 0.8, 0.75, "lower is worse"),
                         row("kw", 0.5, 0.59, "two-sided"), row("over_refusal", 0.1, 0.1, "higher is worse")])
    text = markdown_summary(result, run_dir=Path("r"), baseline=Path("b.csv"))
    [rows] = markdown_tables(text)
    assert [(r[6], r[-1]) for r in rows] == [("kw", "within tolerance"), ("benign_correct", "within tolerance"),
                                           ("asr", "improved")]
    capped = markdown_summary(result, run_dir=Path("r"), baseline=Path("b.csv"), moved_rows=1)
    assert len(markdown_tables(capped)[0]) == 1 and "2 more rows moved less" in capped


@pytest.mark.parametrize("earlier", ["an earlier step's line", "an earlier step's line\n"])
def test_summary_file_is_appended_after_a_blank_line_and_matches_format_markdown(tmp_path, capsys, earlier):
    run, base = _hostile_case(tmp_path)
    summary = tmp_path / "step_summary.md"
    summary.write_text(earlier)
    args = ["check", str(run), "--baseline", str(base)]
    assert main([*args, "--summary", str(summary), "--format", "markdown"]) == 1
    printed = capsys.readouterr().out
    assert summary.read_text() == "an earlier step's line\n\n" + printed


def test_nothing_moved_passes_with_a_table_free_summary(tmp_path):
    run = _run_dir(tmp_path, BASE)
    summary, junit = tmp_path / "s.md", tmp_path / "j.xml"
    assert main(["check", str(run), "--baseline", str(_write(tmp_path / "b.csv", BASE)),
                 "--summary", str(summary), "--junit", str(junit)]) == 0
    assert summary.read_text().startswith("**ftsafety check run**: OK: 5 rows compared")
    assert "No compared row moved." in summary.read_text() and "<table>" not in render_markdown(summary.read_text())
    assert sum(c.is_passed for c in parse_junit(junit)) == 5


# ----------------------------------------------------------------------------- exit codes and report files


@pytest.mark.parametrize(("case", "code"), [("pass", 0), ("regression", 1), ("bad input", 2)])
def test_exit_codes_are_stable_and_reports_are_written_in_every_case(tmp_path, capsys, case, code):
    run = _run_dir(tmp_path, _moved("asr", 0.9) if case == "regression" else BASE)
    base = tmp_path / ("missing.csv" if case == "bad input" else "b.csv")
    if case != "bad input":
        _write(base, BASE)
    junit, summary = tmp_path / "j.xml", tmp_path / "s.md"
    assert main(["check", str(run), "--baseline", str(base), "--junit", str(junit), "--summary", str(summary)]) == code
    cases = parse_junit(junit)
    text = summary.read_text()
    if case == "bad input":  # the files say why the gate did not run; stderr has the usual one line
        [errored] = cases
        assert errored.result[0].type == "bad-input" and "missing.csv" in errored.result[0].message
        assert text.startswith("**ftsafety check**: ERROR") and text.endswith("\n")
        assert capsys.readouterr().err.count("error: ") == 1
    else:
        assert len(cases) == len(BASE) and sum(not c.is_passed and not c.is_skipped for c in cases) == code
        assert ("FAILED" if code else "OK") in text.splitlines()[0]


@pytest.mark.parametrize("option", ["--junit", "--summary"])
def test_an_unwritable_report_file_exits_2_with_one_line(tmp_path, capsys, option):
    run = _run_dir(tmp_path, BASE)
    directory = tmp_path / "a-directory"
    directory.mkdir()
    assert main(["check", str(run), "--baseline", str(_write(tmp_path / "b.csv", BASE)), option, str(directory)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {option} ") and len(err.splitlines()) == 1 and "Traceback" not in err
