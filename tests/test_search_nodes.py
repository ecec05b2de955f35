"""A search on two Ray nodes, for real: a head node, and a second node in its own mount namespace
where the driver's checkout and study folder do not exist; the study on a PostgreSQL server.

The second node gets ase_search through Ray (the driver ships its package), its trials' weights
in their context, and sends its sample grids back. Killed mid-trial, it takes one trial with it:
that trial is FAILED with its reason, the head node measures the rest, and no finished trial is
lost.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

import ase_search
from ase_search.storage import resolve_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)
BIN = Path(sys.executable).parent
_spec = importlib.util.spec_from_file_location("_postgres", Path(__file__).with_name(
    "_postgres.py"))
_postgres = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_postgres)

CHECKOUT = Path(ase_search.__file__).resolve().parents[1]
VENV = Path(sys.prefix)
# Ray notices a dead node from missed health checks: every 0.5 s, dead after 3 (default ~15 s).
# `ray start` makes a cluster with token authentication (Ray >= 2.52); every process that joins
# it says so and reads the token from ~/.ray/auth_token.
RAY_ENV = {"RAY_AUTH_MODE": "token", "RAY_health_check_period_ms": "500", "RAY_health_check_failure_threshold": "3",
           "RAY_health_check_initial_delay_ms": "0", "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}


def _why_not() -> str | None:
    if sys.platform != "linux" or shutil.which("unshare") is None:
        return "needs Linux with unshare(1)"
    if os.geteuid() != 0:
        return "a private mount namespace needs root here"
    if subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode:
        return "unshare --mount is not permitted (a container without CAP_SYS_ADMIN)"
    return _postgres.why_unavailable()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid``, read from /proc (parent links)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _stop(proc: subprocess.Popen) -> None:
    """Kill a node at once: its ``ray start --block`` and every process below it (Ray's workers
    leave the process group, and a worker left alive would finish its trial)."""
    for pid in [proc.pid, *_descendants(proc.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait(timeout=30)


def _hidden_node(address: str, hide: list[Path], log: Path, temp: Path) -> subprocess.Popen:
    """A Ray node in a private mount namespace in which each of ``hide`` is an empty tmpfs (the
    virtual environment, when it lies inside one of them, is mounted back at its path)."""
    lines = ["set -e", "keep=$(mktemp -d)", f"mount --bind {VENV} $keep"]
    for folder in hide:
        lines.append(f"mount -t tmpfs tmpfs {folder}")
        if VENV.is_relative_to(folder):
            lines += [f"mkdir -p {VENV}", f"mount --bind $keep {VENV}"]
    lines += [f"test ! -e {CHECKOUT / 'ase_search'}",  # hidden, or the test proves nothing
              f"exec {BIN / 'ray'} start --address={address} --num-cpus=1 --block "
              f"--disable-usage-stats --node-ip-address=127.0.0.1 --temp-dir={temp}"]
    return subprocess.Popen(["unshare", "--mount", "--propagation", "private", "bash", "-c",
                             "\n".join(lines)], cwd="/", env={**os.environ, **RAY_ENV},
                            stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _nodes(address: str) -> int:
    out = subprocess.run([str(BIN / "ray"), "status", f"--address={address}"],
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, **RAY_ENV}).stdout
    return sum(1 for line in out.splitlines() if line.strip().startswith("1 node_"))


@pytest.mark.slow
def test_a_search_on_two_nodes_survives_losing_one(tiny, tmp_path) -> None:
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    study_dir = tmp_path / "study"
    study_dir.mkdir()
    shutil.copy(tiny / "tiny.pt", study_dir / "tiny.pt")
    shutil.copy(tiny / "space.yaml", study_dir / "space.yaml")
    port = _free_port()
    address = f"127.0.0.1:{port}"
    head = second = driver = None
    # The cluster's own Ray folder (short: it holds unix sockets), so it leaves no address in
    # /tmp/ray that another Ray on this machine would find.
    temp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    with _postgres.postgres_server() as url:
        try:
            head = subprocess.Popen(
                [str(BIN / "ray"), "start", "--head", f"--port={port}", "--num-cpus=1",
                 "--node-ip-address=127.0.0.1", f"--temp-dir={temp}",
                 "--include-dashboard=false", "--disable-usage-stats", "--block"],
                cwd=tmp_path, env={**os.environ, **RAY_ENV}, start_new_session=True,
                stdout=(tmp_path / "head.log").open("w"), stderr=subprocess.STDOUT)
            deadline = time.time() + 120
            while _nodes(address) < 1:
                assert time.time() < deadline, (tmp_path / "head.log").read_text()[-3000:]
                assert head.poll() is None, (tmp_path / "head.log").read_text()[-3000:]
                time.sleep(1.0)
            second = _hidden_node(address, [CHECKOUT, study_dir], tmp_path / "node.log", temp)
            while _nodes(address) < 2:
                assert time.time() < deadline, (tmp_path / "node.log").read_text()[-3000:]
                assert second.poll() is None, (tmp_path / "node.log").read_text()[-3000:]
                time.sleep(1.0)

            # A driver that does not say the cluster's authentication mode: one line, at once.
            refused = subprocess.run(
                [str(BIN / "ase-search"), "run", "--arch", "dit", "--budget", "1", "--space",
                 "space.yaml", "--checkpoint", "tiny.pt", "--finetune", "none", "--storage",
                 "refused.db", "--ray-address", address], cwd=study_dir, capture_output=True,
                text=True, timeout=300,
                env={k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"})
            assert refused.returncode == 2, refused.stderr[-3000:]
            assert "RAY_AUTH_MODE=token" in refused.stderr and "Traceback" not in refused.stderr
            assert not (study_dir / "refused.db").exists()  # refused before any work

            budget = 10
            driver = subprocess.Popen(
                [str(BIN / "ase-search"), "run", "--arch", "dit", "--budget", str(budget),
                 "--space", "space.yaml", "--checkpoint", "tiny.pt", "--steps", "40",
                 "--n-samples", "320", "--finetune", "none", "--search-algorithm", "random",
                 "--max-concurrent", "2", "--storage", url, "--ray-address", address],
                cwd=study_dir, env={**os.environ, **RAY_ENV},
                stdout=(tmp_path / "driver.log").open("w"), stderr=subprocess.STDOUT)
            # Kill the second node once it has measured a trial and is measuring another.
            handle = resolve_storage(url)
            before: dict[int, list[float]] = {}
            deadline = time.time() + 300
            while driver.poll() is None and time.time() < deadline:
                try:
                    study = optuna.load_study(study_name="dit", storage=handle)
                except KeyError:  # not created yet
                    time.sleep(0.5)
                    continue
                done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                if len({t.user_attrs.get("node") for t in done}) == 2 and len(running) == 2:
                    time.sleep(0.5)  # both trials placed, one on each node, and under way
                    killed = time.time()
                    _stop(second)
                    before = {t.number: t.values for t in study.get_trials(
                        deepcopy=False, states=(TrialState.COMPLETE,))}
                    break
                time.sleep(0.2)
            assert before, "the second node never measured a trial while another ran: " + \
                (tmp_path / "driver.log").read_text()[-3000:]
            code = driver.wait(timeout=300)
        finally:
            for proc in (driver, second, head):
                if proc is not None:
                    _stop(proc)
            shutil.rmtree(temp, ignore_errors=True)
        said = (tmp_path / "driver.log").read_text()
        assert code == 0, said[-3000:]
        assert "Traceback" not in said, said[-3000:]

        study = optuna.load_study(study_name="dit", storage=resolve_storage(url))
        trials = study.trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    story = "\n".join(f"{t.number} {t.state.name} {t.user_attrs.get('node', '')[:8]} "
                      f"{t.datetime_start.timestamp() - killed:+.2f} "
                      f"{t.datetime_complete.timestamp() - killed:+.2f}" for t in trials
                      if t.datetime_start and t.datetime_complete) + "\n" + said[-2000:]
    assert not [t for t in trials if t.state not in (TrialState.COMPLETE, TrialState.FAIL)]
    assert len(complete) >= budget
    # Nothing finished was lost: every trial done before the kill is still done, unchanged.
    assert all(trials[n].state == TrialState.COMPLETE and trials[n].values == v
               for n, v in before.items())
    # The trial the node took with it failed with its reason, and was not counted.
    assert len(failed) == 1, story
    assert "crashed" in failed[0].user_attrs["fail_reason"]
    # Measured on both nodes, the grids saved by the driver beside the study.
    measured = [t for t in complete if "duplicate_of" not in t.user_attrs]
    assert len({t.user_attrs["node"] for t in measured}) == 2
    grids = study_dir / "studies" / "dit-grids"
    assert all((grids.parent / t.user_attrs["grid"]).is_file() for t in measured), \
        [t.user_attrs.get("grid") for t in measured]


def test_an_unreachable_cluster_is_one_line_before_any_work(tiny, tmp_path) -> None:
    """Ray retries a dead address for minutes; the driver says so at once, before it profiles or
    fine-tunes anything, and leaves no study behind (as it does for a cluster that asks for a
    token, in the test above)."""
    address = f"127.0.0.1:{_free_port()}"  # nothing listens there
    out = subprocess.run([str(BIN / "ase-search"), "run", "--arch", "dit", "--budget", "1",
                          "--space", str(tiny / "space.yaml"), "--checkpoint",
                          str(tiny / "tiny.pt"), "--storage", str(tmp_path / "s.db"),
                          "--ray-address", address], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 2, out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: cannot reach a Ray cluster at {address} (Connection refused); "
                      f"start one there with `ray start --head --port {address.split(':')[1]}`, "
                      f"or check the address"], out.stderr
    assert not (tmp_path / "s.db").exists()
