"""``ase-search eval`` and ``ase-search bench`` on tiny checkpoints, through the entry point."""

from __future__ import annotations

import json

import pytest
import torch

from ase_search.evaluate import benchmark_latency, evaluate
from ase_search.models import create_model, save_checkpoint
from ase_search.samplers import SamplerConfig
from ase_search.schedule import preset

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    dit = create_model("DiT-T", hidden_size=32, depth=4, num_heads=2)
    uvit = create_model("U-ViT-T", embed_dim=32, depth=4, num_heads=2)
    return {"dit": save_checkpoint(folder / "dit.pt", dit),
            "uvit": save_checkpoint(folder / "uvit.pt", uvit)}


@pytest.fixture(autouse=True)
def fid_cache(tmp_path_factory, monkeypatch):
    """One FID reference cache for the module, never the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "xdg-cache"))



def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


# ---------------------------------------------------------------------------------- eval
def test_eval_prints_fid_writes_grid_and_json(checkpoints, tmp_path, cli):
    grid, out_json = tmp_path / "grid.png", tmp_path / "eval.json"
    code, out, err = cli(["eval", "--arch", "dit", "-c", str(checkpoints["dit"]), "--schedule",
                          "D4", "--steps", "2", "--n", "4", "--seeds", "2", "--batch-size", "4",
                          "--device", "cpu", "--grid", str(grid), "--json", str(out_json)])
    assert code == 0, err
    assert "FID (mnist-classifier)" in out and "±" in out
    assert grid.read_bytes().startswith(b"\x89PNG")
    result = json.loads(out_json.read_text())
    fids = [m["fid"] for m in result["per_seed"]]
    assert len(fids) == 2 and all(f > 0 for f in fids)
    assert result["fid_mean"] == pytest.approx(sum(fids) / 2)
    assert result["fid_std"] == pytest.approx(abs(fids[0] - fids[1]) / 2 ** 0.5)
    # D4 on 4 blocks is (4, 3, 3, 2, 2) over fifths of t; DDIM-2 calls at t = 0.5 and t = 0.
    assert result["schedule"]["blocks"] == [4, 3, 3, 2, 2]
    assert (result["block_evals"], result["model_calls"]) == (3 + 4, 2)
    assert result["block_acceleration"] == pytest.approx(1 - 7 / 8)
    assert 0 < result["flop_acceleration"] < result["block_acceleration"]
    assert 0 < result["predicted_acceleration"] < 1
    assert f"{result['block_acceleration']:.1%}" in out


def test_evaluate_uses_common_random_numbers(checkpoints):
    """Seed 1 gives the same FID whether it is evaluated alone or as a second seed."""
    from ase_search.models import load_checkpoint

    model, _ = load_checkpoint(checkpoints["dit"])
    config = SamplerConfig("ddim", 2)
    schedule = preset("D4", "dit", 4)
    kwargs = dict(sampler=config, n=4, batch_size=4, cost_model=None)
    both = evaluate(model, schedule, seeds=[0, 1], **kwargs)
    alone = evaluate(model, schedule, seeds=[1], **kwargs)
    assert alone.metrics[0]["fid"] == pytest.approx(both.metrics[1]["fid"], rel=1e-6)
    assert alone.std() is None and both.std() is not None
    assert both.metrics[0]["fid"] != pytest.approx(both.metrics[1]["fid"])
    assert tuple(both.images.shape) == (4, 1, 28, 28)
    with pytest.raises(ValueError, match="seeds must be distinct"):
        evaluate(model, schedule, seeds=[1, 1], **kwargs)
    with pytest.raises(ValueError, match="n must be"):
        evaluate(model, schedule, seeds=[0], **{**kwargs, "n": 1})
    with pytest.raises(ValueError, match="schedule"):
        evaluate(model, preset("D4", "dit", 12), seeds=[0], **kwargs)


@pytest.mark.parametrize("argv, message", [
    (["--schedule", "D9"], "unknown preset 'D9'"),
    (["--fid-weights", "{tmp}/missing.pt"], "--fid-weights"),
    (["--fid-weights", "{tmp}/garbage.pt"], "not a digit classifier checkpoint"),
    (["--data", "{tmp}"], "inception-v3-compat"),
    (["--grid", "{tmp}/grid.jpg"], "--grid must be a .png"),
])
def test_eval_bad_input_is_one_error_line(argv, message, checkpoints, tmp_path, cli):
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    argv = [a.format(tmp=tmp_path) for a in argv]
    code, out, err = cli(["eval", "-c", str(checkpoints["dit"]), "--n", "4", "--steps", "2",
                          "--device", "cpu", *argv])
    assert code == 2
    assert message in one_error_line(err)
    assert not (tmp_path / "eval-D9.png").exists()


def test_eval_missing_checkpoint_is_one_error_line(tmp_path, cli):
    code, _, err = cli(["eval", "-c", str(tmp_path / "nope.pt"), "--n", "4", "--steps", "2"])
    assert code == 2
    assert "nope.pt" in one_error_line(err)


# ---------------------------------------------------------------------------------- bench
def test_bench_prints_table_and_writes_markdown(checkpoints, tmp_path, cli):
    md = tmp_path / "latency.md"
    code, out, err = cli(["bench", "--arch", "uvit", "-c", str(checkpoints["uvit"]),
                          "--schedules", "full,D1,D6", "--steps", "2", "--batch-size", "2",
                          "--repeats", "1", "--device", "cpu", "--markdown", str(md)])
    assert code == 0, err
    for name in ("full", "D1", "D6", "measured", "FLOP"):
        assert name in out
    rows = [line for line in md.read_text().splitlines() if line.startswith("| D")]
    assert [r.split("|")[1].strip() for r in rows] == ["D1", "D6"]


def test_bench_with_random_weights_adds_the_full_baseline(cli):
    code, out, err = cli(["bench", "--arch", "dit", "--model", "DiT-T", "--schedules", "D4",
                          "--steps", "2", "--batch-size", "1", "--repeats", "1", "--device",
                          "cpu"])
    assert code == 0, err
    assert "full" in out and "D4" in out


def test_benchmark_latency_columns_and_ideal():
    torch.manual_seed(0)
    model = create_model("DiT-T", hidden_size=32, depth=4, num_heads=2)
    schedules = {"full": None, "D4": preset("D4", "dit", 4)}
    df = benchmark_latency(model, schedules, sampler=SamplerConfig("ddim", 2), batch_size=2,
                           repeats=1)
    assert list(df["schedule"]) == ["full", "D4"]
    full, d4 = df.iloc[0], df.iloc[1]
    assert full["measured_acceleration"] == 0 and full["flop_acceleration"] == 0
    assert d4["block_acceleration"] == pytest.approx(1 - 7 / 8)
    assert d4["measured_over_flop"] == pytest.approx(
        d4["measured_acceleration"] / d4["flop_acceleration"])
    assert df.attrs["batch_size"] == 2 and df.attrs["cost_model"]["depth"] == 4
    with pytest.raises(ValueError, match="schedules"):
        benchmark_latency(model, {"x": preset("D4", "dit", 12)}, sampler=SamplerConfig("ddim", 2))


@pytest.mark.parametrize("argv, message", [
    (["--schedules", "full,D9"], "unknown preset 'D9'"),
    (["--arch", "uvit", "--model", "DiT-T"], "pass --arch dit"),
    (["--model", "DiT-T", "-c", "x.pt"], "either --checkpoint or --model"),
    (["-c", "{tmp}/nope.pt"], "nope.pt"),
    (["--model", "DiT-T", "--markdown", "{tmp}/r.txt"], "--markdown must be a .md"),
])
def test_bench_bad_input_is_one_error_line(argv, message, tmp_path, cli):
    argv = [a.format(tmp=tmp_path) for a in argv]
    if "--model" not in argv and "-c" not in argv:
        argv += ["--model", "DiT-T"]
    code, _, err = cli(["bench", "--steps", "2", "--batch-size", "1", "--repeats", "1", *argv])
    assert code == 2
    assert message in one_error_line(err)
