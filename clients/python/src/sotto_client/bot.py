"""``Bot``: handlers for incoming messages, a cursor on disk, the backlog processed.

A bot that was down (or whose daemon was) processes every message that came meanwhile,
and answers none twice: its cursor (the last event ``seq`` it handled) is written to disk
atomically after each event, and every reply carries an idempotency key derived from the
message it answers, so a reply sent just before a crash is not sent again after it.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from typing import Any, Callable, Dict, List, Optional, Union

from ._errors import SottoError
from .client import Client

log = logging.getLogger("sotto_client.bot")

Handler = Callable[["IncomingMessage"], Optional[str]]
EventHandler = Callable[[Dict[str, Any]], None]

#: Errors after which an event is handled again rather than skipped.
_RETRY = ("connection", "timeout")


class IncomingMessage:
    """A received text message, as handlers see it."""

    def __init__(self, bot: "Bot", message: Dict[str, Any], seq: int) -> None:
        self.bot = bot
        self.raw = message
        self.seq = seq
        self.id: str = message["id"]
        self.conversation: str = message["conversation"]
        self.sender: str = message.get("sender") or ""
        self.text: str = message.get("text") or ""
        self.sent_at: Optional[str] = message.get("sent_at")
        self._replies = 0

    def reply(self, text: str) -> Dict[str, Any]:
        """Sends ``text`` to the message's conversation as a reply to it (at most once)."""
        self._replies += 1
        key = "sotto-bot:%s:%d" % (self.id, self._replies)
        result: Dict[str, Any] = self.bot.client.call(
            "message.send", conversation=self.conversation, text=text, reply_to=self.id, idempotency_key=key
        )
        return result

    def __repr__(self) -> str:
        return "IncomingMessage(%r from %r: %r)" % (self.id, self.sender, self.text)


class Bot:
    """A bot on the daemon at ``socket``, keeping its cursor in the file ``state``.

    Handlers registered with ``@bot.on_message`` get an ``IncomingMessage``; a handler that
    returns a string replies with it. ``bot.run()`` processes the backlog since the cursor,
    then live messages, until ``bot.stop()``; on a daemon restart it reconnects. Without a
    cursor file it starts with new messages only (``backlog=True`` takes all stored events).
    """

    def __init__(
        self,
        state: Union[str, "os.PathLike[str]"],
        socket: Optional[Union[str, "os.PathLike[str]"]] = None,
        *,
        timeout: Optional[float] = 30.0,
        backlog: bool = False,
    ) -> None:
        self.state_path = os.fspath(state)
        self.client = Client(socket, timeout=timeout)
        self.backlog = backlog
        self._message_handlers: List[Handler] = []
        self._event_handlers: Dict[str, List[EventHandler]] = {}
        self._stop = threading.Event()

    # -- registration ---------------------------------------------------------------------

    def on_message(self, func: Handler) -> Handler:
        """Decorator: ``func(message)`` for every received text message."""
        self._message_handlers.append(func)
        return func

    def on_event(self, event_type: str) -> Callable[[EventHandler], EventHandler]:
        """Decorator: ``func(event)`` for every event of ``event_type`` (e.g. ``conversation.joined``)."""

        def register(func: EventHandler) -> EventHandler:
            self._event_handlers.setdefault(event_type, []).append(func)
            return func

        return register

    # -- the cursor -----------------------------------------------------------------------

    @property
    def cursor(self) -> Optional[int]:
        """The last event seq handled, from the state file (None before the first run)."""
        try:
            with open(self.state_path, encoding="utf-8") as f:
                return int(f.read().strip())
        except FileNotFoundError:
            return None
        except ValueError as e:
            raise SottoError("the bot's state file %s is corrupt: %s" % (self.state_path, e), kind="bot_state") from e

    def _save(self, seq: int) -> None:
        directory = os.path.dirname(os.path.abspath(self.state_path))
        fd, tmp = tempfile.mkstemp(prefix=".sotto-bot-", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write("%d\n" % seq)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.state_path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    # -- running --------------------------------------------------------------------------

    def run(self, *, idle_timeout: Optional[float] = None) -> None:
        """Processes events until ``stop()`` (or ``idle_timeout`` seconds without one)."""
        since = self.cursor
        if since is None:
            since = 0 if self.backlog else int(self.client.call("daemon.status")["last_event_seq"])
            self._save(since)
        while not self._stop.is_set():
            try:
                for event in self.client.events(since, idle_timeout=idle_timeout):
                    self._dispatch(event)
                    since = event["seq"]
                    self._save(since)
                    if self._stop.is_set():
                        break
                return
            except SottoError as e:
                if e.kind in _RETRY:
                    # The daemon went away while a handler was replying: handle this event
                    # again once it is back (the reply's idempotency key prevents a repeat).
                    if self._stop.wait(0.2):
                        return
                    continue
                if e.kind != "events_expired":
                    raise
                oldest = int(e.data.get("oldest_seq", since + 1))
                log.warning("events after seq %d are no longer kept; resuming at %d", since, oldest)
                since = oldest - 1

    def stop(self) -> None:
        """Ends ``run()`` (from a handler or another thread)."""
        self._stop.set()
        self.client.close()

    def _dispatch(self, event: Dict[str, Any]) -> None:
        for handler in self._event_handlers.get(event.get("type", ""), []):
            try:
                handler(event)
            except SottoError as e:
                if e.kind in _RETRY:
                    raise
                log.exception("event handler %r failed on seq %s", handler, event.get("seq"))
            except Exception:
                log.exception("event handler %r failed on seq %s", handler, event.get("seq"))
        if event.get("type") != "message.received" or not self._message_handlers:
            return
        message = event.get("message")
        if not isinstance(message, dict) or message.get("kind", "text") != "text":
            return  # kinds this bot does not know are skipped
        incoming = IncomingMessage(self, message, event["seq"])
        for handler in self._message_handlers:
            try:
                answer = handler(incoming)
                if isinstance(answer, str):
                    incoming.reply(answer)
            except SottoError as e:
                if e.kind in _RETRY:
                    raise
                log.exception("message handler %r failed on %s", handler, incoming.id)
            except Exception:
                log.exception("message handler %r failed on %s", handler, incoming.id)
