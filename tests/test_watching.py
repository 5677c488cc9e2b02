"""The change feed of one node (``boltraft.server.watching.WatchHub``) on a real LMDB state
machine, with the node's view, core and network as small fakes: which events an apply
gives, what each filter sees, the ring's retention, credit, lag, liveness and the "from now"
start. The real-process tests are tests/integration/test_watch.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from boltraft.errors import NotLeaderError, ProposalDroppedError
from boltraft.raft.types import Entry, EntryType, ReadState, Role
from boltraft.server.replies import Replies, Target
from boltraft.server.state import NodeState
from boltraft.server.watching import COALESCE_S, IDLE_S, PROGRESS_S, WatchHub
from boltraft.server.watchlog import WatchLog
from boltraft.storage import commands
from boltraft.storage.fsm import BucketStateMachine
from boltraft.transport.watchwire import decode_batch

CLIENT = b"client-1"


class FakeNet:
    """Records what the hub sends each client; ``gone`` clients refuse frames."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, list[Any]]] = []
        self.gone: set[bytes] = set()

    def reply(self, ident: bytes, frame: bytes) -> bool:
        if ident in self.gone:
            return False
        self.sent.append((ident, msgpack.unpackb(frame)))
        return True

    def send_frame(self, peer: str, frame: bytes) -> bool:
        return True


class FakeCore:
    def __init__(self) -> None:
        self.contexts: list[bytes] = []
        self.leaderless = False

    def read_index(self, ctx: bytes) -> None:
        if self.leaderless:
            raise ProposalDroppedError("no leader")
        self.contexts.append(ctx)


class Rig:
    """A hub on a real state machine; ``apply`` runs what ``Node._apply`` runs."""

    def __init__(self, tmp: Path, **limits: Any) -> None:
        self.sm = BucketStateMachine(tmp / "state")
        self.view = NodeState("n1", "tcp://127.0.0.1:1", 1.0)
        self.view.lead = "n1"
        self.view.role = Role.LEADER  # hears itself: never cut off unless a test says
        self.view.applied = self.sm.applied[0]  # a state machine opened again: where it was
        self.net = FakeNet()
        self.core = FakeCore()
        self.now = 100.0
        self.replies = Replies(self.net, frozenset())  # type: ignore[arg-type]
        opts = {"history_events": 1000, "history_bytes": 1 << 20, "max_lag": 100}
        opts.update(limits)
        self.hub = WatchHub(
            self.view,
            self.core,  # type: ignore[arg-type]
            self.replies,
            self.net,  # type: ignore[arg-type]
            max_watches=10,
            request_timeout_s=1.0,
            cut_off_s=5.0,
            clock=lambda: self.now,
            **opts,
        )
        self.sm.report = self.hub.report  # as the node sets it
        self.index = self.view.applied
        self.rids = iter(range(1, 1 << 30))

    def apply(self, *cmds: dict[str, Any]) -> list[Any]:
        ents = []
        for cmd in cmds:
            self.index += 1
            data = commands.encode({**cmd, "v": 1, "ts": 1})
            ents.append(Entry(1, self.index, EntryType.NORMAL, data))
        results = self.sm.apply(ents)
        self.view.applied = self.index
        self.hub.on_applied(ents)
        self.hub.flush(self.now + COALESCE_S)  # the node's loop, once they are due
        return results

    def request(self, body: dict[str, Any], ident: bytes = CLIENT) -> Any:
        """The answer map to ``body``."""
        rid = next(self.rids)
        before = len(self.net.sent)
        self.hub.on_request(Target(ident, rid), body, self.now)
        for _, frame in self.net.sent[before:]:
            if frame[1] == "resp" and frame[2] == rid:
                return frame[3]
        raise AssertionError("no answer")

    def watch(self, ident: bytes = CLIENT, **fields: Any) -> int:
        body = {"op": "watch", "bucket": [b"b"], "start_index": 1, **fields}
        answer = self.request(body, ident)
        assert answer["ok"], answer
        return int(answer["result"]["watch"])

    def events(self, wid: int) -> list[tuple[Any, ...]]:
        """(index, pos, type, bucket, key, value, prev) of every event sent to ``wid``."""
        out = []
        for _, frame in self.net.sent:
            if frame[1] == "events_batch":
                out += [ev for w, _, evs, _ in decode_batch(frame[2:]) if w == wid for ev in evs]
        return [(e.index, e.pos, e.type, e.bucket, e.key, e.value, e.prev) for e in out]

    def items(self, wid: int) -> list[list[Any]]:
        """The ``[watch_id, index, list, error]`` items sent for ``wid``, in order."""
        return [i for _, f in self.net.sent if f[1] == "events_batch" for i in f[3] if i[0] == wid]

    def ends(self, wid: int) -> list[Any]:
        return [i[3] for i in self.items(wid) if i[3]]


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    yield r
    r.sm.close()


def put(b: Any, k: bytes, v: bytes, **x: Any) -> dict[str, Any]:
    return {"op": "put", "bucket": b, "key": k, "value": v, **x}


def test_each_kind_of_change_and_only_changes_make_events(rig: Rig) -> None:
    rig.apply({"op": "create_bucket", "bucket": [b"b"]})
    wid = rig.watch(prev_value=True)
    rig.apply(
        put([b"b"], b"k", b"1"),
        put([b"b"], b"k", b"2", if_value=b"1"),
        put([b"b"], b"k", b"3", if_value=b"nope"),  # fails: no event
        {"op": "delete", "bucket": [b"b"], "key": b"absent"},  # deletes nothing
        {"op": "next_sequence", "bucket": [b"b"]},
        {"op": "create_bucket", "bucket": [b"b", b"n"], "if_not_exists": True},
        {"op": "create_bucket", "bucket": [b"b", b"n"], "if_not_exists": True},  # exists
        {
            "op": "batch",
            "ops": [
                {"op": "delete", "bucket": [b"b"], "key": b"k"},
                {"op": "put", "bucket": [b"b"], "key": b"k", "value": b"4"},
                {"op": "put", "bucket": [b"b"], "key": b"k", "value": b"5"},
            ],
        },
        {"op": "delete_bucket", "bucket": [b"b"]},
        {"op": "create_bucket", "bucket": [b"b"]},
        put([b"b"], b"k", b"6"),  # after the bucket came back: no previous value
    )
    assert rig.events(wid) == [
        (1, 0, "create_bucket", (b"b",), None, None, None),
        (2, 0, "put", (b"b",), b"k", b"1", None),
        (3, 0, "put", (b"b",), b"k", b"2", b"1"),
        (7, 0, "create_bucket", (b"b", b"n"), None, None, None),
        (9, 0, "delete", (b"b",), b"k", None, b"2"),
        (9, 1, "put", (b"b",), b"k", b"4", None),
        (9, 2, "put", (b"b",), b"k", b"5", b"4"),
        (10, 0, "delete_bucket", (b"b",), None, None, None),
        (11, 0, "create_bucket", (b"b",), None, None, None),
        (12, 0, "put", (b"b",), b"k", b"6", None),
    ]


def test_a_repeated_exactly_once_write_makes_no_second_event(rig: Rig) -> None:
    rig.apply({"op": "create_bucket", "bucket": [b"b"]})
    wid = rig.watch()
    rig.apply(put([b"b"], b"k", b"1", cid=b"c", seq=1))
    rig.apply(put([b"b"], b"k", b"1", cid=b"c", seq=1))  # the client's retry
    assert [e[:3] for e in rig.events(wid)] == [(1, 0, "create_bucket"), (2, 0, "put")]


def test_filters(rig: Rig) -> None:
    rig.apply({"op": "create_bucket", "bucket": [b"b"]})
    plain = rig.watch()
    pref = rig.watch(prefix=b"a")
    rec = rig.watch(recursive=True)
    recpref = rig.watch(recursive=True, prefix=b"a")
    other = rig.watch(bucket=[b"o"])
    rig.apply(
        put([b"b"], b"a1", b"v"),
        put([b"b"], b"z1", b"v"),
        {"op": "create_bucket", "bucket": [b"b", b"ax", b"deep"], "if_not_exists": True},
        put([b"b", b"ax", b"deep"], b"k", b"v"),
        {"op": "create_bucket", "bucket": [b"b", b"zx"]},
        put([b"b", b"zx"], b"a2", b"v"),
        {"op": "create_bucket", "bucket": [b"o"]},
        {"op": "delete_bucket", "bucket": [b"b"]},
    )

    def seen(wid: int) -> list[int]:
        return [e[0] for e in rig.events(wid)]

    assert seen(plain) == [1, 2, 3, 6, 9]  # not the deeper bucket, not inside nested ones
    assert seen(pref) == [1, 2, 9]
    assert seen(rec) == [1, 2, 3, 4, 5, 6, 7, 9]
    assert seen(recpref) == [1, 2, 4, 5, 9]
    assert seen(other) == [8]


def test_the_ring_drops_whole_entries_and_an_older_start_is_compacted(tmp_path: Path) -> None:
    rig = Rig(tmp_path, history_events=5)
    rig.apply({"op": "create_bucket", "bucket": [b"b"]})
    batch = {"op": "batch", "ops": [put([b"b"], b"x%d" % i, b"v") for i in range(3)]}
    rig.apply(batch, batch)  # entries 2 and 3: three events each
    assert rig.hub.oldest == 3  # 1 and 2 went (entry 2 whole), 3 holds its 3 events
    answer = rig.request({"op": "watch", "bucket": [b"b"], "start_index": 2})
    assert answer["error"]["code"] == "compacted"
    assert answer["error"]["details"]["oldest_index"] == 3
    wid = rig.watch(start_index=3)
    assert [(e[0], e[1]) for e in rig.events(wid)] == [(3, 0), (3, 1), (3, 2)]
    rig.sm.close()


def test_credit_bounds_what_is_in_flight_and_acks_give_more(rig: Rig) -> None:
    rig.apply({"op": "create_bucket", "bucket": [b"b"]})
    wid = rig.watch(window=3)
    rig.apply(*[put([b"b"], b"k%d" % i, b"v") for i in range(8)])
    assert len(rig.events(wid)) == 3
    assert rig.request({"op": "watch_ack", "watch": wid, "count": 2})["ok"]
    assert [e[0] for e in rig.events(wid)] == [1, 2, 3, 4, 5]  # nothing was due: at once
    assert rig.request({"op": "watch_ack", "watch": wid, "count": 3}, b"other")["error"][
        "code"
    ] == ("watch_not_found")  # another connection's watch


def test_a_watch_whose_window_stays_full_while_the_node_runs_ahead_is_ended(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path, max_lag=10)
    rig.apply({"op": "create_bucket", "bucket": [b"b"]})
    wid = rig.watch(window=2)
    for i in range(12):
        rig.apply(put([b"b"], b"k%d" % i, b"v"))
    [end] = rig.ends(wid)
    assert end["code"] == "watch_lagged"
    assert end["details"]["index"] == 2  # the window: the events of indexes 1 and 2 went
    assert rig.hub.status()["live"] == 0
    rig.sm.close()


def test_progress_frames_and_a_quiet_client_is_dropped(rig: Rig) -> None:
    wid = rig.watch()
    rig.apply(put([b"nothing"], b"k", b"v"))  # fails: nothing to send
    rig.now += PROGRESS_S
    rig.hub.tick(rig.now)
    assert rig.items(wid)[-1] == [wid, 1, None, None]  # progress: applied index 1, no events
    rig.now += IDLE_S + 0.1
    rig.hub.tick(rig.now)
    assert rig.hub.status()["live"] == 0
    assert rig.request({"op": "watch_cancel", "watch": wid})["error"]["code"] == ("watch_not_found")


def test_a_refused_frame_keeps_the_watch_and_goes_again(rig: Rig) -> None:
    wid = rig.watch()
    rig.net.gone.add(CLIENT)  # the transport refuses its frames (queue full, or gone)
    rig.apply({"op": "create_bucket", "bucket": [b"b"]}, put([b"b"], b"k", b"v"))
    assert rig.hub.status()["live"] == 1
    assert rig.hub.status()["refused"] == 1
    rig.net.gone.clear()
    rig.now += PROGRESS_S
    rig.hub.tick(rig.now)
    assert [(e[0], e[2]) for e in rig.events(wid)] == [(1, "create_bucket"), (2, "put")]
    rig.net.gone.add(CLIENT)
    rig.now += IDLE_S + 0.1  # a client that is gone stops acknowledging: dropped
    rig.hub.tick(rig.now)
    assert rig.hub.status()["live"] == 0


def test_one_frame_per_connection_carries_every_watch_and_shares_their_events(
    rig: Rig,
) -> None:
    a, b, c = rig.watch(), rig.watch(), rig.watch(prefix=b"x")
    other = rig.watch(ident=b"client-2")
    before = len(rig.net.sent)
    rig.apply({"op": "create_bucket", "bucket": [b"b"]}, put([b"b"], b"k", b"v"))
    frames = [(ident, f) for ident, f in rig.net.sent[before:] if f[1] == "events_batch"]
    assert [ident for ident, _ in frames] == [CLIENT, b"client-2"]
    mine = frames[0][1]
    assert len(mine[2]) == 2  # a and b share one list; c (a prefix) has its own
    assert [i[0] for i in mine[3]] == [a, b, c]
    assert mine[3][0][2] == mine[3][1][2] != mine[3][2][2]
    decoded = decode_batch(mine[2:])
    assert decoded[0][2] is decoded[1][2]  # a client decodes a shared list once
    for wid in (a, b, other):
        assert [e[0] for e in rig.events(wid)] == [1, 2]
    assert [e[0] for e in rig.events(c)] == [1]  # the bucket's creation; not key k


def test_from_now_starts_after_the_confirmed_read_index(rig: Rig) -> None:
    rig.apply({"op": "create_bucket", "bucket": [b"b"]}, put([b"b"], b"old", b"v"))
    rid = next(rig.rids)
    rig.hub.on_request(Target(CLIENT, rid), {"op": "watch", "bucket": [b"b"]}, rig.now)
    [ctx] = rig.core.contexts
    rig.hub.on_read_states([ReadState(index=3, context=ctx)])  # not applied yet: it waits
    assert not [f for _, f in rig.net.sent if f[1] == "resp"]
    rig.apply(put([b"b"], b"new", b"v"))  # index 3
    [answer] = [f[3] for _, f in rig.net.sent if f[1] == "resp" and f[2] == rid]
    assert answer["result"]["start_index"] == 4
    rig.apply(put([b"b"], b"newer", b"v"))
    assert [e[4] for e in rig.events(answer["result"]["watch"])] == [b"newer"]
    rig.core.leaderless = True
    assert rig.request({"op": "watch", "bucket": [b"b"]})["error"]["code"] == (NotLeaderError.code)


def test_a_reset_ends_every_watch_and_starts_the_ring_over(rig: Rig) -> None:
    rig.apply({"op": "create_bucket", "bucket": [b"b"]})
    wid = rig.watch()
    rig.hub.reset(50, "it installed a snapshot")
    assert [e["code"] for e in rig.ends(wid)] == ["unavailable"]
    assert rig.hub.oldest == 51
    answer = rig.request({"op": "watch", "bucket": [b"b"], "start_index": 1})
    assert answer["error"]["details"]["oldest_index"] == 51


@pytest.mark.parametrize(
    "body",
    [
        {"op": "watch"},
        {"op": "watch", "bucket": []},
        {"op": "watch", "bucket": [b"b"], "window": 0},
        {"op": "watch", "bucket": [b"b"], "window": 70000},
        {"op": "watch", "bucket": [b"b"], "start_index": -1},
        {"op": "watch", "bucket": [b"b"], "prefix": 5},
        {"op": "watch", "bucket": [b"b"], "prev_value": 1},
        {"op": "watch", "bucket": [b"b"], "extra": 1},
        {"op": "watch_ack", "watch": 1, "count": -1},
    ],
)
def test_bad_requests_are_refused_and_change_nothing(rig: Rig, body: dict[str, Any]) -> None:
    if body["op"] == "watch_ack":
        body = {**body, "watch": rig.watch()}
    live = rig.hub.status()["live"]
    assert rig.request(body)["error"]["code"] == "bad_request"
    assert rig.hub.status()["live"] == live


def test_the_events_of_an_apply_wait_for_the_next_applies_at_most_coalesce_s(rig: Rig) -> None:
    rig.apply({"op": "create_bucket", "bucket": [b"b"]})
    wid = rig.watch()
    sent = len(rig.events(wid))
    ents = [Entry(1, 2, EntryType.NORMAL, commands.encode({**put([b"b"], b"k", b"v"), "v": 1}))]
    rig.sm.apply(ents)
    rig.hub.on_applied(ents)
    rig.view.applied = 2
    rig.hub.flush(rig.now)  # not due yet
    assert len(rig.events(wid)) == sent
    assert rig.hub.due == rig.now + COALESCE_S
    rig.hub.flush(rig.now + COALESCE_S)
    assert len(rig.events(wid)) == sent + 1
    assert rig.hub.due is None


def test_a_node_that_hears_no_leader_for_long_ends_its_watches_and_takes_none(rig: Rig) -> None:
    rig.view.role = Role.FOLLOWER  # a follower that will hear nothing from its leader
    rig.view.leader_heard = rig.now
    wid = rig.watch()
    rig.now += 2.0  # past the election timeout (1 s): an election may be running
    rig.hub.tick(rig.now)
    rig.request({"op": "watch_ack", "watch": wid, "count": 0})
    assert rig.hub.status()["live"] == 1
    rig.now += 5.0  # past cut_off_s
    rig.hub.tick(rig.now)
    [end] = rig.ends(wid)
    assert end["code"] == "unavailable"
    answer = rig.request({"op": "watch", "bucket": [b"b"], "start_index": 1})
    assert answer["error"]["code"] == "unavailable"
    rig.view.leader_heard = rig.now  # the leader is back
    assert rig.request({"op": "watch", "bucket": [b"b"], "start_index": 1})["ok"]


def test_a_hub_started_again_on_its_history_on_disk_serves_the_changes_from_before(
    tmp_path: Path,
) -> None:
    with WatchLog(tmp_path / "watch") as history:
        rig = Rig(tmp_path, history=history)
        rig.apply({"op": "create_bucket", "bucket": [b"b"]})
        rig.apply(put([b"b"], b"k", b"1"), put([b"b"], b"k", b"2"))
        rig.apply({"op": "delete", "bucket": [b"b"], "key": b"k"})
        rig.apply({"op": "delete", "bucket": [b"b"], "key": b"k"})  # found nothing: no event
        rig.apply({"op": "batch", "ops": [put([b"b"], b"x", b"a"), put([b"b"], b"y", b"b")]})
        before = rig.events(rig.watch(prev_value=True))
        rig.sm.close()
    with WatchLog(tmp_path / "watch") as history:
        again = Rig(tmp_path, history=history)  # the same state, the hub made anew
        assert again.hub.oldest == 1
        wid = again.watch(prev_value=True)
        again.apply(put([b"b"], b"x", b"c"))
        got = again.events(wid)
        again.sm.close()
    assert len(before) == 6
    assert got == [*before, (7, 0, "put", (b"b",), b"x", b"c", b"a")]


def test_a_hub_whose_history_on_disk_stops_short_of_the_state_starts_empty(
    tmp_path: Path,
) -> None:
    with WatchLog(tmp_path / "watch") as history:
        rig = Rig(tmp_path, history=history)
        rig.apply({"op": "create_bucket", "bucket": [b"b"]})
        rig.sm.close()
    rig = Rig(tmp_path)  # applies without the history: it stops short of the state
    rig.apply(put([b"b"], b"k", b"1"))
    rig.sm.close()
    with WatchLog(tmp_path / "watch") as history:
        again = Rig(tmp_path, history=history)
        assert again.hub.oldest == 3
        answer = again.request({"op": "watch", "bucket": [b"b"], "start_index": 1})
        again.sm.close()
    assert answer["error"]["code"] == "compacted"


def test_a_reset_clears_the_history_on_disk(tmp_path: Path) -> None:
    with WatchLog(tmp_path / "watch") as history:
        rig = Rig(tmp_path, history=history)
        rig.apply({"op": "create_bucket", "bucket": [b"b"]})
        rig.hub.reset(1, "it installed a snapshot")
        rig.apply(put([b"b"], b"k", b"1"))
        rig.sm.close()
    with WatchLog(tmp_path / "watch") as history:
        again = Rig(tmp_path, history=history)
        assert again.hub.oldest == 2
        assert [e[4] for e in again.events(again.watch(start_index=2))] == [b"k"]
        again.sm.close()


def test_an_ack_while_a_flush_is_due_sends_nothing_before_it(rig: Rig) -> None:
    rig.apply({"op": "create_bucket", "bucket": [b"b"]})
    slow, other = rig.watch(window=1), rig.watch(ident=b"client-2")
    ents = [Entry(1, 2, EntryType.NORMAL, commands.encode({**put([b"b"], b"k", b"v"), "v": 1}))]
    rig.sm.apply(ents)
    rig.hub.on_applied(ents)
    rig.view.applied = rig.index = 2
    frames = len(rig.net.sent)
    assert rig.request({"op": "watch_ack", "watch": slow, "count": 1})["ok"]
    assert len(rig.net.sent) == frames + 1  # the answer: the change waits for the flush
    rig.hub.flush(rig.now + COALESCE_S)
    assert [e[0] for e in rig.events(slow)] == [1, 2]
    assert [e[0] for e in rig.events(other)] == [1, 2]


def test_one_ack_request_gives_credit_to_several_watches_of_the_connection(rig: Rig) -> None:
    rig.apply({"op": "create_bucket", "bucket": [b"b"]})
    a, b = rig.watch(window=1), rig.watch(window=1)
    foreign = rig.watch(ident=b"client-2", window=1)
    rig.apply(put([b"b"], b"k1", b"v"), put([b"b"], b"k2", b"v"))
    assert [len(rig.events(w)) for w in (a, b, foreign)] == [1, 1, 1]  # windows full
    before = len(rig.net.sent)
    answer = rig.request({"op": "watch_ack", "acks": [[a, 1], [b, 1], [foreign, 1], [99, 1]]})
    assert answer == {"ok": True, "result": [foreign, 99]}  # not this connection's
    frames = [f for _, f in rig.net.sent[before:] if f[1] == "events_batch"]
    assert len(frames) == 1 and [i[0] for i in frames[0][3]] == [a, b]  # one frame for both
    assert [len(rig.events(w)) for w in (a, b, foreign)] == [2, 2, 1]
    for bad in ([[a]], [[a, -1]], [["x", 1]], 7):
        answer = rig.request({"op": "watch_ack", "acks": bad})
        assert answer["error"]["code"] == "bad_request", bad
    answer = rig.request({"op": "watch_ack", "acks": [], "watch": a})
    assert answer["error"]["code"] == "bad_request"


def test_watches_with_different_room_share_a_list_unless_theirs_is_smaller(rig: Rig) -> None:
    rig.apply({"op": "create_bucket", "bucket": [b"b"]})
    a, b, small = rig.watch(window=10), rig.watch(window=20), rig.watch(window=2)
    before = len(rig.net.sent)
    rig.apply(put([b"b"], b"k1", b"v"), put([b"b"], b"k2", b"v"), put([b"b"], b"k3", b"v"))
    [frame] = [f for _, f in rig.net.sent[before:] if f[1] == "events_batch"]
    slots = {i[0]: i[2] for i in frame[3]}
    assert slots[a] == slots[b] != slots[small]  # a and b: one list despite their room
    assert len(frame[2]) == 2
    assert [len(rig.events(w)) for w in (a, b, small)] == [4, 4, 2]  # with the creation
