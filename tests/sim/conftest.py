"""pytest plumbing for the simulator: a report header naming the seed settings."""

from __future__ import annotations

import os


def pytest_report_header() -> str:
    """Returns the line pytest prints under its header for simulator runs."""
    one = os.environ.get("BOLTRAFT_SIM_SEED")
    if one:
        return f"boltraft sim: replaying seed {one}"
    total = os.environ.get("BOLTRAFT_SIM_SEEDS", "2000 (default)")
    jobs = os.environ.get("BOLTRAFT_SIM_JOBS", "min(2, cpus)")
    return f"boltraft sim: {total} seeds over 3 and 5 nodes, {jobs} worker processes"
