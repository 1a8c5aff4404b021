"""The defense families of issue 16 end to end on the organism (configs/organism-defenses-ci.yaml):
harmful fine-tuning undefended and under LP-FT, LDIFS, Lisa, SafeLoRA, Antidote and Vaccine, real
TRL + PEFT training, one vLLM engine serving every adapter of a base model (the post-training
edits included; Vaccine's aligned model is a base model of its own), the oracle. What is asserted is that each defense did its work as specified (its own records);
which of them lowers the attack's success is measured, not asserted (docs/defenses.md)."""

from __future__ import annotations

import csv
import json

import pytest

from tests.harness.helpers import REPO, run_on_organism

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

CONFIG = REPO / "configs" / "organism-defenses-ci.yaml"
DEFENSES = ["none", "lp-ft", "ldifs", "lisa", "safelora", "antidote", "vaccine"]


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
    assert sum(1 for name in engines if name.startswith("organism@")) == 1
