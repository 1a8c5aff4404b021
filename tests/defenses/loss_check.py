"""A trainer subclass that checks a defense's optimised loss against an independent reference,
step by step, through the trainer's own ``compute_loss`` (the code path training runs)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar


def loss_checking(trainer_cls: type, reference: Callable[[Any, Any, dict[str, Any]], float]) -> type:
    """A subclass of ``trainer_cls`` recording, per step, (the loss its ``compute_loss`` returns,
    ``reference(trainer, model, inputs)`` computed first on the same batch) in ``seen``, and each
    trainer it ran as in ``runs``. The reference runs before the trainer's loss so it sees the
    weights and random state the trainer sees."""

    class LossChecking(trainer_cls):  # type: ignore[misc, valid-type]
        seen: ClassVar[list[tuple[float, float]]] = []
        runs: ClassVar[list[Any]] = []

        def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            if not self.runs or self.runs[-1] is not self:
                self.runs.append(self)
            want = reference(self, model, inputs)
            got = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                       num_items_in_batch=num_items_in_batch)
            self.seen.append((float(got.detach()), want))
            return got

    return LossChecking
