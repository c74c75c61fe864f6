"""Runs after the fact: a run directory as one object, reading its events back, comparing and ranking runs.

Reading runs imports TensorBoard's reader but never torch; loading a run's checkpoint, model and data
(:mod:`dlbench.runs.trained`) does.
"""

from dlbench.runs.run import Point, Run, find_runs, last_scalars, read_run, read_scalars

__all__ = ["Point", "Run", "find_runs", "last_scalars", "read_run", "read_scalars"]
