"""The asyncio client: ``AsyncClient``, the same surface as ``Client`` with ``await``."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any, AsyncIterator, Dict, Optional, Set

from . import _paths
from ._errors import SottoConnectionError, SottoError, SottoTimeout
from ._framing import LineBuffer, decode_line, encode_request
from ._generated import AsyncMethods
from .client import BACKOFF_FACTOR, BACKOFF_MAX, BACKOFF_START, _result


class _AsyncConn:
    """One connection: a reader task hands responses to their callers, events to a queue."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.waiting: Dict[int, "asyncio.Future[Dict[str, Any]]"] = {}
        self.notifications: "asyncio.Queue[Optional[Dict[str, Any]]]" = asyncio.Queue()
        self.error: Optional[SottoError] = None
        self.task = asyncio.ensure_future(self._read_loop())

    @classmethod
    async def open(cls, path: str, timeout: Optional[float]) -> "_AsyncConn":
        problem = _paths.check_socket_dir(path)
        if problem:
            raise SottoConnectionError("refusing the socket %s: %s" % (path, problem))
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), timeout)
        except asyncio.TimeoutError:
            raise SottoTimeout("connecting to %s timed out" % path) from None
        except OSError as e:
            raise SottoConnectionError(
                "cannot connect to sottod at %s: %s (is the daemon running?)" % (path, e.strerror or e)
            ) from e
        return cls(reader, writer)

    async def _read_loop(self) -> None:
        buf = LineBuffer()
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    raise SottoConnectionError("sottod closed the connection")
                try:
                    lines = buf.feed(data)
                    objs = [o for o in (decode_line(line) for line in lines) if o is not None]
                except ValueError as e:
                    raise SottoError("unreadable line from the daemon: %s" % e, kind="protocol") from e
                for obj in objs:
                    request_id = obj.get("id")
                    if "method" in obj:
                        self.notifications.put_nowait(obj)
                    elif isinstance(request_id, int) and request_id in self.waiting:
                        fut = self.waiting.pop(request_id)
                        if not fut.done():
                            fut.set_result(obj)
        except asyncio.CancelledError:
            self._fail(SottoError("the client is closed", kind="closed"))
            raise
        except OSError as e:
            self._fail(SottoConnectionError("lost the connection to sottod: %s" % e))
        except SottoError as e:
            self._fail(e)

    def _fail(self, error: SottoError) -> None:
        self.error = error
        for fut in self.waiting.values():
            if not fut.done():
                fut.set_exception(error)
        self.waiting.clear()
        self.notifications.put_nowait(None)

    async def request(self, request_id: int, method: str, params: Dict[str, Any], timeout: Optional[float]) -> Any:
        if self.error is not None:
            raise self.error
        fut: "asyncio.Future[Dict[str, Any]]" = asyncio.get_running_loop().create_future()
        self.waiting[request_id] = fut
        try:
            self.writer.write(encode_request(request_id, method, params))
            await self.writer.drain()
        except OSError as e:
            self.waiting.pop(request_id, None)
            raise SottoConnectionError("lost the connection to sottod: %s" % e) from e
        try:
            response = await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            self.waiting.pop(request_id, None)
            raise SottoTimeout("no answer to %s from the daemon in %s s" % (method, timeout)) from None
        return _result(response)

    async def close(self) -> None:
        self.task.cancel()
        try:
            await self.task
        except (asyncio.CancelledError, Exception):
            pass
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass

    @property
    def broken(self) -> bool:
        return self.error is not None


class AsyncClient(AsyncMethods):
    """An asyncio client of sottod: ``await client.call(...)``, ``async for ev in client.events()``.

    Same arguments and behaviour as ``Client``; calls on one client may run concurrently
    (they share one connection and are matched by id).
    """

    def __init__(self, socket: Optional[_paths.PathLike] = None, *, timeout: Optional[float] = 30.0) -> None:
        self.socket_path = str(socket) if socket is not None else _paths.default_socket()
        self.timeout = timeout
        self._conn: Optional[_AsyncConn] = None
        self._connecting: Optional[asyncio.Lock] = None
        self._ids = itertools.count(1)
        self._closed = False
        self._event_conns: Set[_AsyncConn] = set()

    async def _connection(self) -> _AsyncConn:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._closed:
                raise SottoError("the client is closed", kind="closed")
            if self._conn is None or self._conn.broken:
                if self._conn is not None:
                    await self._conn.close()
                self._conn = await _AsyncConn.open(self.socket_path, self.timeout)
            return self._conn

    async def call(self, method: str, /, **params: Any) -> Any:
        """Calls ``method`` with ``params`` (by name); returns its result or raises SottoError."""
        return await self.call_params(method, params)

    async def call_params(self, method: str, params: Dict[str, Any]) -> Any:
        """Like ``call`` with the params as one dict."""
        conn = await self._connection()
        try:
            return await conn.request(next(self._ids), method, params, self.timeout)
        except SottoTimeout:
            # A late answer is dropped by id; the connection itself is still fine.
            raise

    async def events(
        self, since: Optional[int] = None, *, idle_timeout: Optional[float] = None
    ) -> AsyncIterator[Dict[str, Any]]:
        """Like ``Client.events``: an async iterator that survives daemon restarts."""
        last = since
        if last is None:
            status = await self.call("daemon.status")
            last = int(status["last_event_seq"])
        backoff = BACKOFF_START
        while not self._closed:
            try:
                conn = await _AsyncConn.open(self.socket_path, self.timeout)
            except SottoConnectionError:
                await asyncio.sleep(backoff)
                backoff = min(backoff * BACKOFF_FACTOR, BACKOFF_MAX)
                continue
            self._event_conns.add(conn)
            try:
                try:
                    await conn.request(0, "events.subscribe", {"since": last}, self.timeout)
                except SottoConnectionError:
                    raise
                backoff = BACKOFF_START
                while True:
                    try:
                        msg = await asyncio.wait_for(conn.notifications.get(), idle_timeout)
                    except asyncio.TimeoutError:
                        raise SottoTimeout("no event for %s s" % idle_timeout) from None
                    if msg is None:
                        raise conn.error or SottoConnectionError("sottod closed the connection")
                    if msg.get("method") != "event":
                        continue
                    params = msg.get("params")
                    event = params.get("result") if isinstance(params, dict) else None
                    if not isinstance(event, dict):
                        continue
                    if event.get("type") == "subscription.closed":
                        break
                    seq = event.get("seq")
                    if not isinstance(seq, int) or seq <= last:
                        continue
                    last = seq
                    yield event
            except SottoConnectionError:
                if self._closed:
                    return
                await asyncio.sleep(backoff)
                backoff = min(backoff * BACKOFF_FACTOR, BACKOFF_MAX)
            except SottoError as e:
                if e.kind == "closed":
                    return
                raise
            finally:
                self._event_conns.discard(conn)
                await conn.close()

    async def close(self) -> None:
        """Closes the connection and ends every ``events()`` iterator of this client."""
        self._closed = True
        for conn in list(self._event_conns):
            conn._fail(SottoError("the client is closed", kind="closed"))
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def __repr__(self) -> str:
        return "AsyncClient(%r)" % (self.socket_path,)
