"""NDJSON framing shared by the sync and the asyncio clients (no I/O here)."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

#: The longest line the client accepts from the daemon (a long history is one line).
MAX_LINE = 64 * 1024 * 1024


def encode_request(request_id: int, method: str, params: Dict[str, Any]) -> bytes:
    """One request line."""
    body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


class LineBuffer:
    """Splits a byte stream into complete lines; keeps a partial last line for later."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> List[bytes]:
        self._buf += data
        lines: List[bytes] = []
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                break
            lines.append(bytes(self._buf[:nl]).rstrip(b"\r"))
            del self._buf[: nl + 1]
        if len(self._buf) > MAX_LINE:
            raise ValueError("a line from the daemon exceeds %d bytes" % MAX_LINE)
        return lines


def decode_line(line: bytes) -> Optional[Dict[str, Any]]:
    """The JSON object of a line, or None for a blank line."""
    if not line.strip():
        return None
    value = json.loads(line.decode("utf-8"))
    if not isinstance(value, dict):
        raise ValueError("expected a JSON object from the daemon, got %s" % type(value).__name__)
    return value


def clean_params(params: Dict[str, Any]) -> Dict[str, Any]:
    """Params without the ones left as None (optional params are omitted, never null)."""
    return {k: v for k, v in params.items() if v is not None}
