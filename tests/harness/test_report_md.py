"""report.md on a run whose labels, model name and model output are hostile Markdown (issue 11,
§4): every table keeps its column count on every row, and nothing hostile renders as HTML, a
link, a code span or a new line. A canned-backend grid run in-process (no model, no vLLM)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ftsafety.harness.config import validate_config
from ftsafety.harness.pipeline import run_grid
from ftsafety.harness.plugins import GenerationResult
from ftsafety.harness.registry import backends
from ftsafety.harness.report import md_escape
from tests.harness.helpers import canned_config
from tests.plugins.canned import CannedBackend

#: Model output that tries every way out of a table cell: a pipe, every kind of line break, a
#: code span, raw HTML, a javascript: link, an image, an escaped pipe, a terminal escape.
HOSTILE_OUTPUT = ("x | y\n| z `code` <img src=x onerror=alert(1)> [c](javascript:alert(1)) ![i](http://e/i.png)"
                  "\r\nr\rcr\u2028ls\u2029ps\x85nel\vvt\x1bESC[31m back\\|slash END")
HOSTILE_LABELS = {
    "model": "m|x`<b>bold</b>",
    "attack": "a|b\ninjected | row",
    "defense": "<script>alert(1)</script>",
    "benchmark": "[x](javascript:alert(1))",
    "scorers": ["s|1\u2028Answer: yes", "`s2` \\|"],
}


@backends.register("report-md-hostile")
class HostileBackend(CannedBackend):
    """Every answer is ``HOSTILE_OUTPUT`` (test only)."""

    def generate(self, requests, sampling):
        return [[GenerationResult(rendered_prompt="p", continuation=HOSTILE_OUTPUT, truncated=False, n_tokens=9)]
                for _ in requests]


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> str:
    tmp = tmp_path_factory.mktemp("report-md")
    data = canned_config(
        tmp,
        models=[{"name": HOSTILE_LABELS["model"], "path": "org/some-model"}],
        attacks=[{"name": "none", "label": HOSTILE_LABELS["attack"]}],
        defenses=[{"name": "none", "label": HOSTILE_LABELS["defense"]}],
        benchmarks=[{"name": "canned-prompts", "label": HOSTILE_LABELS["benchmark"], "params": {"size": 2}}],
        scorers=[{"name": "canned-harm", "label": label} for label in HOSTILE_LABELS["scorers"]],
        generation={"backend": "report-md-hostile", "max_tokens": 8},
        seeds=[0],
    )
    result = run_grid(validate_config(data))
    return (Path(result.run_dir) / "report.md").read_text(encoding="utf-8")


def _cells(row: str) -> int:
    """Cells of a Markdown table row as GFM splits it: on every ``|`` not escaped by ``\\``."""
    pipes, escaped = 0, False
    for ch in row:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "|":
            pipes += 1
    return pipes - 1


def _tables(md: str) -> list[list[str]]:
    """The runs of consecutive lines that start with ``|``."""
    tables: list[list[str]] = []
    previous = False
    for line in md.split("\n"):
        is_row = line.startswith("|")
        if is_row and not previous:
            tables.append([])
        if is_row:
            tables[-1].append(line)
        previous = is_row
    return tables


def test_every_row_of_every_table_has_the_header_column_count(report):
    tables = _tables(report)
    assert len(tables) == 3  # summary, scorer agreement, samples
    for table in tables:
        header = _cells(table[0])
        assert len(table) > 2 and all(_cells(row) == header for row in table), table


def test_hostile_text_stays_inside_its_row(report):
    # One line per table row: no line break of any kind survives from the hostile text.
    for brk in ("\r", "\u2028", "\u2029", "\x85", "\v", "\x1b"):
        assert brk not in report, repr(brk)
    assert not any(line.startswith(("injected", "| z", "r<br>")) for line in report.split("\n"))
    sample_rows = [line for line in report.split("\n") if "END" in line]
    assert len(sample_rows) == 2 and all(row.count("x \\| y<br>\\| z") == 1 for row in sample_rows)


def test_nothing_hostile_renders_as_html_links_or_code(report):
    assert "<" not in report.replace("<br>", "")  # no raw HTML, no autolink
    assert "`" not in report.replace("\\`", "")  # no code span
    assert not re.search(r"(?<!\\)\]\(", report)  # no link or image: every "](" has its "]" escaped
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in report and "&lt;img src=x onerror=alert(1)&gt;" in report
    # A text "\|" must not turn into "\\|" (an escaped backslash and then a real pipe).
    assert "back\\\\\\|slash" in report


@pytest.mark.parametrize(("text", "expected"), [
    ("a|b", "a\\|b"),
    ("a\\|b", "a\\\\\\|b"),
    ("`x`", "\\`x\\`"),
    ("[x](javascript:y)", "[x\\](javascript:y)"),
    ("[a][b] [c]", "[a\\][b] [c]"),
    ("<b>&", "&lt;b&gt;&amp;"),
    ("1\r\n2\r3\u20284\x855", "1<br>2<br>3<br>4<br>5"),
    ("a\x1b[31mb\x00", "a[31mb"),
    ("m__none__s0 a_b *c*", "m__none__s0 a_b *c*"),  # cell ids and emphasis stay readable
    (0.25, "0.25"),
    (None, ""),
])
def test_md_escapes_one_cell(text, expected):
    assert md_escape(text) == expected
