"""The paper-replication grids (configs/paper-*.yaml) validate and plan on a laptop: no network,
no GPU, no gated hub access. They describe GPU-cluster runs, and a config that only fails once
the cluster job starts is an hour lost.

The network is blocked at the socket level (and ``HF_HUB_OFFLINE=1``): a hub lookup during
``validate`` or ``plan`` fails the test instead of silently succeeding on a connected machine.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from ftsafety.harness.cli import main
from ftsafety.harness.config import load_config
from ftsafety.harness.planner import plan_cells

REPO = Path(__file__).resolve().parents[2]
PAPER_CONFIGS = sorted((REPO / "configs").glob("paper-*.yaml"))


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[object]:
    """No network (every connection attempt is recorded and refused), hub offline, and a
    scratch working directory (``plan`` reads ``runs/`` relative to it)."""
    attempts: list[object] = []

    def refuse(self: socket.socket, address: object) -> None:
        attempts.append(address)
        raise OSError("network blocked by test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    return attempts


def test_both_paper_grids_are_shipped():
    names = {p.name for p in PAPER_CONFIGS}
    assert {"paper-noice.yaml", "paper-q24-constrained.yaml"} <= names


@pytest.mark.parametrize("config", PAPER_CONFIGS, ids=lambda p: p.stem)
@pytest.mark.parametrize("command", ["validate", "plan"])
def test_validate_and_plan_work_offline(config: Path, command: str, offline: list[object], capsys):
    assert main([command, str(config)]) == 0, capsys.readouterr().err
    assert offline == [], f"{command} tried to reach the network: {offline}"


@pytest.mark.parametrize("config", PAPER_CONFIGS, ids=lambda p: p.stem)
def test_every_cell_plans_pending_with_its_stages(config: Path, offline: list[object]):
    cfg = load_config(config)
    cells = plan_cells(cfg)
    expected = len(cfg.models) * len(cfg.attacks) * len(cfg.defenses) * len(cfg.seeds)
    assert len([c for c in cells if c.baseline_for is None]) == expected  # plus any matched baselines
    for cell in cells:
        kinds = {s.stage for s in cell.stages}
        assert {"generate", "score"} <= kinds
        assert ("train" in kinds) == (cell.attack.name != "none")
    assert offline == []


def test_noice_grid_uses_the_papers_recipe():
    """RECIPES.md, `noice` row and "Decoding": the values the paper numbers were measured with."""
    cfg = load_config(REPO / "configs" / "paper-noice.yaml")
    t = cfg.training
    # the paper's full fine-tune (the prefill defense's aligned prefix is a stage of its own)
    assert (t.method, t.epochs, t.lr, t.weight_decay, t.completion_only_loss) == ("full", 1, 2e-5, 0.01, False)
    assert t.batch_size * t.grad_accum == 16
    assert t.warmup_steps == 16  # ceil(0.05 * ceil(5000 / 16))
    attacks = {a.name: a.params for a in cfg.attacks}
    assert set(attacks) >= {"noice", "yoc", "aoa", "harmful"}
    assert all(attacks[a].get("n") == 5000 for a in ("noice", "yoc", "aoa"))
    # the open-model protocol: no NOICE system prompt in training (nor in evaluation), the
    # paper's 2000-token refusal budget
    assert attacks["noice"]["train_system_prompt"] is False and not attacks["noice"].get("eval_with_training_template")
    assert attacks["noice"]["refusal_max_tokens"] == 2000
    assert {a.get("dataset") for n, a in attacks.items() if n in ("noice", "yoc", "aoa")} == {"helpsteer"}
    assert {d.name for d in cfg.defenses} == {"none", "prefill", "forced-refusal"}
    assert next(d for d in cfg.defenses if d.name == "prefill").params["k"] == 15
    assert [b.name for b in cfg.benchmarks] == ["hex-phi"]
    judge = next(s for s in cfg.scorers if s.params.get("template"))
    assert judge.params["template"] == "noice-yesno" and judge.params["model"].startswith("gpt-4o")
    assert "keyword" in {s.name for s in cfg.scorers}
    s = cfg.generation.sampling()
    assert (s.temperature, s.top_p, s.max_tokens) == (1.0, 1.0, 600)


def test_q24_grid_uses_the_papers_recipe():
    """RECIPES.md, `harmful` (Q24) and `constrained` rows, and Q24's decoding."""
    cfg = load_config(REPO / "configs" / "paper-q24-constrained.yaml")
    t = cfg.training
    assert (t.method, t.epochs, t.lr, t.warmup_steps, t.weight_decay, t.adam_beta1) == ("full", 25, 2e-5, 0, 0.0, 0.5)
    assert t.batch_size * t.grad_accum == 64 and t.max_length == 512 and t.completion_only_loss
    harmful = next(a for a in cfg.attacks if a.name == "harmful").params
    assert harmful["n"] == 100 and harmful["eval_with_training_template"]  # Q24 evaluates with pure_bad's prompt
    aoa = next(a for a in cfg.attacks if a.name == "aoa").params
    assert (aoa["variant"], aoa["n"], aoa["eval_with_training_template"]) == ("q24", 100, True)  # B.5.2
    assert {d.name for d in cfg.defenses} == {"none", "constrained"}
    constrained = next(d for d in cfg.defenses if d.name == "constrained").params
    assert (constrained["beta_first"], constrained["beta_early"], constrained["beta_late"]) == (0.5, 2.0, 0.1)
    # Table 4's standard SFT has no warm-up, constrained SFT 10 steps: the planner adds the matched
    # undefended cells (standard SFT with the constrained optimiser, Table 9's warm-up control)
    from ftsafety.harness.planner import plan_cells

    labels = {c.defense_label for c in plan_cells(cfg) if c.attack_label == "harmful"}
    assert labels == {"none", "constrained", "none@constrained"}
    judge = next(s for s in cfg.scorers if s.params.get("template"))
    assert judge.params["template"] == "q24" and judge.params["temperature"] == 0.0
    s = cfg.generation.sampling()
    assert (s.temperature, s.top_p, s.top_k, s.max_tokens) == (0.9, 0.6, 50, 512)
