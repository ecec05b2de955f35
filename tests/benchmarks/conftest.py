"""The benchmarks are a package at the repository root, not installed: make it importable."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:  # `python -m pytest` from the root has it already; plain `pytest` not
    sys.path.insert(0, ROOT)
