"""The training loop: EMA formula, lambda(t), learning-rate schedules, resume, divergence, configs.

References are independent of ``ase_search.training``: the EMA and the lr schedules are recomputed
from their closed forms, ``lambda(t)`` from the docstring's formula with a plain Python loop, and a
resumed run is compared with an uninterrupted one started from the same weights and seed.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from ase_search.data import ImageTensorDataset
from ase_search.diffusion import GaussianDiffusion
from ase_search.models import create_model, load_state_dict_file
from ase_search.schedule import ExitSchedule, preset
from ase_search.training import TimeReweighting, TrainConfig, ema_update, train
from ase_search.training import _batch_indices, _fetch, _step_seed  # the loop's batch draw


pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny_dataset(n: int = 16, seed: int = 0) -> ImageTensorDataset:
    """Random 8x8, 2-channel uint8 images with 5 classes (the "DiT-test" / "U-ViT-test" shape)."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 2, 8, 8), generator=gen, dtype=torch.uint8)  # (n, 2, 8, 8)
    labels = torch.randint(0, 5, (n,), generator=gen)  # (n,)
    return ImageTensorDataset(images, labels, num_classes=5)


def _tiny_model(name: str = "DiT-test", seed: int = 0, **overrides) -> nn.Module:
    torch.manual_seed(seed)
    return create_model(name, **overrides)


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _assert_states_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-6, atol=1e-7, msg=key)


################################################################################
#                                     EMA                                      #
################################################################################


@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.9, 0.999])
def test_ema_update_matches_formula(alpha: float) -> None:
    teacher = _tiny_model(seed=1)
    student = _tiny_model(seed=2)
    with torch.no_grad():  # make every parameter differ (the zero-initialised ones included)
        for p in student.parameters():
            p.add_(torch.randn_like(p))
    before_t = {k: p.detach().clone() for k, p in teacher.named_parameters()}
    before_s = {k: p.detach().clone() for k, p in student.named_parameters()}

    ema_update(teacher, student, alpha)

    for key, p in teacher.named_parameters():
        expected = alpha * before_t[key].double() + (1.0 - alpha) * before_s[key].double()
        torch.testing.assert_close(p.detach().double(), expected, rtol=1e-6, atol=1e-6, msg=key)
    # The student is read, never written.
    for key, p in student.named_parameters():
        assert torch.equal(p.detach(), before_s[key]), key


def test_ema_update_copies_buffers() -> None:
    teacher, student = nn.BatchNorm1d(3), nn.BatchNorm1d(3)
    student.running_mean.fill_(2.0)
    student.num_batches_tracked.fill_(7)
    ema_update(teacher, student, 0.9)
    assert torch.equal(teacher.running_mean, student.running_mean)
    assert int(teacher.num_batches_tracked) == 7


################################################################################
#                                  lambda(t)                                   #
################################################################################


def _reference_lambda(schedule: ExitSchedule, gamma: float, T: int = 1000) -> list[float]:
    """The docstring's formula, evaluated with plain Python floats."""
    raw = [1.0 + gamma * (1.0 - schedule.blocks_at_index(i, T) / schedule.depth) for i in range(T)]
    mean = sum(raw) / T
    return [r / mean for r in raw]


@pytest.mark.parametrize("name, arch, depth, gamma", [
    ("D3", "dit", 28, 2.0), ("D6", "dit", 12, 0.5), ("D2-data-easy", "uvit", 6, 3.0),
])
def test_time_reweighting_follows_formula(name: str, arch: str, depth: int, gamma: float) -> None:
    schedule = preset(name, arch, depth)
    n = torch.tensor([schedule.blocks_at_index(i) for i in range(1000)], dtype=torch.float64)
    lam = TimeReweighting(dropped_share=1.0 - n / depth, gamma=gamma, cycles=2)
    expected = torch.tensor(_reference_lambda(schedule, gamma), dtype=torch.float32)

    torch.testing.assert_close(lam.weights, expected, rtol=1e-6, atol=1e-6)
    assert lam.weights.double().mean().item() == pytest.approx(1.0, abs=1e-6)
    # More dropped blocks, more weight: the t with the fewest blocks get the largest lambda.
    assert lam.weights[n.argmin()] == lam.weights.max() > lam.weights[n.argmax()]

    t = torch.tensor([0, 137, 500, 999])
    for epoch in (0, 1):
        torch.testing.assert_close(lam(t, epoch), expected[t])
    for epoch in (2, 3, 10):  # after C = 2 cycles lambda is exactly 1
        out = lam(t, epoch)
        assert out.dtype == torch.float32 and torch.equal(out, torch.ones(4))


def test_time_reweighting_gamma_zero_and_full_schedule_are_one() -> None:
    t = torch.arange(1000)
    share = torch.linspace(0, 0.8, 1000, dtype=torch.float64)
    assert torch.equal(TimeReweighting(share, gamma=0.0)(t, 0), torch.ones(1000))
    full = TimeReweighting(torch.zeros(1000, dtype=torch.float64), gamma=5.0)
    assert torch.equal(full(t, 0), torch.ones(1000))


def test_time_reweighting_cycles_count_data_epochs_in_train() -> None:
    """train passes the data epoch (dataset size / batch size steps each) to lambda."""
    seen: list[int] = []

    class Recording(TimeReweighting):
        def __call__(self, t: torch.Tensor, epoch: int) -> torch.Tensor:
            seen.append(epoch)
            return super().__call__(t, epoch)

    lam = Recording(torch.zeros(1000, dtype=torch.float64), gamma=1.0, cycles=1)
    config = TrainConfig(steps=7, batch_size=4, checkpoint_every=100)
    train(_tiny_model(), _tiny_dataset(n=10), config, reweighting=lam, progress=False)
    assert seen == [0, 0, 1, 1, 2, 2, 3]  # 10 // 4 = 2 steps per epoch (drop-last)


def test_train_multiplies_each_sample_loss_by_its_lambda() -> None:
    """Same seed, same batch: the step-0 loss is linear in lambda(t), sample by sample."""

    class Weights(TimeReweighting):
        def __call__(self, t: torch.Tensor, epoch: int) -> torch.Tensor:
            return self.dropped_share.float()[t]  # (N,): any per-t weights

    t_all = torch.arange(1000)
    early = Weights((t_all < 500).double())
    late = Weights((t_all >= 500).double())
    thrice = Weights(torch.full((1000,), 3.0, dtype=torch.float64))
    config = TrainConfig(steps=1, batch_size=8, log_every=1)

    def first_loss(weights: TimeReweighting | None) -> float:
        result = train(_tiny_model(), _tiny_dataset(), config, reweighting=weights, progress=False)
        return result.losses[0][1]

    plain = first_loss(None)
    assert first_loss(thrice) == pytest.approx(3 * plain, rel=1e-5)
    a, b = first_loss(early), first_loss(late)
    assert a + b == pytest.approx(plain, rel=1e-5)
    assert a > 0 and b > 0  # the batch holds t on both sides, so both parts are real


@pytest.mark.parametrize("kwargs, field", [
    ({"gamma": -0.1}, "gamma"), ({"cycles": -1}, "cycles"),
])
def test_time_reweighting_rejects_bad_values(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        TimeReweighting(torch.zeros(1000), **kwargs)


################################################################################
#                              learning-rate schedule                          #
################################################################################


def test_lr_constant_is_constant() -> None:
    config = TrainConfig(steps=50, lr=3e-4)
    assert [config.lr_at(s) for s in range(60)] == [3e-4] * 60


def test_lr_cosine_matches_closed_form() -> None:
    config = TrainConfig(steps=40, lr=2e-3, lr_schedule="cosine")
    for s in range(40):
        expected = 2e-3 * 0.5 * (1.0 + math.cos(math.pi * s / 40))
        assert config.lr_at(s) == pytest.approx(expected, rel=1e-12, abs=1e-18)
    assert config.lr_at(0) == pytest.approx(2e-3)
    assert config.lr_at(40) == pytest.approx(0.0, abs=1e-18)  # the end of the anneal


def test_lr_decay_phase_is_linear_to_zero() -> None:
    config = TrainConfig(steps=100, lr=1e-3, warmup_steps=10, decay_steps=20)
    lrs = [config.lr_at(s) for s in range(100)]
    assert lrs[10:80] == [1e-3] * 70  # stable
    # steps 80..99 take 20/20, 19/20, ..., 1/20 of lr: the last step is small but not zero
    assert lrs[80:] == pytest.approx([1e-3 * k / 20 for k in range(20, 0, -1)], rel=1e-12)
    # the stable phase does not depend on where the decay will be
    longer = TrainConfig(steps=200, lr=1e-3, warmup_steps=10, decay_steps=20)
    assert [longer.lr_at(s) for s in range(80)] == lrs[:80]
    with pytest.raises(ValueError, match="decay_steps"):
        TrainConfig(steps=10, decay_steps=-1)
    with pytest.raises(ValueError, match="decay_steps"):
        TrainConfig(steps=10, decay_steps=5, lr_schedule="cosine")


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_lr_warmup_is_linear(schedule: str) -> None:
    W, S, lr = 8, 30, 1e-3
    config = TrainConfig(steps=S, lr=lr, lr_schedule=schedule, warmup_steps=W)
    ramp = [config.lr_at(s) for s in range(W)]
    for s, value in enumerate(ramp):
        assert value == pytest.approx(lr * (s + 1) / W, rel=1e-12)
    steps = [b - a for a, b in zip(ramp, ramp[1:])]
    assert all(d == pytest.approx(lr / W, rel=1e-9) for d in steps)  # linear: constant increments
    assert ramp[-1] == pytest.approx(lr)
    for s in range(W, S):  # after warm-up: the schedule over the remaining S - W steps
        cosine = 0.5 * lr * (1 + math.cos(math.pi * (s - W) / (S - W)))
        tail = lr if schedule == "constant" else cosine
        assert config.lr_at(s) == pytest.approx(tail, rel=1e-12, abs=1e-18)


def test_train_applies_lr_schedule(tmp_path: Path) -> None:
    config = TrainConfig(steps=5, batch_size=4, lr=1e-3, lr_schedule="cosine", warmup_steps=2)
    train(_tiny_model(), _tiny_dataset(), config, out_dir=tmp_path, progress=False)
    state = load_state_dict_file(tmp_path / "last.pt")
    expected = 0.5 * 1e-3 * (1 + math.cos(math.pi * (4 - 2) / 3))  # the lr of step 4 (the last)
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(expected, rel=1e-12)


################################################################################
#                                    resume                                    #
################################################################################


class _Interrupt(Exception):
    pass


def _optimizer_steps(path: Path) -> set[int]:
    state = load_state_dict_file(path)
    return {int(s["step"]) for s in state["optimizer"]["state"].values()}


def test_resume_after_interruption_equals_uninterrupted_run(tmp_path: Path) -> None:
    """A crash after the checkpoint of step 4, then resume=True, lands where a straight run does."""
    config = TrainConfig(steps=7, batch_size=4, lr=2e-3, lr_schedule="cosine", warmup_steps=2,
                         ema_decay=0.8, checkpoint_every=2, log_every=1, seed=3)
    dataset = _tiny_dataset(n=10)
    straight = train(_tiny_model(seed=5), dataset, config, out_dir=tmp_path / "a", progress=False)

    def crash(path: Path, step: int) -> None:
        if step == 4:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        train(_tiny_model(seed=5), dataset, config, out_dir=tmp_path / "b", progress=False,
              on_checkpoint=crash)
    assert load_state_dict_file(tmp_path / "b" / "last.pt")["step"] == 4
    # A different initialisation: everything must come from the checkpoint.
    resumed = train(_tiny_model(seed=99), dataset, config, out_dir=tmp_path / "b", resume=True,
                    progress=False)

    assert resumed.step == straight.step == 7
    _assert_states_close(_state(resumed.model), _state(straight.model))
    _assert_states_close(_state(resumed.ema), _state(straight.ema))
    assert _optimizer_steps(tmp_path / "a" / "last.pt") == {7}
    assert _optimizer_steps(tmp_path / "b" / "last.pt") == {7}
    assert [s for s, _ in resumed.losses] == list(range(1, 8))
    for (s_a, a), (s_b, b) in zip(straight.losses, resumed.losses):
        assert s_a == s_b and a == pytest.approx(b, rel=1e-5)
    # Sanity: the run moved the weights, so equality above is not vacuous.
    start = _state(_tiny_model(seed=5))
    assert any(not torch.allclose(start[k], v) for k, v in _state(straight.model).items())


def test_resume_from_shorter_run_equals_uninterrupted_run(tmp_path: Path) -> None:
    """Train k steps, then call train again with resume=True and steps=K."""
    K, k = 6, 3
    dataset = _tiny_dataset(n=12)
    kwargs = dict(batch_size=4, lr=1e-3, ema_decay=0.7, checkpoint_every=k, seed=11)
    straight = train(_tiny_model("U-ViT-test", seed=2), dataset, TrainConfig(steps=K, **kwargs),
                     out_dir=tmp_path / "a", progress=False)
    first = train(_tiny_model("U-ViT-test", seed=2), dataset, TrainConfig(steps=k, **kwargs),
                  out_dir=tmp_path / "b", progress=False)
    assert first.step == k
    resumed = train(_tiny_model("U-ViT-test", seed=7), dataset, TrainConfig(steps=K, **kwargs),
                    out_dir=tmp_path / "b", resume=True, progress=False)
    assert resumed.step == K
    _assert_states_close(_state(resumed.model), _state(straight.model))
    _assert_states_close(_state(resumed.ema), _state(straight.ema))
    assert _optimizer_steps(tmp_path / "b" / "last.pt") == {K}
    assert _optimizer_steps(tmp_path / "a" / "last.pt") == {K}


def test_resume_refuses_a_checkpoint_written_by_another_run(tmp_path: Path) -> None:
    """checkpoint_extra names the run (a schedule, a one-shot key): another run's state is not
    silently continued, and the checkpoint is left as it was."""
    config = TrainConfig(steps=2, batch_size=4, checkpoint_every=1)
    train(_tiny_model(), _tiny_dataset(), config, out_dir=tmp_path, progress=False,
          checkpoint_extra={"schedule": preset("D3", "dit", 4).to_dict(), "command": "x"})
    before = (tmp_path / "last.pt").read_bytes()
    with pytest.raises(ValueError, match=r"last.pt was written by another run \(its schedule "
                                         r"differ"):
        train(_tiny_model(), _tiny_dataset(), TrainConfig(steps=4, batch_size=4),
              out_dir=tmp_path, resume=True, progress=False,
              checkpoint_extra={"schedule": preset("D6", "dit", 4).to_dict(), "command": "x"})
    assert (tmp_path / "last.pt").read_bytes() == before
    # The same run's entries (tuples read back as lists alike) resume.
    resumed = train(_tiny_model(), _tiny_dataset(), TrainConfig(steps=3, batch_size=4),
                    out_dir=tmp_path, resume=True, progress=False,
                    checkpoint_extra={"schedule": preset("D3", "dit", 4).to_dict()})
    assert resumed.step == 3


def test_resume_without_checkpoint_starts_fresh(tmp_path: Path) -> None:
    config = TrainConfig(steps=2, batch_size=4)
    a = train(_tiny_model(), _tiny_dataset(), config, out_dir=tmp_path / "a", progress=False)
    b = train(_tiny_model(), _tiny_dataset(), config, out_dir=tmp_path / "b", resume=True,
              progress=False)
    assert a.step == b.step == 2
    _assert_states_close(_state(a.model), _state(b.model))


################################################################################
#                                  divergence                                  #
################################################################################


def test_huge_lr_raises_floating_point_error() -> None:
    config = TrainConfig(steps=30, batch_size=4, lr=1e6, grad_clip=None)
    with pytest.raises(FloatingPointError, match=r"diverged.*step \d+.*lr"):
        train(_tiny_model(), _tiny_dataset(), config, progress=False)


def test_nan_model_output_raises_at_first_step() -> None:
    model = _tiny_model()
    model.register_forward_hook(lambda module, args, out: out * float("nan"))
    with pytest.raises(FloatingPointError, match=r"loss is nan at step 0"):
        train(model, _tiny_dataset(), TrainConfig(steps=3, batch_size=4), progress=False)


################################################################################
#                                 TrainConfig                                  #
################################################################################


@pytest.mark.parametrize("kwargs, field", [
    ({"steps": -1}, "steps"),
    ({"steps": 2.5}, "steps"),
    ({"batch_size": 0}, "batch_size"),
    ({"lr": 0.0}, "lr"),
    ({"lr": -1e-4}, "lr"),
    ({"lr": float("nan")}, "lr"),
    ({"lr": float("inf")}, "lr"),
    ({"lr_schedule": "linear"}, "lr_schedule"),
    ({"warmup_steps": -1}, "warmup_steps"),
    ({"weight_decay": -0.1}, "weight_decay"),
    ({"ema_decay": 1.0}, "ema_decay"),
    ({"ema_decay": -0.01}, "ema_decay"),
    ({"grad_clip": 0.0}, "grad_clip"),
    ({"grad_clip": -1.0}, "grad_clip"),
    ({"checkpoint_every": 0}, "checkpoint_every"),
    ({"log_every": 0}, "log_every"),
])
def test_train_config_rejects_bad_values(kwargs: dict, field: str) -> None:
    full = {"steps": 10, **kwargs}
    with pytest.raises(ValueError, match=rf"\b{field}\b"):
        TrainConfig(**full)


def test_train_config_accepts_edge_values() -> None:
    TrainConfig(steps=0, ema_decay=0.0, grad_clip=None, warmup_steps=0, weight_decay=0.0)


################################################################################
#                          Distillation (TrainConfig.distill)                   #
################################################################################


def test_distill_from_an_identical_model_gives_zero_loss_and_no_update() -> None:
    """At full depth the student *is* the frozen target, so its MSE is exactly 0 and AdamW moves
    nothing, even with label dropout at 0.5: the target replays the student's dropped labels."""
    model = _tiny_model(learn_sigma=False, class_dropout_prob=0.5)  # no variance term
    start = _state(model)
    config = TrainConfig(steps=3, batch_size=8, lr=1e-2, log_every=1, seed=4, distill=True)
    result = train(model, _tiny_dataset(), config, progress=False)
    assert [loss for _, loss in result.losses] == [0.0, 0.0, 0.0]
    _assert_states_close(_state(result.model), start)
    # The same run against the noise does learn (so the zero above is not vacuous).
    plain = train(_tiny_model(learn_sigma=False, class_dropout_prob=0.5), _tiny_dataset(),
                  TrainConfig(steps=3, batch_size=8, lr=1e-2, log_every=1, seed=4),
                  progress=False)
    assert all(loss > 0 for _, loss in plain.losses)


def test_distill_with_exits_regresses_onto_the_full_depth_model() -> None:
    """With exits the student differs from the full-depth target: one step's loss equals the MSE
    between the exited and the full prediction, recomputed here from the same batch."""
    model = _tiny_model(learn_sigma=False, class_dropout_prob=0.0)
    exits = lambda t, generator=None: torch.full_like(t, 1)  # noqa: E731  one block everywhere
    config = TrainConfig(steps=1, batch_size=16, lr=1e-3, log_every=1, seed=2, distill=True)
    reference = _tiny_model(learn_sigma=False, class_dropout_prob=0.0)
    result = train(model, _tiny_dataset(), config, exits=exits, progress=False)
    # Step 0's batch, drawn with the loop's own RNG plumbing in the loop's order.
    torch.manual_seed(_step_seed(config.seed, 0))
    x0, y = _fetch(_tiny_dataset(), _batch_indices(16, 16, 0, config.seed)[0])
    t = torch.randint(0, 1000, (16,))  # (16,)
    x_t = GaussianDiffusion().q_sample(x0, t, torch.randn_like(x0))  # (16, 2, 8, 8)
    with torch.no_grad():
        expected = ((reference(x_t, t, y, n_blocks=torch.full_like(t, 1))
                     - reference(x_t, t, y)) ** 2).mean()
    assert result.losses[0][1] == pytest.approx(expected.item(), rel=1e-5)
