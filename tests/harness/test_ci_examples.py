"""The CI examples shipped in docs/examples/ (and the commands in docs/ci.md) parse, and every
``ftsafety ...`` command line in them is one the CLI accepts: a real subcommand with real options,
checked by the CLI's own click parser, so the examples cannot rot when an option changes."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
import yaml

from ftsafety.harness.cli import app

DOCS = Path(__file__).resolve().parents[2] / "docs"
EXAMPLES = sorted((DOCS / "examples").glob("*.yml"))


#: Keys whose values are shell: GitHub's ``run``, GitLab's scripts.
SHELL_KEYS = ("run", "script", "before_script", "after_script")


def _shell_texts(node: object) -> Iterator[str]:
    """Every shell text of a parsed workflow, wherever in it the keys are."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in SHELL_KEYS:
                yield from [value] if isinstance(value, str) else value
            else:
                yield from _shell_texts(value)
    elif isinstance(node, list):
        for value in node:
            yield from _shell_texts(value)


def ftsafety_commands(text: str) -> list[list[str]]:
    """The argv of every shell line in ``text`` that runs ``ftsafety`` (backslash continuations joined)."""
    return [shlex.split(line, comments=True)
            for line in text.replace("\\\n", " ").splitlines() if line.strip().startswith("ftsafety ")]


def parse_with_the_cli(argv: list[str]):  # -> typer's (vendored) click Context
    """Parse ``argv`` (``["ftsafety", SUBCOMMAND, ...]``) with the CLI's click command, as ``ftsafety``
    would: an unknown subcommand or option, a missing required one, or a bad choice raises."""
    group = typer.main.get_command(app)
    assert argv[0] == "ftsafety" and len(argv) > 1, argv
    command = group.commands.get(argv[1])
    assert command is not None, f"no subcommand '{argv[1]}' in {' '.join(argv)}"
    return command.make_context(f"ftsafety {argv[1]}", argv[2:])


def _example(path: Path) -> tuple[dict, list[list[str]]]:
    doc = yaml.safe_load(path.read_text())
    return doc, [argv for text in _shell_texts(doc) for argv in ftsafety_commands(text)]


def test_every_example_is_shipped():
    assert [p.name for p in EXAMPLES] == ["github-actions.yml", "gitlab-ci.yml"]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_ftsafety_command_in_an_example_parses_with_the_cli(path):
    _, commands = _example(path)
    assert [argv[1] for argv in commands] == ["run", "check"]
    for argv in commands:
        parse_with_the_cli(argv)
    check = parse_with_the_cli(commands[1]).params
    assert check["junit"] and check["summary"] and check["baseline"].name == "organism-ci.csv"


def test_the_github_example_caches_the_run_store_uploads_the_report_and_publishes_the_junit():
    doc, commands = _example(DOCS / "examples" / "github-actions.yml")
    junit = str(parse_with_the_cli(commands[1]).params["junit"])
    assert parse_with_the_cli(commands[1]).params["summary"] == Path("$GITHUB_STEP_SUMMARY")
    [job] = doc["jobs"].values()
    steps = {s.get("uses", "").split("@")[0]: s for s in job["steps"]}
    restore = steps["actions/cache/restore"]["with"]
    assert "runs/.cache" in restore["path"] and "hashFiles('configs/organism-ci.yaml', 'pyproject.toml')" in restore["key"]
    assert restore["key"] == steps["actions/cache/save"]["with"]["key"]
    upload = steps["actions/upload-artifact"]
    assert upload["if"] == "always()" and "runs/organism-ci/report.html" in upload["with"]["path"]
    assert junit in upload["with"]["path"] and steps["mikepenz/action-junit-report"]["with"]["report_paths"] == junit


def test_the_gitlab_example_caches_the_run_store_and_reports_the_junit():
    doc, commands = _example(DOCS / "examples" / "gitlab-ci.yml")
    [job] = doc.values()
    junit = str(parse_with_the_cli(commands[1]).params["junit"])
    assert job["cache"]["key"]["files"] == ["configs/organism-ci.yaml", "pyproject.toml"]
    assert "runs/.cache/" in job["cache"]["paths"]
    assert job["artifacts"]["reports"]["junit"] == junit and job["artifacts"]["when"] == "always"
    assert "runs/organism-ci/report.html" in job["artifacts"]["paths"]


def test_the_commands_in_docs_ci_md_and_the_readme_parse_with_the_cli():
    blocks = [block for doc in (DOCS / "ci.md", DOCS.parent / "README.md")
              for block in re.findall(r"```(?:bash|sh)\n(.*?)```", doc.read_text(), re.S)]
    commands = [argv for block in blocks for argv in ftsafety_commands(block)]
    assert {"run", "check", "baseline"} <= {argv[1] for argv in commands}
    for argv in commands:
        parse_with_the_cli(argv)


def test_a_stale_option_is_caught():
    with pytest.raises(Exception, match="No such option: --junit-xml"):
        parse_with_the_cli(["ftsafety", "check", "runs/x", "--baseline", "b.csv", "--junit-xml", "j.xml"])
    with pytest.raises(AssertionError):
        parse_with_the_cli(["ftsafety", "gate", "runs/x"])
