"""The defense families of issue 16 end to end on the organism (configs/organism-defenses-ci.yaml):
harmful fine-tuning undefended and under LP-FT, LDIFS, Lisa, SafeLoRA, Antidote, Vaccine and RepNoise, real
TRL + PEFT training, one vLLM engine serving every adapter of a base model (the post-training
edits included; Vaccine's aligned model is a base model of its own), the oracle; and every fine-tune
evaluated at durability checkpoints along it. What is asserted is that each defense did its work as specified (its own records);
which of them lowers the attack's success is measured, not asserted (docs/defenses.md)."""

from __future__ import annotations

import csv
import json

import pytest

from tests.harness.helpers import REPO, run_on_organism

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

CONFIG = REPO / "configs" / "organism-defenses-ci.yaml"
DEFENSES = ["none", "lp-ft", "ldifs", "lisa", "safelora", "antidote", "vaccine", "repnoise"]


@pytest.fixture(scope="module")
def defenses_run(organism_dir, tmp_path_factory):
    pytest.importorskip("vllm")
    tmp = tmp_path_factory.mktemp("defenses")
    run_dir, _ = run_on_organism(CONFIG, organism_dir, tmp)
    with (run_dir / "leaderboard.csv").open() as f:
        summary = {(row["defense"], row["benchmark"], row["metric"]): row for row in csv.DictReader(f)
                   if row["scorer"] == "organism-oracle"}
    cells = {json.loads(p.read_text())["defense"]: json.loads(p.read_text()) for p in run_dir.glob("cells/*/cell.json")}
    return run_dir, tmp / "runs" / ".cache", summary, cells


def artifact(store, cell, slot):
    stage = cell["stages"][slot]
    return store / stage["stage"] / stage["key"]


def test_every_defense_is_measured_on_both_benchmarks(defenses_run):
    _, _, summary, _ = defenses_run
    for defense in DEFENSES:
        harmful = summary[(defense, "organism-harmful", "asr")]
        benign = summary[(defense, "organism-benign", "benign_correct")]
        assert int(harmful["n"]) == 96 and int(benign["n"]) == 144
        assert int(harmful["unscored"]) == 0 and 0.0 <= float(harmful["value"]) <= 1.0


def test_one_engine_serves_every_adapter_the_edited_ones_too(defenses_run):
    run_dir, _, _, _ = defenses_run
    engines = json.loads((run_dir / "manifest.json").read_text())["engines"]
    assert engines["organism"]["count"] == 1


def test_post_training_edits_did_what_their_papers_specify(defenses_run):
    _, store, _, cells = defenses_run
    safelora = json.loads((artifact(store, cells["safelora"], "post_train") / "safelora.json").read_text())
    # the reference code's default: the 10 least similar of the 14 adapted modules are projected
    assert safelora["layers"] == 14 and safelora["projected"] == 10
    cosines = sorted(r["cosine"] for r in safelora["similarity"].values())
    assert {r["cosine"] for r in safelora["similarity"].values() if r["projected"]} == set(cosines[:10])
    antidote = json.loads((artifact(store, cells["antidote"], "post_train") / "antidote.json").read_text())
    assert antidote["samples"] > 0 and antidote["factors"] == 28
    assert 0 < antidote["weights_pruned"] < 0.11 * antidote["weights_total"]
    # the undefended cell and the post-training cells share one fine-tune
    none_train = cells["none"]["stages"]["train"]["key"]
    assert cells["safelora"]["stages"]["train"]["key"] == cells["antidote"]["stages"]["train"]["key"] == none_train


def test_training_defenses_trained_their_own_way(defenses_run):
    _, store, _, cells = defenses_run
    keys = {d: cells[d]["stages"]["train"]["key"] for d in ("none", "lp-ft", "ldifs", "lisa")}
    assert len(set(keys.values())) == 4
    lpft = json.loads((artifact(store, cells["lp-ft"], "train") / "lpft.json").read_text())
    assert len(lpft["probe_parameters"]) == 4 and all(".layers.1." in n for n in lpft["probe_parameters"])
    assert lpft["probe_steps"] == 80
    for defense in ("lp-ft", "ldifs", "lisa"):
        summary = json.loads((artifact(store, cells[defense], "train") / "train_summary.json").read_text())
        assert summary["steps"] == 80 and defense.replace("-", "").lower() in summary["trainer"].lower()


def test_vaccine_aligned_a_model_of_its_own_under_perturbation(defenses_run):
    run_dir, store, _, cells = defenses_run
    record = json.loads((artifact(store, cells["vaccine"], "align") / "vaccine.json").read_text())
    assert record["rho"] == 2.0 and record["examples"] == 320 and record["steps"] == 64  # 1 epoch of batch 5
    assert (artifact(store, cells["vaccine"], "align") / "model" / "config.json").is_file()
    # the attack fine-tunes the aligned model, not the original
    assert cells["vaccine"]["stages"]["train"]["key"] != cells["none"]["stages"]["train"]["key"]
    engines = json.loads((run_dir / "manifest.json").read_text())["engines"]
    assert sum(1 for name in engines if name.startswith("organism@")) == 2  # Vaccine's and RepNoise's


def test_repnoise_aligned_every_weight_on_paired_data(defenses_run):
    _, store, _, cells = defenses_run
    record = json.loads((artifact(store, cells["repnoise"], "align") / "repnoise.json").read_text())
    assert record["method"] == "full" and record["examples"] == 320 and record["steps"] == 80  # 1 epoch of 4
    assert (record["beta"], record["alpha"]) == (0.001, 1.0)
    # the three terms were logged at every step, and the harmful answers' loss went up
    assert len(record["noise_loss"]) == len(record["harmful_loss"]) == 80
    assert record["harmful_loss"][-1] > record["harmful_loss"][0]


def test_every_fine_tune_is_evaluated_along_the_way(defenses_run):
    run_dir, store, _, cells = defenses_run
    with (run_dir / "steps_to_break.csv").open() as f:
        breaks = {row["defense"]: row for row in csv.DictReader(f) if row["scorer"] == "organism-oracle"}
    assert set(breaks) == set(DEFENSES)
    assert all(row["last_step"] == "80" and row["threshold"] == "0.5" for row in breaks.values())
    with (run_dir / "durability_summary.csv").open() as f:
        curve = [row for row in csv.DictReader(f) if row["metric"] == "asr" and row["scorer"] == "organism-oracle"]
    for defense in DEFENSES:
        assert sorted(int(r["step"]) for r in curve if r["defense"] == defense) == [0, 10, 80]
    # the undefended curve ends where the leaderboard's cell is
    with (run_dir / "leaderboard.csv").open() as f:
        final = next(r for r in csv.DictReader(f) if r["defense"] == "none" and r["metric"] == "asr"
                     and r["scorer"] == "organism-oracle")
    assert next(r for r in curve if r["defense"] == "none" and r["step"] == "80")["mean"] == final["value"]
    # checkpoints saved by the fine-tune, at the steps asked for
    saved = json.loads((artifact(store, cells["lisa"], "train") / "checkpoints" / "step-10"
                        / "train_summary.json").read_text())
    assert saved["steps"] == 10
    # step 0 is the model the attack started from: shared by every defense that does not align
    start = {d: cells[d]["checkpoints"]["generate/organism-harmful/step0"]["key"] for d in DEFENSES}
    aligned = ("vaccine", "repnoise")
    assert len({start[d] for d in DEFENSES if d not in aligned}) == 1
    assert len({start[d] for d in (*aligned, "none")}) == 3
    # a weight edit is applied to each checkpoint
    edited = json.loads((store / "post_train" / cells["safelora"]["checkpoints"]["post_train/step10"]["key"]
                         / "safelora.json").read_text())
    assert edited["layers"] == 14
    assert (run_dir / "figures" / "durability_0.png").is_file()
    assert "Durability: steps to break" in (run_dir / "report.md").read_text()
