"""Registered defenses. Importing this package registers them (no torch imported)."""

from ftsafety.defenses import antidote as _antidote  # noqa: F401
from ftsafety.defenses import augment as _augment  # noqa: F401
from ftsafety.defenses import constrained as _constrained  # noqa: F401
from ftsafety.defenses import ldifs as _ldifs  # noqa: F401
from ftsafety.defenses import lisa as _lisa  # noqa: F401
from ftsafety.defenses import lpft as _lpft  # noqa: F401
from ftsafety.defenses import moderation as _moderation  # noqa: F401
from ftsafety.defenses import none as _none  # noqa: F401
from ftsafety.defenses import output_guard as _output_guard  # noqa: F401
from ftsafety.defenses import prefill as _prefill  # noqa: F401
from ftsafety.defenses import repnoise as _repnoise  # noqa: F401
from ftsafety.defenses import safelora as _safelora  # noqa: F401
from ftsafety.defenses import safety_sft as _safety_sft  # noqa: F401
from ftsafety.defenses import vaccine as _vaccine  # noqa: F401
