"""benchmarks/levers: its list studies, and a tiny run through the real runner and engine."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml

from benchmarks import levers
from benchmarks.levers import BENCHMARK, LISTS, VARIANTS, Params, keys, search_config



@pytest.mark.parametrize("arch", ["dit", "uvit"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_each_variant_is_a_list_study_of_its_testbed(arch, variant, tmp_path) -> None:
    from ase_search.schedule import PEERS
    from ase_search.search.listed import load_listed
    from ase_search.space import load_space

    assert keys(Params(archs=(arch,), variants=(variant,))) == [f"{arch}/{variant}"]
    config = search_config(Params(studies=tmp_path), f"{arch}/{variant}")
    space = load_space(config.space)
    listed = load_listed(config.configs, arch=arch, depth=space.depth)
    assert config.configs and config.confirm == 5 and config.n_samples == 500
    assert config.finetune == ("none" if variant in ("base", "peers") else "one-shot")
    assert (space.levers is not None and space.levers.exit_heads) == (variant == "exit-heads")
    names = {c.schedule.name for c in listed}
    if variant == "base":  # every preset skipping and reusing
        assert {"D1", "D3", "D4", "D1-reuse2", "D3-reuse3"} <= names
    elif variant == "peers":  # every peer that addresses the testbed's blocks, at DDIM-20
        whole = {n for n, p in PEERS.items() if p.ranges == ("rear",)}
        assert names == (set(PEERS) if arch == "dit" else whole)
        assert {c.schedule.name for c in listed if c.sampler.steps == 20
                and c.sampler.name == "ddim"} == names
        assert {(c.sampler.name, c.sampler.steps) for c in listed} == {
            ("ddim", 20), *(("dpm-solver", k) for k in (
                (5, 7, 10, 14, 20) if arch == "dit" else (5, 10, 20)))}
        return
    else:
        assert names == {"D1", "D3", "D4", "D6"}
    assert {c.sampler.steps for c in listed} == {7, 10, 14, 20}


def test_bad_parameters_are_refused() -> None:
    for bad in ({"variants": ("cache",)}, {"variants": ()}, {"archs": ("unet",)}, {"seeds": 1}):
        with pytest.raises(ValueError):
            Params(**bad)


def test_the_report_is_each_study_verdict(tmp_path, tiny_dit, joint_space, monkeypatch) -> None:
    from ase_search.fronts import study_verdict, verdict_lines
    from ase_search.search import SearchConfig

    root = tiny_dit(tmp_path / "model", joint_space("ddim", seeds="full", max_steps=4))
    (root / "list.yaml").write_text(
        "configurations:\n  - {sampler: ddim, steps: [3, 4], schedule: D1, reuse: [null, 2]}\n")
    storage = tmp_path / "studies" / "levers-dit-base.db"
    storage.parent.mkdir()

    def tiny(params, key):
        return SearchConfig(arch="dit", space=str(root / "space.yaml"),
                            checkpoint=str(root / "tiny.pt"), configs=str(root / "list.yaml"),
                            finetune="none", n_samples=16, batch_size=16, latency_batch=8,
                            confirm=params.seeds, grid=0, max_concurrent=1,
                            storage=str(storage))

    monkeypatch.setattr(levers, "search_config", tiny)
    out = tmp_path / "levers.md"
    levers.run(BENCHMARK, ["--archs", "dit", "--variants", "base", "--seeds", "2",
                           "--studies", str(storage.parent), "--out", str(out)])
    study = optuna.load_study(study_name="dit", storage=f"sqlite:///{storage}")
    text = out.read_text()
    for line in verdict_lines(study_verdict(study)):
        assert f"- {line}" in text
    for label in ("ddim-3, D1", "ddim-4, full", "ddim-2, full"):
        assert f"| {label} " in text
    assert Path(LISTS / VARIANTS["base"][0]).is_file()
    assert yaml.safe_load((LISTS / VARIANTS["one-shot"][0]).read_text())["configurations"]


def test_where_each_lever_stops_paying_reads_the_rule_s_words() -> None:
    def row(configuration, word, fid=4.0, kind="exit"):
        return {"configuration": configuration, "kind": kind, "fid": fid,
                "vs_fewer_steps": word}

    table = [row("ddim-20, full", None, kind="steps-only"),
             row("dpm-solver-5, taylorseer-2", None, fid=7.5),
             row("dpm-solver-10, taylorseer-2", "0.57x"),
             row("ddim-14, D1 reuse2", "beyond the ladder"),
             row("ddim-20, D1 reuse2", "1.30x"), row("ddim-20, D1", "0.90x")]
    lines = levers._stops_paying(table)
    assert lines[0].endswith("It pays at reuse2 at ddim-14, reuse2 at ddim-20.")
    rows = lines[2].splitlines()
    assert [c.strip() for c in rows[0].split("|")[1:-1]] == [
        "lever", "sampler", "5 steps", "10 steps", "14 steps", "20 steps"]
    cells = [[c.strip() for c in r.split("|")[1:-1]] for r in rows[2:]]
    assert cells == [["taylorseer-2", "dpm-solver", "FID 7.50, outside", "0.57x", "", ""],
                     ["reuse2", "ddim", "", "", "beyond the ladder", "1.30x"],
                     ["skip", "ddim", "", "", "", "0.90x"]]
    nothing = levers._stops_paying([row("ddim-20, D1", "0.90x")])
    assert "**It pays at no step count measured**" in nothing[0]
