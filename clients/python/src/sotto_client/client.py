"""The synchronous client: ``Client``."""

from __future__ import annotations

import itertools
import socket as _socket
import threading
import time
from typing import Any, Dict, Iterator, Optional, Set

from . import _paths
from ._errors import SottoConnectionError, SottoError, SottoTimeout
from ._framing import LineBuffer, decode_line, encode_request
from ._generated import SyncMethods

#: Reconnect backoff of ``events()``: first wait, factor, longest wait (seconds).
BACKOFF_START = 0.05
BACKOFF_FACTOR = 2.0
BACKOFF_MAX = 2.0


class _Conn:
    """One connection to the socket: send lines, read JSON objects."""

    def __init__(self, path: str, timeout: Optional[float]) -> None:
        problem = _paths.check_socket_dir(path)
        if problem:
            raise SottoConnectionError("refusing the socket %s: %s" % (path, problem))
        self.sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except _socket.timeout:
            self.sock.close()
            raise SottoTimeout("connecting to %s timed out" % path) from None
        except OSError as e:
            self.sock.close()
            raise SottoConnectionError(
                "cannot connect to sottod at %s: %s (is the daemon running?)" % (path, e.strerror or e)
            ) from e
        self.buf = LineBuffer()
        self.pending: "list[Dict[str, Any]]" = []

    def alive(self) -> bool:
        """False when the daemon already closed this connection (a restart): a request
        written now would be lost, so the caller opens a new connection instead."""
        timeout = self.sock.gettimeout()
        self.sock.setblocking(False)
        try:
            data = self.sock.recv(1, _socket.MSG_PEEK)
        except BlockingIOError:
            return True
        except OSError:
            return False
        finally:
            self.sock.settimeout(timeout)
        return bool(data)

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except _socket.timeout:
            raise SottoTimeout("writing to the daemon timed out") from None
        except OSError as e:
            raise SottoConnectionError("lost the connection to sottod: %s" % e) from e

    def read(self, deadline: Optional[float]) -> Dict[str, Any]:
        """The next JSON object from the daemon; waits at most until ``deadline``."""
        while not self.pending:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SottoTimeout("no answer from the daemon in time")
                self.sock.settimeout(left)
            else:
                self.sock.settimeout(None)
            try:
                data = self.sock.recv(65536)
            except _socket.timeout:
                raise SottoTimeout("no answer from the daemon in time") from None
            except OSError as e:
                raise SottoConnectionError("lost the connection to sottod: %s" % e) from e
            if not data:
                raise SottoConnectionError("sottod closed the connection")
            try:
                for line in self.buf.feed(data):
                    obj = decode_line(line)
                    if obj is not None:
                        self.pending.append(obj)
            except ValueError as e:
                raise SottoError("unreadable line from the daemon: %s" % e, kind="protocol") from e
        return self.pending.pop(0)

    def close(self) -> None:
        try:
            self.sock.shutdown(_socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def _result(response: Dict[str, Any]) -> Any:
    if "error" in response and response["error"] is not None:
        raise SottoError.from_response(response["error"])
    if "result" not in response:
        raise SottoError("a response without result or error: %r" % (response,), kind="protocol")
    return response["result"]


class Client(SyncMethods):
    """A synchronous client of sottod.

    ``socket`` is the daemon's socket path (default: as the daemon resolves it, honouring
    ``SOTTO_SOCKET``); ``timeout`` bounds each call in seconds (None: wait forever). The
    connection is opened on first use and again after it was lost. Safe to share between
    threads: calls are serialised.
    """

    def __init__(self, socket: Optional[_paths.PathLike] = None, *, timeout: Optional[float] = 30.0) -> None:
        self.socket_path = str(socket) if socket is not None else _paths.default_socket()
        self.timeout = timeout
        self._conn: Optional[_Conn] = None
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._closed = False
        self._event_conns: Set[_Conn] = set()

    # -- calls --------------------------------------------------------------------------

    def call(self, method: str, /, **params: Any) -> Any:
        """Calls ``method`` with ``params`` (by name); returns its result or raises SottoError."""
        return self.call_params(method, params)

    def call_params(self, method: str, params: Dict[str, Any]) -> Any:
        """Like ``call`` with the params as one dict (for names that are not identifiers)."""
        with self._lock:
            if self._closed:
                raise SottoError("the client is closed", kind="closed")
            if self._conn is not None and not self._conn.alive():
                self._conn.close()
                self._conn = None
            if self._conn is None:
                self._conn = _Conn(self.socket_path, self.timeout)
            conn = self._conn
            request_id = next(self._ids)
            deadline = None if self.timeout is None else time.monotonic() + self.timeout
            try:
                conn.send(encode_request(request_id, method, params))
                while True:
                    msg = conn.read(deadline)
                    if msg.get("id") == request_id:
                        return _result(msg)
                    # A notification (an events.subscribe made through call()) or a stray
                    # line: calls on this connection only wait for their own answer.
            except SottoError as e:
                if e.kind in ("connection", "timeout", "protocol"):
                    # The answer may still come; start afresh rather than read it as
                    # the answer of the next call.
                    conn.close()
                    self._conn = None
                raise

    # -- events -------------------------------------------------------------------------

    def events(self, since: Optional[int] = None, *, idle_timeout: Optional[float] = None) -> Iterator[Dict[str, Any]]:
        """Yields event dicts (``{"seq", "type", ...}``) in ``seq`` order, forever.

        Without ``since`` it starts at the daemon's ``last_event_seq`` (only new events);
        with it, every stored event after ``since`` comes first. When the daemon restarts
        or the subscription ends, it reconnects with backoff and resubscribes from the last
        ``seq`` it yielded: no event is skipped or repeated. ``since`` older than the
        daemon keeps raises ``SottoError`` with ``kind == "events_expired"`` (reload your
        state and start again without ``since``). ``idle_timeout`` raises ``SottoTimeout``
        when no event came for that many seconds.
        """
        last = since
        if last is None:
            status = self.call("daemon.status")
            last = int(status["last_event_seq"])
        backoff = BACKOFF_START
        while True:
            if self._closed:
                return
            try:
                conn = _Conn(self.socket_path, self.timeout)
            except SottoConnectionError:
                time.sleep(backoff)
                backoff = min(backoff * BACKOFF_FACTOR, BACKOFF_MAX)
                continue
            self._event_conns.add(conn)
            try:
                conn.send(encode_request(0, "events.subscribe", {"since": last}))
                deadline = None if self.timeout is None else time.monotonic() + self.timeout
                while True:
                    msg = conn.read(deadline)
                    if msg.get("id") == 0:
                        _result(msg)  # raises events_expired and the like
                        break
                backoff = BACKOFF_START
                while True:
                    idle = None if idle_timeout is None else time.monotonic() + idle_timeout
                    try:
                        msg = conn.read(idle)
                    except SottoTimeout:
                        raise SottoTimeout("no event for %s s" % idle_timeout) from None
                    if msg.get("method") != "event":
                        continue
                    params = msg.get("params")
                    event = params.get("result") if isinstance(params, dict) else None
                    if not isinstance(event, dict):
                        continue
                    if event.get("type") == "subscription.closed":
                        break  # overflow or daemon shutdown: resubscribe from `last`
                    seq = event.get("seq")
                    if not isinstance(seq, int) or seq <= last:
                        continue  # already yielded
                    last = seq
                    yield event
            except SottoConnectionError:
                if self._closed:
                    return
                time.sleep(backoff)
                backoff = min(backoff * BACKOFF_FACTOR, BACKOFF_MAX)
            finally:
                self._event_conns.discard(conn)
                conn.close()

    # -- lifecycle ----------------------------------------------------------------------

    def close(self) -> None:
        """Closes the connection and ends every ``events()`` iterator of this client."""
        self._closed = True
        for conn in list(self._event_conns):
            conn.close()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return "Client(%r)" % (self.socket_path,)
