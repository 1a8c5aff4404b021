"""Run store: content hashes, atomic writes, content-addressed artifacts with completion markers.

An artifact is a directory ``<cache>/<stage>/<key>/``. It is written into a temporary sibling
directory; its ``_COMPLETE`` marker is written last, and only then is the directory renamed into
place. A killed process therefore leaves at most a ``.tmp-*`` directory, never a half-written
artifact under its final name, and a rerun redoes exactly the unfinished stages. The marker
records every file's size and digest (and a .jsonl file's row count); an artifact whose files
no longer match it (truncated, edited, deleted) is not complete, so it is recomputed, never used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

COMPLETE = "_COMPLETE"
#: Files larger than this are fingerprinted by size + head/tail hash instead of full content,
#: so hashing a 16 GB checkpoint costs milliseconds, not minutes.
FULL_HASH_LIMIT = 64 * 2**20


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)


def content_key(obj: Any, length: int = 16) -> str:
    """A short, stable sha256 key of a JSON-serialisable object."""
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()[:length]


def file_digest(path: Path) -> str:
    """sha256 of a file (big files: of size, head and tail; see FULL_HASH_LIMIT)."""
    h = hashlib.sha256()
    size = path.stat().st_size
    with path.open("rb") as f:
        if size <= FULL_HASH_LIMIT:
            for block in iter(lambda: f.read(2**20), b""):
                h.update(block)
        else:
            h.update(str(size).encode())
            h.update(f.read(2**20))
            f.seek(-(2**20), os.SEEK_END)
            h.update(f.read(2**20))
    return h.hexdigest()


def dir_digest(path: Path) -> str:
    """Content hash of a model directory: every file's relative name and digest."""
    entries = []
    for p in sorted(path.rglob("*")):
        if p.is_file() and not p.name.startswith("."):
            entries.append((p.relative_to(path).as_posix(), file_digest(p)))
    return content_key(entries, length=64)


# ----------------------------------------------------------------------------- atomic writes


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file in the same directory and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates 0600; the file gets the mode open() would have given it.
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where Linux shows it (/proc/self/status).

    Elsewhere reading it means setting it: the two calls are serialised, and the value set
    meanwhile is the restrictive 077, so a file another thread creates in that instant gets
    fewer permissions, never more.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


# ----------------------------------------------------------------------------- integrity

#: ``ArtifactStore.problem`` of an artifact that was never completed (no marker).
NOT_WRITTEN = "not computed"


def _count_rows(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for line in f if line.strip())


def file_record(root: Path) -> dict[str, dict[str, Any]]:
    """What ``_COMPLETE`` records of an artifact's files: ``{relative path: {size, digest
    [, rows]}}`` (digest: ``file_digest``; rows: non-empty lines of a .jsonl file)."""
    out: dict[str, dict[str, Any]] = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != COMPLETE:
            entry: dict[str, Any] = {"size": p.stat().st_size, "digest": file_digest(p)}
            if p.suffix == ".jsonl":
                entry["rows"] = _count_rows(p)
            out[p.relative_to(root).as_posix()] = entry
    return out


#: Files at least this big are re-verified only when their size, mtime or inode changed; smaller
#: ones (generations, scores) on every check: cheap, and an edit within the file system's
#: timestamp granularity cannot hide behind an unchanged mtime.
MEMO_MIN_SIZE = 2**20


def verify_files(root: Path, record: dict[str, dict[str, Any]], verified: set[tuple[str, int, int, int]]) -> str | None:
    """None when every recorded file under ``root`` has its recorded size and digest; else the
    first difference, in words. ``verified`` memoises big files found intact (by path and stat)."""
    for rel, want in sorted(record.items()):
        path = root / rel
        try:
            st = path.stat()
        except OSError:
            return f"{rel} is missing"
        memo = (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
        if memo in verified:
            continue  # only big files are memoised: see MEMO_MIN_SIZE
        if st.st_size != want.get("size"):
            rows = f", {_count_rows(path)} of {want['rows']} rows" if "rows" in want else ""
            return f"{rel} has {st.st_size} bytes, {want.get('size')} recorded{rows}"
        if file_digest(path) != want.get("digest"):
            return f"{rel} was modified after it was written (its content hash differs)"
        if st.st_size >= MEMO_MIN_SIZE:
            verified.add(memo)
    return None


# ----------------------------------------------------------------------------- artifacts


class ArtifactStore:
    """Content-addressed stage outputs under one cache root, shared by cells and runs."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        # Big files already verified by this process, by (path, size, mtime, inode): a run asks
        # about the same artifact many times and must not rehash its weights every time.
        self._verified: set[tuple[str, int, int, int]] = set()
        self._warned: set[Path] = set()

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def is_complete(self, stage: str, key: str) -> bool:
        """Marked complete and intact: every file the marker records has its recorded size and
        digest. A damaged artifact is logged (once) and counts as not computed, so a run
        recomputes it."""
        problem = self.problem(stage, key)
        if problem is not None and problem != NOT_WRITTEN and self.path(stage, key) not in self._warned:
            self._warned.add(self.path(stage, key))
            log.warning("artifact %s is unusable (%s); a run recomputes it", self.path(stage, key), problem)
        return problem is None

    def problem(self, stage: str, key: str) -> str | None:
        """None when the artifact is complete and intact; else what is wrong with it
        (``NOT_WRITTEN`` when it has no completion marker at all)."""
        path = self.path(stage, key)
        marker = path / COMPLETE
        try:
            files = read_json(marker).get("files")
        except FileNotFoundError:
            return NOT_WRITTEN
        except (OSError, ValueError, AttributeError):
            return f"its {COMPLETE} marker is unreadable"
        if not isinstance(files, dict):
            return f"its {COMPLETE} marker has no file record (written by an older ftsafety)"
        return verify_files(path, files, self._verified)

    def metadata(self, stage: str, key: str) -> dict[str, Any]:
        return read_json(self.path(stage, key) / COMPLETE)

    @contextmanager
    def writing(self, stage: str, key: str, inputs: dict[str, Any]) -> Iterator[Path]:
        """Yield a temporary directory to fill; on success mark it complete and move it in place.

        ``inputs`` (what the key was computed from) is stored in the marker for provenance and
        for explaining why a later plan is stale.
        """
        final = self.path(stage, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".tmp-{key}-{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            yield tmp
            atomic_write_json(tmp / COMPLETE, {"stage": stage, "key": key, "inputs": inputs, "files": file_record(tmp)})
            if final.exists():
                # Another process, or a run that died after the rename, finished it first:
                # identical content by construction, keep the existing one (unless damaged).
                if self.problem(stage, key) is None:
                    shutil.rmtree(tmp)
                    return
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def sweep_temporaries(self) -> int:
        """Remove ``.tmp-*`` leftovers of killed processes (not of live ones sharing the cache).
        A store on a shared filesystem also holds other machines' temporaries (Ray workers):
        their processes cannot be asked, so those go only once a day old."""
        n = 0
        if self.root.exists():
            for stage_dir in self.root.iterdir():
                if stage_dir.is_dir():
                    for tmp in stage_dir.glob(".tmp-*"):
                        host, pid = _tmp_owner(tmp.name)
                        if host == _HOST and _pid_alive(pid):
                            continue
                        if host != _HOST and _age_seconds(tmp) < _FOREIGN_TMP_SECONDS:
                            continue
                        shutil.rmtree(tmp, ignore_errors=True)
                        n += 1
        return n


#: This machine's name in temporary directory names (no '-' or '.': the name is split on '-').
_HOST = re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname()) or "host"
#: Another machine's temporary directory is swept once it is this old.
_FOREIGN_TMP_SECONDS = 24 * 3600


def _tmp_owner(name: str) -> tuple[str, int | None]:
    """(host, pid) of ``.tmp-<key>-<host>-<pid>-<uuid>``; an older name without a host is this host's."""
    parts = name.split("-")
    try:
        pid = int(parts[-2])
    except (IndexError, ValueError):
        return _HOST, None
    return ("-".join(parts[2:-2]) or _HOST), pid


def _age_seconds(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


def _pid_alive(pid: int | None) -> bool:
    if pid is None or pid == os.getpid():
        return pid == os.getpid()
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
