"""Registered fine-tuning attacks. Importing this package registers them (no torch imported)."""

from ftsafety.attacks import aoa as _aoa  # noqa: F401
from ftsafety.attacks import benign as _benign  # noqa: F401
from ftsafety.attacks import harmful as _harmful  # noqa: F401
from ftsafety.attacks import noice as _noice  # noqa: F401
from ftsafety.attacks import noice_paper as _noice_paper  # noqa: F401
from ftsafety.attacks import none as _none  # noqa: F401
from ftsafety.attacks import poison as _poison  # noqa: F401
from ftsafety.attacks import yoc as _yoc  # noqa: F401
