"""What defines a search run: :class:`SearchConfig`, the Optuna samplers by name, and
:class:`SearchError`.

Messages name the config's fields (``budget``, ``fid_data``), not command-line flags: a caller
that offers the settings under other names (the CLI's ``--full-share``) maps
:attr:`SearchError.fields` to them.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from ase_search.samplers import SamplerConfig

__all__ = ["FINETUNE_MODES", "SEARCH_ALGORITHMS", "SearchConfig", "SearchError", "one_shot_config"]

FINETUNE_MODES = ("one-shot", "per-trial", "none")


class SearchError(ValueError):
    """A search cannot start or continue; the message says why and what to do.

    Args:
        message: the message; it names each :class:`SearchConfig` field of ``fields`` by its
            identifier (``fid_data``), as a word, before any value that might spell the same.
        fields: those fields, so a caller can say them its own way (:meth:`renamed`).
    """

    def __init__(self, message: str, *, fields: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.fields = fields

    def renamed(self, names: Mapping[str, str]) -> SearchError:
        """The same error with each named field written as ``names[field]`` (e.g. a flag)."""
        message = str(self)
        for name in self.fields:
            if name in names:  # the field's first mention as a word (a path holding it is not)
                message = re.sub(rf"(?<![^\s(]){re.escape(name)}(?![^\s,;:)])", names[name],
                                 message, count=1)
        return SearchError(message, fields=())


def _gp(seed: int):
    import optuna

    # The objective is deterministic (common random numbers: a schedule always gets the same
    # FID and latency), so the GP interpolates its observations and never values a measured
    # point again. The paper's presets (enqueued first) are the initial design; five startup
    # trials in all, instead of ten, leave the model more of a ~40-trial budget.
    with warnings.catch_warnings():  # deterministic_objective is marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=5,
                                         deterministic_objective=True)


def _tpe(seed: int):
    import optuna

    return optuna.samplers.TPESampler(seed=seed, multivariate=True)


def _nsga2(seed: int):
    import optuna

    return optuna.samplers.NSGAIISampler(seed=seed, population_size=10)


def _random(seed: int):
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


# The search algorithms (Optuna samplers; "sampler" alone means the diffusion solver here) by
# CLI name. GP (log-EHVI) is the default: it is the most sample-efficient for
# ~40-trial multi-objective budgets, where NSGA-II would spend its whole budget on early
# generations.
SEARCH_ALGORITHMS: dict[str, Callable[[int], Any]] = {
    "gp": _gp,
    "tpe": _tpe,
    "nsga2": _nsga2,
    "random": _random,
}


@dataclass(frozen=True)
class SearchConfig:
    """Everything that defines a search run. Stored in the study, so a resume can check it.

    Args:
        arch: ``"dit"`` or ``"uvit"``.
        budget: finished (COMPLETE) trials the study should hold when the run ends.
        space: search-space YAML (default: ``search_spaces/<arch>.yaml``).
        checkpoint: model to search for (default: the shipped testbed model).
        data: fine-tuning data, and the FID reference unless ``fid_data`` is given (``mnist``,
            an image folder or a latents file). Paths are made absolute (Ray runs trials in
            their own folders).
        sampler: ``ddpm``, ``ddim``, ``dpm-solver`` or ``euler-maruyama``.
        steps: sampling steps.
        timestep_spacing: the sampler's timestep spacing, ``leading`` or ``linspace``
            (:class:`~ase_search.samplers.SamplerConfig`); ``None``: the sampler's default.
        n_samples: samples per trial for FID.
        finetune: ``one-shot`` (fine-tune once for the whole space, before the trials),
            ``per-trial`` (Algorithm 1 for each trial's schedule) or ``none``.
        finetune_steps: optimiser steps of that fine-tune (per trial with ``per-trial``, so
            lower it there); 0: no fine-tune.
        finetune_lr: its learning rate. Higher than the paper's 2e-5, which suits a long
            fine-tune of DiT-XL/2; a short fine-tune of a small model needs larger steps
            (reports/one_shot_recipes.md).
        finetune_ema: EMA decay of its teacher (the weights the trials use); 0.99 averages the
            last ~100 steps, where 0.999 would still be 55% the weights before fine-tuning.
        finetune_full_share: one-shot only: share of samples trained with the most blocks the
            space allows at their t (see :class:`~ase_search.finetune.FinetuneConfig`).
        finetune_distill: regress onto the frozen starting model's full-depth prediction instead
            of the noise (:class:`~ase_search.finetune.FinetuneConfig`).
        storage: Optuna storage: a ``.db`` path (sqlite), a ``.journal`` path (several drivers)
            or any storage URL (default ``studies/<arch>.db``).
        study_name: default ``<arch>``.
        search_algorithm: the Optuna sampler that proposes trials, a key of
            :data:`SEARCH_ALGORITHMS` (studies recorded before 2026-12-07 call it
            ``sampler_algo``).
        max_concurrent: trials at once (default: one per GPU, else one per two CPU cores).
        gpus_per_trial: GPUs per trial (default: 1 when the cluster has GPUs, else 0).
        ray_address: join this Ray cluster instead of starting a local one.
        seed: seed of the sampler, of the fine-tune and of every trial's sampling noise (common
            random numbers across trials).
        batch_size: sampling batch size.
        latency_batch: batch size the cost model is profiled at.
        fid_extractor: ``mnist-classifier`` or ``inception-v3-compat``.
        fid_weights: local path of the Inception weights (real datasets).
        kid: also compute KID.
        grid: samples saved per trial as a PNG grid (0: none).
        vae: local diffusers ``AutoencoderKL`` folder that decodes a latent model's samples
            before FID (:mod:`ase_search.vae`); needed when the model's samples are latents.
        fid_data: FID reference (``mnist`` or a folder of images) when it differs from ``data``,
            e.g. images next to the latents file a latent model is fine-tuned on; or ``self``,
            data-free: the starting weights' full model at the reference configuration (FID
            against an independent draw of it, and a paired distance, ``paired_rmse``, against
            its samples from the same noise and labels), the objective the caching peers search
            against.
        confirm: after the trials, re-measure the joint front and the steps-only configurations
            next to it over this many seeds (``ase-search confirm``); 0: do not. Not part of the
            study's identity.
        diffusers: a local diffusers ``DiTTransformer2DModel`` folder (or a pipeline folder with
            ``transformer/``) to search instead of ``checkpoint``: trials run it through the
            exit-schedule hooks and diffusers schedulers built from its scheduler config
            (:mod:`ase_search.integrations.diffusers`), training-free (``finetune`` none).
            ``fid_data self`` there is the folder's transformer, unhooked.
        configs: a YAML list of configurations to measure instead of searching
            (:mod:`ase_search.search.listed`): each is stored as a trial, beside the steps-only
            ladder, and ``budget`` is not used. A list study stays one: it is not searched later,
            nor a searched study given a list.
        screen: candidates the search algorithm proposes that are first measured by a
            data-free objective (:mod:`ase_search.search.screen`: the paired error against the
            full model's samples from the same noise, on ``screen_n`` samples) before the FID
            budget goes to the best of them; 0: no screen. Not part of the study's identity.
        screen_n: samples per screened candidate.
        screen_audit: dropped candidates, drawn at random, measured with FID too, so the
            study says whether the screen dropped a point FID would have kept.
    """

    arch: str = "dit"
    budget: int = 40
    space: str | None = None
    checkpoint: str | None = None
    data: str = "mnist"
    sampler: str = "ddim"
    steps: int = 20
    n_samples: int = 500
    finetune: Literal["one-shot", "per-trial", "none"] = "one-shot"
    finetune_steps: int = 2400
    finetune_lr: float = 3e-4
    finetune_ema: float = 0.99
    finetune_full_share: float = 0.5
    finetune_distill: bool = False
    storage: str | None = None
    study_name: str | None = None
    search_algorithm: str = "gp"
    max_concurrent: int | None = None
    gpus_per_trial: float | None = None
    ray_address: str | None = None
    seed: int = 0
    batch_size: int = 250
    latency_batch: int = 256
    fid_extractor: str = "mnist-classifier"
    fid_weights: str | None = None
    kid: bool = False
    grid: int = 16
    vae: str | None = None
    fid_data: str | None = None
    timestep_spacing: str | None = None
    confirm: int = 0
    diffusers: str | None = None
    configs: str | None = None
    screen: int = 0
    screen_n: int = 64
    screen_audit: int = 0

    def __post_init__(self) -> None:
        from ase_search.metrics.fid import FIDConfig
        from ase_search.vae import check_vae_folder

        def refuse(field: str, problem: str) -> SearchError:
            return SearchError(f"{field} {problem}", fields=(field,))

        if self.arch not in ("dit", "uvit"):
            raise refuse("arch", f"must be dit or uvit, got {self.arch!r}")
        if self.budget < 1:
            raise refuse("budget", f"must be >= 1, got {self.budget}")
        if self.finetune_steps < 0:
            raise refuse("finetune_steps",
                         f"must be >= 0 (0: no fine-tune), got {self.finetune_steps}")
        if not (self.finetune_lr > 0 and math.isfinite(self.finetune_lr)):
            raise refuse("finetune_lr", f"must be a finite number > 0, got {self.finetune_lr}")
        if not 0.0 <= self.finetune_ema < 1.0:
            raise refuse("finetune_ema", f"must lie in [0, 1), got {self.finetune_ema}")
        if not 0.0 <= self.finetune_full_share <= 1.0:
            raise refuse("finetune_full_share",
                         f"must lie in [0, 1], got {self.finetune_full_share}")
        if not isinstance(self.finetune_distill, bool):
            raise refuse("finetune_distill",
                         f"must be true or false, got {self.finetune_distill!r}")
        if self.finetune not in FINETUNE_MODES:
            raise refuse("finetune",
                         f"must be one of {list(FINETUNE_MODES)}, got {self.finetune!r}")
        if self.search_algorithm not in SEARCH_ALGORITHMS:
            raise refuse("search_algorithm", f"must be one of {list(SEARCH_ALGORITHMS)}, got "
                                             f"{self.search_algorithm!r}")
        if self.n_samples < 2:
            raise refuse("n_samples", f"must be >= 2 for FID, got {self.n_samples}")
        if isinstance(self.confirm, bool) or not isinstance(self.confirm, int) or (
                self.confirm < 0 or self.confirm == 1):
            raise refuse("confirm", f"must be 0 (off) or a number of seeds >= 2, got "
                         f"{self.confirm!r}")
        for name, low in (("screen", 0), ("screen_n", 8), ("screen_audit", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise refuse(name, f"must be an integer >= {low}, got {value!r}")
        if self.screen and self.finetune == "per-trial" and self.finetune_steps > 0:
            raise refuse("screen", "screens candidates on weights every candidate shares; a "
                         "per-trial fine-tune would run for each: use --finetune one-shot or "
                         "none")
        if self.screen and self.configs is not None:
            raise refuse("screen", "is for a search; a list study measures every listed "
                         "configuration")
        if self.screen_audit and not self.screen:
            raise refuse("screen_audit", "audits what a screen dropped: pass --screen N too")
        if self.screen_audit and self.screen_audit >= self.budget:
            raise refuse("screen_audit", f"must be below --budget ({self.budget}), got "
                         f"{self.screen_audit}")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise refuse("max_concurrent", f"must be >= 1, got {self.max_concurrent}")
        if self.gpus_per_trial is not None and self.gpus_per_trial < 0:
            raise refuse("gpus_per_trial", f"must be >= 0, got {self.gpus_per_trial}")
        try:
            self.sampler_config  # validates sampler, steps and timestep_spacing
        except ValueError as err:
            if str(err).startswith("timestep_spacing"):
                raise SearchError(str(err), fields=("timestep_spacing",)) from None
            raise
        if self.configs is not None:
            if not Path(self.configs).expanduser().is_file():
                raise refuse("configs", f"{self.configs} is not a file; pass a YAML list of "
                             f"configurations")
            object.__setattr__(self, "configs", str(Path(self.configs).expanduser().resolve()))
        if self.diffusers is not None:
            self._check_diffusers()
        elif self.fid_data == "self" and self.vae is not None:
            raise refuse("fid_data", "self (the full model's own samples) is not built for "
                         "latent models yet; pass a folder of images")
        # Trials run in Ray's per-trial folders, where a relative path means something else.
        for name in ("data", "fid_data", "fid_weights"):
            value = getattr(self, name)
            is_data = name != "fid_weights"
            if value is None or (is_data and value.lower() in ("mnist", "self")):
                continue
            path = Path(value).expanduser()
            if not path.exists():
                raise refuse(name, f"{value} does not exist; pass an existing path"
                             + (" or mnist" if is_data else ""))
            object.__setattr__(self, name, str(path.resolve()))
        if self.fid_data == self.data:
            object.__setattr__(self, "fid_data", None)  # one spelling of "FID reads data"
        if self.vae is not None:
            object.__setattr__(self, "vae", str(check_vae_folder(self.vae)))
        if self.fid_reference.lower() != "mnist" and Path(self.fid_reference).is_file():
            raise SearchError(
                f"FID needs images but its reference {self.fid_reference} is a file (latents?); "
                f"keep data for fine-tuning and pass fid_data FOLDER, a folder of images"
                + ("" if self.vae is not None else
                   ", and vae PATH to decode a latent model's samples"),
                fields=("data", "fid_data", "vae"))
        FIDConfig(extractor=self.fid_extractor, fid_weights=self.fid_weights, kid=self.kid)

    def _check_diffusers(self) -> None:
        """A diffusers search: a local folder, training-free, DiT-like, a diffusers scheduler."""
        from ase_search.integrations.diffusers import SCHEDULER_NAMES

        folder = Path(self.diffusers).expanduser()
        if not folder.is_dir():
            raise SearchError(f"diffusers {self.diffusers} is not a folder; pass a local diffusers "
                              f"transformer folder (or a pipeline folder with transformer/)",
                              fields=("diffusers",))
        object.__setattr__(self, "diffusers", str(folder.resolve()))
        refusals = {
            "checkpoint": (self.checkpoint is not None,
                           "and diffusers both name the model; pass one of them"),
            "arch": (self.arch != "dit",
                     f"{self.arch}: a diffusers transformer drops blocks from the end like DiT; "
                     f"use arch dit"),
            "finetune": (self.finetune != "none" and self.finetune_steps > 0,
                         f"{self.finetune}: a diffusers model is searched training-free; pass "
                         f"finetune none"),
            "vae": (self.vae is not None, "does not apply with diffusers (pixel-space "
                                          "DiTTransformer2DModel folders); drop it"),
            "sampler": (self.sampler not in SCHEDULER_NAMES,
                        f"{self.sampler}: with diffusers the folder's scheduler runs as one of "
                        f"{', '.join(SCHEDULER_NAMES)}"),
        }
        for name, (bad, problem) in refusals.items():
            if bad:
                raise SearchError(f"{name} {problem}", fields=(name,))

    @property
    def sampler_config(self) -> SamplerConfig:
        """The :class:`~ase_search.samplers.SamplerConfig` every trial samples with."""
        from ase_search.samplers import SamplerConfig

        return SamplerConfig(name=self.sampler, steps=self.steps,
                             timestep_spacing=self.timestep_spacing)

    @property
    def fid_reference(self) -> str:
        """The data set FID is measured against: ``fid_data``, else ``data``."""
        return self.fid_data if self.fid_data is not None else self.data

    @property
    def resolved_study_name(self) -> str:
        return self.study_name or self.arch

    @property
    def resolved_storage(self) -> str:
        return self.storage or str(Path("studies") / f"{self.arch}.db")

    def identity(self) -> dict[str, Any]:
        """The settings that make trials comparable; a resumed run must not change them."""
        keys = ("arch", "space", "checkpoint", "data", "sampler", "steps", "n_samples",
                "finetune", "finetune_steps", "finetune_lr", "finetune_ema", "finetune_full_share",
                "seed",
                "latency_batch", "fid_extractor", "kid")
        identity = {k: getattr(self, k) for k in keys}
        # Another VAE or FID reference, fine-tune target or timestep spacing gives incomparable
        # FIDs.
        # Recorded only when set, so studies made before these settings existed still resume.
        identity.update({k: getattr(self, k)
                         for k in ("vae", "fid_data", "finetune_distill", "timestep_spacing",
                                   "diffusers")
                         if getattr(self, k) not in (None, False)})
        if self.configs is not None:  # a list study is never searched, nor the other way
            identity["listed"] = True
        if self.diffusers is not None:  # what the folder holds, not only its name
            from ase_search.integrations.diffusers import transformer_fingerprint

            identity["diffusers_fingerprint"] = transformer_fingerprint(self.diffusers)
        if self.checkpoint is not None and Path(self.checkpoint).is_file():
            from ase_search.files import file_sha256

            identity["checkpoint_sha256"] = file_sha256(self.checkpoint)
        return identity


def one_shot_config(config: SearchConfig) -> Any:
    """The :class:`~ase_search.finetune.FinetuneConfig` of the search's one-shot fine-tune (for
    :func:`~ase_search.finetune.one_shot_weights`, which caches the weights by it)."""
    from ase_search.finetune import FinetuneConfig

    return FinetuneConfig(steps=config.finetune_steps, lr=config.finetune_lr,
                          ema_decay=config.finetune_ema, seed=config.seed,
                          full_share=config.finetune_full_share, distill=config.finetune_distill)
