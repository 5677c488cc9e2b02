"""The consensus core: a Raft state machine and its storage seam.

The core is pure and deterministic: no sockets, clocks, threads, disk or global randomness
(``Config.rng`` is its only source of chance), so one sequence of inputs always yields one
sequence of ``Ready`` values. The runtime drives it through :mod:`boltraft.raft.rawnode`.
"""
