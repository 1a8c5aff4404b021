"""Config validation: every problem at once, with its path; overrides; plugin params."""

from __future__ import annotations

import pytest

from ftsafety.harness.config import (
    apply_overrides,
    display_label,
    json_schema,
    load_config,
    validate_config,
)
from ftsafety.harness.errors import ConfigError, UserError


def base() -> dict:
    return {
        "name": "x",
        "models": [{"name": "m", "path": "org/model"}],
        "benchmarks": [{"name": "organism-harmful"}],
        "scorers": [{"name": "organism-oracle"}],
    }


def test_minimal_config_validates_with_defaults():
    cfg = validate_config(base())
    assert [a.name for a in cfg.attacks] == ["none"]
    assert [d.name for d in cfg.defenses] == ["none"]
    assert cfg.generation.backend == "vllm" and cfg.generation.temperature == 0.0
    assert cfg.training.method == "lora" and cfg.seeds == [0]


def test_all_problems_reported_at_once_with_paths():
    data = base() | {
        "attacks": [{"name": "none"}, {"name": "noise"}],
        "training": {"lr": -1, "batch_size": "big"},
        "surprise": 1,
    }
    with pytest.raises(ConfigError) as err:
        validate_config(data)
    problems = err.value.problems
    text = "\n".join(problems)
    assert "training.lr: Input should be greater than 0" in text
    assert any(p.startswith("training.batch_size:") for p in problems)
    assert any(p.startswith("surprise: unknown key") for p in problems)
    # schema errors do not hide plugin names (nor params): all at once means all
    assert any("attacks[1].name: unknown attack 'noise'" in p for p in problems)


def test_plugin_params_validated_by_the_plugin_params_model():
    data = base() | {"generation": {"max_tokens": 0}, "benchmarks": [{"name": "organism-harmful", "params": {"nonsense": 3}}]}
    with pytest.raises(ConfigError) as err:
        validate_config(data)
    assert "generation.max_tokens: Input should be greater than 0" in err.value.problems
    data = base() | {"benchmarks": [{"name": "organism-harmful", "params": {"nonsense": 3}}]}
    with pytest.raises(ConfigError) as err:
        validate_config(data)
    assert any(p.startswith("benchmarks[0].params.nonsense: unknown key") for p in err.value.problems)


def test_unknown_name_suggests_the_closest():
    data = base() | {"defenses": [{"name": "nome"}]}
    with pytest.raises(ConfigError) as err:
        validate_config(data)
    assert "defenses[0].name: unknown defense 'nome' (did you mean 'none'?)" in err.value.problems


def test_lora_targets_must_be_servable_by_vllm():
    data = base() | {"training": {"lora": {"target_modules": ["q_proj", "lm_head"], "r": 7}}}
    with pytest.raises(ConfigError) as err:
        validate_config(data)
    text = "\n".join(err.value.problems)
    assert "training.lora.target_modules" in text and "lm_head" in text
    assert "training.lora.r" in text


def test_presets_fill_unset_fields_only():
    cfg = validate_config(base() | {"generation": {"preset": "q24", "max_tokens": 32}})
    g = cfg.generation
    assert (g.temperature, g.top_p, g.top_k, g.max_tokens) == (0.9, 0.6, 50, 32)
    g = validate_config(base() | {"generation": {"preset": "noice"}}).generation
    assert (g.temperature, g.top_p, g.max_tokens) == (1.0, 1.0, 600)


def test_overrides_set_nested_values_and_list_items():
    data = base() | {"attacks": [{"name": "none"}, {"name": "none", "label": "again"}]}
    apply_overrides(data, ["training.lr=1e-4", "attacks.1.params.k=5", "seeds=[1, 2]", "generation.backend=hf"])
    assert data["training"]["lr"] == 1e-4
    assert data["attacks"][1]["params"] == {"k": 5}
    assert data["seeds"] == [1, 2]
    assert data["generation"]["backend"] == "hf"


@pytest.mark.parametrize(
    "override, needle",
    [
        ("attacks.5.params.lr=1", "path 'attacks.5' does not exist"),
        ("name.first=1", "path 'name.first' does not exist"),
        ("novalue", "expected KEY.PATH=VALUE"),
    ],
)
def test_overrides_for_missing_paths_fail_clearly(override, needle):
    with pytest.raises(UserError, match=needle):
        apply_overrides(base() | {"attacks": [{"name": "none"}]}, [override])


def test_override_of_an_unknown_key_is_reported_with_its_path(tmp_path):
    path = tmp_path / "c.yaml"
    import yaml

    path.write_text(yaml.safe_dump(base()))
    with pytest.raises(ConfigError) as err:
        load_config(path, ["training.lrr=0.1"])
    assert any(p.startswith("training.lrr: unknown key") for p in err.value.problems)


def test_malformed_yaml_names_line_and_column(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nmodels: [a, b\nseeds: 1\n")
    with pytest.raises(UserError, match=r"malformed YAML at line \d+, column \d+"):
        load_config(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_missing_local_model_path_is_an_error(tmp_path):
    data = base() | {"models": [{"name": "m", "path": str(tmp_path / "no-such-model")}]}
    with pytest.raises(ConfigError) as err:
        validate_config(data)
    assert any(p.startswith("models[0].path:") and "does not exist" in p for p in err.value.problems)
    # hub ids and organism URIs are not local paths
    validate_config(base() | {"models": [{"name": "m", "path": "meta-llama/Meta-Llama-3-8B-Instruct"}]})
    validate_config(base() | {"models": [{"name": "m", "path": "organism://default"}]})


def test_duplicate_recipes_get_params_suffix_and_exact_duplicates_fail():
    data = base() | {"attacks": [{"name": "none"}, {"name": "none", "label": "none-again"}]}
    cfg = validate_config(data)
    assert [display_label(cfg, "attacks", i) for i in range(2)] == ["none", "none-again"]
    with pytest.raises(ConfigError, match="problem"):
        validate_config(base() | {"attacks": [{"name": "none"}, {"name": "none"}]})


def test_json_schema_has_documented_fields():
    schema = json_schema()
    assert schema["additionalProperties"] is False
    assert "models" in schema["properties"]
    assert schema["$defs"]["TrainingSpec"]["properties"]["lr"]["description"]


def test_an_attack_can_override_the_grid_training_settings():
    cfg = validate_config(base() | {
        "attacks": [{"name": "harmful", "training": {"lr": 1e-4, "lora": {"r": 32}}}, {"name": "yoc"}],
        "training": {"lr": 3e-3, "max_steps": 80, "lora": {"r": 16, "alpha": 32}},
    })
    harmful, yoc = cfg.attacks
    assert cfg.training_for(harmful).lr == 1e-4 and cfg.training_for(harmful).max_steps == 80
    assert (cfg.training_for(harmful).lora.r, cfg.training_for(harmful).lora.alpha) == (32, 32)
    assert cfg.training_for(yoc) == cfg.training and cfg.max_lora_rank() == 32
    with pytest.raises(ConfigError) as err:
        validate_config(base() | {"attacks": [{"name": "harmful", "training": {"lr": -1, "lora": {"r": 12}}}]})
    text = "\n".join(err.value.problems)
    assert "attacks[0].training.lr" in text and "attacks[0].training.lora.r" in text


def test_a_scorer_can_be_limited_to_some_benchmarks():
    from ftsafety.harness.planner import plan_cells

    grid = base() | {"benchmarks": [{"name": "organism-harmful"}, {"name": "organism-benign"}],
                     "scorers": [{"name": "organism-oracle"}, {"name": "organism-guard", "benchmarks": ["organism-harmful"]}]}
    (cell,) = plan_cells(validate_config(grid))
    assert sorted(s.slot for s in cell.of("score")) == [
        "score/organism-benign/organism-oracle", "score/organism-harmful/organism-guard", "score/organism-harmful/organism-oracle"]
    bad = grid | {"scorers": [{"name": "organism-oracle", "benchmarks": ["organism-harmfull"]}]}
    with pytest.raises(ConfigError) as err:
        validate_config(bad)
    assert any(p.startswith("scorers[0].benchmarks[0]: 'organism-harmfull' is not a benchmark") for p in err.value.problems)
    with pytest.raises(ConfigError):
        validate_config(grid | {"scorers": [{"name": "organism-oracle", "benchmarks": []}]})
