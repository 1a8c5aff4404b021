"""Registered defenses. Importing this package registers them (no torch imported)."""

from defenses import augment as _augment  # noqa: F401
from defenses import constrained as _constrained  # noqa: F401
from defenses import moderation as _moderation  # noqa: F401
from defenses import none as _none  # noqa: F401
from defenses import output_guard as _output_guard  # noqa: F401
from defenses import prefill as _prefill  # noqa: F401
