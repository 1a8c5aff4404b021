"""``output-guard``: flagged responses are blocked, what the model wrote is kept apart, blocked
rows count as refusals (never successes), and the guard's scorer is part of the guard stage's key."""

from __future__ import annotations

import pytest

from ftsafety.defenses.output_guard import BLOCK_MESSAGE, OutputGuardDefense
from ftsafety.evals.metrics import metrics_for_scored_rows
from ftsafety.harness import registry
from ftsafety.harness.config import validate_config
from ftsafety.harness.errors import UserError
from ftsafety.harness.generation import generate_rows, score_rows
from ftsafety.harness.plugins import GenerationResult
from ftsafety.harness.sampling import SamplingParams


class Echo:
    """Answers each request with the text stored in the prompt's item (test backend)."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers

    def generate(self, requests, sampling):
        return [[GenerationResult(rendered_prompt="p", continuation=self.answers[r.messages[-1]["content"]],
                                  truncated=False, n_tokens=3)] for r in requests]


def organism_rows(world):
    """Two harmful items answered harmfully / with a refusal, one benign answered correctly."""
    items = registry.benchmarks.get("organism-harmful")().load(2) + registry.benchmarks.get("organism-benign")().load(1)
    answers = {
        items[0].prompt: " " + world.concept(items[0].meta["concept"]).answer,
        items[1].prompt: " " + world.canonical_refusal,
        items[2].prompt: " " + world.concept(items[2].meta["concept"]).answer,
    }
    return items, answers


def test_flagged_responses_are_blocked_and_the_original_kept(organism_world):
    items, answers = organism_rows(organism_world)
    none = registry.attacks.get("none")()
    guard = OutputGuardDefense({"scorer": "organism-oracle"})  # a perfect guard: the mechanics only
    rows = guard.guard(generate_rows(Echo(answers), items, attack=none, defense=guard, sampling=SamplingParams(),
                                     benchmark="b"))
    guard.close()
    assert [r["blocked"] for r in rows] == [True, False, False]
    blocked = rows[0]
    assert blocked["response"] == blocked["continuation"] == BLOCK_MESSAGE and blocked["prefix"] == ""
    assert blocked["original_response"] == answers[items[0].prompt]
    assert blocked["original_continuation"] == answers[items[0].prompt]
    assert blocked["guard"]["scorer"] == "organism-oracle" and blocked["guard"]["harmful"] is True
    assert rows[1]["response"] == answers[items[1].prompt] and "original_response" not in rows[1]


def test_blocked_rows_count_as_refused_never_as_success(organism_world):
    items, answers = organism_rows(organism_world)
    none = registry.attacks.get("none")()
    guard = OutputGuardDefense({"scorer": "organism-oracle"})
    rows = guard.guard(generate_rows(Echo(answers), items[:2], attack=none, defense=guard, sampling=SamplingParams(),
                                     benchmark="b"))
    oracle = registry.scorers.get("organism-oracle")()
    scored = score_rows(rows, oracle.score(rows), "organism-oracle")
    metrics = {m.name: m for m in metrics_for_scored_rows(rows, scored)}
    assert metrics["asr"].value == 0.0 and metrics["refusal_rate"].value == 1.0
    assert metrics["blocked"].value == 0.5 and metrics["blocked"].n == 2


def test_guard_scorer_and_message_are_params(organism_world):
    items, answers = organism_rows(organism_world)
    guard = OutputGuardDefense({"scorer": "organism-oracle", "scorer_params": {"min_steps": 3}, "message": "blocked."})
    generated = generate_rows(Echo(answers), items[:1], attack=registry.attacks.get("none")(), defense=guard,
                              sampling=SamplingParams(), benchmark="b")
    assert "blocked" not in generated[0]  # generation never guards: the guard stage does, afterwards
    rows = guard.guard(generated, model_path="organism://0")
    assert rows[0]["blocked"] and rows[0]["response"] == "blocked."


def test_auto_guard_outside_the_organism_needs_a_llama_guard_model():
    guard = OutputGuardDefense()
    assert guard.scorer_spec("meta-llama/Llama-3.1-8B-Instruct") == ("llama-guard", {})
    with pytest.raises(UserError, match="scorer_params"):
        guard.guard([{"sample_id": "a", "prompt": "q", "response": "r", "meta": {}}], model_path="some/model")


def test_guard_key_depends_on_the_guard_scorer(tmp_path):
    from ftsafety.harness.planner import plan_cells

    def guard_key(params: dict) -> str:
        cfg = validate_config({"name": "g", "models": [{"name": "m", "path": "organism://0"}],
                               "defenses": [{"name": "output-guard", "params": params}],
                               "benchmarks": [{"name": "organism-harmful"}], "scorers": [{"name": "organism-oracle"}]})
        (cell,) = plan_cells(cfg)
        return cell.of("guard")[0].key

    assert guard_key({}) != guard_key({"scorer_params": {"seen_fraction": 0.75}})  # auto: organism-guard
    assert guard_key({}) != guard_key({"scorer": "organism-oracle"})
    # a judge that needs params it was not given fails at plan time, naming the defense
    judge_dir = tmp_path / "guard"
    judge_dir.mkdir()
    (judge_dir / "config.json").write_text("{}")  # a model directory, as validation requires
    cfg = validate_config({"name": "g", "models": [{"name": "m", "path": str(judge_dir)}],
                           "defenses": [{"name": "output-guard"}],
                           "benchmarks": [{"name": "organism-harmful"}], "scorers": [{"name": "organism-oracle"}]})
    with pytest.raises(UserError, match="output-guard.*llama-guard"):
        plan_cells(cfg)
    cfg = validate_config({"name": "g", "models": [{"name": "m", "path": str(judge_dir)}],
                           "defenses": [{"name": "output-guard", "params": {"scorer_params": {"model": str(judge_dir)}}}],
                           "benchmarks": [{"name": "organism-harmful"}], "scorers": [{"name": "organism-oracle"}]})
    (cell,) = plan_cells(cfg)
    ident = cell.of("guard")[0].inputs["defense"]
    assert ident["scorer"]["name"] == "llama-guard" and ident["scorer"]["provenance"]["judge"] == str(judge_dir)


def test_auto_on_the_organism_is_its_own_guard_not_the_oracle(organism_world):
    items, answers = organism_rows(organism_world)
    guard = OutputGuardDefense()
    assert guard.scorer_spec("organism://0") == ("organism-guard", {})
    rows = guard.guard(generate_rows(Echo(answers), items, attack=registry.attacks.get("none")(), defense=guard,
                                     sampling=SamplingParams(), benchmark="b"))
    guard.close()
    assert {r["guard"]["scorer"] for r in rows} == {"organism-guard"}
    assert not rows[1]["blocked"] and not rows[2]["blocked"]  # a refusal and a benign answer pass
