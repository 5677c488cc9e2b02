"""Replication: appends, commit by counting current-term replicas, durable-only apply, the
leader's parallel write (early messages), pipelining, flow control, fast back-off."""

from __future__ import annotations

import pytest

from boltraft.errors import ProposalDroppedError
from boltraft.raft.types import (
    ConfChange,
    ConfChangeType,
    Entry,
    EntryType,
    Message,
    MessageType,
    ProgressState,
)

from .network import Network

MT = MessageType
CT = ConfChangeType


def test_proposals_replicate_and_apply_everywhere_in_order() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    term, last = net.propose("a", b"1", b"2", b"3")
    assert (term, last) == (1, 4)
    for nid in "abc":
        assert net.data_applied(nid) == [b"1", b"2", b"3"]
        assert net.nodes[nid].status().commit == 4


def test_propose_on_follower_is_dropped_naming_the_leader() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    with pytest.raises(ProposalDroppedError) as exc:
        net.nodes["b"].propose([b"x"])
    assert exc.value.details["lead"] == "a"
    assert net.nodes["b"].raft.log.last_index() == 1


def test_leader_sends_appends_early_and_counts_itself_only_after_advance() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    a = net.nodes["a"]
    a.propose([b"x"])
    rd = a.ready()
    assert [m.type for m in rd.early_messages] == [MT.APP, MT.APP]
    assert rd.entries and rd.entries[-1].index == 2
    assert a.raft.progress["a"].match == 1
    net.stores["a"].append(rd.entries, rd.hard_state)
    a.advance(rd)
    assert a.raft.progress["a"].match == 2


def test_no_early_messages_in_the_ready_that_changes_the_term() -> None:
    net = Network(["a"])
    a = net.nodes["a"]
    a.campaign()  # single voter: leader at once, term 1 not yet durable
    rd = a.ready()
    assert rd.hard_state is not None and rd.hard_state.term == 1
    assert rd.early_messages == []


def test_commit_needs_a_quorum_of_durable_copies() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.isolate("b")
    net.isolate("c")
    net.propose("a", b"x")
    assert net.nodes["a"].status().commit == 1
    net.recover()
    net.tick("a", 1)
    assert net.nodes["a"].status().commit == 2


def test_an_entry_commits_on_the_third_of_five_voters() -> None:
    """Five voters: the leader and one follower holding an entry are two of five, not a
    quorum; the third copy commits it."""
    net = Network(["a", "b", "c", "d", "e"])
    net.elect("a")
    for far in "cde":
        net.cut("a", far)
    net.propose("a", b"x")
    a = net.nodes["a"]
    assert a.raft.progress["b"].match == 2 and a.raft.progress["a"].match == 2
    assert a.status().commit == 1 and net.data_applied("a") == []
    net.cut_pairs.discard(frozenset(("a", "c")))
    net.tick("a")  # the heartbeat finds c behind: it catches up and acks
    assert a.raft.progress["c"].match == 2
    assert a.status().commit == 2 and net.data_applied("a") == [b"x"]


def test_entries_appended_before_advance_are_not_self_acknowledged() -> None:
    """The leader counts its own copy only up to what the Ready it advances made durable:
    a proposal made while that Ready was being persisted is not durable yet."""
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.isolate("b")
    net.isolate("c")
    a = net.nodes["a"]
    a.propose([b"x"])
    rd = a.ready()
    a.propose([b"y"])  # while rd is being persisted
    net.stores["a"].append(rd.entries, rd.hard_state)
    a.advance(rd)
    assert a.raft.progress["a"].match == 2  # not 3: entry 3 is only in memory
    a.step(Message(MT.APP_RESP, "a", "b", term=1, index=3))  # b holds 2 and 3 durably
    assert a.status().commit == 2


def test_follower_applies_only_durable_committed_entries() -> None:
    net = Network(["a", "b"])
    net.elect("a")
    b = net.nodes["b"]
    b.step(
        Message(
            MT.APP,
            "b",
            "a",
            term=1,
            log_term=1,
            index=1,
            entries=[net.nodes["a"].raft.log.entries(1, 2)[0]._replace(index=2, data=b"x")],
            commit=2,
        )
    )
    rd = b.ready()
    assert rd.entries[-1].index == 2 and rd.hard_state.commit == 2
    assert [e.index for e in rd.committed_entries] == []  # entry 2 is not durable yet
    net.stores["b"].append(rd.entries, rd.hard_state)
    b.advance(rd)
    assert [e.index for e in b.ready().committed_entries] == [2]


def test_pipelined_appends_are_bounded_by_the_inflight_window() -> None:
    net = Network(["a", "b"], max_inflight_msgs=3)
    net.elect("a")
    a = net.nodes["a"]
    for i in range(5):
        a.propose([b"%d" % i])
    apps = [m for m in a.raft.msgs if m.type == MT.APP and m.to == "b"]
    assert len(apps) == 3
    assert a.raft.progress["b"].state == ProgressState.REPLICATE
    net.settle()
    assert net.data_applied("b") == [b"%d" % i for i in range(5)]


def test_inflight_window_is_bounded_by_bytes() -> None:
    net = Network(["a", "b"], max_inflight_bytes=10, max_size_per_msg=4)
    net.elect("a")
    a = net.nodes["a"]
    for _ in range(6):
        a.propose([b"abcd"])
    apps = [m for m in a.raft.msgs if m.type == MT.APP and m.to == "b"]
    assert [len(m.entries) for m in apps] == [1, 1, 1]  # 12 bytes >= 10: window full
    net.settle()
    assert len(net.data_applied("b")) == 6


def test_appends_are_batched_by_bytes() -> None:
    net = Network(["a", "b"], max_size_per_msg=10)
    net.elect("a")
    net.isolate("b")
    net.propose("a", *[b"12345"] * 6)
    net.recover()
    net.delivered.clear()
    net.tick("a")
    sizes = [len(m.entries) for m in net.delivered if m.type == MT.APP and m.entries]
    assert sizes and max(sizes) == 2
    assert net.data_applied("b") == [b"12345"] * 6


def test_fast_backoff_skips_a_whole_conflicting_term() -> None:
    """Thesis 5.3 optimisation: one rejection per conflicting term, not per entry."""
    net = Network(["a", "b", "c"], check_quorum=False)
    net.elect("a")  # term 1, no-op at 1
    net.isolate("a")
    net.drop_filter = lambda m: m.type == MT.APP  # c votes for b but gets none of its entries
    net.elect("b")  # term 2: b's entries 2..21 never leave b
    for i in range(19):
        net.nodes["b"].propose([b"lost%d" % i])
    net.settle()
    net.recover()
    net.isolate("b")
    net.tick("a")  # the stale term-1 leader hears of term 2 and steps down
    net.elect("a")  # term 3 with c's vote
    net.propose("a", *[b"kept%d" % i for i in range(30)])
    net.elect("c")  # term 4: c's next index for b starts past b's whole log
    net.recover()
    net.delivered.clear()
    net.tick("c", 1)
    rejects = [m for m in net.delivered if m.type == MT.APP_RESP and m.reject and m.frm == "b"]
    assert [(m.reject_hint, m.hint_term) for m in rejects] == [(22, 0), (2, 2)]
    assert net.log_of("b") == net.log_of("c")
    assert net.data_applied("b") == [b"kept%d" % i for i in range(30)]


def test_heartbeat_response_reopens_a_window_full_of_lost_appends() -> None:
    net = Network(["a", "b"], max_inflight_msgs=2)
    net.elect("a")
    net.drop_filter = lambda m: m.type == MT.APP
    for i in range(4):
        net.propose("a", b"%d" % i)  # two APPs fill the window, and both are lost
    assert net.nodes["a"].raft.progress["b"].is_paused()
    net.drop_filter = None
    net.tick("a")  # heartbeat response frees a slot; the next APP's rejection re-probes
    assert net.data_applied("b") == [b"0", b"1", b"2", b"3"]


def test_heartbeat_answers_do_not_stretch_a_busy_follower_s_window() -> None:
    """A follower slower than the heartbeat (catching up: every flush is large) answers
    several heartbeats per round of acknowledgements. Those answers come after the
    acknowledgements of every APP sent before their heartbeat, so they free no slot of a
    window refilled since: what is in flight stays within max_inflight_bytes."""
    net = Network(["a", "b"], max_size_per_msg=1000, max_inflight_bytes=3000)
    net.elect("a")
    a, b = net.nodes["a"], net.nodes["b"]
    a.propose([bytes(1000)] * 60)
    sent = acked = net.log_of("b")[-1][0]  # the new term's no-op
    worst = 0
    for _ in range(30):
        out = net.process("a") if a.has_ready() else []
        for _ in range(3):  # three heartbeats while b flushes
            a.tick()
            out += net.process("a") if a.has_ready() else []
        for m in out:
            if m.type == MT.APP and m.entries:
                sent = max(sent, m.entries[-1].index)
            b.step(m)
        worst = max(worst, sent - acked)
        for m in net.process("b") if b.has_ready() else []:
            if m.type == MT.APP_RESP and not m.reject:
                acked = max(acked, m.index)
            a.step(m)
    assert 0 < worst <= 3  # entries of 1000 bytes: the window of 3000
    net.settle()
    assert net.log_of("b") == net.log_of("a") and len(net.data_applied("b")) == 60


# --- lazy_commit: followers learn the commit with the next APP or heartbeat -------------------
def _commits(net: Network) -> dict[str, int]:
    return {nid: n.status().commit for nid, n in net.nodes.items()}


def _apps_from(net: Network, nid: str, since: int) -> list[Message]:
    return [m for m in net.delivered[since:] if m.frm == nid and m.type == MT.APP]


def _lazy_with_x(**config: object) -> Network:
    """Returns a lazy-commit network of a, b, c led by a, which has committed b"x" (index 2)
    without telling the followers yet."""
    net = Network(["a", "b", "c"], lazy_commit=True, **config)
    net.elect("a")
    net.propose("a", b"x")
    return net


@pytest.mark.parametrize("lazy", [False, True])
def test_a_raised_commit_goes_out_at_once_only_without_lazy_commit(lazy: bool) -> None:
    net = Network(["a", "b", "c"], lazy_commit=lazy)
    net.elect("a")
    net.tick("a")
    assert _commits(net) == {"a": 1, "b": 1, "c": 1}
    since = len(net.delivered)
    net.propose("a", b"x")
    assert net.nodes["a"].status().commit == 2
    apps = _apps_from(net, "a", since)
    if lazy:
        assert [len(m.entries) for m in apps] == [1, 1]  # the entry, and no commit notice
        assert _commits(net) == {"a": 2, "b": 1, "c": 1}
        assert net.data_applied("b") == []
    else:
        assert sorted(len(m.entries) for m in apps) == [0, 0, 1, 1]
        assert _commits(net) == {"a": 2, "b": 2, "c": 2}
        assert net.data_applied("b") == [b"x"]


def test_lazy_commit_rides_on_the_next_append() -> None:
    net = _lazy_with_x()
    since = len(net.delivered)
    net.propose("a", b"y")
    apps = _apps_from(net, "a", since)
    assert [(len(m.entries), m.commit) for m in apps] == [(1, 2), (1, 2)]
    assert _commits(net) == {"a": 3, "b": 2, "c": 2}
    assert net.data_applied("b") == [b"x"]


def test_lazy_commit_reaches_idle_followers_with_the_next_heartbeat() -> None:
    net = _lazy_with_x(heartbeat_tick=2)
    net.tick("a")  # half a heartbeat interval: nothing goes out
    assert _commits(net) == {"a": 2, "b": 1, "c": 1}
    net.tick("a")
    assert _commits(net) == {"a": 2, "b": 2, "c": 2}
    assert net.data_applied("c") == [b"x"]


def test_lazy_commit_tells_a_committed_membership_change_at_once() -> None:
    net = _lazy_with_x()
    _, index = net.nodes["a"].propose_conf_change(ConfChange(CT.REMOVE_NODE, "c"))
    net.settle()  # no tick: the commit of the change went out by itself
    assert net.nodes["b"].status().commit == index
    assert net.conf_states["b"].voters == ("a", "b")
    assert net.data_applied("b") == [b"x"]


def test_lazy_commit_still_confirms_a_follower_read_with_the_commit() -> None:
    net = _lazy_with_x()
    assert net.nodes["b"].status().commit == 1
    net.nodes["b"].read_index(b"r1")
    net.settle()
    [rs] = net.read_states["b"]
    assert rs == (2, b"r1")
    assert net.nodes["b"].status().commit == 2  # the read's heartbeat carried the commit
    assert net.data_applied("b") == [b"x"]


def test_lazy_commit_tells_a_new_terms_first_commit_at_once() -> None:
    net = Network(["a", "b", "c"], lazy_commit=True)
    net.elect("a")  # no tick: the no-op's commit went out by itself
    assert net.nodes["b"].status().commit == 1


def test_lazy_commit_tells_the_prompt_commit_members_at_once() -> None:
    net = Network(["a", "b", "c"], lazy_commit=True)
    net.elect("a")
    net.tick("a")
    net.nodes["a"].set_prompt_commit(["b", "zz"])  # zz: not a member, ignored
    since = len(net.delivered)
    net.propose("a", b"x")
    apps = _apps_from(net, "a", since)
    # the entry to both, and a commit notice to b alone
    assert sorted((m.to, len(m.entries)) for m in apps) == [("b", 0), ("b", 1), ("c", 1)]
    assert _commits(net) == {"a": 2, "b": 2, "c": 1}
    assert net.data_applied("b") == [b"x"] and net.data_applied("c") == []
    net.nodes["a"].set_prompt_commit([])
    net.propose("a", b"y")
    assert _commits(net) == {"a": 3, "b": 2, "c": 2}


def test_the_prompt_commit_members_outlive_a_change_of_leader() -> None:
    net = Network(["a", "b", "c"], lazy_commit=True)
    for nid in net.nodes:
        net.nodes[nid].set_prompt_commit(["c"])
    net.elect("a")
    net.nodes["a"].transfer_leader("b")
    net.settle()
    assert net.leaders() == ["b"]
    net.tick("b")
    net.propose("b", b"x")
    assert _commits(net)["c"] == net.nodes["b"].status().commit
    assert _commits(net)["a"] < net.nodes["b"].status().commit


def test_a_probed_follower_gets_one_entry_per_append_until_its_log_matches() -> None:
    """While the leader looks for where a follower's log matches its own (the follower is
    probed), each APP carries one entry, however many entries the follower lacks or holds
    wrongly: c lacks the thirty the leader wrote while it was cut off, and holds five of
    the leader's term that the leader never wrote (a forged append, as a peer without keys
    can send). Without the limit, the APP after the first rejection carried the 25 entries
    c lacked past its last match, and with a follower whose forged entries make each
    rejection step back one index, every round trip carried a full APP again."""
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.isolate("c")
    for i in range(30):
        net.propose("a", b"x%d" % i)
    term = net.nodes["a"].status().term
    c = net.nodes["c"]
    last = c.raft.log.last_index()
    forged = [Entry(term, last + 1 + i, EntryType.NORMAL, b"forged") for i in range(5)]
    c.step(Message(MT.APP, "c", "a", term, c.raft.log.term(last), last, forged, 0))
    net.send(net.process("c"))
    assert c.raft.log.last_index() == last + 5
    net.recover()
    since = len(net.delivered)
    net.tick("a", 3)
    net.settle()
    assert net.log_of("c") == net.log_of("a")
    assert net.data_applied("c")[-1] == b"x29"
    to_c = [m for m in net.delivered[since:] if (m.frm, m.to) == ("a", "c")]
    first_ok = next(
        i
        for i, m in enumerate(net.delivered[since:])
        if m.frm == "c" and m.type == MT.APP_RESP and not m.reject
    )
    probes = [m for m in net.delivered[since : since + first_ok] if (m.frm, m.to) == ("a", "c")]
    probes = [m for m in probes if m.type == MT.APP]
    assert all(len(m.entries) <= 1 for m in probes), [len(m.entries) for m in probes]
    assert len(probes) >= 2  # rejected, then accepted
    assert max(len(m.entries) for m in to_c if m.type == MT.APP) > 1  # then full APPs
