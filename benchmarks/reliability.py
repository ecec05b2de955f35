"""Issue #13's probes, run against the real CLI: bad input, failing trials, drivers, kills.

Each probe is a command a hostile but fair user would type (small runs on the shipped testbed),
run in a fresh temporary folder, and a check of what it must do: one clear line and a non-zero
exit for bad input, never a traceback, nothing lost. Probes that need several processes or a
server (two drivers, a killed one-shot fine-tune) are the pytest tests that perform them.

    python -m benchmarks.reliability                          # reports/reliability.{md,json}
    python -m benchmarks.reliability --only 'after/ctrl-c,after/budget-abc'
    python -m benchmarks.reliability --before DIR             # the "before" column, on DIR

``--before`` runs the probes with ``DIR`` (a ``git worktree`` of an older commit) first on
``PYTHONPATH`` and stores them as cells ``before/<probe>``; the report shows both columns.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import json
import os
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks._common import ROOT, machine_text
from benchmarks._runner import Benchmark, CellContext, markdown_table, option, run

REFERENCE_STUDY = ROOT / "studies" / "reference" / "dit.db"
TINY = "--n-samples 16 --steps 2"


@dataclass(frozen=True)
class Outcome:
    rc: int
    stdout: str
    stderr: str
    seconds: float
    workdir: Path

    @property
    def last_line(self) -> str:  # of stderr: the last non-blank one, once stripped
        return (self.stderr.strip().splitlines() or [""])[-1].strip()

    @property
    def last_stdout_line(self) -> str:
        return (self.stdout.strip().splitlines() or [""])[-1]

    @property
    def traceback(self) -> bool:
        return "Traceback (most recent call last)" in self.stderr

    def text(self) -> str:
        """``exit N[, traceback]: <last line of stderr, else of stdout>``."""
        line = self.last_line or self.last_stdout_line
        return (f"exit {self.rc}" + (", traceback" if self.traceback else "")
                + (f": {line[:160]}" if line else ""))


Check = Callable[[Outcome], tuple[bool, str]]


@dataclass(frozen=True)
class Probe:
    key: str
    item: str  # the item
    what: str
    command: str  # shell; $ASE is the CLI, $FIX the fixtures folder, $PY the interpreter
    check: Check
    timeout: float = 600.0
    interrupt_after: float | None = None  # send SIGINT after this many seconds
    reported: str | None = None  # the "before" the issue reported, for probes that are tests

    @property
    def is_test(self) -> bool:
        return self.command.startswith("$PY -m pytest")


# ###################################################################### checks
def exit_code(code: int, *needles: str, last_line: bool = False) -> Check:
    """Exit ``code``, no traceback, and every needle (case-insensitive) in the output, or with
    ``last_line`` in the last line of stderr."""

    def check(o: Outcome) -> tuple[bool, str]:
        text = (o.last_line if last_line else o.stderr + o.stdout).lower()
        return (o.rc == code and not o.traceback and all(n.lower() in text for n in needles),
                o.text())

    return check


def one_line_error(*needles: str) -> Check:
    """Bad input: one line naming every needle, exit 2, no traceback."""
    return exit_code(2, *needles, last_line=True)


def study_state(db: str, *, expect_fail_reason: bool) -> Check:
    """The command exits without a traceback and no trial of the study is left RUNNING; failed
    trials carry their reason. Without ``expect_fail_reason``, refusing the input before any
    study is written (one line, exit 2) passes too."""

    def check(o: Outcome) -> tuple[bool, str]:
        path = o.workdir / db
        if not path.is_file():
            refused = o.rc == 2 and not o.traceback and not expect_fail_reason
            return refused, o.text() + "; no study written"
        con = sqlite3.connect(path)
        states = dict(con.execute("select state, count(*) from trials group by state").fetchall())
        reasons = [r for (r,) in con.execute(
            "select value_json from trial_user_attributes where key = 'fail_reason'")]
        con.close()
        ok = not o.traceback and states.get("RUNNING", 0) == 0 and o.rc in (0, 2)
        if expect_fail_reason:
            ok = ok and states.get("FAIL", 0) > 0 and len(reasons) >= states.get("FAIL", 0)
        summary = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
        reason = f"; reason: {json.loads(reasons[0])[:90]}" if reasons else ""
        return ok, f"{o.text()}; trials: {summary}{reason}"

    return check


def stdout_has(*needles: str) -> Check:
    def check(o: Outcome) -> tuple[bool, str]:
        return (o.rc == 0 and all(n in o.stdout for n in needles),
                f"exit {o.rc}: {o.last_stdout_line[:160]}")

    return check


def pytest_passes(o: Outcome) -> tuple[bool, str]:
    return o.rc == 0, (o.last_stdout_line or o.last_line)[:160]


# ###################################################################### the probes
EDGE_GRIDS = (("0", "0"), ("tiny", "1.0e-320"), ("nan", ".nan"))
PER_TRIAL = (f"$ASE run --finetune per-trial --finetune-steps 3 --finetune-lr 1e30 --budget 2 "
             f"{TINY} --storage pt.db")


def pytest_probe(key: str, item: str, what: str, tests: list[str], reported: str) -> Probe:
    """A probe that needs several processes or a server: the pytest tests that perform it."""
    command = "$PY -m pytest -q -x -p no:cacheprovider " + " ".join(f"$ROOT/{t}" for t in tests)
    return Probe(key, item, what, command, pytest_passes, timeout=900, reported=reported)


PROBES: tuple[Probe, ...] = (
    Probe("trial-diverges", "1", "a per-trial fine-tune that diverges", PER_TRIAL,
          study_state("pt.db", expect_fail_reason=True)),
    Probe("trial-diverges-rerun", "1", "the same command run again",
          f"{PER_TRIAL} >/dev/null 2>&1; {PER_TRIAL}",
          study_state("pt.db", expect_fail_reason=True), timeout=400),
    Probe("bad-fid-weights", "1", "a --fid-weights file that is not weights",
          f"$ASE run --finetune none --budget 2 {TINY} --fid-weights $FIX/garbage.pth "
          "--storage fw.db", study_state("fw.db", expect_fail_reason=False)),
    pytest_probe("two-drivers", "2", "two drivers on one study (journal and PostgreSQL)",
                 ["tests/test_search_drivers.py"],
                 "the second driver marks the first's live trials interrupted; the first dies "
                 "with UpdateFinishedTrialError, its two measurements lost"),
    pytest_probe("one-shot-keyed", "3", "two studies in one folder, other fine-tune settings",
                 ["tests/test_finetune.py::"
                  "test_one_shot_weights_with_other_settings_are_other_files",
                  "tests/test_finetune.py::test_one_shot_key_covers_what_makes_the_weights"],
                 "the second study silently reuses the first one's weights (its study records "
                 "2000 steps, the weights' metadata 10)"),
    pytest_probe("one-shot-killed", "4", "a kill during the one-shot fine-tune, then a re-run",
                 ["tests/test_finetune.py::"
                  "test_one_shot_weights_after_a_sigkill_resume_to_the_uninterrupted_weights"],
                 "no intermediate state: the re-run starts again at step 0"),
    Probe("deep-json", "5", "a schedule JSON nested 100,000 deep",
          "$ASE schedule show $FIX/deep.json", one_line_error("deep.json")),
    *(Probe(f"edge-grid-{name}", "5", f"space YAML edge_grid: {value}",
            f"$ASE run --space $FIX/grid{name}.yaml --finetune none --budget 1 {TINY}",
            one_line_error("edge_grid")) for name, value in EDGE_GRIDS),
    Probe("budget-abc", "5", "--budget abc", "$ASE run --budget abc", exit_code(2, "budget")),
    *(Probe(f"{key}-under-file", "5", f"{what} under a regular file", command,
            one_line_error("blocker")) for key, what, command in (
        ("export", "export -o", "$ASE export $FIX/study.db --trial 0 -o $FIX/blocker/s.json"),
        ("pareto-report", "pareto --report",
         "$ASE pareto $FIX/study.db --report $FIX/blocker/r.html"),
        ("pareto-csv", "pareto --csv", "$ASE pareto $FIX/study.db --no-report --csv "
                                       "$FIX/blocker/r.csv"),
        ("sample", "sample -o", "$ASE sample --n 4 --steps 2 -o $FIX/blocker/g.png"),
        ("eval-json", "eval --json", "$ASE eval --n 16 --steps 2 --json $FIX/blocker/e.json"),
        ("run-storage", "run --storage",
         f"$ASE run --finetune none --budget 1 {TINY} --storage $FIX/blocker/s.db"),
    )),
    Probe("finetune-diverges", "5", "a diverging fine-tune (finetune)",
          "$ASE finetune --schedule D4 --steps 3 --lr 1e30 -o ft",
          one_line_error("diverge")),
    Probe("one-shot-diverges", "5", "a diverging one-shot fine-tune (run)",
          f"$ASE run --finetune-steps 3 --finetune-lr 1e30 --budget 1 {TINY} --storage os.db",
          one_line_error("diverge")),
    Probe("corrupt-journal", "5", "a corrupt journal (run, then pareto); the file is unchanged",
          f"cp $FIX/corrupt.journal c.journal; $ASE run --finetune none --budget 1 {TINY} "
          "--storage c.journal; rc=$?; cmp -s c.journal $FIX/corrupt.journal || "
          "echo 'the journal was modified' >&2; exit $rc", one_line_error("c.journal")),
    Probe("corrupt-journal-pareto", "5", "pareto on a corrupt journal",
          "$ASE pareto $FIX/corrupt.journal --no-report", one_line_error("corrupt.journal")),
    Probe("huge-depth", "6", "a checkpoint whose config says depth: 1000000",
          "$ASE sample --checkpoint $FIX/huge.pt --n 4 --steps 2 -o g.png",
          one_line_error("depth"), timeout=60),
    Probe("negative-finetune-steps", "7", "--finetune-steps -5",
          f"$ASE run --finetune-steps -5 --budget 1 {TINY} --storage n.db",
          one_line_error("finetune-steps")),
    Probe("nan-weights", "7", "sample with NaN weights",
          "$ASE sample --checkpoint $FIX/nan.pt --n 4 --steps 2 -o g.png; rc=$?; "
          "test -e g.png && echo 'a grid was written' >&2; exit $rc",
          one_line_error("diverged")),
    Probe("eval-missing-data", "7", "eval --data /nonexistent",
          "$ASE eval --n 16 --steps 2 --data /nonexistent", one_line_error("/nonexistent")),
    Probe("bare-state-dict", "7", "a bare state dict as --checkpoint",
          "$ASE sample --checkpoint $FIX/bare.pt --n 4 --steps 2 -o g.png",
          one_line_error("export-weights")),  # advice a command can follow
    Probe("export-mode", "7", "an exported schedule's file mode",
          "umask 022; $ASE export $FIX/study.db --trial 0 -o s.json >/dev/null && "
          "stat -c %a s.json", stdout_has("644")),
    Probe("ctrl-c", "newcomer", "Ctrl-C during sample",
          "$ASE sample --n 2000 --steps 250 -o g.png", exit_code(130, "interrupt"),
          interrupt_after=25.0),
    Probe("threads", "newcomer", "a command that computes says its thread count",
          "$ASE sample --n 1 --steps 1 -o g.png", exit_code(0, "thread")),
    Probe("eval-exit-untuned", "newcomer",
          "eval --schedule D4 on the shipped (not fine-tuned) model",
          "$ASE eval --schedule D4 --n 16 --steps 2", exit_code(0, "fine-tun")),
    Probe("version", "newcomer", "the exported schedule names the ase-search version",
          "$ASE export $FIX/study.db --trial 0 -o s.json >/dev/null && "
          "$PY -c \"import json; print(json.load(open('s.json'))['metadata'])\"",
          stdout_has("ase_search_version': '0.")),
    Probe("pareto-beside-study", "newcomer", "pareto writes its report beside the study",
          "cp $FIX/study.db mine.db; $ASE pareto mine.db >/dev/null && ls",
          stdout_has("mine-pareto.html")),
)


# ###################################################################### fixtures and running
def make_fixtures(fix: Path, env: dict[str, str]) -> None:
    """Files the probes read: bad schedules, spaces, checkpoints, journals, a finished study."""
    fix.mkdir(parents=True, exist_ok=True)
    (fix / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    space = (ROOT / "search_spaces" / "dit-free-edges.yaml").read_text()
    for name, value in EDGE_GRIDS:
        lines = [f"edge_grid: {value}" if line.startswith("edge_grid:") else line
                 for line in space.splitlines()]
        if not any(line.startswith("edge_grid:") for line in lines):
            lines.append(f"edge_grid: {value}")
        (fix / f"grid{name}.yaml").write_text("\n".join(lines) + "\n")
    (fix / "garbage.pth").write_bytes(os.urandom(4096))
    (fix / "blocker").write_text("a regular file\n")
    (fix / "corrupt.journal").write_bytes(b'{"op_code": 0, "worker_id": "x"\n\x00\xff garbage\n')
    shutil.copy(REFERENCE_STUDY, fix / "study.db")
    code = f"""
import torch
from ase_search.models import create_model
from ase_search.testbed import load_model
fix = {str(fix)!r}
model = load_model("dit", None)
state = {{k: v.clone() for k, v in model.state_dict().items()}}
torch.save(state, fix + "/bare.pt")
try:
    from ase_search.models import save_checkpoint
    nan = load_model("dit", None)
    with torch.no_grad():
        for p in nan.parameters():
            p.fill_(float("nan"))
    save_checkpoint(fix + "/nan.pt", nan)
    small = create_model("DiT-T", hidden_size=32, depth=2, num_heads=2)
    save_checkpoint(fix + "/huge.pt", small)
    ckpt = torch.load(fix + "/huge.pt", weights_only=True)
    def deepen(obj):
        if isinstance(obj, dict):
            return {{k: (1000000 if k == "depth" else deepen(v)) for k, v in obj.items()}}
        return obj
    torch.save(deepen(ckpt), fix + "/huge.pt")
except Exception as err:
    print("fixture:", type(err).__name__, err)
"""
    subprocess.run([env["PY"], "-c", code], env=env, check=True, cwd=fix)


def run_probe(probe: Probe, env: dict[str, str]) -> tuple[Outcome, bool, str]:
    """Run ``probe`` in a fresh folder; its outcome, whether it passed, and what was seen."""
    with tempfile.TemporaryDirectory(prefix=f"probe-{probe.key}-") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        proc = subprocess.Popen(["bash", "-c", probe.command], cwd=work, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        try:
            if probe.interrupt_after is not None:
                try:
                    proc.wait(probe.interrupt_after)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGINT)  # as Ctrl-C in a terminal: the group
            out, err = proc.communicate(timeout=probe.timeout)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            rc, err = -9, err + f"\ntimed out after {probe.timeout:.0f} s"
        outcome = Outcome(rc, out, err, time.perf_counter() - started, work)
        ok, text = probe.check(outcome)  # while the folder exists: some checks read its files
        return outcome, ok, text


# ###################################################################### the runner's parts
@dataclasses.dataclass(frozen=True)
class Params:
    """Which checkout the probes run against."""

    before: str = field(default="", metadata=option(
        "run the probes on this older checkout (a git worktree) and store them as the 'before' "
        "column; default: this checkout, the 'after' column", identity=False))

    def __post_init__(self) -> None:
        if self.before and not (Path(self.before) / "ase_search").is_dir():
            raise ValueError(f"--before {self.before} is not an ase-search checkout")

    @property
    def column(self) -> str:
        return "before" if self.before else "after"

    @property
    def code_root(self) -> Path:
        return Path(self.before).resolve() if self.before else ROOT


def keys(params: Params) -> list[str]:
    # An older checkout lacks the tests that perform the multi-process probes.
    return [f"{params.column}/{p.key}" for p in PROBES if not (params.before and p.is_test)]


@functools.cache
def probe_env(code_root: Path) -> dict[str, str]:
    """The probes' environment: the CLI of ``code_root`` (``$ASE``) and the fixtures (``$FIX``),
    made once per run in a folder removed when the process exits."""
    fix = Path(tempfile.mkdtemp(prefix="probe-fixtures-"))
    atexit.register(shutil.rmtree, fix, ignore_errors=True)
    env = dict(os.environ, PY=sys.executable, ROOT=str(code_root), PYTHONPATH=str(code_root),
               OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", COLUMNS="200", FIX=str(fix))
    # An older checkout may lack `python -m ase_search`: call its main() directly.
    ase = fix / "ase-search"
    ase.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -c "
                   f"'from ase_search.cli import main; main()' \"$@\"\n")
    ase.chmod(0o755)
    env["ASE"] = str(ase)
    make_fixtures(fix, env)
    return env


def cell(params: Params, key: str, ctx: CellContext) -> dict[str, Any]:
    """One probe, run in a fresh folder against the chosen checkout."""
    from ase_search.evaluate import machine_info

    probe = next(p for p in PROBES if p.key == key.partition("/")[2])
    outcome, ok, text = run_probe(probe, probe_env(params.code_root))
    print(f"{'PASS' if ok else 'FAIL'} {key}: {text}", file=sys.stderr, flush=True)
    commit = subprocess.run(["git", "-C", str(params.code_root), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    return {"ok": ok, "text": text, "rc": outcome.rc, "seconds": round(outcome.seconds, 1),
            "commit": commit, "command": ctx.command, "machine": machine_info()}


def verdict(result: dict[str, Any] | None) -> str:
    return "—" if result is None else ("✓ " if result["ok"] else "✗ ") + result["text"]


def report(cells: dict[str, dict[str, Any]], params: Params, json_name: str) -> str:
    """One row per probe: its command and what it did before and after."""
    import pandas as pd

    rows = []
    for probe in PROBES:
        before = cells.get(f"before/{probe.key}")
        if before is None and probe.reported:
            before = {"ok": False, "text": f"(as the issue reported) {probe.reported}"}
        rows.append({"item": probe.item, "probe": probe.what,
                     "command": "`" + probe.command.replace("|", "\\|") + "`",
                     "before": verdict(before), "after": verdict(cells.get(f"after/{probe.key}"))})
    after = [c for k, c in cells.items() if k.startswith("after/")]
    before_commits = sorted({c["commit"] for k, c in cells.items() if k.startswith("before/")})
    runs = sorted({f"`{c['command']}` on {machine_text(c['machine'])}, {c['machine']['date']}"
                   for c in after})
    return (
        "# Reliability probes (issue #13)\n\n"
        f"Written by `benchmarks/reliability.py` from `{json_name}`. Each probe runs in a fresh "
        "temporary folder against the real CLI (`$ASE` = `ase-search`, `$FIX` = fixtures the "
        "runner writes: a schedule nested 100,000 deep, spaces with a bad `edge_grid`, a garbage "
        "weights file, a regular file `blocker` to write under, a corrupt journal, a copy of the "
        "reference DiT study, checkpoints with NaN weights, a bare state dict and `depth: "
        "1000000`). A probe passes (✓) when it does what the issue asks: bad input gives one "
        "line and exit 2 with no traceback; a failing trial is FAILED with its reason and no "
        "trial is left RUNNING. The multi-process probes (two drivers, a killed one-shot "
        "fine-tune, two studies in one folder) are the pytest tests named in their command.\n\n"
        f"After: **{sum(c['ok'] for c in after)} of {len(after)} pass** ({'; '.join(runs)}). "
        f"Before: the same probes on commit {', '.join(before_commits) or '?'}, the one the issue "
        "was filed against (`--before` a worktree of it).\n\n"
        + markdown_table(pd.DataFrame(rows)) + "\n")


BENCHMARK = Benchmark(name="reliability", doc=__doc__, params=Params, keys=keys, cell=cell,
                      report=report, version=2)


if __name__ == "__main__":
    run(BENCHMARK)
