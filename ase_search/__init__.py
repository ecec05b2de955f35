"""ase-search: early-exit diffusion transformers (Adaptive Score Estimation) and exit-schedule search."""

from ase_search.schedule import ExitSchedule, ScheduleError, preset, preset_names

__all__ = ["ExitSchedule", "ScheduleError", "__version__", "preset", "preset_names"]


def _version() -> str:
    """The installed distribution's version; in a source tree that was never installed,
    pyproject.toml's."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ase-search")
    except PackageNotFoundError:
        import tomllib
        from pathlib import Path

        try:
            with open(Path(__file__).resolve().parent.parent / "pyproject.toml", "rb") as f:
                return str(tomllib.load(f)["project"]["version"])
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            return "unknown"


# Written into every study, exported schedule and report, so a result names the code behind it.
__version__ = _version()
