"""FID of latent-space models: the VAE decoder, evaluate(), the search's trial and the CLI.

A tiny random diffusers ``AutoencoderKL`` (a few thousand parameters) stands in for the SD VAE and
``DiT-test`` with ``in_channels=4`` for DiT-XL/2; FID uses the shipped digit classifier, which
takes 3-channel images of any size.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ase_search.evaluate import evaluate
from ase_search.models import create_model, save_checkpoint
from ase_search.samplers import SamplerConfig
from ase_search.search import SearchConfig, SearchError, TrialContext, evaluate_schedule
from ase_search.vae import LatentDecoder, VAEError, check_vae_folder, load_vae

torch.set_num_threads(1)

SAMPLER = SamplerConfig(name="ddim", steps=2)


def tiny_vae(blocks: int = 2):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8,) * blocks,
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks, layers_per_block=1, norm_num_groups=8,
        sample_size=16,
    ).eval()


def latent_dit(in_channels: int = 4):
    torch.manual_seed(0)
    model = create_model("DiT-test", in_channels=in_channels)  # 8 x 8 latents, 4 blocks
    with torch.no_grad():  # adaLN-Zero starts at exactly zero output: make samples differ
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A saved tiny VAE, 16 reference images of 16 x 16 (the decoded size), a latents file."""
    from PIL import Image

    root = tmp_path_factory.mktemp("latent")
    tiny_vae().save_pretrained(root / "vae")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(16):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(images / f"{i}.png")
    torch.save({"latents": torch.randn(8, 4, 8, 8), "labels": torch.arange(8) % 5},
               root / "latents.pt")
    save_checkpoint(root / "latent-dit.pt", latent_dit())
    return {"vae": root / "vae", "images": images, "latents": root / "latents.pt",
            "checkpoint": root / "latent-dit.pt", "root": root}


@pytest.fixture(autouse=True)
def fid_cache(tmp_path_factory, monkeypatch):
    """One FID reference cache for the module, never the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "xdg-cache"))


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return " ".join(lines[0].split())


# ------------------------------------------------------------------------------- decoder
def test_load_vae_round_trips_and_decodes_as_diffusers_does(files) -> None:
    decoder = load_vae(files["vae"], batch_size=3)
    reference = tiny_vae()  # the weights that were saved
    assert decoder.path == str(files["vae"].resolve())
    assert (decoder.latent_channels, decoder.out_channels, decoder.scale_factor) == (4, 3, 2)
    assert decoder.scaling_factor == pytest.approx(0.18215)
    for name, p in reference.state_dict().items():
        assert torch.equal(decoder.vae.state_dict()[name], p), name
    z = torch.randn(5, 4, 6, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference.decode(z / reference.config.scaling_factor).sample.clamp(-1, 1)
    images = decoder.decode(z)  # three calls of batch 3, 2
    assert images.shape == (5, 3, 12, 12) and images.dtype == torch.float32
    torch.testing.assert_close(images, expected, atol=1e-5, rtol=0)
    assert images.abs().max() <= 1.0
    u8 = decoder.decode_uint8(z)
    assert u8.dtype == torch.uint8 and u8.shape == (5, 3, 12, 12)
    assert (u8.int() - ((images + 1) * 127.5).round().int()).abs().max() <= 1
    assert not any(p.requires_grad for p in decoder.vae.parameters())


@pytest.mark.parametrize("blocks", [1, 3])
def test_scale_factor_comes_from_the_config(blocks: int) -> None:
    decoder = LatentDecoder(tiny_vae(blocks))
    assert decoder.scale_factor == 2 ** (blocks - 1)
    assert decoder.decode(torch.zeros(1, 4, 4, 4)).shape == (1, 3, 4 * decoder.scale_factor,
                                                             4 * decoder.scale_factor)
    with pytest.raises(VAEError, match=r"\(N, 4, h, w\)"):
        decoder.decode(torch.zeros(1, 3, 4, 4))


def test_unusable_vae_paths_say_how_to_fix(files, tmp_path) -> None:
    with pytest.raises(VAEError, match="does not exist.*save_pretrained"):
        load_vae(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(VAEError, match="no config.json"):
        load_vae(tmp_path / "empty")
    other = tmp_path / "unet"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    with pytest.raises(VAEError, match="UNet2DModel config, not an AutoencoderKL"):
        load_vae(other)
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((files["vae"] / "config.json").read_text())
    with pytest.raises(VAEError, match="could not load the VAE"):
        load_vae(no_weights)
    # A whole pipeline folder: the VAE in vae/.
    assert check_vae_folder(files["root"]) == files["vae"].resolve()


# ------------------------------------------------------------------------------ evaluate
def test_evaluate_decodes_latents_before_fid(files, tmp_path) -> None:
    decoder = load_vae(files["vae"])
    result = evaluate(latent_dit(), None, sampler=SAMPLER, n=8, data=str(files["images"]),
                      batch_size=8, decoder=decoder)
    fid = result.mean("fid")
    assert np.isfinite(fid) and fid > 0
    assert result.images.shape == (8, 3, 16, 16)  # decoded, 2x the 8 x 8 latents
    assert result.vae == decoder.path and result.to_dict()["vae"] == decoder.path


def test_latent_model_without_vae_is_refused_before_sampling(files) -> None:
    with pytest.raises(ValueError, match=r"in_channels=4: its samples are latents.*--vae PATH"):
        evaluate(latent_dit(), None, sampler=SAMPLER, n=4, data=str(files["images"]))
    decoder = load_vae(files["vae"])
    with pytest.raises(ValueError, match="decodes 4-channel latents but .* samples 2 channels"):
        evaluate(latent_dit(in_channels=2), None, sampler=SAMPLER, n=4,
                 data=str(files["images"]), decoder=decoder)
    with pytest.raises(ValueError, match="is a file, not images.*latents file is for fine-tuning"):
        evaluate(latent_dit(), None, sampler=SAMPLER, n=4, data=str(files["latents"]),
                 decoder=decoder)


# -------------------------------------------------------------------------------- search
def test_search_config_validates_and_absolutises_latent_settings(files, monkeypatch) -> None:
    monkeypatch.chdir(files["root"])
    base = dict(finetune="none", fid_extractor="mnist-classifier")
    config = SearchConfig(data="latents.pt", fid_data="images", vae="vae", **base)
    assert (config.data, config.fid_data, config.vae) == (
        str(files["latents"].resolve()), str(files["images"].resolve()),
        str(files["vae"].resolve()))
    assert config.fid_reference == config.fid_data
    assert {"vae", "fid_data"} <= set(config.identity())
    # Unset, they stay out of the identity: studies made before them still resume.
    assert set(SearchConfig(**base).identity()) == {
        "arch", "space", "checkpoint", "data", "sampler", "steps", "n_samples", "finetune",
        "finetune_steps", "finetune_lr", "finetune_ema", "finetune_full_share", "seed",
        "latency_batch",
        "fid_extractor", "kid"}
    with pytest.raises(SearchError, match="reference .*latents.pt is a file.*fid_data FOLDER"):
        SearchConfig(data="latents.pt", vae="vae", **base)
    with pytest.raises(VAEError, match="missing-vae"):
        SearchConfig(data="latents.pt", fid_data="images", vae="missing-vae", **base)
    with pytest.raises(SearchError, match="fid_data nowhere does not exist"):
        SearchConfig(fid_data="nowhere", **base)


def test_trial_fine_tunes_on_latents_and_scores_decoded_images(files, tmp_path) -> None:
    from ase_search.metrics.latency import profile_components
    from ase_search.schedule import preset

    config = SearchConfig(data=str(files["latents"]), fid_data=str(files["images"]),
                          vae=str(files["vae"]), finetune="per-trial", finetune_steps=1,
                          steps=2, n_samples=8, batch_size=8, grid=4)
    model = latent_dit()
    cost = profile_components(model, batch_size=4, warmup=1, repeats=1)
    ctx = TrialContext(config=config.__dict__.copy(), weights=str(files["checkpoint"]),
                       space={}, cost_model=cost.to_dict(), cpus=1)
    result = evaluate_schedule(preset("D4", "dit", model.exit_depth), ctx)
    assert np.isfinite(result["fid"]) and result["fid"] > 0
    assert result["finetune_steps"] == 1
    assert set(result["time_split"]) == {"load", "finetune", "sampling", "decode", "fid"}
    from PIL import Image

    import io

    with Image.open(io.BytesIO(result["grid_png"])) as grid:  # 2 x 2 decoded 16 x 16 images, upscaled 2x
        assert grid.mode == "RGB" and grid.size[0] > 2 * 2 * 16


# ----------------------------------------------------------------------------------- CLI
def test_eval_cli_bad_vae_is_one_red_line(cli, tmp_path) -> None:
    code, out, err = cli(["eval", "--vae", str(tmp_path / "missing"), "--device", "cpu"])
    assert code == 2
    line = one_error_line(err)
    assert "missing" in line and "does not exist" in line and "save_pretrained" in line


def test_eval_cli_latent_checkpoint_without_vae_asks_for_one(cli, files) -> None:
    code, _, err = cli(["eval", "-c", str(files["checkpoint"]), "--steps", "2", "--n", "4",
                        "--device", "cpu"])
    assert code == 2
    assert "--vae PATH" in one_error_line(err)


def test_run_cli_latents_reference_without_fid_data_is_one_red_line(cli, files, tmp_path) -> None:
    code, _, err = cli(["run", "--data", str(files["latents"]), "--vae", str(files["vae"]),
                        "--storage", str(tmp_path / "s.db")])
    assert code == 2
    assert "--fid-data FOLDER" in one_error_line(err)
