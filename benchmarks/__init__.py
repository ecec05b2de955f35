"""Benchmark scripts, run from the repository root as ``python benchmarks/<name>.py``.

A package only so that the scripts share :mod:`benchmarks._common`; nothing here is installed.
"""
