"""Every Redis client loraloop makes, and the helpers for reading what Redis returns.

One place decides how loraloop talks to Redis (the role of arq's ``connections.py``):

* :func:`sync_client` and :func:`async_client` build a client from a URL with
  short timeouts and **no hidden retries**. redis-py's default retries a failed
  command three times with exponential backoff, which turns a Redis outage into
  seconds of waiting inside one call; every caller here has its own outage policy
  instead (the sink buffers and backs off, the feedback store answers 503 at once,
  the learner retries its step, notifications fall back to the periodic
  reconcile). A pooled connection dropped by a server restart is still replaced
  before use: the pool checks each connection it hands out.
* :data:`REDIS_ERRORS` is what a failed round trip raises, for callers that
  degrade instead of failing (no need to import redis for that).
* :func:`text`, :func:`field` and :func:`stream_id` decode replies, whichever of
  bytes or str the client returns.
* :func:`redact_url` is the form of a URL that may be logged or put in an error
  message: without its password.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, overload

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

#: Socket read/write timeout of a client unless its caller says otherwise (seconds).
DEFAULT_TIMEOUT_S = 1.0
#: What a failed Redis round trip raises: an outage, a timeout or an error reply.
REDIS_ERRORS: tuple[type[BaseException], ...] = (redis.RedisError, OSError)


def _options(timeout_s: float | None, connect_timeout_s: float | None) -> dict[str, Any]:
    return {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": connect_timeout_s or timeout_s or DEFAULT_TIMEOUT_S,
    }


def sync_client(url: str, *, timeout_s: float | None = DEFAULT_TIMEOUT_S,
                connect_timeout_s: float | None = None, decode: bool = False) -> redis.Redis:
    """A blocking client of the Redis at ``url``.

    ``timeout_s`` bounds each socket read/write (``None``: no bound, for a
    pub/sub listener that waits on its own terms); ``connect_timeout_s``
    defaults to ``timeout_s``. ``decode=True`` returns ``str`` instead of ``bytes``.
    """
    return redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), decode_responses=decode,
                                **_options(timeout_s, connect_timeout_s))


def async_client(url: str, *, timeout_s: float | None = DEFAULT_TIMEOUT_S,
                 connect_timeout_s: float | None = None,
                 decode: bool = False) -> aioredis.Redis:
    """An asyncio client of the Redis at ``url``; arguments as :func:`sync_client`."""
    return aioredis.Redis.from_url(url, retry=AsyncRetry(NoBackoff(), 0),
                                   decode_responses=decode,
                                   **_options(timeout_s, connect_timeout_s))


# -- decoding ----------------------------------------------------------------------------
@overload
def text(value: None) -> None: ...
@overload
def text(value: bytes | bytearray | str | int | float) -> str: ...
def text(value: Any) -> str | None:
    """A reply value as ``str`` (``None`` stays ``None``)."""
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes | bytearray) else str(value)


def field(fields: Mapping[Any, Any], name: str) -> Any:
    """The value of ``name`` in a stream entry's or hash's fields, or ``None``.

    Keys are ``bytes`` from a client without ``decode``, ``str`` from one with it.
    """
    value = fields.get(name.encode())
    return fields.get(name) if value is None else value


def stream_id(value: bytes | str) -> tuple[int, int]:
    """A stream entry id (``"<ms>-<seq>"``) as ``(ms, seq)``, which sorts as Redis does."""
    ms, _, seq = text(value).partition("-")
    return int(ms), int(seq or 0)


# -- logging -----------------------------------------------------------------------------
def redact_url(url: str) -> str:
    """``url`` without its password (in the user part or a ``password=`` query), for logs
    and error messages: ``redis://app:***@host:6379/0``."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        # The last "@" ends the user part: an unencoded "@", "/" or "?" may be in the
        # password. A lone token (``redis://token@host``) may be a password too.
        userinfo, _, host = rest.rpartition("@")
        user, colon, _password = userinfo.partition(":")
        url = f"{scheme}://{user}:***@{host}" if colon else f"{scheme}://***@{host}"
    head, question, query = url.partition("?")
    if query:
        query = "&".join("password=***" if pair.partition("=")[0] == "password" else pair
                         for pair in query.split("&"))
    return head + question + query
