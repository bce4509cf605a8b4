"""Fixtures for the suite: it runs against real daemons and a relay started by the Rust
harness (daemon/tests/clients/python.rs), which passes their sockets, addresses and a
control socket (to restart a daemon) in SOTTO_TEST_* variables."""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any, Callable, Dict, Iterator, List

import pytest

import sotto_client

DEADLINE = 60.0


class World:
    def __init__(self) -> None:
        missing = [v for v in ("SOTTO_TEST_CONTROL", "SOTTO_TEST_CONV") if v not in os.environ]
        if missing:
            raise RuntimeError(
                "run this suite through `cargo test --workspace python_` (missing %s)" % ", ".join(missing)
            )
        self.names = os.environ["SOTTO_TEST_NAMES"].split()
        self.conv = os.environ["SOTTO_TEST_CONV"]
        self.control = os.environ["SOTTO_TEST_CONTROL"]

    def socket(self, name: str) -> str:
        return os.environ["SOTTO_TEST_%s_SOCKET" % name.upper()]

    def address(self, name: str) -> str:
        return os.environ["SOTTO_TEST_%s_ADDRESS" % name.upper()]

    def daemon(self, verb: str, name: str) -> None:
        """Restarts, stops or starts a daemon; returns once it is done (started: answering)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(120)
            s.connect(self.control)
            s.sendall(("%s %s\n" % (verb, name)).encode())
            answer = s.makefile().readline().strip()
        assert answer == "ok", answer


@pytest.fixture(scope="session")
def world() -> World:
    return World()


@pytest.fixture
def alice(world: World) -> Iterator[sotto_client.Client]:
    with sotto_client.Client(world.socket("alice")) as c:
        yield c


@pytest.fixture
def bob() -> Iterator[sotto_client.Client]:
    # The default socket: the harness points XDG_RUNTIME_DIR at bob's daemon.
    with sotto_client.Client() as c:
        yield c


def wait_until(what: str, pred: Callable[[], Any], deadline: float = DEADLINE) -> Any:
    end = time.monotonic() + deadline
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError("timed out waiting for %s" % what)
        time.sleep(0.05)


class Collector:
    """Runs ``client.events(since)`` in a thread, keeping every event it yields."""

    def __init__(self, client: sotto_client.Client, since: Any = None) -> None:
        self.client = client
        self.events: List[Dict[str, Any]] = []
        self.error: List[BaseException] = []
        self.thread = threading.Thread(target=self._run, args=(since,), daemon=True)
        self.thread.start()

    def _run(self, since: Any) -> None:
        try:
            for ev in self.client.events(since):
                self.events.append(ev)
        except BaseException as e:  # noqa: B036 - reported by the test
            self.error.append(e)

    def texts(self, kind: str = "message.received") -> List[str]:
        return [e["message"]["text"] for e in self.events if e["type"] == kind]

    def wait_text(self, text: str) -> None:
        wait_until("an event with %r (errors: %r)" % (text, self.error), lambda: text in self.texts() or self.error)
        assert not self.error, self.error

    def stop(self) -> None:
        self.client.close()
        self.thread.join(10)
