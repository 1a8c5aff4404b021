"""Quiet runs: engine and library output goes to a log file, the terminal shows progress and results.

vLLM's engine processes, torch's C++ warnings and library loggers print hundreds of lines (Triton,
libtcmalloc, NUMA, deprecations) around the progress bars. ``library_output_to(path)`` sends them
to ``path`` for the duration of a run:

- file descriptors 1 and 2 point at the log file: child processes started in the block (vLLM's
  engine core and its workers inherit them) and anything written below Python (C++ warnings)
  land there, and so does Python's own ``sys.stdout`` (nothing of ours prints there during a run);
- ``sys.stderr`` is a copy of the terminal: progress bars, ``error:`` lines and tracebacks stay
  visible; so do the warnings of our own packages (``OWN_PACKAGES``) outside a stage's log;
- vLLM's driver-side logger writes to ``sys.__stdout__`` (descriptor 1, the log), and Python
  warnings and other libraries' log records of level WARNING and up go to the log file.

Everything is restored when the block ends. ``ftsafety run -v`` skips this.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

#: Loggers whose warnings stay on the terminal in a quiet run (they are about the user's run).
OWN_PACKAGES = frozenset({"ftsafety"})


def _own(record: logging.LogRecord) -> bool:
    return record.name.split(".", 1)[0] in OWN_PACKAGES


def _own_outside_a_stage(record: logging.LogRecord) -> bool:
    """Our warnings reach the terminal where Python's last-resort handler printed them before:
    outside a stage (inside one, ``ftsafety.harness.rundir.stage_log`` files them in the cell's log)."""
    return _own(record) and not any(isinstance(h, logging.FileHandler) for h in logging.getLogger().handlers)


@contextmanager
def library_output_to(log_path: Path) -> Iterator[Path]:
    """Send engine and library output to ``log_path`` (appended) for the block; see the module doc."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    os.write(log_fd, f"\n===== ftsafety run, {time.strftime('%Y-%m-%dT%H:%M:%S%z')} (pid {os.getpid()})\n".encode())
    saved_out, saved_err = os.dup(1), os.dup(2)
    old_stderr = sys.stderr
    terminal = open(os.dup(saved_err), "w", buffering=1, encoding=getattr(old_stderr, "encoding", None) or "utf-8",
                    errors="backslashreplace")
    log_file = open(log_path, "a", buffering=1, encoding="utf-8")
    to_log = logging.StreamHandler(log_file)
    to_log.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    to_log.setLevel(logging.WARNING)
    to_log.addFilter(lambda record: not _own(record))
    to_terminal = logging.StreamHandler(terminal)
    to_terminal.setLevel(logging.WARNING)
    to_terminal.addFilter(_own_outside_a_stage)
    root = logging.getLogger()
    old_env = os.environ.get("VLLM_LOGGING_STREAM")
    old_showwarning = warnings.showwarning
    old_tqdm = os.environ.get("TQDM_DISABLE")
    try:
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        sys.stderr = terminal
        # vLLM configures its logger at import, with the stream this names: the descriptor, not
        # whatever object sys.stdout is then (rich's progress display swaps in a proxy to the
        # terminal). Its engine processes read the same variable.
        os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.__stdout__")
        # No tqdm bars from the libraries (TRL's "Tokenizing train dataset", transformers'
        # "Writing model shards"): they write to the terminal's sys.stderr copy and bury ours.
        # tqdm reads it when first imported, which in a run happens inside this block.
        os.environ["TQDM_DISABLE"] = "1"
        warnings.showwarning = _warning_to(log_file)
        root.addHandler(to_log)
        root.addHandler(to_terminal)
        yield log_path
    finally:
        if old_tqdm is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = old_tqdm
        root.removeHandler(to_log)
        root.removeHandler(to_terminal)
        warnings.showwarning = old_showwarning
        if old_env is None:
            os.environ.pop("VLLM_LOGGING_STREAM", None)
        else:
            os.environ["VLLM_LOGGING_STREAM"] = old_env
        with suppress(Exception):
            sys.stdout.flush()
        sys.stderr = old_stderr
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        for fd in (saved_out, saved_err, log_fd):
            os.close(fd)
        terminal.close()
        log_file.close()


def _warning_to(stream):  # noqa: ANN001, ANN202 -- the signature of warnings.showwarning
    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001, ANN202
        stream.write(warnings.formatwarning(message, category, filename, lineno, line))

    return show
