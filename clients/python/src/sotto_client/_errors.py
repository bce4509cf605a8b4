"""The one exception type of the client."""

from __future__ import annotations

from typing import Any, Dict, Optional


class SottoError(Exception):
    """An error from the daemon, or a local one (connection, timeout, protocol).

    ``code`` is the JSON-RPC error code (None for local errors), ``kind`` the daemon's
    ``data.kind`` (clients key on it: ``not_found``, ``events_expired``, ...) or, for local
    errors, one of ``connection``, ``timeout``, ``protocol``, ``closed``; ``data`` the
    error's ``data`` object.
    """

    def __init__(
        self,
        message: str,
        *,
        code: Optional[int] = None,
        kind: Optional[str] = None,
        data: Optional[Dict[str, Any]] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.data: Dict[str, Any] = dict(data or {})
        if kind is None:
            value = self.data.get("kind")
            kind = value if isinstance(value, str) else None
        self.kind = kind

    @classmethod
    def from_response(cls, error: Any) -> "SottoError":
        """Builds the error of a JSON-RPC error object."""
        if not isinstance(error, dict):
            return cls("malformed error object: %r" % (error,), kind="protocol")
        data = error.get("data")
        code = error.get("code")
        return cls(
            str(error.get("message", "")),
            code=code if isinstance(code, int) else None,
            data=data if isinstance(data, dict) else None,
        )

    def __repr__(self) -> str:
        return "SottoError(%r, code=%r, kind=%r)" % (self.message, self.code, self.kind)


class SottoTimeout(SottoError, TimeoutError):
    """A call or an events iterator waited longer than its timeout (``kind == "timeout"``)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, kind="timeout")


class SottoConnectionError(SottoError, ConnectionError):
    """The daemon's socket could not be reached or was lost (``kind == "connection"``)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, kind="connection")
