"""``ase-search pareto`` and ``ase-search export`` through the console entry point."""

from __future__ import annotations

import json
import shutil

import optuna
import pandas as pd
import pytest
from optuna.distributions import IntDistribution
from optuna.trial import TrialState, create_trial

from ase_search.pareto import pareto_table, open_study
from ase_search.schedule import ExitSchedule

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """studies/dit.db: front = trials 0, 2, 4; seed D4 (1) dominated by 2; trial 3 failed."""
    path = tmp_path_factory.mktemp("template") / "dit.db"
    study = optuna.create_study(directions=["minimize", "minimize"], study_name="dit",
                                storage=f"sqlite:///{path}")
    study.set_metric_names(["fid", "latency"])
    study.set_user_attr("arch", "dit")
    study.set_user_attr("config", {"sampler": "ddim", "steps": 20, "finetune": "none",
                                   "checkpoint": None})
    study.set_user_attr("full_latency", 1.0)
    rows = [(4.0, 1.0, "full"), (7.0, 0.8, "D4"), (6.0, 0.6, None), (None, None, None),
            (9.0, 0.3, None)]
    for k, (fid, latency, seed) in enumerate(rows):
        blocks = (12, 11, 10, 9, k + 1)
        attrs = {"schedule": ExitSchedule("dit", 12, (0, .2, .4, .6, .8, 1), blocks).to_dict()}
        if seed:
            attrs["seed"] = seed
        if latency is not None:
            attrs["acceleration"] = 1 - latency
        else:
            attrs["fail_reason"] = "worker lost"
        study.add_trial(create_trial(
            state=TrialState.COMPLETE if fid is not None else TrialState.FAIL,
            values=None if fid is None else [fid, latency], params={"b": k + 1},
            distributions={"b": IntDistribution(1, 12)}, user_attrs=attrs))
    return path


@pytest.fixture
def db(template, tmp_path):
    """A fresh copy of the template study per test (SQLite writes are slow to rebuild)."""
    path = tmp_path / "studies" / "dit.db"
    path.parent.mkdir()
    shutil.copy(template, path)
    return path



def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


def test_pareto_prints_front_and_writes_report_and_csv(db, tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(["pareto", str(db), "--csv", "front.csv"])
    assert code == 0
    # The verdict against fewer steps: this study measured no steps-only baseline, so it says
    # what is missing.
    assert "verdict: no verdict yet: the full model at the reference configuration (ddim-20)" \
        in " ".join(out.split())
    assert "Three fronts" in out
    assert "seed D4 (trial 1) is dominated by trial(s) 2" in out
    assert "seed full (trial 0) is on the front" in out
    assert "* D4" in out  # the seed is marked in the table
    # Default: beside the study, named from the file's stem; nothing in the working folder.
    report = db.parent / "dit-pareto.html"
    assert report.is_file() and "plotly.js v" in report.read_text()
    assert "Verdict: levers against fewer steps" in report.read_text()
    assert not (tmp_path / "reports").exists()
    table = pd.read_csv(tmp_path / "front.csv", keep_default_na=False)
    expected = pareto_table(open_study(db))
    assert list(table.trial) == list(expected.trial) == [0, 1, 2, 4]
    assert list(table.fid) == list(expected.fid)


def test_pareto_without_report(db, tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = cli(["pareto", f"sqlite:///{db}", "--study-name", "dit", "--no-report"])
    assert code == 0 and "dominated by trial(s) 2" in out
    assert not (tmp_path / "reports").exists()


def test_export_writes_schedule_with_provenance(db, tmp_path, cli):
    out_file = tmp_path / "fast.json"
    code, out, _ = cli(["export", str(db), "--min-acceleration", "0.3", "-o", str(out_file)])
    assert code == 0 and "trial 2" in out
    schedule = ExitSchedule.from_json(out_file)
    assert schedule.blocks == (12, 11, 10, 9, 3)
    assert schedule.metadata["trial"] == 2 and schedule.metadata["fid"] == 6.0
    assert schedule.metadata["sampler"] == "ddim" and schedule.metadata["finetune"] == "none"
    assert json.loads(out_file.read_text())["metadata"]["study"] == "dit"


@pytest.mark.parametrize("argv, message", [
    (["pareto", "{missing}"], "study file not found"),
    (["pareto", "{text}"], "not an Optuna storage"),
    (["export", "{db}", "-o", "x.json"], "exactly one of --trial, --max-fid"),
    (["export", "{db}", "--trial", "2", "--max-fid", "5", "-o", "x.json"], "exactly one"),
    (["export", "{db}", "--max-fid", "1", "-o", "x.json"], "the lowest FID is 4"),
    (["export", "{db}", "--min-acceleration", "0.9", "-o", "x.json"], "the highest is 70.00%"),
    (["export", "{db}", "--trial", "3", "-o", "x.json"], "FAIL (worker lost)"),
    (["export", "{db}", "--trial", "2", "-o", "x.yaml"], "--out must be a .json"),
    (["pareto", "{db}", "--seeds", "9-x"], "--seeds takes seeds and ranges"),
    (["pareto", "{db}", "--seeds", "16-9"], "is not a range"),
    (["pareto", "{db}", "--seeds", "9"], "at least two seeds"),
])
def test_user_errors_are_one_red_line_and_exit_2(argv, message, db, tmp_path, cli,
                                                  monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = tmp_path / "notes.db"
    text.write_text("not a database\n")
    paths = {"missing": tmp_path / "nope.db", "text": text, "db": db}
    code, out, err = cli([a.format(**paths) for a in argv])
    assert code == 2
    assert message in one_error_line(err)
    assert not (tmp_path / "nope.db").exists() and not (tmp_path / "x.json").exists()


def test_exported_schedule_runs_with_the_weights_the_search_measured(db, tmp_path, cli):
    import torch

    from ase_search.finetune import weights_record
    from ase_search.models import create_model, save_checkpoint

    torch.manual_seed(3)
    model = create_model("DiT-T")  # 12 blocks, like the study's schedules
    with torch.no_grad():  # adaLN-Zero would output zeros whatever the schedule
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    weights = db.parent / "one-shot.safetensors"  # beside the study, as `run` writes them
    save_checkpoint(weights, model)
    optuna.load_study(study_name="dit", storage=f"sqlite:///{db}").set_user_attr(
        "weights", weights_record(weights, db.parent))
    (tmp_path / "out").mkdir()
    schedule = tmp_path / "out" / "fast.json"
    assert cli(["export", str(db), "--trial", "2", "-o", str(schedule)])[0] == 0
    # Recorded relative to the schedule file, so the pair can move together.
    assert ExitSchedule.from_json(schedule).metadata["weights"] == {
        "path": "../studies/one-shot.safetensors", "one_shot_key": None}

    common = ["sample", "--schedule", str(schedule), "--n", "2", "--steps", "2"]
    code, _, err = cli(common + ["-o", str(tmp_path / "implicit.png")])
    assert code == 0 and f"using {weights}" in " ".join(err.split())
    assert cli(common + ["-c", str(weights), "-o", str(tmp_path / "explicit.png")])[0] == 0
    assert (tmp_path / "implicit.png").read_bytes() == (tmp_path / "explicit.png").read_bytes()
    # Weights that are gone: one line saying how to rebuild them, exit 2, nothing written;
    # --checkpoint still runs other weights.
    weights.unlink()
    code, _, err = cli(common + ["-o", str(tmp_path / "default.png")])
    assert code == 2 and not (tmp_path / "default.png").exists()
    assert "python -m tools.reference_study --arch dit --weights-only" in one_error_line(err)
    assert cli(common + ["-c", str(tmp_path / "x.safetensors"), "-o",
                         str(tmp_path / "default.png")])[0] == 2  # a missing --checkpoint
    save_checkpoint(tmp_path / "other.safetensors", model)
    assert cli(common + ["-c", str(tmp_path / "other.safetensors"), "-o",
                         str(tmp_path / "default.png")])[0] == 0

def test_the_fronts_table_prints_no_speedup_past_the_quality_window():
    """A 50x at FID 480 is an artifact of the ladder's end: past the window's edge the speedup
    cell stays empty."""
    import pandas as pd
    from rich.console import Console

    from ase_search.cli.study import _fronts_rich

    rows = [{"configuration": "far", "kind": "exit", "trial": 1, "fid": 480.0, "fid_sd": None,
             "ms_per_sample": 1.0, "speedup": 50.0, "steps_only_front": False,
             "exits_front": False, "joint_front": True, "vs_fewer_steps": None},
            {"configuration": "near", "kind": "steps-only", "trial": None, "fid": 4.0,
             "fid_sd": None, "ms_per_sample": 2.0, "speedup": 25.0, "steps_only_front": True,
             "exits_front": False, "joint_front": True, "vs_fewer_steps": None}]
    console = Console(width=200, record=True)
    console.print(_fronts_rich(pd.DataFrame(rows), edge=5.0))
    text = console.export_text()
    assert "25.00x" in text and "50.00x" not in text


def test_parse_seeds_reads_ranges_and_lists():
    from ase_search.cli.study import parse_seeds

    assert parse_seeds("9-16") == tuple(range(9, 17))
    assert parse_seeds("3, 1,5-6,5") == (1, 3, 5, 6)
