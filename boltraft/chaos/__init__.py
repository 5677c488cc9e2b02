"""The tooling behind ``boltraft chaos`` (docs/chaos.md): histories of register operations
and the project's own linearizability checker.

Modules: ``history`` (the JSON Lines history format: its reader, which validates a file and
pairs every invoke with its completion, and its writer) and ``check`` (the checker: a register
per key, keys checked independently, a Wing-Gong / Lowe search with memoization, split at the
points where nothing is in flight).

Like ``boltraft.benchmark``, this is a tool package: it may import anything in boltraft, and
only the CLI imports it.
"""
