"""``organism://`` model paths: built on first use, cached by content hash, reused afterwards.

- ``organism://default`` = ``organism://0`` = the aligned model of world seed 0;
- ``organism://<seed>`` (or ``.../aligned``) = the aligned model, ``organism://<seed>/base`` = the
  pre-trained one;
- any other path is returned unchanged.

The cache key hashes the builder's source code (every module of this package), the seed, the
build config and the torch version: editing the world or the training loop rebuilds, nothing
else does. Builds take a file lock (two processes never build the same key at once) and go
into a temporary directory renamed into place, so a killed build leaves nothing half-written.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

from ftsafety.harness.errors import UserError

SCHEME = "organism://"
_VARIANTS = ("aligned", "base")


def cache_root() -> Path:
    """``$FTSAFETY_CACHE`` if set, else ``~/.cache/ftsafety``."""
    env = os.environ.get("FTSAFETY_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ftsafety"


def parse(uri: str) -> tuple[int, str]:
    """``organism://<seed|default>[/base|/aligned]`` -> (seed, variant)."""
    rest = uri[len(SCHEME) :].strip("/")
    parts = rest.split("/") if rest else ["default"]
    seed_s, variant = parts[0], parts[1] if len(parts) > 1 else "aligned"
    if len(parts) > 2 or variant not in _VARIANTS:
        raise UserError(f"bad organism path '{uri}': use organism://<seed|default>[/base|/aligned]")
    if seed_s == "default":
        return 0, variant
    try:
        seed = int(seed_s)
    except ValueError:
        raise UserError(f"bad organism path '{uri}': the seed must be an integer or 'default'") from None
    if seed < 0:
        raise UserError(f"bad organism path '{uri}': the seed must be >= 0")
    return seed, variant


#: The modules whose code decides an organism's weights (the rest of the package resolves,
#: evaluates and scores organisms; editing those must not rebuild them).
BUILD_SOURCES = ("build.py", "tokenizer.py", "world.py")


def build_key(seed: int, config: object | None = None) -> str:
    """Content hash of (builder source, seed, build config, torch version, CPU kernel settings)."""
    from ftsafety.harness.organism.build import BuildConfig

    cfg = config or BuildConfig()
    h = hashlib.sha256()
    pkg = Path(__file__).parent
    for name in BUILD_SOURCES:
        h.update(name.encode())
        # The import name the package installs under (``ftsafety.``) is not part of what the
        # builder computes: renaming it must not rebuild every organism and every run.
        h.update(re.sub(rb"\bftsafety\.", b"", (pkg / name).read_bytes()))
    try:  # the version, without importing torch: `ftsafety plan` must stay light
        from importlib.metadata import version

        torch_version = version("torch")
    except Exception:  # pragma: no cover - torch is a dependency
        torch_version = "none"
    from ftsafety.harness.determinism import kernel_signature

    # Other CPU kernels give other bits (harness/determinism.py): they are part of the key.
    meta = {"seed": seed, "config": asdict(cfg), "torch": torch_version,  # type: ignore[call-overload]
            "cpu_kernels": kernel_signature()}
    h.update(json.dumps(meta, sort_keys=True).encode())
    return h.hexdigest()[:16]


def ensure_built(seed: int = 0, config: object | None = None, root: Path | None = None) -> Path:
    """The cached build directory for ``seed`` (with ``base/`` and ``aligned/``), building it
    on first use."""
    from filelock import FileLock

    from ftsafety.harness.organism.build import build

    root = root or cache_root()
    key = build_key(seed, config)
    final = root / "organism" / f"seed{seed}-{key}"
    if (final / "organism.json").exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final) + ".lock"):
        if (final / "organism.json").exists():  # another process built it while we waited
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
        try:
            build(tmp, seed, config)  # type: ignore[arg-type]
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def is_organism(path: str) -> bool:
    return path.startswith(SCHEME)


def build_meta(model_path: str) -> Path | None:
    """``organism.json`` of a local organism build the model directory belongs to
    (``DIR/aligned`` or ``DIR/base`` beside ``DIR/organism.json``; an aligned copy keeps one
    beside its ``model/``), or None for any other model."""
    try:
        meta = Path(model_path).expanduser().parent / "organism.json"
        return meta if meta.is_file() else None
    except OSError:
        return None


def resolve_model_path(path: str) -> str:
    """A local model directory for ``path``; ``organism://`` paths are built on first use."""
    if not is_organism(path):
        return path
    seed, variant = parse(path)
    return str(ensure_built(seed) / variant)
