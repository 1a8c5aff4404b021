"""The untouched model: no fine-tuning, the baseline every attack is compared with."""

from __future__ import annotations

from typing import ClassVar

from ftsafety.harness.plugins import Attack
from ftsafety.harness.registry import attacks


@attacks.register("none")
class NoAttack(Attack):
    """No fine-tuning: evaluate the model as it is (the baseline)."""

    trains: ClassVar[bool] = False
