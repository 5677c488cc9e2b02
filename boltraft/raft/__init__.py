"""The consensus core: a pure, deterministic Raft state machine and its storage seam."""
