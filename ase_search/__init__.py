"""ase-search: early-exit diffusion transformers (Adaptive Score Estimation) and exit-schedule search."""

from ase_search.schedule import ExitSchedule, ScheduleError, preset, preset_names

__all__ = ["ExitSchedule", "ScheduleError", "preset", "preset_names"]
__version__ = "0.1.0"
