"""The regression gate's verdict in the formats CI systems read: JUnit XML (``--junit``) and a
Markdown summary (``--format markdown``, ``--summary``, e.g. ``$GITHUB_STEP_SUMMARY``).

Both are built from a ``GateResult`` alone: labels (model, attack, defense, benchmark, scorer and
metric names) and numbers from two summary CSVs. Model output never reaches the gate, so it cannot
reach these files. The labels are escaped all the same (a config or a hand-edited baseline can
hold anything): XML through ElementTree plus the removal of characters XML 1.0 cannot carry,
Markdown through ``ftsafety.harness.report.md_escape``, the escaping of every table ``report.md`` has.

The layout of both is documented in docs/ci.md; CI reporters group test cases by ``classname``,
so it is ``ftsafety.<model>.<attack>.<defense>`` (dots inside a label become ``_`` so that they
do not add levels) and the name is ``<benchmark>/<scorer>/<metric>``.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from ftsafety.harness.errors import UserError
from ftsafety.harness.gate import HIGHER_IS_WORSE, LOWER_IS_WORSE, Comparison, GateResult
from ftsafety.harness.report import format_value, md_escape, md_header, md_row
from ftsafety.harness.store import atomic_write_text

#: How many rows that moved but passed the Markdown summary lists after the failures (all failures
#: are listed): a step summary is read, not searched; the JUnit file has every row.
SUMMARY_MOVED_ROWS = 30
SUMMARY_COLUMNS = ["gate", "model", "attack", "defense", "benchmark", "scorer", "metric",
                   "baseline", "now", "Δ", "tolerance", "why"]
_EPS = 1e-9  # values round-trip through CSV text; the gate's own slack


def verdict(result: GateResult, baseline: Path) -> str:
    """The one-line verdict (the terminal's last line, the Markdown summary's first)."""
    extra = f", {result.skipped} skipped" if result.skipped else ""
    extra += f", {result.new_rows} new rows not in the baseline" if result.new_rows else ""
    if result.ok:
        return f"OK: {result.compared} rows compared with {baseline}, none got worse beyond tolerance{extra}"
    return (f"FAILED: {len(result.failures)} of {result.compared} rows compared with {baseline} "
            f"got worse or are missing{extra}")


def bad_way_move(c: Comparison) -> float | None:
    """How far the row moved in the direction that is worse for its metric (negative: it got
    better; two-sided metrics: the size of the move); None without two means."""
    if c.delta is None:
        return None
    if c.direction == HIGHER_IS_WORSE:
        return c.delta
    if c.direction == LOWER_IS_WORSE:
        return -c.delta
    return abs(c.delta)


def why(c: Comparison) -> str:
    """A comparison's verdict in words."""
    if c.status == "regressed":
        moved = {HIGHER_IS_WORSE: "went up", LOWER_IS_WORSE: "went down"}.get(c.direction, "moved")
        return f"{moved} ({c.direction})"
    if c.status == "ok":
        move = bad_way_move(c)
        if move is None:
            return "present (the baseline has no value)"
        if abs(c.delta or 0.0) <= _EPS:
            return "unchanged"
        return "improved" if move < 0 else "within tolerance"
    return {"missing": "missing in the run", "no value": "nothing scored in the run",
            "skipped": "not compared (a count)"}[c.status]


def _worst_first(c: Comparison) -> tuple[bool, float]:
    """Sort key: failures first, then by the bad-way move in tolerances (missing rows count as
    infinitely far; improvements sort last)."""
    if c.status in ("missing", "no value"):
        return (False, -math.inf)
    move = bad_way_move(c)
    if move is None:
        return (not c.failed, math.inf)
    scaled = move / c.tolerance if c.tolerance > 0 else math.copysign(math.inf, move) if move else 0.0
    return (not c.failed, -scaled)


def _moved(c: Comparison) -> bool:
    return c.failed or (c.status == "ok" and c.delta is not None and abs(c.delta) > _EPS)


# ----------------------------------------------------------------------------- Markdown


def markdown_summary(result: GateResult, *, run_dir: Path, baseline: Path, moved_rows: int = SUMMARY_MOVED_ROWS) -> str:
    """A verdict line, then a table of what moved, worst first: every failure, then up to
    ``moved_rows`` rows that moved within tolerance. Every cell goes through ``md_escape``."""
    lines = [f"**ftsafety check {md_escape(run_dir.name)}**: {md_escape(verdict(result, baseline))}", ""]
    moved = sorted((c for c in result.comparisons if _moved(c)), key=_worst_first)
    failures = [c for c in moved if c.failed]
    shown = failures + [c for c in moved if not c.failed][:moved_rows]
    if not shown:
        return "\n".join([*lines, "No compared row moved.", ""])
    lines += md_header(SUMMARY_COLUMNS)
    for c in shown:
        delta = "-" if c.delta is None else f"{c.delta:+.3f}"
        lines.append(md_row(["FAIL" if c.failed else "ok", *c.key, format_value(c.baseline),
                             format_value(c.current), delta, f"{c.tolerance:g}", why(c)]))
    if len(moved) > len(shown):
        lines += ["", f"{len(moved) - len(shown)} more rows moved less, within tolerance (all rows: the JUnit report)."]
    return "\n".join([*lines, ""])


def markdown_error(message: str) -> str:
    """The summary of a check that could not compare anything (exit code 2)."""
    return f"**ftsafety check**: ERROR (bad input, nothing compared): {md_escape(message)}\n"


# ----------------------------------------------------------------------------- JUnit XML

# XML 1.0 cannot carry these code points even as character references (ElementTree would write
# them raw and produce a file no parser reads).
_XML_ILLEGAL = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml(text: object) -> str:
    return _XML_ILLEGAL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def _element(parent: ET.Element | None, tag: str, **attrs: object) -> ET.Element:
    attrib = {k: _xml(v) for k, v in attrs.items()}
    return ET.Element(tag, attrib) if parent is None else ET.SubElement(parent, tag, attrib)


def _document(root: ET.Element) -> str:
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _suites(name: str, *, tests: int, failures: int, errors: int, skipped: int) -> tuple[ET.Element, ET.Element]:
    counts = {"tests": tests, "failures": failures, "errors": errors, "skipped": skipped, "time": 0}
    root = _element(None, "testsuites", name="ftsafety check", **counts)
    return root, _element(root, "testsuite", name=name, **counts)


def testcase_names(c: Comparison) -> tuple[str, str]:
    """``(classname, name)`` of a row's test case."""
    model, attack, defense, benchmark, scorer, metric = c.key
    return ("ftsafety." + ".".join(label.replace(".", "_") for label in (model, attack, defense)),
            f"{benchmark}/{scorer}/{metric}")


def _interval(ci: tuple[float | None, float | None]) -> str:
    low, high = ci
    return "" if low is None or high is None else f" (95% CI {low:.3f}-{high:.3f})"


def failure_message(c: Comparison) -> str:
    """One line with everything a reader needs: what happened, both values with their
    intervals, the tolerance and the metric's direction."""
    delta = "" if c.delta is None else f", Δ {c.delta:+.3f}"
    return (f"{'/'.join(c.key)}: {why(c)}: baseline {format_value(c.baseline)}{_interval(c.baseline_ci)}, "
            f"now {format_value(c.current)}{_interval(c.current_ci)}{delta}, tolerance {c.tolerance:g}, "
            f"direction: {c.direction}")


def junit_xml(result: GateResult, *, run_dir: Path, baseline: Path) -> str:
    """One test case per baseline row: failed (regressed, missing, nothing scored), skipped
    (counts, not compared) or passed."""
    root, suite = _suites(f"ftsafety check {run_dir.name}", tests=len(result.comparisons),
                          failures=len(result.failures), errors=0, skipped=result.skipped)
    properties = _element(suite, "properties")
    for name, value in (("run_dir", run_dir), ("baseline", baseline), ("new_rows", result.new_rows)):
        _element(properties, "property", name=name, value=value)
    for c in result.comparisons:
        classname, name = testcase_names(c)
        case = _element(suite, "testcase", classname=classname, name=name, time=0)
        if c.status == "skipped":
            _element(case, "skipped", message=why(c))
        elif c.failed:
            message = failure_message(c)
            _element(case, "failure", message=message, type=c.status.replace(" ", "-")).text = _xml(message)
    return _document(root)


def junit_error_xml(message: str) -> str:
    """The JUnit file of a check that could not compare anything (exit code 2): one errored case,
    so a CI test reporter shows why instead of an earlier job's file."""
    root, suite = _suites("ftsafety check", tests=1, failures=0, errors=1, skipped=0)
    case = _element(suite, "testcase", classname="ftsafety", name="check inputs", time=0)
    _element(case, "error", message=message, type="bad-input").text = _xml(message)
    return _document(root)


# ----------------------------------------------------------------------------- writing


def write_junit(path: Path, text: str) -> None:
    """Replace ``path`` (atomically: a reporter never reads half a file)."""
    try:
        atomic_write_text(path, text)
    except OSError as exc:
        raise UserError(f"--junit '{path}': cannot write it ({exc.strerror or exc})") from None


def append_summary(path: Path, text: str) -> None:
    """Append to ``path``, as ``$GITHUB_STEP_SUMMARY`` expects (other steps' lines stay), after a
    blank line if it already has content (so the verdict does not join their last paragraph)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lead = ""
        if path.is_file() and path.stat().st_size:
            with path.open("rb") as f:
                f.seek(-1, 2)
                lead = "\n" if f.read() == b"\n" else "\n\n"
        with path.open("a", encoding="utf-8") as f:
            f.write(lead + text)
    except OSError as exc:
        raise UserError(f"--summary '{path}': cannot write it ({exc.strerror or exc})") from None


def write_error_reports(message: str, *, junit: Path | None, summary: Path | None) -> None:
    """Best effort, on exit code 2: the error the command is about to print stays the error
    reported, even if these files cannot be written either."""
    for path, write, text in ((junit, write_junit, junit_error_xml), (summary, append_summary, markdown_error)):
        if path is not None:
            try:
                write(path, text(message))
            except UserError:
                pass
