"""The command line as a user meets it: help, ls, schema, and one-line errors for bad input."""

from __future__ import annotations

import json
import os

import pytest
import yaml

from tests.harness.helpers import canned_config, cli, heavy_modules_after, write_config


def test_help_lists_every_command():
    r = cli("--help")
    assert r.returncode == 0
    for command in ("run", "plan", "validate", "ls", "report", "schema", "organism"):
        assert command in r.stdout


def test_version():
    r = cli("--version")
    assert r.returncode == 0 and r.stdout.startswith("ftsafety ")


def test_ls_attacks_shows_none_with_its_doc():
    r = cli("ls", "attacks")
    assert r.returncode == 0
    assert "none" in r.stdout and "baseline" in r.stdout


def test_schema_is_json():
    r = cli("schema")
    assert r.returncode == 0
    assert json.loads(r.stdout)["title"] == "GridConfig"


ORGANISM_GRID = {
    "models": [{"name": "organism", "path": "organism://default"}],
    "attacks": [{"name": "none"}, {"name": "noice"}, {"name": "harmful"}],
    "defenses": [{"name": "none"}, {"name": "prefill"}, {"name": "constrained"}],
    "benchmarks": [{"name": "organism-harmful"}, {"name": "organism-benign"}],
    "scorers": [{"name": "organism-oracle"}, {"name": "keyword"}],
}


@pytest.mark.parametrize("command", [["validate", "CFG"], ["plan", "CFG"], ["ls", "attacks"], ["ls", "scorers"],
                                     ["ls", "defenses"], ["ls", "benchmarks"], ["schema"]])
def test_light_commands_never_import_torch_or_vllm(tmp_path, command):
    cfg = write_config(tmp_path / "c.yaml", canned_config(tmp_path, **ORGANISM_GRID))
    args = [str(cfg) if a == "CFG" else a for a in command]
    assert heavy_modules_after(args, env={"FTSAFETY_PLUGINS": "tests.plugins.canned"}) == []


def _assert_one_line_error(r, needle: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert any(needle in ln for ln in lines), r.stderr
    assert all(ln.startswith("error: ") for ln in lines), r.stderr


def test_malformed_yaml(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodels: [a, b\n")
    _assert_one_line_error(cli("validate", str(bad)), "malformed YAML at line")


def test_unknown_top_level_key(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", canned_config(tmp_path, modles=[]))
    _assert_one_line_error(cli("validate", str(cfg)), "modles: unknown key")


def test_unknown_plugin_name(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", canned_config(tmp_path, attacks=[{"name": "nonne"}]))
    _assert_one_line_error(cli("validate", str(cfg)), "attacks[0].name: unknown attack 'nonne' (did you mean 'none'?)")


def test_wrong_param_type(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", canned_config(tmp_path, benchmarks=[{"name": "canned-prompts", "params": {"size": "many"}}]))
    _assert_one_line_error(cli("validate", str(cfg)), "benchmarks[0].params.size: Input should be a valid integer")


def test_missing_model_path(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", canned_config(tmp_path, models=[{"name": "m", "path": str(tmp_path / "gone")}]))
    _assert_one_line_error(cli("validate", str(cfg)), "models[0].path:")


def test_incompatible_run_directory(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", canned_config(tmp_path))
    run_dir = tmp_path / "runs" / "t"
    run_dir.mkdir(parents=True)
    (run_dir / "manifest.json").write_text(json.dumps({"store_format": 0}))
    (run_dir / "precious.txt").write_text("keep me")
    _assert_one_line_error(cli("run", str(cfg)), "incompatible ftsafety")
    _assert_one_line_error(cli("plan", str(cfg)), "incompatible ftsafety")
    assert (run_dir / "precious.txt").read_text() == "keep me"


def test_override_for_a_path_that_does_not_exist(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", canned_config(tmp_path))
    _assert_one_line_error(cli("validate", str(cfg), "--set", "attacks.3.params.lr=1"), "path 'attacks.3' does not exist")
    _assert_one_line_error(cli("validate", str(cfg), "--set", "training.lrr=1"), "training.lrr: unknown key")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere; covered by the read-only-file case")
def test_unwritable_output_directory_permissions(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    cfg = write_config(tmp_path / "c.yaml", canned_config(tmp_path, output_dir=str(ro / "runs")))
    _assert_one_line_error(cli("run", str(cfg)), "is not writable")


def test_unwritable_output_directory(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    cfg = write_config(tmp_path / "c.yaml", canned_config(tmp_path, output_dir=str(blocker / "runs")))
    _assert_one_line_error(cli("run", str(cfg)), "is not writable")


def test_config_file_that_does_not_exist(tmp_path):
    _assert_one_line_error(cli("validate", str(tmp_path / "missing.yaml")), "does not exist")


def test_several_problems_each_on_its_own_line(tmp_path):
    data = canned_config(tmp_path, seeds="x")
    data["training"] = {"lr": 0}
    cfg = write_config(tmp_path / "c.yaml", data)
    r = cli("validate", str(cfg))
    _assert_one_line_error(r, "training.lr: Input should be greater than 0")
    assert "seeds: Input should be a valid list" in r.stderr


def test_validate_ok_and_dry_run_plans_without_running(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", canned_config(tmp_path))
    r = cli("validate", str(cfg))
    assert r.returncode == 0 and "2 cell(s)" in r.stdout
    r = cli("run", str(cfg), "--dry-run")
    assert r.returncode == 0 and "pending" in r.stdout
    assert not (tmp_path / "runs" / "t" / "leaderboard.csv").exists()


def test_plan_of_yaml_written_by_hand(tmp_path):
    text = yaml.safe_dump(canned_config(tmp_path))
    (tmp_path / "c.yaml").write_text(text)
    r = cli("plan", str(tmp_path / "c.yaml"))
    assert r.returncode == 0, r.stderr
    assert "2 pending" in r.stdout
