"""``python -m ftsafety.harness.stages TASK.json STORE_DIR``: run one stage task in this process
(what a subprocess or remote executor does); prints the task's outcome as JSON."""

from __future__ import annotations

import sys
from pathlib import Path

from ftsafety.harness.stages import run_task
from ftsafety.harness.store import ArtifactStore
from ftsafety.harness.tasks import StageTask


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m ftsafety.harness.stages TASK.json STORE_DIR", file=sys.stderr)
        return 2
    task = StageTask.model_validate_json(Path(argv[0]).read_text(encoding="utf-8"))
    outcome = run_task(task, ArtifactStore(Path(argv[1])))
    print(outcome.model_dump_json())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
