"""events(): live, replay, and across daemon restarts with no gap and no repeat."""

from __future__ import annotations

import pytest

import sotto_client
from sotto_client import SottoError, SottoTimeout

from conftest import Collector, wait_until


def replay(socket_path: str, since: int, until: int):
    """Ground truth: a raw subscription's replay of (since, until]."""
    out = []
    with sotto_client.Client(socket_path) as c:
        for ev in c.events(since, idle_timeout=10):
            out.append(ev)
            if ev["seq"] >= until:
                break
    return out


def bob_texts(bob, world):
    return [m["text"] for m in bob.message_list(conversation=world.conv, limit=1000)]


def test_events_start_live_at_last_event_seq(world, alice, bob) -> None:
    start = bob.daemon_status()["last_event_seq"]
    alice.message_send(conversation=world.conv, text="before the iterator")
    wait_until("bob to receive it", lambda: "before the iterator" in bob_texts(bob, world))
    client = sotto_client.Client()
    c = Collector(client)
    try:
        # Once its event connection exists, the iterator has read last_event_seq.
        wait_until("the subscription", lambda: client._event_conns)
        alice.message_send(conversation=world.conv, text="after the iterator")
        c.wait_text("after the iterator")
        assert "before the iterator" not in c.texts()
        assert c.events[0]["seq"] > start
    finally:
        c.stop()


def test_events_replay_since(world, alice, bob) -> None:
    since = bob.daemon_status()["last_event_seq"]
    alice.message_send(conversation=world.conv, text="replayed")
    wait_until("bob to receive it", lambda: "replayed" in bob_texts(bob, world))
    got = []
    for ev in bob.events(since, idle_timeout=20):
        got.append(ev)
        if ev["type"] == "message.received" and ev["message"]["text"] == "replayed":
            break
    assert [e["seq"] for e in got] == sorted({e["seq"] for e in got})
    assert got[0]["seq"] > since


def test_events_survive_daemon_restarts_without_gap_or_repeat(world, alice, bob) -> None:
    since = bob.daemon_status()["last_event_seq"]
    c = Collector(sotto_client.Client(), since)
    try:
        alice.message_send(conversation=world.conv, text="r1")
        c.wait_text("r1")
        world.daemon("restart", "bob")
        alice.message_send(conversation=world.conv, text="r2")
        c.wait_text("r2")
        # Down while a message arrives: it is delivered on start and replayed, once.
        world.daemon("stop", "bob")
        alice.message_send(conversation=world.conv, text="r3")
        world.daemon("start", "bob")
        alice.message_send(conversation=world.conv, text="r4")
        c.wait_text("r4")
        c.wait_text("r3")
    finally:
        c.stop()
    seqs = [e["seq"] for e in c.events]
    assert len(seqs) == len(set(seqs)), "an event was repeated: %r" % seqs
    assert seqs == sorted(seqs)
    texts = c.texts()
    for t in ("r1", "r2", "r3", "r4"):
        assert texts.count(t) == 1, texts
    # No gap: exactly the events the daemon stored, compared with a fresh replay.
    truth = replay(world.socket("bob"), since, seqs[-1])
    assert [e["seq"] for e in truth] == seqs
    assert [e["type"] for e in truth] == [e["type"] for e in c.events]


def test_idle_timeout(bob) -> None:
    with pytest.raises(SottoTimeout):
        for _ in bob.events(idle_timeout=0.3):
            pass


def test_events_expired(world) -> None:
    # carol's daemon keeps only 2 events (config event_retention = 2), pruned as each new
    # one is stored. Each conversation she creates with alice brings at least one event
    # (`conversation.changed` once the relay accepts it): wait for each, no race with a
    # restart (a daemon restarted before it reached the relay added no event).
    with sotto_client.Client(world.socket("carol")) as carol:
        for n in range(4):
            seq = carol.daemon_status()["last_event_seq"]
            if seq > 3:
                break
            carol.conversation_create(members=[world.address("alice")], name="expiry %d" % n)
            wait_until(
                "an event for carol's conversation",
                lambda: carol.daemon_status()["last_event_seq"] > seq,
            )
        assert carol.daemon_status()["last_event_seq"] > 3
        with pytest.raises(SottoError) as e:
            next(iter(carol.events(0)))
    assert e.value.kind == "events_expired"
    assert isinstance(e.value.data.get("oldest_seq"), int)


def test_close_ends_an_iterator(bob) -> None:
    client = sotto_client.Client()
    c = Collector(client)
    wait_until("the subscription", lambda: client._event_conns)
    client.close()
    c.thread.join(10)
    assert not c.thread.is_alive()
