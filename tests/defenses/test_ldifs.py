"""``ldifs``: the feature distance against a numpy reference, and on real TRL training of a tiny
chat Llama (LoRA and full): zero before the first update (the reference really is the model
before fine-tuning), and λ holds the features closer than no penalty does."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pytest

from ftsafety.harness.plugins import TrainHook
from tests.harness.backends.tiny_model import CHAT_ROWS as ROWS

torch = pytest.importorskip("torch")
pytest.importorskip("trl")



def reference_distance(hidden, reference, mask, normalize):
    out = []
    for f, r in zip(hidden, reference, strict=True):
        per_example = []
        for i in range(f.shape[0]):
            fi, ri = f[i][mask[i] == 1], r[i][mask[i] == 1]  # (valid tokens, width)
            if normalize:
                fi, ri = fi / np.linalg.norm(fi, axis=0), ri / np.linalg.norm(ri, axis=0)
            per_example.append(((fi - ri) ** 2).mean())
        out.append(np.mean(per_example))
    return np.mean(out)


@pytest.mark.parametrize("normalize", ["tokens", "none"])
def test_feature_distance_matches_a_numpy_reference(normalize):
    from ftsafety.defenses.ldifs_trainer import feature_distance

    rng = np.random.default_rng(0)
    hidden = [rng.normal(size=(2, 5, 8)) for _ in range(3)]  # 3 layers
    reference = [rng.normal(size=(2, 5, 8)) for _ in range(3)]
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    got = feature_distance([torch.tensor(h) for h in hidden], [torch.tensor(r) for r in reference],
                           torch.tensor(mask), normalize)
    assert float(got) == pytest.approx(reference_distance(hidden, reference, mask, normalize == "tokens"), rel=1e-12)


def test_features_are_the_chosen_decoder_layers_outputs(tmp_path):
    from transformers import AutoModelForCausalLM

    from ftsafety.defenses.ldifs_trainer import captured_features
    from tests.harness.backends.tiny_model import build_tiny_model

    model = AutoModelForCausalLM.from_pretrained(build_tiny_model(tmp_path / "tiny")).eval()
    ids = torch.tensor([[1, 5, 7, 9]])
    with torch.no_grad():
        states = model(input_ids=ids, output_hidden_states=True).hidden_states
        with captured_features(model, None) as every, captured_features(model, [-1]) as last:
            model(input_ids=ids)
    assert len(every) == 2 and len(last) == 1
    torch.testing.assert_close(every[0], states[1])  # layer 0's output is the second hidden state
    # the last hidden state is after the final norm; the feature is the layer's own output
    torch.testing.assert_close(model.model.norm(last[0]), states[-1])


def train_distances(tmp_path, lam: float, lora: bool, normalize: str = "none") -> list[float]:
    from ftsafety.defenses.ldifs import LdifsParams
    from ftsafety.defenses.ldifs_trainer import LdifsSFTTrainer
    from ftsafety.harness.chat import conversation_row
    from ftsafety.harness.config import LoraSpec
    from ftsafety.harness.training import lora_config, sft
    from tests.harness.backends.tiny_model import build_tiny_model, build_tokenizer

    model_dir = build_tiny_model(tmp_path / "tiny")
    tokenizer = build_tokenizer()

    class Recording(LdifsSFTTrainer):
        ldifs = LdifsParams(lam=lam, normalize=normalize)
        runs: ClassVar[list[Any]] = []

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.runs.append(self)

    rows = [conversation_row(tokenizer, p, a) for p, a in ROWS]
    sft(str(model_dir), rows, tmp_path / "scratch", tokenizer=tokenizer, hook=TrainHook(trainer_cls=Recording),
        peft_config=lora_config(LoraSpec(r=8, alpha=16)) if lora else None,
        args={"max_steps": 8, "per_device_train_batch_size": 4, "learning_rate": 1e-2 if lora else 1e-3,
              "seed": 0, "report_to": "none"})
    return Recording.runs[-1].distances


@pytest.mark.slow
@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
@pytest.mark.parametrize(("normalize", "lam"), [("tokens", 1e4), ("none", 100.0)])
def test_the_reference_is_the_model_before_fine_tuning_and_lambda_holds_features(tmp_path, lora, normalize, lam):
    free = train_distances(tmp_path / "free", 0.0, lora, normalize)
    held = train_distances(tmp_path / "held", lam, lora, normalize)
    assert free[0] == pytest.approx(0.0, abs=1e-10) and held[0] == pytest.approx(0.0, abs=1e-10)
    assert free[-1] > 0
    assert held[-1] < 0.5 * free[-1]
