"""The deterministic Raft simulator: a seeded hostile network, crashes and
restarts around the pure core, with safety checks after every step and a liveness phase.

Run ``pytest -m sim tests/sim`` (``BOLTRAFT_SIM_SEEDS=N`` seeds in total, ``BOLTRAFT_SIM_SEED=S``
to replay one) or ``python -m tests.sim.run --seeds N --jobs 2`` for long runs.
"""
