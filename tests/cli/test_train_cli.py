"""`ase-search finetune`: the optimiser settings given on the command line reach the run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from ase_search.models.checkpoint import load_state_dict_file
from ase_search.testbed import load_model

ASE = str(Path(sys.executable).with_name("ase-search"))


def _finetune(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ASE, "finetune", "--schedule", "D1", "--steps", "2", "--batch-size",
                           "4", "--threads", "1", "-o", str(tmp_path / "run"), *extra],
                          capture_output=True, text=True)


def test_lr_schedule_and_ema_reach_the_checkpoint(tmp_path) -> None:
    out = _finetune(tmp_path, "--lr", "3e-4", "--lr-schedule", "cosine", "--ema", "0.99",
                    "--distill")
    assert out.returncode == 0, out.stderr
    config = load_state_dict_file(tmp_path / "run" / "last.pt")["train_config"]
    assert (config["lr"], config["lr_schedule"], config["ema_decay"], config["distill"]) == \
        (3e-4, "cosine", 0.99, True)


def test_default_lr_schedule_is_the_papers_for_dit(tmp_path) -> None:
    out = _finetune(tmp_path)
    assert out.returncode == 0, out.stderr
    config = load_state_dict_file(tmp_path / "run" / "last.pt")["train_config"]
    assert (config["lr_schedule"], config["ema_decay"]) == ("constant", 0.999)


def test_unknown_lr_schedule_is_one_clear_line(tmp_path) -> None:
    out = _finetune(tmp_path, "--lr-schedule", "linear")
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "lr_schedule must be" in out.stderr and len(out.stderr.strip().splitlines()) <= 2
    assert not (tmp_path / "run" / "last.pt").exists()


def test_exit_heads_are_added_and_trained(tmp_path) -> None:
    out = _finetune(tmp_path, "--exit-heads")
    assert out.returncode == 0, out.stderr
    state = load_state_dict_file(tmp_path / "run" / "last.pt")
    assert state["config"]["exit_heads"] is True
    heads = {k.split(".")[1] for k in state["model"] if k.startswith("exit_heads.")}
    assert heads == {str(k) for k in range(1, 12)}
    # D1 on the 12-block testbed exits after 9, 10 or 11 blocks: those heads moved away from the
    # shared final layer they started as, the others did not.
    start = load_model("dit").final_layer.linear.weight
    moved = {k for k in heads
             if not torch.equal(state["model"][f"exit_heads.{k}.linear.weight"], start)}
    assert moved <= {"9", "10", "11"} and moved
