"""Every user mistake is one line and exit 2 (issue 11, §3): one table, one row per mistake.

Each row writes its input files under ``tmp_path``, runs one ``ftsafety`` command in a fresh
interpreter and expects exit code 2, ``error: `` lines only (no traceback), and each expected
fragment on one of those lines.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness.helpers import canned_config, cli, write_config


@dataclass(frozen=True)
class Case:
    id: str
    command: Callable[[Path], list[str]]
    """Writes the inputs under tmp_path and returns the command line."""
    fragments: tuple[str, ...]
    """Each must appear on one ``error:`` line."""


def config(**overrides: Any) -> Callable[[Path], Path]:
    """A canned grid with ``overrides``; a value may be a function of tmp_path (for paths)."""

    def write(tmp: Path) -> Path:
        values = {k: v(tmp) if callable(v) else v for k, v in overrides.items()}
        return write_config(tmp / "grid.yaml", canned_config(tmp, **values))

    return write


def command(name: str, grid: Callable[[Path], Path]) -> Callable[[Path], list[str]]:
    return lambda tmp: [name, str(grid(tmp))]


def raw_config(text: bytes) -> Callable[[Path], list[str]]:
    """``validate`` of a config file written byte for byte."""

    def write(tmp: Path) -> list[str]:
        path = tmp / "grid.yaml"
        path.write_bytes(text)
        return ["validate", str(path)]

    return write


def model_file(tmp: Path) -> list[dict[str, str]]:
    (tmp / "weights.bin").write_bytes(b"\0")
    return [{"name": "m", "path": str(tmp / "weights.bin")}]


def model_dir_without_config(tmp: Path) -> list[dict[str, str]]:
    (tmp / "model").mkdir()
    (tmp / "model" / "tokenizer.json").write_text("{}")
    return [{"name": "m", "path": str(tmp / "model")}]


GENERATION = {"sample_id": "a", "prompt": "p", "response": "r", "kind": "harmful"}


def score(lines: list[bytes]) -> Callable[[Path], list[str]]:
    """``ftsafety score`` of a generations file made of these raw lines."""

    def write(tmp: Path) -> list[str]:
        path = tmp / "generations.jsonl"
        path.write_bytes(b"\n".join(lines) + b"\n")
        return ["score", "--generations", str(path), "--scorer", "keyword", "--out", str(tmp / "scores.jsonl")]

    return write


def row(**fields: Any) -> bytes:
    return json.dumps(GENERATION | fields).encode()


def report_of_old_store_format(tmp: Path) -> list[str]:
    run_dir = tmp / "runs" / "old"
    run_dir.mkdir(parents=True)
    (run_dir / "manifest.json").write_text(json.dumps({"store_format": 0, "config": {}}))
    return ["report", str(run_dir)]


CASES = [
    # unreadable inputs
    Case("config-not-utf8", raw_config(b"name: t\nmodels: \xff\xfe\n"), ("not UTF-8 text (byte 0xff on line 2)",)),
    Case("generations-not-utf8", score([row(), b'{"sample_id": "\xff"}']), ("not UTF-8 text (byte 0xff on line 2)",)),
    # models that are not models, found by validate/plan, before any engine loads them
    Case("model-path-is-a-file", command("validate", config(models=model_file)), ("models[0].path:", "is a file")),
    Case("model-dir-without-a-model", command("plan", config(models=model_dir_without_config)),
         ("models[0].path:", "no config.json")),
    # numbers that validate must refuse rather than the run crash on
    Case("negative-seed", command("validate", config(seeds=[-1])), ("seeds[0]: Input should be greater than or equal to 0",)),
    Case("huge-seed", command("validate", config(seeds=[2**32])), ("seeds[0]: Input should be less than or equal to 4294967295",)),
    Case("negative-sampling-seed", command("validate", config(generation={"backend": "canned", "seed": -1})),
         ("generation.seed: Input should be greater than or equal to 0",)),
    Case("infinite-epochs", command("validate", config(training={"epochs": float("inf")})),
         ("training.epochs: Input should be a finite number",)),
    Case("infinite-lr", command("validate", config(training={"lr": float("inf")})), ("training.lr: Input should be a finite number",)),
    Case("infinite-epochs-of-one-attack", command("validate", config(attacks=[{"name": "none", "training": {"epochs": float("inf")}}])),
         ("attacks[0].training.epochs: Input should be a finite number",)),
    Case("infinite-plugin-param", command("validate", config(defenses=[{"name": "augment", "params": {"epochs": float("inf")}}])),
         ("defenses[0].params.epochs: Input should be a finite number",)),
    # grids that would run nothing
    Case("no-seeds", command("validate", config(seeds=[])), ("seeds: List should have at least 1 item",)),
    Case("no-attacks", command("validate", config(attacks=[])), ("attacks: List should have at least 1 item",)),
    Case("no-defenses", command("validate", config(defenses=[])), ("defenses: List should have at least 1 item",)),
    Case("every-cell-excluded", command("run", config(excludes=[{"model": "m"}])), ("every cell of the grid is excluded",)),
    # excludes that name nothing (typos)
    Case("exclude-typo", command("validate", config(excludes=[{"attack": "nonee"}, {"seed": 7}])),
         ("excludes[0].attack: 'nonee' matches no attack of the grid (attacks: none)",
          "excludes[1].seed: '7' matches no seed of the grid (seeds: 0, 1)")),
    # local inputs that do not exist (relative to the working directory, tmp_path), found by
    # validate or plan, before any engine starts
    Case("missing-benchmark-path", command("validate", config(benchmarks=[{"name": "advbench", "params": {"path": "adv.jsonl"}}])),
         ("benchmarks[0].params.path: local file not found",)),
    Case("missing-prefill-pairs", command("validate", config(benchmarks=[{"name": "prefill-attack", "params": {"path": "p.csv"}}])),
         ("benchmarks[0].params.path: local file not found",)),
    Case("missing-attack-dataset", command("plan", config(attacks=[{"name": "harmful", "params": {"dataset": "d.jsonl"}}])),
         ("attacks[0].params.dataset: local file not found",)),
    Case("missing-nested-attack-dataset",
         command("validate", config(attacks=[{"name": "poison", "params": {"benign": {"dataset": "b.parquet"}}}])),
         ("attacks[0].params.benign.dataset: local file not found",)),
    # ftsafety score on generations it cannot judge
    Case("score-null-response", score([row(response=None)]), ("line 1: 'response' is null, not text",)),
    Case("score-non-object-line", score([row(), b"[1, 2]"]), ("line 2 is a JSON list, not an object",)),
    Case("score-mixed-kinds", score([row(), row(sample_id="b", kind="benign")]),
         ("line 2 is kind 'benign' but line 1 is 'harmful'",)),
    Case("score-error-names-the-real-line", score([row(), b"", b'{"sample_id": "b",']), ("line 3 is not JSON",)),
    # report refuses a run directory of another store format, as run and plan do
    Case("report-of-another-store-format", report_of_old_store_format, ("incompatible ftsafety",)),
    # all errors at once: schema errors do not hide plugin names and params
    Case("schema-and-plugin-errors-together",
         command("validate", config(training={"lr": -1}, attacks=[{"name": "nonne"}],
                                    benchmarks=[{"name": "canned-prompts", "params": {"size": "many"}}])),
         ("training.lr: Input should be greater than 0", "attacks[0].name: unknown attack 'nonne'",
          "benchmarks[0].params.size: Input should be a valid integer")),
    # labels that become the same cell id or file name
    Case("attack-labels-collide", command("validate", config(attacks=[{"name": "none", "label": "a/b"}, {"name": "none", "label": "a-b"}])),
         ("attacks[1]: label 'a-b' and attacks[0] 'a/b' both become 'a-b'",)),
    Case("benchmark-labels-collide",
         command("validate", config(benchmarks=[{"name": "canned-prompts", "label": "x y"},
                                                {"name": "canned-prompts", "label": "x-y", "params": {"size": 3}}])),
         ("benchmarks[1]: label 'x-y' and benchmarks[0] 'x y' both become 'x-y'",)),
    Case("scorer-labels-collide",
         command("validate", config(scorers=[{"name": "canned-harm", "label": "s:1"},
                                             {"name": "keyword", "label": "s-1"}])),
         ("scorers[1]: label 's-1' and scorers[0] 's:1' both become 's-1'",)),
    Case("model-names-collide",
         command("validate", config(models=[{"name": "m/1", "path": "org/a"}, {"name": "m-1", "path": "org/b"}])),
         ("models[1].name: label 'm-1' and models[0] 'm/1' both become 'm-1'",)),
    Case("defense-labels-collide",
         command("validate", config(defenses=[{"name": "none", "label": "d d"}, {"name": "none", "label": "d-d"}])),
         ("defenses[1]: label 'd-d' and defenses[0] 'd d' both become 'd-d'",)),
    Case("seed-twice", command("validate", config(seeds=[0, 0])), ("seeds[1]: seed 0 is listed twice",)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_user_mistake_is_one_line_and_exit_2(case: Case, tmp_path: Path) -> None:
    r = cli(*case.command(tmp_path), cwd=tmp_path)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines and all(ln.startswith("error: ") for ln in lines), r.stderr
    for fragment in case.fragments:
        assert any(fragment in ln for ln in lines), (fragment, r.stderr)
