"""Calls, typed helpers and errors against real daemons."""

from __future__ import annotations

import os
import socket
import tempfile
import threading

import pytest

import sotto_client
from sotto_client import SottoError, SottoTimeout
from sotto_client._paths import default_socket


def test_default_socket_is_resolved_like_the_daemon(world) -> None:
    # The harness sets XDG_RUNTIME_DIR to bob's runtime dir and no SOTTO_SOCKET.
    assert "SOTTO_SOCKET" not in os.environ
    assert default_socket() == world.socket("bob")
    assert default_socket({"SOTTO_SOCKET": "/x/s.sock", "XDG_RUNTIME_DIR": "/run/user/1"}) == "/x/s.sock"
    assert default_socket({"SOTTO_SOCKET": "relative.sock", "XDG_RUNTIME_DIR": "/run/user/1"}) == (
        "/run/user/1/sotto/sottod.sock"
    )
    assert default_socket({"XDG_RUNTIME_DIR": "relative"}, uid=42) == "/tmp/sotto-42/sottod.sock"
    assert default_socket({}, uid=7) == "/tmp/sotto-7/sottod.sock"


def test_sotto_socket_overrides(world, monkeypatch) -> None:
    monkeypatch.setenv("SOTTO_SOCKET", world.socket("alice"))
    with sotto_client.Client() as c:
        assert c.call("account.info")["address"] == world.address("alice")


def test_call_and_typed_helpers(world, alice, bob) -> None:
    status = bob.daemon_status()
    assert status["account"]["address"] == world.address("bob")
    assert isinstance(status["last_event_seq"], int)
    assert bob.call("daemon.status")["account"] == status["account"]
    conv = alice.conversation_get(conversation=world.conv)
    assert conv["id"] == world.conv and conv["kind"] == "direct"
    sent = alice.message_send(conversation=world.conv, text="typed helper")
    assert sent["text"] == "typed helper" and sent["conversation"] == world.conv
    listed = alice.message_list(conversation=world.conv, limit=1000)
    assert sent["id"] in [m["id"] for m in listed]
    # The same conversation by the peer's address.
    assert alice.conversation_get(conversation=world.address("bob"))["id"] == world.conv


def test_idempotency_key_through_helpers(world, alice) -> None:
    a = alice.message_send(conversation=world.conv, text="once", idempotency_key="py-idem-1")
    b = alice.message_send(conversation=world.conv, text="once", idempotency_key="py-idem-1")
    assert a["id"] == b["id"]
    with pytest.raises(SottoError) as e:
        alice.message_send(conversation=world.conv, text="other", idempotency_key="py-idem-1")
    assert e.value.kind == "idempotency_conflict"


def test_errors_carry_code_kind_and_data(alice) -> None:
    with pytest.raises(SottoError) as e:
        alice.conversation_get(conversation="no-such-conversation")
    assert e.value.kind == "not_found", e.value
    assert isinstance(e.value.code, int) and -32099 <= e.value.code <= -32000
    assert e.value.data.get("kind") == "not_found"
    with pytest.raises(SottoError) as e:
        alice.call("no.such_method")
    assert e.value.code == -32601
    with pytest.raises(SottoError) as e:
        alice.call("daemon.status", bogus=1)
    assert e.value.code == -32602 and "bogus" in e.value.message
    # The connection is still usable after errors.
    assert alice.daemon_status()["account"] is not None


def test_no_daemon_is_a_connection_error() -> None:
    with tempfile.TemporaryDirectory() as d:
        with sotto_client.Client(os.path.join(d, "none.sock")) as c:
            with pytest.raises(SottoError) as e:
                c.daemon_status()
    assert e.value.kind == "connection" and e.value.code is None


def test_call_timeout() -> None:
    # A socket that accepts and never answers.
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "silent.sock")
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(path)
        srv.listen(1)
        held = []
        t = threading.Thread(target=lambda: held.append(srv.accept()), daemon=True)
        t.start()
        with sotto_client.Client(path, timeout=0.3) as c:
            with pytest.raises(SottoTimeout) as e:
                c.daemon_status()
        assert e.value.kind == "timeout" and isinstance(e.value, TimeoutError)
        srv.close()


def test_partial_lines_and_large_results(alice, world) -> None:
    # rpc.discover is one long line, read in many chunks.
    doc = alice.rpc_discover()
    assert len(str(doc)) > 10000
    names = [m["name"] for m in doc["methods"]]
    assert "message.send" in names and "events.subscribe" in names


def test_calls_reconnect_after_a_daemon_restart(world, bob) -> None:
    before = bob.daemon_status()
    world.daemon("restart", "bob")
    # The old connection was closed by the daemon: the next call opens a new one.
    after = bob.daemon_status()
    assert after["account"] == before["account"]
    assert after["uptime_s"] <= before["uptime_s"] + 1 or after["uptime_s"] < 5
