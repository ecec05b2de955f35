"""Fixtures shared by the test files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

# The search tests' space for a 4-block DiT: five uniform intervals, monotone block counts.
SEARCH_SPACE = """version: 1
arch: dit
depth: 4
intervals: 5
edges: uniform
blocks: {min: 1, max: null}
monotone: true
seeds: [full, D4]
"""


def joint_space_yaml(samplers: str = "ddim, dpm-solver", *, seeds: str = "full, D4",
                     max_steps: int = 6, steps_only: str = "2, 3") -> str:
    """SEARCH_SPACE with a joint ``sampling:`` section (reference DDIM-4)."""
    return (SEARCH_SPACE.replace("seeds: [full, D4]", f"seeds: [{seeds}]")
            + f"sampling:\n  samplers: [{samplers}]\n  steps: {{min: 2, max: {max_steps}}}\n"
              f"  steps_only: [{steps_only}]\n  reference: {{sampler: ddim, steps: 4}}\n")


@pytest.fixture(scope="session")
def joint_space() -> Callable[..., str]:
    """:func:`joint_space_yaml`, for tests that need a small joint space."""
    return joint_space_yaml


@pytest.fixture
def one_thread():
    """torch on one thread for the test: on tiny tensors intra-op threads only add wake-up
    latency on a shared 2-core machine. Modules opt in with ``pytestmark``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def cli() -> Callable[[list[str]], tuple[int, str, str]]:
    """Run ``ase-search`` in-process (with main()'s error handling, see tests/_cli.py); return
    (code, out, err)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_cli", Path(__file__).with_name("_cli.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def run(argv: list[str]) -> tuple[int, str, str]:
        done = module.run_cli(argv)
        return done.returncode, done.stdout, done.stderr

    return run


def write_tiny_dit(root: Path, space: str, *, last_block_scale: float = 1.0,
                   name: str = "tiny.pt") -> Path:
    """A 4-block DiT on 28x28 MNIST (random weights with a non-zero output) as ``root/name``, and
    ``space`` as ``root/space.yaml``; ``last_block_scale`` multiplies the last block's weights."""
    import torch

    from ase_search.models import create_model, save_checkpoint

    torch.manual_seed(0)
    model = create_model("DiT-T", hidden_size=32, depth=4, num_heads=2)
    with torch.no_grad():  # adaLN-Zero starts at exactly zero output: make exits matter
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        for p in model.blocks[3].parameters():
            p.mul_(last_block_scale)
    save_checkpoint(root / name, model)
    (root / "space.yaml").write_text(space)
    return root


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A folder with ``tiny.pt`` (see :func:`write_tiny_dit`) and ``space.yaml`` (SEARCH_SPACE)."""
    return write_tiny_dit(tmp_path_factory.mktemp("search"), SEARCH_SPACE)


@pytest.fixture(scope="session")
def tiny_dit() -> Callable[..., Path]:
    """:func:`write_tiny_dit`, for tests that need another space or a broken model."""
    return write_tiny_dit
