"""ASE fine-tuning (Algorithm 1): exit samplers, lambda(t), mixed-exit gradients, loss descent.

References: ``ExitSchedule.blocks_at_index`` for the schedule sampler, ranges read off the space's
edges by hand for the one-shot sampler, the docstring formula for ``lambda(t)``, and per-sample
forward passes (one sample at a time, no mixed-exit masking) for the gradients of a mixed batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import ase_search.finetune as finetune_module
from ase_search.data import ImageTensorDataset, MNISTDataset, mnist_split
from ase_search.diffusion import GaussianDiffusion
from ase_search.finetune import (
    FinetuneConfig,
    ScheduleExits,
    SpaceExits,
    finetune,
    finetune_one_shot,
)
from ase_search.models import create_model, load_state_dict_file
from ase_search.schedule import ExitSchedule, preset
from ase_search.space import ScheduleSpace
from ase_search.training import TimeReweighting

T = 1000


pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny_dataset(n: int = 16, seed: int = 0) -> ImageTensorDataset:
    """Random 8x8, 2-channel uint8 images with 5 classes (the "DiT-test" / "U-ViT-test" shape)."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 2, 8, 8), generator=gen, dtype=torch.uint8)  # (n, 2, 8, 8)
    labels = torch.randint(0, 5, (n,), generator=gen)  # (n,)
    return ImageTensorDataset(images, labels, num_classes=5)


def _tiny_model(name: str = "DiT-test", seed: int = 0, **overrides: Any) -> nn.Module:
    torch.manual_seed(seed)
    return create_model(name, **overrides)


class _Calls:
    """Records ``(t, n_blocks)`` of every forward of a model (a pre-hook, so nothing changes)."""

    def __init__(self, model: nn.Module) -> None:
        self.t: list[torch.Tensor] = []
        self.n_blocks: list[torch.Tensor] = []
        model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self.t.append(args[1].detach().long().cpu().clone())
        self.n_blocks.append(kwargs["n_blocks"].detach().cpu().clone())


################################################################################
#                               exit samplers                                  #
################################################################################


_SCHEDULES = [
    *[preset(name, "dit", 28) for name in ("full", "D1", "D3", "D6", "D4-data-easy")],
    *[preset(name, "dit", 12) for name in ("D3", "D6-data-easy")],
    *[preset(name, "uvit", 6) for name in ("D1", "D5", "D3-data-easy")],
    ExitSchedule("dit", 7, (0.0, 0.1, 0.3, 0.7, 0.999, 1.0), (7, 5, 4, 2, 1)),  # awkward floats
]


@pytest.mark.parametrize("schedule", _SCHEDULES, ids=lambda s: f"{s.arch}{s.depth}-{s.name}")
def test_schedule_exits_match_blocks_at_index(schedule: ExitSchedule) -> None:
    exits = ScheduleExits(schedule)
    t = torch.arange(T)
    got = exits(t)
    assert got.dtype == torch.long and got.shape == (T,)
    assert got.tolist() == [schedule.blocks_at_index(i, T) for i in range(T)]
    # Any order, any float/long dtype of t, repeated entries.
    perm = torch.randperm(T, generator=torch.Generator().manual_seed(0))
    assert torch.equal(exits(perm.double()), got[perm])
    torch.testing.assert_close(exits.expected_blocks, got.double())


def test_schedule_exits_other_num_timesteps() -> None:
    schedule = preset("D3", "uvit", 6)
    exits = ScheduleExits(schedule, num_timesteps=250)
    expected = [schedule.blocks_at_index(i, 250) for i in range(250)]
    assert exits(torch.arange(250)).tolist() == expected


_FIXED_SPACE = ScheduleSpace("dit", 6, 3, edges=(0.0, 0.25, 0.6, 1.0), min_blocks=(4, 2, 1),
                             max_blocks=(6, 5, 3), monotone=False)
_SEARCHED_SPACE = ScheduleSpace("uvit", 6, 3, edges=None, edge_grid=0.1, min_blocks=(2, 2, 2),
                                max_blocks=(5, 5, 5))


def _reference_range(space: ScheduleSpace, i: int) -> tuple[int, int]:
    if space.edges is None:
        return min(space.min_blocks), max(space.max_blocks)
    k = max(j for j in range(space.intervals) if i / T >= space.edges[j])
    return space.min_blocks[k], space.max_blocks[k]


@pytest.mark.parametrize("space", [_FIXED_SPACE, _SEARCHED_SPACE], ids=["fixed", "searched"])
def test_space_exits_draw_within_range_and_cover_it(space: ScheduleSpace) -> None:
    exits = SpaceExits(space)
    lo = torch.tensor([_reference_range(space, i)[0] for i in range(T)])  # (T,)
    hi = torch.tensor([_reference_range(space, i)[1] for i in range(T)])  # (T,)
    torch.testing.assert_close(exits.expected_blocks, (lo + hi).double() / 2)

    torch.manual_seed(0)
    t = torch.arange(T).repeat(80)  # (80 T,): every t drawn 80 times
    n = exits(t)
    assert n.dtype == torch.long
    assert bool(((n >= lo[t]) & (n <= hi[t])).all())
    # Every value of the range appears at each t: with 80 uniform draws from at most 4 values a
    # miss anywhere has probability < 4 * 1000 * 0.75**80 ~ 4e-7, so a miss means a biased sampler.
    seen = torch.zeros(T, space.depth + 1, dtype=torch.bool)
    seen[t, n] = True
    for i in range(T):
        assert seen[i].nonzero().flatten().tolist() == list(range(lo[i], hi[i] + 1)), i

    # Roughly uniform at the edges of the intervals (where an off-by-one would show).
    for i in (0, 249, 250, 599, 600, 999):
        draws = exits(torch.full((4000,), i))
        counts = torch.bincount(draws - lo[i], minlength=int(hi[i] - lo[i] + 1))
        expected = 4000 / counts.numel()
        assert counts.numel() == hi[i] - lo[i] + 1
        assert bool(((counts - expected).abs() < 5 * expected**0.5).all()), (i, counts)


def test_space_exits_full_share_trains_the_largest_count_that_often() -> None:
    share = 0.25
    exits = SpaceExits(_FIXED_SPACE, full_share=share)
    lo = torch.tensor([_reference_range(_FIXED_SPACE, i)[0] for i in range(T)])  # (T,)
    hi = torch.tensor([_reference_range(_FIXED_SPACE, i)[1] for i in range(T)])  # (T,)
    span = (hi - lo + 1).double()
    # closed form: P(n = high) = share + (1 - share) / span, P(n = j < high) = (1 - share) / span
    torch.testing.assert_close(exits.expected_blocks,
                               share * hi.double() + (1 - share) * (lo + hi).double() / 2)
    gen = torch.Generator().manual_seed(0)
    for i in (0, 300, 999):
        draws = exits(torch.full((20_000,), i), gen)
        assert bool(((draws >= lo[i]) & (draws <= hi[i])).all())
        p_high = (draws == hi[i]).double().mean().item()
        expected = share + (1 - share) / span[i].item()
        assert p_high == pytest.approx(expected, abs=4 * (expected * (1 - expected) / 20_000) ** 0.5)
        assert draws.double().mean().item() == pytest.approx(exits.expected_blocks[i].item(), abs=0.03)
    with pytest.raises(ValueError, match="full_share"):
        SpaceExits(_FIXED_SPACE, full_share=1.5)
    with pytest.raises(ValueError, match="full_share"):
        FinetuneConfig(full_share=-0.1)


def test_space_exits_deterministic_under_seed() -> None:
    exits = SpaceExits(_FIXED_SPACE)
    t = torch.arange(0, T, 3)
    torch.manual_seed(7)
    a = exits(t)
    torch.manual_seed(7)
    b = exits(t)
    torch.manual_seed(8)
    c = exits(t)
    assert torch.equal(a, b) and not torch.equal(a, c)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(exits(t, g1), exits(t, g2))


################################################################################
#                         lambda(t) and config wiring                          #
################################################################################


def _capture_train(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    captured: dict[str, Any] = {}

    def fake_train(model, dataset, config, **kwargs):
        captured.update(model=model, config=config, **kwargs)
        return "sentinel"

    monkeypatch.setattr(finetune_module, "train", fake_train)
    return captured


@pytest.mark.parametrize("arch, model_name, preset_name, gamma, cycles", [
    ("dit", "DiT-test", "D4", 2.0, 1), ("uvit", "U-ViT-test", "D2", 0.7, 3),
])
def test_finetune_builds_lambda_from_the_schedule(monkeypatch: pytest.MonkeyPatch, arch: str,
                                                  model_name: str, preset_name: str,
                                                  gamma: float, cycles: int) -> None:
    captured = _capture_train(monkeypatch)
    model = _tiny_model(model_name)
    schedule = preset(preset_name, arch, model.exit_depth)
    config = FinetuneConfig(steps=5, batch_size=3, lr=1e-3, gamma=gamma, cycles=cycles,
                            ema_decay=0.95, seed=4)
    assert finetune(model, _tiny_dataset(), schedule, config, progress=False) == "sentinel"

    lam = captured["reweighting"]
    assert isinstance(lam, TimeReweighting) and lam.cycles == cycles
    raw = [1 + gamma * (1 - schedule.blocks_at_index(i) / schedule.depth) for i in range(T)]
    expected = torch.tensor([r / (sum(raw) / T) for r in raw], dtype=torch.float32)
    torch.testing.assert_close(lam.weights, expected, rtol=1e-6, atol=1e-6)
    assert lam.weights.double().mean().item() == pytest.approx(1.0, abs=1e-6)
    t = torch.arange(T)
    assert torch.equal(lam(t, cycles), torch.ones(T))  # exactly 1 after C cycles
    torch.testing.assert_close(lam(t, cycles - 1), expected)

    assert isinstance(captured["exits"], ScheduleExits)
    train_config = captured["config"]
    assert train_config.lr_schedule == ("constant" if arch == "dit" else "cosine")  # paper B.1
    assert (train_config.steps, train_config.batch_size, train_config.lr,
            train_config.ema_decay, train_config.seed) == (5, 3, 1e-3, 0.95, 4)
    assert captured["checkpoint_extra"]["schedule"] == schedule.to_dict()


def test_finetune_lr_schedule_override(monkeypatch: pytest.MonkeyPatch) -> None:
    captured = _capture_train(monkeypatch)
    model = _tiny_model("DiT-test")
    finetune(model, _tiny_dataset(), preset("D1", "dit", 4),
             FinetuneConfig(steps=1, lr_schedule="cosine"), progress=False)
    assert captured["config"].lr_schedule == "cosine"


def test_default_lr_schedule_is_the_papers_per_arch_and_cosine_for_one_shot(
        monkeypatch: pytest.MonkeyPatch) -> None:
    captured = _capture_train(monkeypatch)
    space = ScheduleSpace("dit", 4, 2, edges=(0.0, 0.5, 1.0), min_blocks=(3, 1), max_blocks=(4, 2))
    finetune(_tiny_model("DiT-test"), _tiny_dataset(), preset("D1", "dit", 4),
             FinetuneConfig(steps=1), progress=False)
    assert captured["config"].lr_schedule == "constant"  # the paper's DiT fine-tune
    finetune_one_shot(_tiny_model("DiT-test"), _tiny_dataset(), space, FinetuneConfig(steps=1),
                      progress=False)
    assert captured["config"].lr_schedule == "cosine"
    finetune_one_shot(_tiny_model("DiT-test"), _tiny_dataset(), space,
                      FinetuneConfig(steps=1, lr_schedule="constant"), progress=False)
    assert captured["config"].lr_schedule == "constant"  # an explicit choice wins


def test_one_shot_lambda_uses_expected_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    captured = _capture_train(monkeypatch)
    space = ScheduleSpace("dit", 4, 2, edges=(0.0, 0.5, 1.0), min_blocks=(3, 1), max_blocks=(4, 2))
    finetune_one_shot(_tiny_model("DiT-test"), _tiny_dataset(), space,
                      FinetuneConfig(steps=1, gamma=1.0, full_share=0.0), progress=False)
    # Expected count 3.5 on [0, 0.5), 1.5 on [0.5, 1): dropped shares 0.125 and 0.625.
    raw = torch.tensor([1.125] * 500 + [1.625] * 500, dtype=torch.float64)
    torch.testing.assert_close(captured["reweighting"].weights, (raw / raw.mean()).float())
    assert isinstance(captured["exits"], SpaceExits)
    assert captured["checkpoint_extra"]["space"] == space.to_dict()


################################################################################
#                     mixed-exit batches vs one sample at a time               #
################################################################################


@pytest.mark.parametrize("model_name", ["DiT-test", "U-ViT-test"])
def test_mixed_exit_batch_gradients_equal_per_sample(model_name: str) -> None:
    """The batch loss of train (ScheduleExits + hybrid loss + lambda) has per-sample gradients."""
    # No label dropout: its per-sample draws would differ between the batch and single samples.
    model = _tiny_model(model_name, seed=1, class_dropout_prob=0.0).double().train()
    with torch.no_grad():  # leave the zero-initialised output layers: every path gets a gradient
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    depth = model.exit_depth
    schedule = ExitSchedule(model.arch, depth, (0.0, 0.25, 0.5, 1.0), (depth, depth - 1, 1))
    exits = ScheduleExits(schedule)
    lam = TimeReweighting(1.0 - exits.expected_blocks / depth, gamma=2.0, cycles=1)
    diffusion = GaussianDiffusion()

    gen = torch.Generator().manual_seed(0)
    t = torch.tensor([249, 250, 499, 500, 0, 999, 260])  # (7,): straddles both interval edges
    N = t.shape[0]
    x0 = torch.rand(N, 2, 8, 8, generator=gen, dtype=torch.float64) * 2 - 1  # (N, 2, 8, 8)
    y = torch.randint(0, 5, (N,), generator=gen)  # (N,)
    noise = torch.randn(N, 2, 8, 8, generator=gen, dtype=torch.float64)  # (N, 2, 8, 8)
    n_blocks = exits(t)  # (N,)
    assert n_blocks.tolist() == [depth, depth - 1, depth - 1, 1, depth, 1, depth - 1]
    weight = lam(t, epoch=0).double()  # (N,)

    def loss_of(idx: slice) -> torch.Tensor:
        x_t = diffusion.q_sample(x0[idx], t[idx], noise[idx])  # (n, 2, 8, 8)
        out = model(x_t, t[idx], y[idx], n_blocks=n_blocks[idx])  # (n, C_out, 8, 8)
        per_sample = diffusion.training_losses(out, x0[idx], x_t, t[idx], noise[idx])["loss"]
        return per_sample * weight[idx]  # (n,)

    params = dict(model.named_parameters())
    model.zero_grad()
    batch_loss = loss_of(slice(None)).mean()
    batch_loss.backward()
    batch_grads = {k: p.grad.clone() if p.grad is not None else torch.zeros_like(p)
                   for k, p in params.items()}

    model.zero_grad()
    total = 0.0
    for i in range(N):
        single = loss_of(slice(i, i + 1)).sum() / N
        single.backward()
        total += single.item()
    assert batch_loss.item() == pytest.approx(total, rel=1e-10)
    nonzero = 0
    for k, p in params.items():
        ref = p.grad if p.grad is not None else torch.zeros_like(p)
        torch.testing.assert_close(batch_grads[k], ref, rtol=1e-9, atol=1e-12, msg=k)
        nonzero += int(ref.abs().sum() > 0)
    assert nonzero > len(params) // 2  # the comparison is not between two sets of zeros


def test_train_runs_each_sample_with_its_schedule_count(tmp_path: Path) -> None:
    model = _tiny_model("DiT-test")
    calls = _Calls(model)
    schedule = ExitSchedule("dit", 4, (0.0, 0.3, 0.6, 1.0), (4, 2, 1))
    result = finetune(model, _tiny_dataset(), schedule, FinetuneConfig(steps=3, batch_size=8),
                      out_dir=tmp_path, progress=False)
    assert result.step == 3 and len(calls.t) == 3
    for t, n in zip(calls.t, calls.n_blocks):
        assert n.tolist() == [schedule.blocks_at_index(int(i)) for i in t]
    state = load_state_dict_file(tmp_path / "last.pt")
    assert state["schedule"] == schedule.to_dict() and state["finetune"] == "algorithm-1"


def test_one_shot_runs_each_sample_within_the_space(tmp_path: Path) -> None:
    model = _tiny_model("U-ViT-test")
    calls = _Calls(model)
    space = ScheduleSpace("uvit", 3, 2, edges=(0.0, 0.4, 1.0), min_blocks=(2, 1), max_blocks=(3, 2))
    finetune_one_shot(model, _tiny_dataset(), space, FinetuneConfig(steps=4, batch_size=16),
                      out_dir=tmp_path, progress=False)
    t, n = torch.cat(calls.t), torch.cat(calls.n_blocks)
    lo = torch.where(t < 400, 2, 1)
    assert bool(((n >= lo) & (n <= lo + 1)).all())
    assert set(n.tolist()) == {1, 2, 3}
    assert load_state_dict_file(tmp_path / "last.pt")["space"] == space.to_dict()


################################################################################
#                                loss descent                                  #
################################################################################


def test_finetune_lowers_held_out_loss_on_mnist() -> None:
    train_idx, test_idx = mnist_split()
    train_set, test_set = MNISTDataset(indices=train_idx), MNISTDataset(indices=test_idx)
    model = _tiny_model("DiT-T", seed=0, hidden_size=32, depth=4, num_heads=2)
    schedule = preset("D4", "dit", 4)
    diffusion = GaussianDiffusion()

    gen = torch.Generator().manual_seed(123)
    idx = torch.randperm(len(test_set), generator=gen)[:64]
    x0 = test_set.images[idx].float() / 127.5 - 1.0  # (64, 1, 28, 28)
    y = test_set.labels[idx]  # (64,)
    t = torch.linspace(0, T - 1, 64).long()  # (64,): every interval of the schedule
    noise = torch.randn(x0.shape, generator=gen)  # (64, 1, 28, 28)
    n_blocks = torch.tensor([schedule.blocks_at_index(int(i)) for i in t])  # (64,)

    @torch.no_grad()
    def held_out_loss(m: nn.Module) -> float:
        was_training = m.training
        m.eval()
        x_t = diffusion.q_sample(x0, t, noise)
        out = m(x_t, t, y, n_blocks=n_blocks)
        m.train(was_training)
        return diffusion.training_losses(out, x0, x_t, t, noise)["loss"].mean().item()

    before = held_out_loss(model)
    config = FinetuneConfig(steps=40, batch_size=32, lr=2e-3, ema_decay=0.9)
    result = finetune(model, train_set, schedule, config, progress=False)
    after_student, after_teacher = held_out_loss(result.model), held_out_loss(result.ema)
    assert after_student < 0.8 * before, (before, after_student)
    assert after_teacher < 0.8 * before, (before, after_teacher)


################################################################################
#                               bad input                                      #
################################################################################


@pytest.mark.parametrize("kwargs, field", [
    ({"steps": -1}, "steps"),
    ({"steps": 1.5}, "steps"),
    ({"batch_size": 0}, "batch_size"),
    ({"lr": 0.0}, "lr"),
    ({"lr": float("nan")}, "lr"),
    ({"lr_schedule": "step"}, "lr_schedule"),
    ({"ema_decay": 1.0}, "ema_decay"),
    ({"ema_decay": -0.5}, "ema_decay"),
    ({"gamma": -1.0}, "gamma"),
    ({"gamma": float("inf")}, "gamma"),
    ({"cycles": -1}, "cycles"),
    ({"seed": "0"}, "seed"),
])
def test_finetune_config_rejects_bad_values(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=rf"\b{field}\b"):
        FinetuneConfig(**kwargs)


def test_finetune_rejects_mismatched_model() -> None:
    model = _tiny_model("DiT-test")  # dit, 4 blocks
    with pytest.raises(ValueError, match="expects 28 exitable blocks but the model has 4"):
        finetune(model, _tiny_dataset(), preset("D3", "dit", 28), FinetuneConfig(steps=1),
                 progress=False)
    with pytest.raises(ValueError, match="uvit"):
        finetune(model, _tiny_dataset(), preset("D3", "uvit", 4), FinetuneConfig(steps=1),
                 progress=False)


def test_finetune_of_a_reuse_schedule_says_it_trains_skip() -> None:
    """Block reuse samples with a cached residual that training never sees: say so."""
    schedule = preset("D3", "dit", 4)
    with pytest.warns(UserWarning, match="fine-tuned as skip"):
        finetune(_tiny_model("DiT-test"), _tiny_dataset(), schedule.with_reuse(2),
                 FinetuneConfig(steps=1, batch_size=4), progress=False)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the paper's skip schedule: no warning
        finetune(_tiny_model("DiT-test"), _tiny_dataset(), schedule,
                 FinetuneConfig(steps=1, batch_size=4), progress=False)


def test_finetune_divergence_raises() -> None:
    model = _tiny_model("DiT-test")
    model.register_forward_hook(lambda module, args, out: out * float("nan"))
    with pytest.raises(FloatingPointError, match="diverged"):
        finetune(model, _tiny_dataset(), preset("D3", "dit", 4), FinetuneConfig(steps=2),
                 progress=False)


################################################################################
#                  one-shot weights: keyed cache, resume, records              #
################################################################################

# The one-shot fine-tune as `ase-search run` makes it, on a tiny DiT; run in a subprocess that
# SIGKILLs itself right after the training state of step KILL_AT is saved (a real kill: no
# exception handler, no finally, no atexit runs).
_ONE_SHOT_SCRIPT = """
import os, signal, sys
import torch
from ase_search.finetune import FinetuneConfig, one_shot_weights
from ase_search.models import create_model
from ase_search.space import ScheduleSpace

torch.set_num_threads(1)
data, out_dir, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])

def kill(path, step):
    if step == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)

torch.manual_seed(0)
model = create_model("DiT-test")
space = ScheduleSpace("dit", 4, 2, edges=(0.0, 0.5, 1.0), min_blocks=(3, 1), max_blocks=(4, 3))
config = FinetuneConfig(steps=6, batch_size=8, lr=1e-3, ema_decay=0.9, distill=True, seed=2)
print(one_shot_weights(model, space, config, data=data, out_dir=out_dir, name="dit",
                       progress=False, checkpoint_every=2, on_checkpoint=kill))
"""
_SPACE = ScheduleSpace("dit", 4, 2, edges=(0.0, 0.5, 1.0), min_blocks=(3, 1), max_blocks=(4, 3))
_CONFIG = FinetuneConfig(steps=6, batch_size=8, lr=1e-3, ema_decay=0.9, distill=True, seed=2)


def _latents(tmp_path: Path) -> str:
    """A latents file in the tiny DiT's shape: one_shot_weights reads data through its spec."""
    dataset = _tiny_dataset(n=16)
    path = tmp_path / "latents.pt"
    torch.save({"latents": dataset.images.float() / 127.5 - 1.0, "labels": dataset.labels}, path)
    return str(path)


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def _one_shot(tmp_path: Path, out_dir: Path, config: FinetuneConfig = _CONFIG,
              **kwargs: Any) -> Path:
    return finetune_module.one_shot_weights(_tiny_model("DiT-test"), _SPACE, config,
                                            data=_latents(tmp_path), out_dir=out_dir,
                                            name="dit", progress=False, checkpoint_every=2,
                                            **kwargs)


def test_one_shot_weights_after_a_sigkill_resume_to_the_uninterrupted_weights(
        tmp_path: Path) -> None:
    import subprocess
    import sys

    data = _latents(tmp_path)
    killed = subprocess.run([sys.executable, "-c", _ONE_SHOT_SCRIPT, data,
                             str(tmp_path / "killed"), "4"], capture_output=True, text=True,
                            timeout=120)
    assert killed.returncode == -9, killed.stderr
    partial = list((tmp_path / "killed").glob("dit-one-shot-*.safetensors.partial"))
    assert len(partial) == 1 and not list((tmp_path / "killed").glob("*.safetensors"))
    assert load_state_dict_file(partial[0] / "last.pt")["step"] == 4

    # The re-run resumes: it saves only the final state (step 6), never steps 2 and 4 again.
    seen: list[int] = []
    resumed = _one_shot(tmp_path, tmp_path / "killed",
                        on_checkpoint=lambda path, step: seen.append(step))
    assert seen == [6]
    assert not partial[0].exists()  # the partial state is gone once the weights are written
    straight = subprocess.run([sys.executable, "-c", _ONE_SHOT_SCRIPT, data,
                               str(tmp_path / "straight"), "-1"], capture_output=True,
                              text=True, timeout=120)
    assert straight.returncode == 0, straight.stderr
    expected = Path(straight.stdout.strip().splitlines()[-1])
    assert expected.name == resumed.name
    a, b = _tensors(resumed), _tensors(expected)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    # Not vacuous: the fine-tune moved the weights away from the start.
    start = _tiny_model("DiT-test").state_dict()
    assert any(not torch.equal(a[f"model.{k}"], v) for k, v in start.items())


def test_one_shot_weights_with_other_settings_are_other_files(tmp_path: Path) -> None:
    from dataclasses import replace

    first = _one_shot(tmp_path, tmp_path)
    other = _one_shot(tmp_path, tmp_path, replace(_CONFIG, steps=3, distill=False))
    assert first != other and first.is_file() and other.is_file()
    a, b = _tensors(first), _tensors(other)
    assert any(not torch.equal(a[k], b[k]) for k in a)
    meta = load_state_dict_file(other)
    assert meta["steps"] == 3 and meta["finetune_config"]["distill"] is False
    assert other.name == f"dit-one-shot-{meta['one_shot_key'][:12]}.safetensors"
    # The same settings again: the cached file, no training (no state saved).
    seen: list[int] = []
    assert _one_shot(tmp_path, tmp_path, on_checkpoint=lambda p, s: seen.append(s)) == first
    assert seen == []
    # A file under the name of one key but holding another's weights is refused, not reused
    # and not overwritten.
    first.write_bytes(other.read_bytes())
    with pytest.raises(ValueError, match="made from other settings"):
        _one_shot(tmp_path, tmp_path)
    assert first.read_bytes() == other.read_bytes()


def test_one_shot_resume_refuses_a_partial_state_of_another_key(tmp_path: Path) -> None:
    key = finetune_module.one_shot_key(_tiny_model("DiT-test"), _SPACE, _CONFIG,
                                       _latents(tmp_path))
    path = finetune_module.one_shot_path(tmp_path, "dit", key)
    partial = path.with_name(path.name + ".partial")
    finetune(_tiny_model("DiT-test"), _tiny_dataset(), _SPACE, FinetuneConfig(steps=1),
             out_dir=partial, progress=False, checkpoint_extra={"one_shot_key": "f" * 64})
    with pytest.raises(ValueError, match="written by another run.*one_shot_key"):
        _one_shot(tmp_path, tmp_path)


@pytest.mark.parametrize("change", [
    "model", "space", "data", *[f"config.{name}" for name in (
        "steps", "batch_size", "lr", "lr_schedule", "ema_decay", "gamma", "cycles", "seed",
        "full_share", "distill")],
])
def test_one_shot_key_covers_what_makes_the_weights(change: str, tmp_path: Path) -> None:
    from dataclasses import replace

    data = _latents(tmp_path)
    base = finetune_module.one_shot_key(_tiny_model("DiT-test"), _SPACE, _CONFIG, data)
    # Equal inputs, equal keys (a fresh model from the same seed; the space's prose is not
    # covered).
    assert finetune_module.one_shot_key(_tiny_model("DiT-test"), replace(_SPACE, description="x"),
                                        _CONFIG, data) == base
    model, space, config = _tiny_model("DiT-test"), _SPACE, _CONFIG
    if change == "model":
        with torch.no_grad():
            next(model.parameters()).view(-1)[0] += 1e-6
    elif change == "space":
        space = replace(_SPACE, max_blocks=(4, 2))
    elif change == "data":
        torch.save({"latents": torch.zeros(16, 2, 8, 8), "labels": torch.zeros(16).long()},
                   data)
    else:
        name = change.split(".")[1]
        other = {"steps": 7, "batch_size": 9, "lr": 2e-3, "lr_schedule": "constant",
                 "ema_decay": 0.5, "gamma": 1.0, "cycles": 2, "seed": 3, "full_share": 0.25,
                 "distill": False}[name]
        assert getattr(config, name) != other
        config = replace(config, **{name: other})
    assert finetune_module.one_shot_key(model, space, config, data) != base


def test_weights_record_is_relative_to_the_study_and_survives_a_move(tmp_path: Path) -> None:
    import shutil

    made = _one_shot(tmp_path, tmp_path / "studies")
    record = finetune_module.weights_record(made, tmp_path / "studies")
    key = load_state_dict_file(made)["one_shot_key"]
    assert record == {"path": made.name, "one_shot_key": key}
    shutil.move(tmp_path / "studies", tmp_path / "clone")  # a clone elsewhere
    found = finetune_module.recorded_weights(record, tmp_path / "clone")
    assert found == tmp_path / "clone" / made.name
    # Exported next to the study's folder: the path is re-based on the schedule's folder.
    exported = finetune_module.rebase_weights(record, tmp_path / "clone", tmp_path / "out")
    assert exported == {"path": f"../clone/{made.name}", "one_shot_key": key}
    assert finetune_module.recorded_weights(exported, tmp_path / "out").resolve() == found
    # A study made before relative records: an absolute path of another machine.
    legacy = f"/elsewhere/studies/{made.name}"
    assert finetune_module.recorded_weights(legacy, tmp_path / "clone") == found
    # Weights made from other settings under the recorded name are refused.
    wrong = dict(record, one_shot_key="0" * 64)
    with pytest.raises(ValueError, match="made from other settings"):
        finetune_module.recorded_weights(wrong, tmp_path / "clone")
    # Missing weights: the error says how to rebuild them.
    found.unlink()
    with pytest.raises(ValueError, match=r"are missing; rebuild them with `python -m "
                                         r"tools.reference_study --arch uvit --weights-only`"):
        finetune_module.recorded_weights(record, tmp_path / "clone", arch="uvit")


################################################################################
#                                  exit heads                                  #
################################################################################


@pytest.mark.parametrize("name", ["DiT-test", "U-ViT-test"])
def test_finetune_trains_each_exit_head_only_on_the_samples_that_exit_there(
        name: str, tmp_path: Path) -> None:
    from ase_search.models import add_exit_heads, load_checkpoint

    model = add_exit_heads(_tiny_model(name))
    depth = model.exit_depth
    # Samples exit after 2 blocks (t >= 0.5) or run every block: only head 2 and the shared head
    # (the full depth's) see samples.
    schedule = ExitSchedule(model.arch, depth, (0.0, 0.5, 1.0), (depth, 2))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    result = finetune(model, _tiny_dataset(), schedule, FinetuneConfig(steps=3, batch_size=8),
                      out_dir=tmp_path, progress=False)
    trained = result.model.state_dict()

    def changed(prefix: str) -> bool:
        keys = [k for k in start if k.startswith(prefix)]
        assert keys, prefix
        return any(not torch.equal(trained[k], start[k]) for k in keys)

    assert changed("exit_heads.2.")
    assert changed("final_layer." if model.arch == "dit" else "decoder_pred.")
    for k in range(1, depth):
        if k != 2:
            assert not changed(f"exit_heads.{k}."), k
    # The training state records the heads with the model and loads with them.
    loaded, meta = load_checkpoint(tmp_path / "last.pt", ema=False)
    assert meta["config"]["exit_heads"] is True
    for key, value in trained.items():
        assert torch.equal(loaded.state_dict()[key], value), key


@pytest.mark.parametrize("arch", ["dit", "uvit"])
def test_shipped_one_shot_weights_serve_the_default_search_without_a_fine_tune(
        arch: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib
    import shutil
    from dataclasses import replace

    from ase_search.pareto import open_study
    from ase_search.record import CONFIRM_PREFIX, point_records
    from ase_search.search.config import SearchConfig, one_shot_config
    from ase_search.space import load_space
    from ase_search.testbed import TESTBEDS, load_model

    model = load_model(arch)
    space = load_space(TESTBEDS[arch].space, depth=model.exit_depth)
    config = one_shot_config(SearchConfig(arch=arch))
    key = finetune_module.one_shot_key(model, space, config, "mnist")

    def no_training(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the shipped weights should have been used")

    monkeypatch.setattr(finetune_module, "finetune", no_training)
    out = finetune_module.one_shot_weights(model, space, config, data="mnist", out_dir=tmp_path,
                                           name=arch, progress=False, key=key)
    assert out == finetune_module.one_shot_path(tmp_path, arch, key)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    # The reference: the digest (prefix) the reference study's confirmation records hold, made on
    # the weights a fine-tune wrote there (read from a copy: the committed study stays as it is).
    shutil.copyfile(Path(__file__).parents[1] / "studies" / "reference" / f"{arch}.db",
                    tmp_path / "reference.db")
    records = point_records(open_study(tmp_path / "reference.db"))
    recorded = {r["weights_sha256"] for name, r in records.items()
                if name.startswith(CONFIRM_PREFIX) and r.get("weights_sha256")}
    assert any(digest.startswith(prefix) for prefix in recorded), recorded
    assert load_state_dict_file(out)["one_shot_key"] == key
    # Any other setting: nothing shipped, so a fine-tune.
    other = finetune_module.one_shot_key(model, space, replace(config, steps=2399), "mnist")
    assert finetune_module.shipped_one_shot(other) is None
    with pytest.raises(AssertionError, match="shipped"):
        finetune_module.one_shot_weights(model, space, replace(config, steps=2399),
                                         data="mnist", out_dir=tmp_path, name=arch,
                                         progress=False, key=other)
