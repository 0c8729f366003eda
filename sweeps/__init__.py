"""Sweeps: specs expanded into run configs, executed locally or on SLURM, and their status.

The library entry point is `run_sweep` (see sweeps/run.py); `testbed sweep` is its command line.
"""
from sweeps.run import SweepNoSpace, SweepOutcome, run_sweep
from sweeps.spec import SweepError

__all__ = ["SweepError", "SweepNoSpace", "SweepOutcome", "run_sweep"]
