"""Integrations of ase-search's exit schedules with other libraries (diffusers)."""
