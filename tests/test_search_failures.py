"""Failing trials under the real Ray Tune (no stubs): they end FAILED with their reason, the study
goes on, and re-runs do not crash on them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState


optuna.logging.set_verbosity(optuna.logging.WARNING)
ASE = str(Path(sys.executable).with_name("ase-search"))

# Two intervals, so a handful of random suggestions covers schedules with and without block 4.
SPACE = """version: 1
arch: dit
depth: 4
intervals: 2
edges: uniform
blocks: {min: 1, max: null}
monotone: true
seeds: [full]
"""


@pytest.fixture(scope="module")
def broken_last_block(tmp_path_factory, tiny_dit) -> Path:
    """A 4-block DiT whose last block's weights are scaled by 1e30: any schedule that runs it
    overflows (its fine-tune diverges at the first step); schedules that exit before it are
    fine. The weights themselves are finite, so loading them succeeds."""
    return tiny_dit(tmp_path_factory.mktemp("failures"), SPACE, last_block_scale=1e30,
                    name="broken.pt")


def _run(root: Path, storage: Path, *extra: str) -> subprocess.CompletedProcess:
    args = [ASE, "run", "--arch", "dit", "--space", str(root / "space.yaml"),
            "--checkpoint", str(root / "broken.pt"), "--steps", "2", "--n-samples", "16",
            "--finetune", "per-trial", "--finetune-steps", "1", "--search-algorithm", "random",
            "--max-concurrent", "1", "--storage", str(storage), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "XDG_CACHE_HOME": str(storage.parent / "cache")}
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)


def _uses_last_block(trial: optuna.trial.FrozenTrial) -> bool:
    return trial.params["blocks_0"] == 4  # monotone: interval 0 (near data) has the most blocks


@pytest.mark.slow
def test_a_diverging_trial_fails_alone_and_the_search_finishes(broken_last_block,
                                                               tmp_path) -> None:
    db = tmp_path / "study.db"
    result = _run(broken_last_block, db, "--budget", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    study = optuna.load_study(study_name="dit", storage=f"sqlite:///{db}")
    trials = study.trials
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 2
    # The seed `full` runs the broken block: its fine-tune diverged and it says so.
    assert failed and all(_uses_last_block(t) for t in failed)
    assert [t.user_attrs.get("preset") for t in failed] == ["full"]
    assert all("diverged" in t.user_attrs["fail_reason"] for t in failed)
    assert all(t.values is None for t in failed)  # the NaNs the worker reported are not values
    assert not any(_uses_last_block(t) for t in complete)

    # A re-run to a larger budget goes on from there.
    result = _run(broken_last_block, db, "--budget", "3")
    assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(study_name="dit", storage=f"sqlite:///{db}")
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 3
    assert not study.get_trials(states=(TrialState.RUNNING,))


@pytest.mark.slow
def test_a_search_whose_every_trial_fails_stops_with_one_line(broken_last_block,
                                                              tmp_path) -> None:
    """The issue's probe: a learning rate of 1e30 makes every trial's fine-tune diverge. The
    budget cannot be reached, so the run stops with the reasons in one line (exit 2); every
    trial is FAILED with its reason, none left RUNNING, and a re-run stops the same way."""
    db = tmp_path / "study.db"
    for _ in range(2):
        result = _run(broken_last_block, db, "--budget", "1", "--finetune-lr", "1e30")
        assert result.returncode == 2, result.stderr[-3000:]
        assert "Traceback" not in result.stderr and "ValueError" not in result.stderr
        said = " ".join(result.stderr.split())  # rich wraps the line at the terminal width
        assert "error: the search stopped at 0/1 finished trials: trials keep failing" in said
        assert "diverged" in said, said
        study = optuna.load_study(study_name="dit", storage=f"sqlite:///{db}")
        assert not study.get_trials(states=(TrialState.RUNNING, TrialState.COMPLETE))
        failed = study.get_trials(states=(TrialState.FAIL,))
        assert failed and all("diverged" in t.user_attrs["fail_reason"] for t in failed)
