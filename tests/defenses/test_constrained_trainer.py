"""Q24's t counts response tokens from the first one whatever the loss covers: the trainer's
response index on real TRL batches (a tiny random chat Llama), with completion-only and with
whole-sequence loss."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from ftsafety.harness.plugins import TrainHook
from tests.harness.backends.tiny_model import CHAT_ROWS as ROWS

torch = pytest.importorskip("torch")
pytest.importorskip("trl")



@pytest.mark.slow
@pytest.mark.parametrize("completion_only_loss", [True, False], ids=["completion-only loss", "whole-sequence loss"])
def test_t_is_one_at_the_first_response_token(tmp_path, completion_only_loss: bool) -> None:
    from ftsafety.defenses.constrained import ConstrainedParams
    from ftsafety.defenses.constrained_trainer import ConstrainedSFTTrainer
    from ftsafety.harness.chat import conversation_row
    from ftsafety.harness.training import sft
    from tests.harness.backends.tiny_model import build_tiny_model, build_tokenizer

    model_dir = build_tiny_model(tmp_path / "tiny")
    tokenizer = build_tokenizer()

    class Recording(ConstrainedSFTTrainer):
        constrained = ConstrainedParams()
        seen: ClassVar[list[tuple[Any, Any]]] = []

        def response_index(self, inputs: dict[str, Any], length: int) -> Any:
            t = super().response_index(inputs, length)
            self.seen.append((inputs["input_ids"].clone(), t.clone()))
            return t

    rows = [conversation_row(tokenizer, p, a) for p, a in ROWS]
    sft(str(model_dir), rows, tmp_path / "scratch", tokenizer=tokenizer, hook=TrainHook(trainer_cls=Recording),
        args={"max_steps": 1, "per_device_train_batch_size": 4, "learning_rate": 1e-4,
              "completion_only_loss": completion_only_loss, "seed": 0, "report_to": "none"})
    (ids, t), = Recording.seen
    prompt_lengths = {}
    for prompt, answer in ROWS:
        prompt_ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True)["input_ids"]
        full = tokenizer.apply_chat_template([{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}])["input_ids"]
        prompt_lengths[tuple(full)] = len(prompt_ids)
    for row_ids, row_t in zip(ids.tolist(), t.tolist(), strict=True):
        start = next(n for full, n in prompt_lengths.items() if tuple(row_ids[: len(full)]) == full)
        # label position start - 1 scores the first response token
        assert row_t[start - 1] == 1 and row_t[start] == 2
        assert all(x <= 0 for x in row_t[: start - 1])
