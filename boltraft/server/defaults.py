"""The default values of a node's configuration that the command line shows in its help
(``boltraft serve --help``); ``boltraft.server.config.ServerConfig`` takes its defaults from
here, so the help cannot drift from what a node does. Imports nothing: the command line
reads it on every start."""

TICK_MS = 100
ELECTION_TICK = 10
HEARTBEAT_TICK = 1
LOG_STORE = "wal"
SNAPSHOT_ENTRIES = 100_000  # the snapshot policy (etcd 3.4 also: 100,000)
