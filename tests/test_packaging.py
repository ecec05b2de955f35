"""A non-editable install works on its own: wheel -> fresh venv -> `ase-search run` in an empty dir.

The wheel is built without build isolation (no internet needed) from a copy of the package's build
inputs, so the build leaves nothing in the checkout. The fresh venv gets the wheel alone; the
dependencies already installed in the running venv are made visible by a ``.pth`` path line, which
adds that site-packages directory to ``sys.path`` without running the ``.pth`` hooks inside it, so
the checkout's editable ``ase_search`` stays out of reach.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD_INPUTS = ("pyproject.toml", "README.md", "ase_search", "search_spaces")


def _build_wheel(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    for name in BUILD_INPUTS:
        if (ROOT / name).is_dir():  # symlinks stay links: ase_search/search_spaces is one in git
            shutil.copytree(ROOT / name, src / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(ROOT / name, src / name)
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--no-index", "-q", "-w", str(dist), str(src)], check=True)
    (wheel,) = dist.glob("ase_search-*.whl")
    return wheel


def _fresh_venv(tmp_path: Path, wheel: Path) -> Path:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)  # the running venv's pip installs into it (--python)
    python = env_dir / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                    "--no-index", "-q", str(wheel)], check=True)
    site = Path(subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True, capture_output=True, text=True).stdout.strip())
    (site / "_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return env_dir


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_runs_a_search_from_an_empty_directory(tmp_path: Path) -> None:
    import optuna
    import yaml

    from ase_search.space import load_space

    wheel = _build_wheel(tmp_path)
    env_dir = _fresh_venv(tmp_path, wheel)
    workdir = tmp_path / "empty"
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")

    # The package, its default space and its weights resolve inside the fresh venv, not the checkout.
    probe = subprocess.run(
        [str(env_dir / "bin" / "python"), "-c",
         "import json, ase_search; from ase_search.testbed import TESTBEDS; t = TESTBEDS['dit']; "
         "print(json.dumps([ase_search.__file__, str(t.space), str(t.path), t.space.is_symlink()]))"],
        cwd=workdir, env=env, check=True, capture_output=True, text=True)
    package, space, weights, space_is_link = json.loads(probe.stdout)
    for path in (package, space, weights):
        assert Path(path).is_relative_to(env_dir) and not Path(path).is_relative_to(ROOT)
    assert Path(space).is_file() and not space_is_link and Path(weights).is_file()

    done = subprocess.run(
        [str(env_dir / "bin" / "ase-search"), "run", "--arch", "dit", "--budget", "1",
         "--finetune-steps", "10", "--n-samples", "32", "--steps", "3"],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    study = optuna.load_study(study_name="dit", storage=f"sqlite:///{workdir / 'studies' / 'dit.db'}")
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 1
    # the default space it searched is the repo's search_spaces/dit.yaml, shipped in the wheel
    repo_yaml = ROOT / "search_spaces" / "dit.yaml"
    assert yaml.safe_load(Path(space).read_text()) == yaml.safe_load(repo_yaml.read_text())
    searched = study.user_attrs["space"]
    assert searched == load_space(repo_yaml, depth=searched["depth"]).to_dict()
