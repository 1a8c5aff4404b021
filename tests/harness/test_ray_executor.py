"""The Ray executor (docs/distributed.md) on a real local Ray cluster, with the canned backend:
the same leaderboard as one process, a task's own error as one line, a killed driver resumed by a
rerun that recomputes only what did not finish, and the Slurm script's Ray start-up. The organism
grid under Ray (byte-identical leaderboards, a worker killed mid-training) is in
tests/e2e/test_organism_grid.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ftsafety.harness.config import ExecutorSpec
from ftsafety.harness.ray_executor import task_resources
from tests.harness.helpers import REPO, canned_config, cli, write_config

SBATCH = REPO / "docs" / "examples" / "slurm-ray.sbatch"


def test_default_requests_follow_the_cluster():
    spec = ExecutorSpec(name="ray")
    cpu_only = {"CPU": 8, "node_cpus": 4}
    assert task_resources("train", spec, cpu_only, 1) == {"num_cpus": 1, "num_gpus": 0}
    assert task_resources("generate", spec, cpu_only, 1) == {"num_cpus": 4, "num_gpus": 0}  # a CPU engine: a node
    gpus = {"CPU": 64, "GPU": 8, "node_cpus": 32}
    assert task_resources("generate", spec, gpus, 2) == {"num_cpus": 1, "num_gpus": 2}
    assert task_resources("train", spec, gpus, 2) == {"num_cpus": 1, "num_gpus": 1}
    assert task_resources("data", spec, gpus, 2) == {"num_cpus": 1, "num_gpus": 0}
    given = ExecutorSpec(name="ray", resources={"train": {"num_cpus": 4}})
    assert task_resources("train", given, cpu_only, 1) == {"num_cpus": 4, "num_gpus": 0}


def test_the_slurm_script_is_valid_bash():
    assert subprocess.run(["bash", "-n", str(SBATCH)], capture_output=True).returncode == 0


# ----------------------------------------------------------------------------- a real local Ray


def _grid(tmp_path: Path, **overrides) -> Path:
    grid = {"models": [{"name": "m1", "path": "org/one"}, {"name": "m2", "path": "org/two"}],
            "benchmarks": [{"name": "canned-prompts"}, {"name": "canned-prompts", "label": "more", "params": {"size": 9}}]}
    data = canned_config(tmp_path, **{**grid, **overrides})
    return write_config(tmp_path / "grid.yaml", data)


def _read(run_dir: Path, name: str) -> bytes:
    return (run_dir / name).read_bytes()


def _ran(stderr: str) -> dict[str, int]:
    """``ran generate: 8, score: 8`` (what ``ftsafety run`` says it executed) as a dict."""
    line = next(line for line in stderr.splitlines() if line.startswith("ran "))
    return {kind: int(n) for kind, n in (part.split(": ") for part in line.removeprefix("ran ").split(", "))}


@pytest.fixture(scope="module")
def ray_cli():
    """``cli`` with Ray installed (the executor's extra)."""
    pytest.importorskip("ray")
    return cli


@pytest.mark.ray
def test_ray_gives_the_in_process_leaderboards(tmp_path, ray_cli):
    local, remote = tmp_path / "local", tmp_path / "ray"
    local.mkdir(), remote.mkdir()
    one = cli("run", str(_grid(local)))
    assert one.returncode == 0, one.stderr[-2000:]
    r = ray_cli("run", str(_grid(remote)), "--executor", "ray", "--set", "executor.num_cpus=2")
    assert r.returncode == 0, r.stderr[-3000:]
    assert _ran(r.stderr) == _ran(one.stderr) == {"generate": 8, "score": 8}  # 2 models x 2 seeds x 2 benchmarks
    for name in ("leaderboard.csv", "leaderboard_summary.csv"):
        assert _read(remote / "runs" / "t", name) == _read(local / "runs" / "t", name), name
    # each task's log is in its cell's logs, written by the worker
    logs = list((remote / "runs" / "t" / "cells").glob("*/logs/generate__*.log"))
    assert logs


@pytest.mark.ray
def test_a_tasks_error_is_one_line_and_exit_code_2(tmp_path, ray_cli):
    # a benchmark that fails when a worker loads it (a user mistake found only at run time)
    grid = _grid(tmp_path, benchmarks=[{"name": "canned-prompts", "params": {"fail": "the prompt file is empty"}}])
    r = ray_cli("run", str(grid), "--executor", "ray", "--set", "executor.num_cpus=2")
    assert r.returncode == 2, r.stderr[-3000:]
    last = r.stderr.strip().splitlines()[-1]
    assert "the prompt file is empty" in last and "Traceback" not in r.stderr


@pytest.mark.ray
def test_a_killed_driver_is_resumed_by_a_rerun_that_does_only_the_rest(tmp_path, ray_cli):
    """SIGKILL the driver once some generations are stored; its Ray cluster is then taken down
    with it (a lost head node). The rerun plans from the store and runs exactly the tasks whose
    artifacts are not complete; the leaderboard equals an uninterrupted run's."""
    from ftsafety.harness.store import ArtifactStore

    grid = _grid(tmp_path, generation={"backend": "canned", "max_tokens": 8})
    env = {**os.environ, "FTSAFETY_PLUGINS": "tests.plugins.canned", "PYTHONPATH": str(REPO), "CANNED_DELAY": "0.4"}
    driver = subprocess.Popen([sys.executable, "-m", "ftsafety.harness", "run", str(grid), "--executor", "ray",
                               "--set", "executor.num_cpus=1"], env=env, cwd=REPO, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    store = ArtifactStore(tmp_path / "runs" / ".cache")
    generate = store.root / "generate"
    deadline = time.monotonic() + 240
    while not (generate.is_dir() and any((d / "_COMPLETE").exists() for d in generate.iterdir())):
        assert driver.poll() is None, driver.stderr.read().decode()[-3000:] if driver.stderr else ""
        assert time.monotonic() < deadline, "no generation finished in 4 minutes"
        time.sleep(0.2)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    time.sleep(1)
    try:  # the cluster it started goes with it (Ray ties it to the driver; this makes sure)
        os.killpg(driver.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    time.sleep(1)
    complete = {(d.parent.name, d.name) for d in store.root.glob("*/*") if (d / "_COMPLETE").exists()}
    total_generate = 8  # 2 models x 2 seeds x 2 benchmarks
    assert 0 < len([c for c in complete if c[0] == "generate"]) < total_generate

    r = ray_cli("run", str(grid), "--executor", "ray", "--set", "executor.num_cpus=2")
    assert r.returncode == 0, r.stderr[-3000:]
    assert _ran(r.stderr)["generate"] == total_generate - len([c for c in complete if c[0] == "generate"])
    clean = tmp_path / "clean"
    clean.mkdir()
    assert cli("run", str(_grid(clean))).returncode == 0
    assert _read(tmp_path / "runs" / "t", "leaderboard.csv") == _read(clean / "runs" / "t", "leaderboard.csv")


@pytest.mark.ray
def test_the_slurm_script_starts_ray_and_runs_the_grid(tmp_path, ray_cli):
    """The sbatch script on a one-node 'allocation': scontrol and srun are faked (srun runs its
    command here), Ray is real: the head starts, the script waits for it, the grid runs with
    --address auto, and Ray is stopped at the end."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text("#!/bin/bash\necho localhost\n")
    # srun [options] COMMAND...: drop the options (and -w's value), run the command here
    (bin_dir / "srun").write_text(
        "#!/bin/bash\nwhile [[ $# -gt 0 && $1 == -* ]]; do [[ $1 == -w ]] && shift; shift; done\n"
        "if [[ $1 == hostname ]]; then echo 127.0.0.1; exit 0; fi\nexec \"$@\"\n"
    )
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    venv_bin = Path(sys.executable).parent
    port = 6390 + os.getpid() % 50
    home = tmp_path / "home"  # Ray's auth token and its files stay out of the real home
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "PATH": f"{bin_dir}:{venv_bin}:{os.environ['PATH']}",
           "SLURM_JOB_NODELIST": "localhost",
           "SLURM_CPUS_PER_TASK": "2", "SLURM_GPUS_ON_NODE": "0", "RAY_PORT": str(port),
           "PYTHON": sys.executable, "FTSAFETY": str(venv_bin / "ftsafety"),
           "FTSAFETY_PLUGINS": "tests.plugins.canned", "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    left_running: list[int] = []
    try:
        r = subprocess.run(["bash", str(SBATCH), str(_grid(tmp_path))], env=env, cwd=REPO, capture_output=True,
                           text=True, timeout=420)
        time.sleep(3)
        left_running = _gcs_servers(port)
    finally:  # whatever happened, no Ray of this test outlives it
        subprocess.run([str(venv_bin / "ray"), "stop", "--force"], env=env, capture_output=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "ray head on localhost (127.0.0.1:" in r.stdout
    assert (tmp_path / "runs" / "t" / "leaderboard.csv").is_file()
    manifest = json.loads((tmp_path / "runs" / "t" / "manifest.json").read_text())
    assert manifest["config"]["executor"]["address"] == "auto"
    assert (home / ".ray" / "auth_token").is_file()  # the job's cluster used token authentication
    assert not left_running, "the script left its Ray cluster running"


def _gcs_servers(port: int) -> list[int]:
    """Pids of Ray GCS servers listening on ``port`` (a Ray head started with ``--port``)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(part == f"--gcs_server_port={port}".encode() for part in cmdline):
            found.append(int(proc.name))
    return found
