"""The sampling contract: exit-schedule lookups, block counts, common random numbers, guidance."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ase_search.diffusion import GaussianDiffusion
from ase_search.samplers import SampleOutput, SamplerConfig, sample
from ase_search.schedule import ExitSchedule, preset

T = 1000
ACP = GaussianDiffusion().alphas_cumprod
ALL = [
    SamplerConfig("ddpm", 12),
    SamplerConfig("ddim", 10),
    SamplerConfig("ddim", 10, eta=0.5),
    SamplerConfig("dpm-solver", 9),
    SamplerConfig("euler-maruyama", 15),
]
IDS = ["ddpm", "ddim", "ddim-eta", "dpm-solver", "em"]


pytestmark = pytest.mark.usefixtures("one_thread")


class Recorder(nn.Module):
    """A class-conditional stand-in model that records every call.

    Its eps is a fixed linear shrinkage of x whose size depends on the label (so guidance is
    visible) and, if ``depends_on_blocks``, on ``n_blocks``; the learned-variance channels are
    ``var_cond`` for real labels and ``var_null`` for the null label.
    """

    arch = "dit"
    exit_depth = 6
    in_channels = 2
    input_size = 3

    def __init__(self, *, learn_sigma=False, num_labels=5, null_class=5, depends_on_blocks=False,
                 var_cond=-1.0, var_null=1.0):
        super().__init__()
        self.learn_sigma = learn_sigma
        self.num_labels = num_labels
        self.null_class = null_class
        self.depends_on_blocks = depends_on_blocks
        self.var_cond, self.var_null = var_cond, var_null
        self.calls: list[dict] = []
        self.scale = nn.Parameter(torch.ones(()))  # a parameter, so train()/eval() mean something

    def forward(self, x, t, y=None, n_blocks=None):
        self.calls.append({"x": x.clone(), "t": t.clone(), "y": None if y is None else y.clone(),
                           "n_blocks": n_blocks, "training": self.training})
        abar = ACP[t.double().round().long().clamp(0, T - 1)].float().view(-1, 1, 1, 1)
        gain = torch.ones(x.shape[0], 1, 1, 1)
        if y is not None:
            gain = torch.where(y.view(-1, 1, 1, 1) == self.null_class, 0.5, 1.0 + 0.1 * y.view(-1, 1, 1, 1))
        if self.depends_on_blocks and n_blocks is not None:
            gain = gain * (1.0 - 0.01 * n_blocks)
        eps = gain * (1 - abar).sqrt() * x  # (N, C, H, W)
        if not self.learn_sigma:
            return eps * self.scale
        var = torch.full_like(x, self.var_cond)
        if y is not None:
            var[y == self.null_class] = self.var_null
        return torch.cat([eps * self.scale, var], dim=1)  # (N, 2C, H, W)


def uneven_schedule() -> ExitSchedule:
    return ExitSchedule("dit", 6, (0.0, 0.15, 0.5, 0.8, 1.0), (6, 4, 3, 1))


# ------------------------------------------------------------------ schedule lookups and counts
@pytest.mark.parametrize("config", ALL, ids=IDS)
@pytest.mark.parametrize("cfg_scale", [1.0, 3.0])
def test_every_call_runs_the_scheduled_blocks(config, cfg_scale):
    config = SamplerConfig(config.name, config.steps, eta=config.eta, cfg_scale=cfg_scale)
    schedule = uneven_schedule()
    model = Recorder()
    out = sample(model, sampler=config, schedule=schedule, n=5, batch_size=5)
    times = config.model_times(T)
    assert len(model.calls) == config.steps == out.model_calls == len(times)
    for call, s in zip(model.calls, times):
        assert call["t"].shape == ((10,) if cfg_scale != 1.0 else (5,))
        torch.testing.assert_close(call["t"].double(), torch.full_like(call["t"].double(), s),
                                   atol=1e-3, rtol=0)
        assert call["n_blocks"] == schedule.blocks_at(s / T)
        if config.name != "euler-maruyama":
            assert call["t"].dtype == torch.long
            assert call["n_blocks"] == schedule.blocks_at_index(int(s), T)
    # Guidance doubles the batch, not the block count.
    assert out.block_evals == sum(schedule.blocks_at(s / T) for s in times)
    # The schedule is not trivial over these times: at least two distinct counts were used.
    assert len({c["n_blocks"] for c in model.calls}) >= 2


@pytest.mark.parametrize("config", ALL, ids=IDS)
def test_no_schedule_runs_all_blocks(config):
    model = Recorder()
    out = sample(model, sampler=config, n=3, batch_size=2)
    assert all(c["n_blocks"] is None for c in model.calls)
    assert len(model.calls) == 2 * config.steps  # two batches
    assert out.block_evals == config.steps * Recorder.exit_depth
    assert out.model_calls == config.steps


def test_block_evals_match_schedule_mean_blocks_for_presets():
    schedule = preset("D4", "dit", 6)
    config = SamplerConfig("ddim", 50)
    out = sample(Recorder(), sampler=config, schedule=schedule, n=1)
    times = [int(s) for s in config.model_times(T)]
    assert out.block_evals == sum(schedule.blocks_at_index(s, T) for s in times)
    assert out.block_evals < 50 * 6


# --------------------------------------------------------------- output and input contract
@pytest.mark.parametrize("config", ALL, ids=IDS)
def test_output_contract(config):
    model = Recorder(learn_sigma=config.name == "ddpm")
    model.in_channels = 1  # a gray-image model: its samples are images in [-1, 1]
    model.train()
    out = sample(model, sampler=config, n=7, batch_size=3, seed=4)
    assert isinstance(out, SampleOutput)
    assert out.images.shape == (7, 1, 3, 3)
    assert out.images.dtype == torch.float32 and out.images.device.type == "cpu"
    assert out.images.abs().max() <= 1.0
    assert torch.isfinite(out.images).all()
    assert out.labels.shape == (7,) and out.labels.dtype == torch.long
    assert ((out.labels >= 0) & (out.labels < 5)).all()
    assert not any(c["training"] for c in model.calls)  # sampled in eval mode ...
    assert model.training  # ... and the flag restored


def test_unconditional_model_gets_no_labels():
    model = Recorder(num_labels=0, null_class=None)
    out = sample(model, sampler=SamplerConfig("ddim", 3), n=4)
    assert out.labels is None
    assert all(c["y"] is None for c in model.calls)


def test_given_labels_are_used():
    labels = torch.tensor([4, 0, 2, 2, 1])
    model = Recorder()
    out = sample(model, sampler=SamplerConfig("ddim", 3), n=5, batch_size=2, labels=labels)
    assert torch.equal(out.labels, labels)
    assert torch.equal(torch.cat([c["y"] for c in model.calls[::3]]), labels)


# ------------------------------------------------------------------ common random numbers
def first_calls(model: Recorder, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x_T and labels seen at the first call of every batch."""
    firsts = model.calls[::steps]
    return torch.cat([c["x"] for c in firsts]), torch.cat([c["y"] for c in firsts])


@pytest.mark.parametrize("config", ALL, ids=IDS)
def test_same_seed_same_noise_and_labels_whatever_the_schedule(config):
    runs = []
    for schedule in (None, uneven_schedule(), preset("D6", "dit", 6)):
        model = Recorder()
        out = sample(model, sampler=config, schedule=schedule, n=6, batch_size=4, seed=11)
        runs.append((out, *first_calls(model, config.steps)))
    (out0, x0, y0), *others = runs
    for out, x, y in others:
        assert torch.equal(x, x0) and torch.equal(y, y0) and torch.equal(out.labels, out0.labels)
        # The model ignores n_blocks, so with the same step noise the samples are identical too.
        assert torch.equal(out.images, out0.images)


@pytest.mark.parametrize("config", ALL, ids=IDS)
def test_initial_noise_and_labels_do_not_depend_on_batch_size(config):
    seen = []
    for batch_size in (1, 4, 6):
        model = Recorder()
        out = sample(model, sampler=config, n=6, batch_size=batch_size, seed=3)
        seen.append((out.labels, *first_calls(model, config.steps)))
    for labels, x, y in seen[1:]:
        assert torch.equal(labels, seen[0][0])
        assert torch.equal(x, seen[0][1]) and torch.equal(y, seen[0][2])


def test_ddim_eta0_is_deterministic_given_the_seed():
    config = SamplerConfig("ddim", 8)
    a = sample(Recorder(), sampler=config, n=6, batch_size=4, seed=5).images
    b = sample(Recorder(), sampler=config, n=6, batch_size=4, seed=5).images
    c = sample(Recorder(), sampler=config, n=6, batch_size=5, seed=5).images
    d = sample(Recorder(), sampler=config, n=6, batch_size=4, seed=6).images
    assert torch.equal(a, b)
    # No step noise: only x_T matters, and it does not depend on batch_size.
    torch.testing.assert_close(a, c, atol=1e-6, rtol=0)
    assert (a - d).abs().max() > 0.1


@pytest.mark.parametrize("config", [c for c in ALL if c.name in ("ddpm", "euler-maruyama")] +
                         [SamplerConfig("ddim", 10, eta=1.0)], ids=["ddpm", "em", "ddim-eta1"])
def test_stochastic_samplers_repeat_with_the_seed_and_use_step_noise(config):
    a = sample(Recorder(), sampler=config, n=4, seed=2).images
    b = sample(Recorder(), sampler=config, n=4, seed=2).images
    assert torch.equal(a, b)
    # Same x_T, different step noise per batch: the two batches' outputs differ from a run where
    # the same samples sit in one batch (step noise is drawn per batch).
    model = Recorder()
    c = sample(model, sampler=config, n=4, batch_size=2, seed=2).images
    assert (a - c).abs().max() > 1e-3


def test_different_schedules_change_samples_when_the_model_uses_them():
    config = SamplerConfig("ddim", 10)
    full = sample(Recorder(depends_on_blocks=True), sampler=config, n=4).images
    cut = sample(Recorder(depends_on_blocks=True), sampler=config, schedule=uneven_schedule(),
                 n=4).images
    assert (full - cut).abs().max() > 1e-4


# ------------------------------------------------------------------ classifier-free guidance
def test_guidance_combines_cond_and_null_eps():
    scale = 2.5
    model = Recorder()
    guided = sample(model, sampler=SamplerConfig("ddim", 6, cfg_scale=scale), n=4, seed=9)
    for call in model.calls:
        y = call["y"]
        assert torch.equal(y[4:], torch.full((4,), 5))  # second half: null label
        assert torch.equal(y[:4], guided.labels)
        assert torch.equal(call["x"][:4], call["x"][4:])

    class Equivalent(Recorder):
        """eps_u + s (eps_c - eps_u) of Recorder, as one unguided model."""

        def forward(self, x, t, y=None, n_blocks=None):
            cond = super().forward(x, t, y, n_blocks)
            uncond = super().forward(x, t, torch.full_like(y, self.null_class), n_blocks)
            return uncond + scale * (cond - uncond)

    plain = sample(Equivalent(), sampler=SamplerConfig("ddim", 6), n=4, seed=9)
    torch.testing.assert_close(guided.images, plain.images, atol=1e-5, rtol=0)
    assert not torch.allclose(guided.images, sample(Recorder(), sampler=SamplerConfig("ddim", 6),
                                                    n=4, seed=9).images, atol=1e-3)


def test_guidance_takes_learned_variance_from_the_conditional_half():
    config = SamplerConfig("ddpm", 10, cfg_scale=2.0)
    guided = sample(Recorder(learn_sigma=True, var_cond=-1.0, var_null=1.0), sampler=config,
                    n=4, seed=1).images
    same = sample(Recorder(learn_sigma=True, var_cond=-1.0, var_null=-1.0), sampler=config,
                  n=4, seed=1).images
    other = sample(Recorder(learn_sigma=True, var_cond=1.0, var_null=-1.0), sampler=config,
                   n=4, seed=1).images
    torch.testing.assert_close(guided, same, atol=1e-6, rtol=0)
    assert (guided - other).abs().max() > 1e-3


def test_ddpm_learned_range_at_minus_one_equals_fixed_small():
    config = SamplerConfig("ddpm", 10)
    learned = sample(Recorder(learn_sigma=True, var_cond=-1.0), sampler=config, n=5, seed=4).images
    fixed = sample(Recorder(learn_sigma=False), sampler=config, n=5, seed=4).images
    torch.testing.assert_close(learned, fixed, atol=1e-5, rtol=0)
    larger = sample(Recorder(learn_sigma=True, var_cond=1.0), sampler=config, n=5, seed=4).images
    assert (larger - fixed).abs().max() > 1e-3


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("kwargs", "model_kwargs", "match"),
    [
        ({"schedule": ExitSchedule("dit", 4, (0.0, 1.0), (4,))}, {}, "exitable blocks"),
        ({"schedule": ExitSchedule("uvit", 6, (0.0, 1.0), (6,))}, {}, "uvit"),
        ({"sampler": SamplerConfig("ddim", 3, cfg_scale=2.0)}, {"null_class": None}, "cfg_scale"),
        ({"sampler": SamplerConfig("ddim", 3, cfg_scale=2.0)},
         {"num_labels": 0, "null_class": None}, "cfg_scale"),
        ({"labels": torch.tensor([0, 1])}, {"num_labels": 0, "null_class": None}, "labels"),
        ({"labels": torch.tensor([0, 5, 1])}, {}, "labels"),
        ({"labels": torch.tensor([0, 1])}, {}, "labels"),
        ({"labels": torch.tensor([0.0, 1.0, 2.0])}, {}, "labels"),
        ({"n": 0}, {}, "n must"),
        ({"batch_size": 0}, {}, "batch_size"),
        ({"seed": -1}, {}, "seed"),
        ({"sampler": "ddim"}, {}, "sampler"),
    ],
)
def test_bad_input_is_rejected_with_the_argument_named(kwargs, model_kwargs, match):
    args = {"sampler": SamplerConfig("ddim", 3), "n": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        sample(Recorder(**model_kwargs), **args)


def test_model_with_wrong_output_channels_is_reported():
    class EpsOnly(Recorder):
        def forward(self, x, t, y=None, n_blocks=None):
            return super().forward(x, t, y, n_blocks)[:, : self.in_channels]

    model = EpsOnly(learn_sigma=True)  # claims 2C output channels but returns C
    with pytest.raises(ValueError, match="learn_sigma"):
        sample(model, sampler=SamplerConfig("ddpm", 3), n=2)


def test_progress_bar_goes_to_stderr(capsys):
    sample(Recorder(), sampler=SamplerConfig("ddim", 3), n=2, progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "ddim 3 steps" in captured.err


class ZeroEps(nn.Module):
    """An unconditional model that predicts eps = 0: DDIM then scales x_t by sqrt(abar) ratios."""

    arch = "dit"
    exit_depth = 2
    input_size = 4
    learn_sigma = False
    num_labels = 0
    null_class = None

    def __init__(self, in_channels: int):
        super().__init__()
        self.in_channels = in_channels
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x, t, y=None, n_blocks=None):
        return torch.zeros_like(x) * self.scale


@pytest.mark.parametrize("in_channels", [1, 3, 4])
def test_pixel_samples_are_clipped_and_latents_are_not(in_channels):
    config = SamplerConfig("ddim", 5)
    out = sample(ZeroEps(in_channels), sampler=config, n=3, seed=11).images
    generator = torch.Generator().manual_seed(11)
    x_T = torch.stack([torch.randn(in_channels, 4, 4, generator=generator) for _ in range(3)])
    # eps = 0: each DDIM step multiplies by sqrt(abar_prev / abar_t), so the trajectory ends at
    # x_T / sqrt(abar) of the first model time (about 50x: abar(999) ~ 4e-5)
    first = int(config.model_times()[0])
    unclipped = x_T / ACP[first].sqrt().float()
    if in_channels == 4:  # a latent space (SD-VAE): DiT samples it without clipping
        torch.testing.assert_close(out, unclipped, rtol=1e-4, atol=1e-4)
    else:  # images: x_0 predictions are clipped to [-1, 1]
        assert out.abs().max() <= 1.0
        assert torch.equal(out.sign(), unclipped.sign())
