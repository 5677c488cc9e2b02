"""How a NEW node joins a running cluster (``boltraft serve --join ADDR``): before its loop
starts it bootstraps its empty log with the membership at the base of the cluster's log
(``bootstrap_for_join``), then a thread asks the leader to add it until it is a voter
(``request_join``). Both talk to the cluster through one-shot requests (``probe``) and
follow the leader's address in ``not_leader`` answers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from boltraft.errors import BoltraftError, NotLeaderError, RequestTimeoutError
from boltraft.raft.types import LogStore
from boltraft.server.probe import request
from boltraft.server.wire import conf_from_json
from boltraft.transport.curve import PartyKeys

log = logging.getLogger("boltraft.server")

JOIN_TIMEOUT_S = 120.0  # one join request: catching a learner up may take a while
RETRY_S = 1.0


def bootstrap_for_join(
    logstore: LogStore, join_addr: str, timeout: float = 30.0, keys: PartyKeys | None = None
) -> bool:
    """True after bootstrapping an EMPTY log store with the membership the cluster at
    ``join_addr`` keeps at the base of its log (asked of its leader), so that this node
    replays the cluster's log from the same start (or receives a snapshot); False, changing
    nothing, when the store already holds state (a restart). Raises RequestTimeoutError when
    no leader answers within ``timeout`` seconds."""
    if logstore.last_index() or logstore.snapshot_meta().index:
        return False
    if logstore.initial_state()[1].voters:
        return False
    deadline = time.monotonic() + timeout
    addr = join_addr
    while True:
        try:
            info = request(addr, {"op": "members"}, timeout=2.0, keys=keys)
            if info.get("leader") == info.get("id"):
                return bool(logstore.bootstrap(conf_from_json(info["log_base"])))
            addr = info.get("leader_addr") or join_addr
        except BoltraftError as err:
            log.info("join: %s did not answer the membership (%s); retrying", addr, err.message)
            addr = join_addr
        if time.monotonic() >= deadline:
            raise RequestTimeoutError(f"no leader found through {join_addr} to join", addr=addr)
        time.sleep(0.2)


def request_join(
    node_id: str,
    addr: str,
    join_addr: str,
    should_stop: Callable[[], bool],
    keys: PartyKeys | None = None,
) -> threading.Thread:
    """A started daemon thread that asks the cluster at ``join_addr`` to add this node (id
    ``node_id`` at ``addr``) until it is a voter or ``should_stop()``. With ``keys`` (the
    node's own, which an admin registered: ``boltraft keys add-node``) it asks over CURVE."""
    body = {"op": "join", "id": node_id, "addr": addr, "timeout_ms": int(JOIN_TIMEOUT_S * 1000)}

    def run() -> None:
        target = join_addr
        while not should_stop():
            try:
                request(target, body, timeout=JOIN_TIMEOUT_S, keys=keys)
                log.info("%s: joined the cluster as a voter", node_id)
                return
            except NotLeaderError as err:
                leader = err.details.get("leader_addr")
                target = leader if isinstance(leader, str) and leader else join_addr
                if leader:
                    continue
                log.warning("%s: join not done yet: %s", node_id, err.message)
            except BoltraftError as err:
                log.warning("%s: join not done yet: %s", node_id, err.message)
                target = join_addr
            deadline = time.monotonic() + RETRY_S
            while time.monotonic() < deadline and not should_stop():
                time.sleep(0.05)

    t = threading.Thread(target=run, name="boltraft-join", daemon=True)
    t.start()
    return t
