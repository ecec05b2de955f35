"""Export a pretraining run as the shipped testbed model, with a measured model card.

Reads ``runs/pretrain-<arch>/last.pt`` (or ``--checkpoint``), writes the weights as float16
safetensors to ``ase_search/assets/testbed/`` (by default the EMA or the raw weights, whichever
has the lower mean FID), measures sample quality (FID-MNIST and the share of DDIM-20 samples
the digit classifier reads with top-1 >= 0.9, N = 1,000, averaged over ``--seeds`` sample seeds),
saves a 10x10 grid under ``reports/`` and writes the model card next to the weights. With ``--resume-copy`` it also
copies the full training checkpoint (model, EMA, optimizer) to ``checkpoints/`` so a later session
can continue pretraining exactly (``ase-search pretrain --arch ARCH --resume --out DIR``).

    python -m tools.export_testbed --arch dit uvit --resume-copy   # from the repository root
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
from pathlib import Path

import torch

from ase_search.evaluate import machine_info
from ase_search.files import atomic_write_text
from ase_search.measure import measure_sample_quality
from ase_search.metrics.extractor import load_classifier
from ase_search.models import load_checkpoint, load_state_dict_file
from ase_search.models.checkpoint import export_weights
from ase_search.images import save_grid
from ase_search.samplers import SamplerConfig
from ase_search.testbed import TESTBEDS

ROOT = Path(__file__).resolve().parents[1]


def export(arch: str, checkpoint: Path, resume_copy: bool, weights: str,
           note: str | None = None, seeds: int = 5) -> str:
    testbed = TESTBEDS[arch]
    state = load_state_dict_file(checkpoint)
    testbed.path.parent.mkdir(parents=True, exist_ok=True)
    candidates = ["ema", "raw"] if weights == "auto" else [weights]
    measured = {}
    for kind in candidates:  # the last one measured is the one left in place if it wins
        export_weights(checkpoint, testbed.path, half=True, ema=kind == "ema")
        measured[kind] = measure_sample_quality(load_checkpoint(testbed.path)[0],
                                                sampler=SamplerConfig("ddim", 20),
                                                seeds=range(seeds))
        print(f"{arch} {kind}: FID-MNIST {measured[kind].fid:.2f}, "
              f"confident {measured[kind].confident:.1%}", flush=True)
    chosen = min(measured, key=lambda k: measured[k].fid)
    if chosen != candidates[-1]:
        export_weights(checkpoint, testbed.path, half=True, ema=chosen == "ema")
    quality = measured[chosen]
    model, _ = load_checkpoint(testbed.path)
    grid = save_grid(quality.images, ROOT / "reports" / f"testbed-{arch}-samples.png", nrow=10)
    params = sum(p.numel() for p in model.parameters())
    cfg = state.get("train_config", {})
    info = machine_info()
    losses = state.get("losses", [])
    _, classifier_meta = load_classifier()
    real_share = classifier_meta.get("calibration", {}).get("share_confident")
    comparison = "" if len(measured) == 1 else (
        "- Shipped: the " + ("EMA" if chosen == "ema" else "raw (student)") + " weights, the lower "
        "FID of the two measured: " + ", ".join(
            f"{'EMA' if k == 'ema' else 'raw'} {v.fid:.2f} ({v.confident:.1%} confident)"
            for k, v in measured.items()) + ".\n")
    card = f"""# {testbed.model_name} testbed model ({arch})

Weights: `{testbed.path.name}` ({'EMA' if chosen == 'ema' else 'raw (student), not EMA'}, float16, {testbed.path.stat().st_size / 2**20:.1f} MiB,
{params / 1e6:.2f} M parameters). Config: `{model.config}`.

{comparison}- Trained by: `ase-search pretrain --arch {arch} --steps {cfg.get('steps')} --resume` (seed
  {cfg.get('seed')}, batch {cfg.get('batch_size')}, AdamW lr {cfg.get('lr')}, warm-up
  {cfg.get('warmup_steps')}, EMA {cfg.get('ema_decay')}, hybrid loss, label dropout 0.1) on the
  5,000 embedded MNIST digits.{'' if not note else chr(10) + '- History: ' + note}
- Steps done: **{state.get('step')}** of {cfg.get('steps')}; training wall time
  {state.get('wall_time', 0) / 3600:.2f} h on {info['cpu']} ({info['logical_cores']} cores, one
  thread, a second pretraining run beside it); final smoothed loss
  {losses[-1][1] if losses else float('nan'):.4f}.
- Quality ({dt.date.today().isoformat()}, DDIM-20, N = 1,000 per sample seed, seeds
  0-{len(quality.fids) - 1}, full model): FID-MNIST **{quality.fid:.2f}** (per seed
  {' / '.join(f'{v:.2f}' for v in quality.fids)}); samples the digit classifier reads with
  top-1 >= 0.9: **{quality.confident:.1%}** (per seed
  {' / '.join(f'{v:.1%}' for v in quality.confidents)}; the issue's bar is 90%; """ + (
        f"{real_share:.1%} of real held-out digits pass it" if real_share is not None
        else "compare real held-out digits") + f"). Grid: `reports/{grid.name}`.\n"
    card_path = testbed.path.with_suffix(".md")
    atomic_write_text(card_path, card)
    if resume_copy:
        dest = ROOT / "checkpoints" / f"pretrain-{arch}" / "last.pt"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(checkpoint, dest)
    return card


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", default=["dit", "uvit"], choices=list(TESTBEDS))
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="Training checkpoint (default runs/pretrain-<arch>/last.pt).")
    parser.add_argument("--resume-copy", action="store_true")
    parser.add_argument("--weights", choices=["auto", "ema", "raw"], default="auto",
                        help="Ship the EMA, the raw weights, or (auto) whichever has the lower "
                             "FID (early in training the EMA lags).")
    parser.add_argument("--seeds", type=int, default=5,
                        help="sample seeds to average the quality over (1,000 samples each)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--note", action="append", default=[], metavar="ARCH=TEXT",
                        help="Training history for the model card (e.g. an lr change on resume).")
    args = parser.parse_args()
    notes = dict(item.split("=", 1) for item in args.note)
    torch.set_num_threads(args.threads)
    for arch in args.arch:
        checkpoint = args.checkpoint or ROOT / "runs" / f"pretrain-{arch}" / "last.pt"
        print(export(arch, checkpoint, args.resume_copy, args.weights, notes.get(arch),
                     args.seeds))


if __name__ == "__main__":
    main()
