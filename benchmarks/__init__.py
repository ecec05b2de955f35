"""Benchmarks, run from the repository root as ``python -m benchmarks.<name>``.

Each declares its parameters and a cell function and runs through :mod:`benchmarks._runner`;
:mod:`benchmarks._common` holds what they share. Nothing here is installed.
"""
