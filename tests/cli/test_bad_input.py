"""Bad input through the real command line: one error line, exit 2, no traceback, nothing written.

Every case runs ``ase-search`` through its console entry point, with the user's arguments (in this
process; Ctrl-C and the umask case in a process of their own). The tests run as root, which
ignores directory permissions, so the unwritable outputs are a path below a regular file (portable)
and a path in /proc (which refuses new files even to root).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ase_search.testbed import TESTBEDS

ASE = str(Path(sys.executable).with_name("ase-search"))
REFERENCE_STUDY = Path(__file__).resolve().parents[2] / "studies" / "reference" / "dit.db"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
_spec = importlib.util.spec_from_file_location("_cli", Path(__file__).parents[1] / "_cli.py")
_cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_cli)


def ase(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``ase-search ARGS`` in this process, with this module's environment (see tests/_cli.py)."""
    return _cli.run_cli(list(args), cwd=cwd, env=ENV)


def error_line(out: subprocess.CompletedProcess[str]) -> str:
    """The one error line of a failed command (after any progress lines)."""
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr, out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out.stderr
    return errors[0]


@pytest.fixture
def study(tmp_path: Path) -> Path:
    # A copy: reading a study must not be able to touch the committed one.
    return Path(shutil.copy(REFERENCE_STUDY, tmp_path / "dit.db"))


def _edited_testbed(path: Path, config: dict | None = None, nan: bool = False) -> Path:
    """The shipped DiT-T checkpoint with its config edited or its weights set to NaN."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(TESTBEDS["dit"].path), framework="pt") as f:
        metadata, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    if config:
        metadata["config"] = json.dumps({**json.loads(metadata["config"]), **config})
    if nan:
        tensors = {k: torch.full_like(v, float("nan")) for k, v in tensors.items()}
    save_file(tensors, str(path), metadata=metadata)
    return path


# ------------------------------------------------------------------ malformed input files
def test_schedule_json_nested_too_deeply(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    line = error_line(ase("schedule", "show", path))
    assert f"{path} is not a valid schedule JSON: nested too deeply" in line


@pytest.mark.parametrize(("patch", "named"), [
    ({"modes": ["skip", "reuse", "cache", "reuse", "reuse"]}, "modes[2] = 'cache' is not a mode"),
    ({"modes": ["skip"] + ["reuse"] * 4, "periods": [1, 2, 0, 2, 2]},
     "periods[2] = 0 must be an integer >= 1"),
])
@pytest.mark.parametrize("command", ["show", "sample"])
def test_schedule_file_with_a_bad_reuse_field(tmp_path: Path, patch: dict, named: str,
                                              command: str) -> None:
    from ase_search.schedule import preset

    path = tmp_path / "reuse.json"
    path.write_text(json.dumps({**preset("D4", "dit", 12).to_dict(), **patch}))
    args = (("schedule", "show", path) if command == "show" else
            ("sample", "--arch", "dit", "--schedule", path, "--n", "2", "--steps", "2",
             "-o", tmp_path / "grid.png"))
    line = error_line(ase(*args))
    assert f"{path}: {named}" in line
    assert not (tmp_path / "grid.png").exists()


@pytest.mark.parametrize("value", ["0", "1.0e-320", ".nan", ".inf", "-0.5"])
def test_space_edge_grid_out_of_range(tmp_path: Path, value: str) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(f"version: 1\narch: dit\ndepth: 12\nintervals: 10\nedges: search\n"
                    f"edge_grid: {value}\n")
    line = error_line(ase("finetune", "--space", path, "--steps", "1", "--out", tmp_path / "ft"))
    assert "edge_grid must be a number in [0.001, 1) that divides 1 evenly" in line
    assert not (tmp_path / "ft").exists()


# --------------------------------------------------------------------------- usage errors
@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["run", "--budget", "abc"], "--budget"),
        (["sample", "--n", "abc"], "--n"),
        (["eval", "--seeds", "1.5"], "--seeds"),
        (["export", "STUDY", "--trial", "x", "-o", "x.json"], "--trial"),
        (["sample", "--no-such-option"], "--no-such-option"),
    ],
)
def test_usage_errors_print_click_usage(tmp_path: Path, study: Path, args, option) -> None:
    out = ase(*[str(study) if a == "STUDY" else a for a in args], cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith(f"Usage: ase-search {args[0]} [OPTIONS]")
    assert option in out.stderr.splitlines()[-1]
    assert list(tmp_path.iterdir()) == [study]


# ------------------------------------------------------------------- unwritable outputs
OUTPUTS = {
    "export": lambda study, out: ["export", study, "--trial", "0", "-o", out / "s.json"],
    "pareto --report": lambda study, out: ["pareto", study, "--report", out / "r.html"],
    "pareto --csv": lambda study, out: ["pareto", study, "--no-report", "--csv", out / "t.csv"],
    "sample": lambda study, out: ["sample", "--n", "2", "--steps", "1", "-o", out / "g.png"],
    "eval --json": lambda study, out: ["eval", "--n", "8", "--steps", "1", "--grid",
                                       study.parent / "g.png", "--json", out / "r.json"],
}


@pytest.mark.parametrize("command", list(OUTPUTS))
def test_output_below_a_regular_file(tmp_path: Path, study: Path, command: str) -> None:
    regular = tmp_path / "file.txt"
    regular.write_text("keep")
    args = OUTPUTS[command](study, regular / "sub")
    line = error_line(ase(*args, cwd=tmp_path))
    assert line == (f"error: cannot write {args[-1]}: {regular} is a file, not a folder; "
                    f"choose a writable path")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dit.db", "file.txt"]  # no grid either
    assert regular.read_text() == "keep"


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
@pytest.mark.parametrize("command", list(OUTPUTS))
def test_output_in_a_folder_that_refuses_files(tmp_path: Path, study: Path, command: str) -> None:
    args = OUTPUTS[command](study, Path("/proc"))
    line = error_line(ase(*args, cwd=tmp_path))
    assert line.startswith(f"error: cannot write {args[-1]}: /proc does not accept new files")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dit.db"]


def test_exported_schedule_has_normal_permissions(tmp_path: Path, study: Path) -> None:
    out = subprocess.run([ASE, "export", str(study), "--trial", "0", "-o", str(tmp_path / "s.json")],
                         capture_output=True, text=True, env=ENV, preexec_fn=lambda: os.umask(0o022))
    assert out.returncode == 0, out.stderr
    assert stat.S_IMODE((tmp_path / "s.json").stat().st_mode) == 0o644


# ----------------------------------------------------------------- models and numerics
@pytest.mark.parametrize(
    "args",
    [
        ["finetune", "--schedule", "D4"],  # Algorithm 1
        ["finetune", "--space", "search_spaces/dit.yaml"],  # the one-shot fine-tune
    ],
    ids=["algorithm-1", "one-shot"],
)
def test_diverging_finetune(tmp_path: Path, args: list[str]) -> None:
    root = Path(__file__).resolve().parents[2]
    out = ase(*args, "--steps", "3", "--batch-size", "8", "--lr", "1e30", "--out", tmp_path / "ft",
              cwd=root)
    line = error_line(out)
    assert "diverged" in line and "lower --lr" in line


def test_nan_weights_are_refused_by_sample_and_eval(tmp_path: Path) -> None:
    ckpt = _edited_testbed(tmp_path / "nan.safetensors", nan=True)
    line = error_line(ase("sample", "--checkpoint", ckpt, "--n", "4", "--steps", "2",
                          "-o", tmp_path / "g.png"))
    assert "diverged: the model produced NaN/inf samples" in line
    line = error_line(ase("eval", "--checkpoint", ckpt, "--n", "8", "--steps", "2",
                          "--grid", tmp_path / "e.png", "--json", tmp_path / "e.json"))
    assert "diverged: the model produced NaN/inf samples" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.safetensors"]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"depth": 1_000_000}, "depth must be at most 1024 blocks, got 1000000"),
        ({"hidden_size": 10**7, "num_heads": 1}, "parameters, more than the 1e+10"),
    ],
)
def test_oversized_checkpoint_config_is_refused(tmp_path: Path, config, message) -> None:
    ckpt = _edited_testbed(tmp_path / "huge.safetensors", config=config)
    start = time.monotonic()
    line = error_line(ase("sample", "--checkpoint", ckpt, "--n", "2", "--steps", "1",
                          "-o", tmp_path / "g.png"))
    assert "checkpoint config cannot build a dit model" in line and message in line
    assert time.monotonic() - start < 60  # refused, not built (a million blocks take minutes)


def test_bare_state_dict_advice_works_on_the_command_line(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    state = {k[len("model."):]: v for k, v in load_file(str(TESTBEDS["dit"].path)).items()
             if k.startswith("model.")}
    bare = tmp_path / "bare.pt"
    torch.save(state, bare)
    line = error_line(ase("sample", "--checkpoint", bare, "--n", "2", "--steps", "1",
                          "-o", tmp_path / "g.png"))
    assert f"convert it once with `ase-search export-weights {bare} OUT.safetensors --model NAME`" \
        in line
    converted = tmp_path / "w.safetensors"
    assert ase("export-weights", bare, converted, "--model", "DiT-T").returncode == 0
    out = ase("sample", "--checkpoint", converted, "--n", "2", "--steps", "1",
              "-o", tmp_path / "g.png")
    assert out.returncode == 0, out.stderr


def test_eval_missing_data_names_the_path(tmp_path: Path) -> None:
    line = error_line(ase("eval", "--data", tmp_path / "nonexistent", "--n", "8", "--steps", "1"))
    assert line == (f"error: --data {tmp_path / 'nonexistent'} does not exist; give mnist or a "
                    f"folder of reference images")


# ------------------------------------------------------------- defaults and warnings
@pytest.mark.parametrize(
    ("schedule", "checkpoint", "warned"),
    [("D4", False, True), ("full", False, False), ("D4", True, False),
     ("D4-reuse", False, False)],  # block reuse is training-free: nothing to fine-tune
)
def test_warning_for_exits_on_the_untuned_testbed(tmp_path: Path, schedule, checkpoint,
                                                  warned) -> None:
    from ase_search.schedule import preset

    extra = ["--checkpoint", str(TESTBEDS["dit"].path)] if checkpoint else []
    if schedule == "D4-reuse":
        schedule = tmp_path / "reuse.json"
        preset("D4", "dit", 12).with_reuse(2).to_json(schedule)
    out = ase("sample", "--schedule", schedule, *extra, "--n", "2", "--steps", "1",
              "-o", tmp_path / "g.png")
    assert out.returncode == 0, out.stderr
    assert ("not fine-tuned for early exits" in out.stderr) == warned
    if warned:
        assert "ase-search finetune --arch dit --schedule D4" in out.stderr


def test_sample_and_eval_default_to_the_search_sampler(tmp_path: Path) -> None:
    from ase_search.search import SearchConfig

    expected = f"ddim-{SearchConfig.__dataclass_fields__['steps'].default}"
    out = ase("sample", "--n", "2", "-o", tmp_path / "g.png")
    assert out.returncode == 0 and f"with {expected}:" in out.stdout, out.stderr
    out = ase("eval", "--n", "8", "--grid", tmp_path / "e.png")
    assert out.returncode == 0 and f"{expected}, n=8" in out.stdout, out.stderr


# -------------------------------------------------------------------------------- Ctrl-C
@pytest.mark.parametrize("inherited", ["default", "ignored"])
def test_ctrl_c_exits_130_and_says_so(tmp_path: Path, inherited: str) -> None:
    """Also when SIGINT comes in ignored, as a non-interactive shell starts background jobs
    (``cmd &``): Python keeps an inherited SIG_IGN, and such a run ignored the interrupt."""
    grid = tmp_path / "g.png"

    def ignore_sigint() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    proc = subprocess.Popen([ASE, "sample", "--n", "2000", "--steps", "250", "-o", str(grid)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
                            preexec_fn=ignore_sigint if inherited == "ignored" else None)
    # Interrupt once the model is loaded and sampling has begun: the thread report is the last
    # line before it (rich shows the progress bar only on a terminal).
    try:
        seen = ""
        while "threads" not in seen:
            line = proc.stderr.readline()
            assert line, f"sample ended before sampling: {seen}"
            seen += line
        time.sleep(2)  # well inside the minutes that 2000 samples x 250 steps take
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, seen + err
    assert (seen + err).rstrip().splitlines()[-1] == "interrupted"
    assert "Traceback" not in err and not grid.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sample", "--timestep-spacing", "trailing", "--steps", "2", "-o", "OUT/g.png"],
         "--timestep-spacing must be one of ['leading', 'linspace']"),
        (["eval", "--sampler", "euler-maruyama", "--timestep-spacing", "linspace", "--n", "8",
          "--steps", "2", "--grid", "OUT/g.png"],
         "--timestep-spacing does not apply to euler-maruyama"),
        (["bench", "--sampler", "dpm-solver", "--timestep-spacing", "leading", "--steps", "2"],
         "--timestep-spacing 'leading' is not offered by dpm-solver"),
    ],
)
def test_bad_timestep_spacing_is_one_line(tmp_path: Path, args, message) -> None:
    args = [str(a).replace("OUT", str(tmp_path)) for a in args]
    line = error_line(ase(*args))
    assert message in line, line
    assert not list(tmp_path.iterdir())  # nothing written


def test_timestep_spacing_reaches_the_sampler(tmp_path: Path) -> None:
    # linspace calls DDIM-2 at 999 and 0, leading at 500 and 0: the same noise, other samples.
    grids = {}
    for spacing in ("linspace", "leading"):
        grids[spacing] = tmp_path / f"{spacing}.png"
        out = ase("sample", "--n", "2", "--steps", "2", "--timestep-spacing", spacing,
                  "-o", grids[spacing])
        assert out.returncode == 0, out.stderr
        assert f"ddim-2 {spacing}" in " ".join(out.stdout.split())
    assert grids["linspace"].read_bytes() != grids["leading"].read_bytes()
