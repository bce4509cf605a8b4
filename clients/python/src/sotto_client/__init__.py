"""sotto_client: a thin client of sottod, the Sotto messenger's per-user daemon.

``Client`` (sync) and ``AsyncClient`` (asyncio) speak JSON-RPC 2.0 over the daemon's Unix
socket; ``Bot`` runs message handlers with a cursor kept on disk. Errors raise
``SottoError`` (``.code``, ``.kind``, ``.data``).
"""

from ._errors import SottoConnectionError, SottoError, SottoTimeout
from ._paths import default_socket
from .aio import AsyncClient
from .bot import Bot, IncomingMessage
from .client import Client

__all__ = [
    "AsyncClient",
    "Bot",
    "Client",
    "IncomingMessage",
    "SottoConnectionError",
    "SottoError",
    "SottoTimeout",
    "default_socket",
]
__version__ = "0.1.0"
