"""How durable an acknowledged feedback write is on the Redis server at hand.

With ``FeedbackConfig.strict_durability`` the feedback store returns only once
the event is on disk: by ``WAITAOF 1 0 <ms>`` on the write's own connection when
the server is Redis >= 7.2, otherwise only if the server runs ``appendonly yes``
with ``appendfsync always`` (the embedded server's strict setting), which fsyncs
before replying. :func:`detect_durability` refuses a server that can do neither.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from feedback.connections import text
from feedback.errors import DurabilityUnavailable
from feedback.redis_server import version_tuple

#: The label of the mode in which each write is followed by WAITAOF.
WAITAOF = "waitaof"


def durability_mode(version: str, appendonly: str | None, appendfsync: str | None,
                    strict: bool) -> tuple[str, bool]:
    """``(label, strict)``: how durable an acknowledged write is on this server.

    ``appendonly`` / ``appendfsync`` are the server's ``CONFIG GET`` values (``None``
    where CONFIG is refused, as on some managed services). Labels: ``"waitaof"``,
    ``"appendfsync-always"``, ``"appendfsync-everysec (not strict)"``, ...
    """
    if strict and version_tuple(version) >= (7, 2) and appendonly != "no":
        return WAITAOF, True
    if appendonly is None:
        return "unknown: CONFIG GET refused (not strict)", False
    if appendonly != "yes":
        return "none: AOF off (not durable)", False
    if appendfsync == "always":
        return "appendfsync-always", True
    return f"appendfsync-{appendfsync or 'unknown'} (not strict)", False


@dataclass(frozen=True)
class Durability:
    """What :func:`detect_durability` found."""

    server_version: str  #: ``redis_version`` of the server
    label: str  #: see :func:`durability_mode`
    strict: bool  #: an acknowledged write is on disk

    @property
    def waitaof(self) -> bool:
        """Each write must be followed by ``WAITAOF`` on its connection."""
        return self.label == WAITAOF


async def detect_durability(client: aioredis.Redis, *, strict: bool,
                            where: str = "redis") -> Durability:
    """The durability of writes through ``client`` (``INFO``, ``CONFIG GET``).

    ``strict`` asks for strict durability: a server that cannot provide it raises
    ``DurabilityUnavailable`` (``where`` names the server in the message). Redis
    errors of ``INFO`` propagate.
    """
    info = await client.info("server")
    try:
        config = await client.config_get("append*")
        appendonly, fsync = text(config.get("appendonly")), text(config.get("appendfsync"))
    except RedisError:
        appendonly = fsync = None  # CONFIG renamed or refused (managed Redis)
    version = str(info["redis_version"])
    label, is_strict = durability_mode(version, appendonly, fsync, strict)
    if strict and not is_strict:
        raise DurabilityUnavailable(
            f"strict feedback durability needs Redis >= 7.2 (WAITAOF) or appendonly yes "
            f"with appendfsync always, but {where} is Redis {version} with "
            f"{label}: set `appendfsync always` (and `appendonly yes`) on the server, "
            "or turn FeedbackConfig.strict_durability off")
    return Durability(version, label, is_strict)
