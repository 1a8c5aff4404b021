"""Engine processes die with the process that started them, even when it is SIGKILLed.

vLLM runs its engine core (and, under it, its workers) in child processes. When the driver ends
normally, ``VLLMBackend.close()`` or its exit hook shuts them down; when the driver is SIGKILLed
or OOM-killed nothing runs in it, and the children live on holding the model (~2.5 GB of RAM on
the organism, GPU memory on a GPU). vLLM starts them with its own entry point, so none of our code
runs in them (no place for ``PR_SET_PDEATHSIG``): a tiny separate process guards them instead.

``guard_new_children()`` starts the watchdog once per driver (this file run as a script, standard
library only) and tells it the driver's new children (``watch PID START`` lines on its stdin). The
watchdog notices the driver's death by its parent pid changing or its stdin closing, whatever
killed the driver; it then sends SIGTERM to each watched process that still runs and to all its
descendants (vLLM's engine shuts its workers down on SIGTERM), SIGKILLs what is left after
``GRACE_S``, and exits. A process is identified by pid *and* start time (``/proc/PID/stat``), so
an engine that was closed normally, or a recycled pid, is never touched. Linux only (``/proc``);
elsewhere this is a no-op.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

#: Seconds the watched processes get to exit after SIGTERM before SIGKILL.
GRACE_S = 8.0
#: How often the watchdog checks that the driver is alive.
POLL_S = 0.5

_PROC = "/proc"
_lock = threading.Lock()
_watchdog: subprocess.Popen | None = None


def _stat_fields(pid: int | str) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (state first, then the parent
    pid, ...), or None when the process does not exist."""
    try:
        with open(f"{_PROC}/{pid}/stat", encoding="utf-8", errors="replace") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2 :].split()  # the command name may contain spaces


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of ``/proc/PID/stat``), None
    when it does not exist or is a zombie (exited, not yet reaped)."""
    fields = _stat_fields(pid)
    return None if fields is None or fields[0] == "Z" else fields[19]


def _parent_map() -> dict[int, int]:
    """pid -> parent pid of every process."""
    parents = {}
    for name in os.listdir(_PROC):
        if name.isdigit():
            fields = _stat_fields(name)
            try:
                parents[int(name)] = int(fields[1])  # type: ignore[index]
            except (TypeError, ValueError, IndexError):
                continue  # exited while we looked
    return parents


def child_pids(pid: int | None = None) -> set[int]:
    """Direct children of ``pid`` (default: this process), except multiprocessing's resource
    tracker: it exits by itself once the engine is gone, after cleaning up shared memory, which
    a kill would leak."""
    if not os.path.isdir(_PROC):
        return set()
    parent = os.getpid() if pid is None else pid
    children = set()
    for child, ppid in _parent_map().items():
        if ppid != parent:
            continue
        try:
            with open(f"{_PROC}/{child}/cmdline", "rb") as f:
                if b"resource_tracker" in f.read():
                    continue
        except OSError:
            continue
        children.add(child)
    return children


def _send(line: str) -> None:
    watchdog = _watchdog
    if watchdog is None or watchdog.stdin is None or watchdog.poll() is not None:
        return
    try:
        watchdog.stdin.write(line + "\n")
        watchdog.stdin.flush()
    except (OSError, ValueError):  # the watchdog is gone; nothing to guard with
        pass


def _ensure_started() -> None:
    global _watchdog
    with _lock:
        if _watchdog is not None and _watchdog.poll() is None:
            return
        # -I -S: no environment, no site-packages; the script needs the standard library only.
        # Its own session: a Ctrl-C to the driver's process group does not stop the watchdog.
        _watchdog = subprocess.Popen(
            [sys.executable, "-I", "-S", os.path.abspath(__file__), str(os.getpid())],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            text=True, start_new_session=True, close_fds=True,
        )


def _stop() -> None:
    """At normal exit: close the watchdog's stdin (it kills whatever is still watched) and reap it."""
    watchdog = _watchdog
    if watchdog is None:
        return
    try:
        if watchdog.stdin is not None:
            watchdog.stdin.close()
        watchdog.wait(timeout=GRACE_S + 5)
    except (OSError, subprocess.TimeoutExpired):
        pass


@contextmanager
def guard_new_children() -> Iterator[set[int]]:
    """Watch the child processes this process starts inside the block (the engine's); the set
    yielded is filled with their pids when the block ends."""
    started: set[int] = set()
    if not os.path.isdir(_PROC):
        yield started
        return
    first = _watchdog is None
    try:
        _ensure_started()
    except OSError as exc:  # no watchdog is no reason not to run: the engine is closed as usual
        logging.getLogger(__name__).warning("engine watchdog not started (%s): a killed run may leave engine processes", exc)
        yield started
        return
    if first:
        import atexit

        atexit.register(_stop)
    before = child_pids()
    try:
        yield started
    finally:
        started.update(child_pids() - before)
        for pid in sorted(started):
            start = _start_time(pid)
            if start is not None:
                _send(f"watch {pid} {start}")


# ----------------------------------------------------------------------------- the watchdog


def _tree(roots: dict[int, str]) -> dict[int, str]:
    """The still-running processes among ``roots`` (pid -> start time) and all their descendants."""
    alive = {pid: start for pid, start in roots.items() if _start_time(pid) == start}
    children: dict[int, list[int]] = {}
    for pid, ppid in _parent_map().items():
        children.setdefault(ppid, []).append(pid)
    todo, tree = list(alive), dict(alive)
    while todo:
        for child in children.get(todo.pop(), []):
            start = _start_time(child)
            if child not in tree and start is not None:
                tree[child] = start
                todo.append(child)
    return tree


def _signal_all(tree: dict[int, str], sig: int) -> None:
    for pid, start in tree.items():
        if _start_time(pid) == start:
            try:
                os.kill(pid, sig)
            except OSError:
                pass


def _kill_trees(watched: dict[int, str]) -> None:
    tree = _tree(watched)
    if not tree:
        return
    _signal_all(tree, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    while time.monotonic() < deadline and any(_start_time(p) == s for p, s in tree.items()):
        time.sleep(0.1)
    _signal_all(_tree(tree), signal.SIGKILL)  # and anything they started meanwhile


def _serve(driver: int) -> None:
    """Read ``watch`` lines until the driver is gone, then kill what is watched and still runs."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is for the driver: it cleans up itself
    watched: dict[int, str] = {}
    stdin = sys.stdin.buffer.raw if hasattr(sys.stdin.buffer, "raw") else sys.stdin.buffer
    fd = stdin.fileno()
    pending = b""
    while os.getppid() == driver:
        ready, _, _ = select.select([fd], [], [], POLL_S)
        if not ready:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:  # end of file: the driver closed the pipe, or died
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            parts = line.decode("ascii", "replace").split()
            if len(parts) == 3 and parts[0] == "watch":
                watched[int(parts[1])] = parts[2]
    _kill_trees(watched)


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
