"""``ftsafety.harness.quiet.library_output_to``: what goes to the run's log, what stays on the terminal."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.harness.helpers import REPO

SCRIPT = """
import logging, os, subprocess, sys, warnings
from pathlib import Path
from ftsafety.harness.quiet import library_output_to

log = Path(sys.argv[1])
try:
    with library_output_to(log):
        os.write(1, b"fd1 noise\\n")
        os.write(2, b"fd2 noise (a C++ warning)\\n")
        print("a library's print")
        subprocess.run(["sh", "-c", "echo child out; echo child err >&2"], check=True)
        warnings.warn("a library deprecation", FutureWarning)
        logging.getLogger("transformers.modeling").warning("a library warning")
        logging.getLogger("ftsafety.harness.pipeline").warning("our warning")
        sys.stderr.write("progress bar\\n")
        raise RuntimeError("boom")
except RuntimeError as exc:
    print(f"error: {exc}", file=sys.stderr)
print("results table")
"""


def test_library_output_goes_to_the_log_and_ours_to_the_terminal(tmp_path):
    log = tmp_path / "logs" / "engine.log"
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(SCRIPT), str(log)], capture_output=True,
                          text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "results table\n"
    assert proc.stderr.splitlines() == ["our warning", "progress bar", "error: boom"]
    text = log.read_text()
    for noise in ("fd1 noise", "fd2 noise", "a library's print", "child out", "child err",
                  "FutureWarning: a library deprecation", "WARNING transformers.modeling: a library warning"):
        assert noise in text, noise
    assert "our warning" not in text and "progress bar" not in text
