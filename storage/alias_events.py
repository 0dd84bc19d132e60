"""Alias-change notifications over Redis pub/sub: best effort, never in the caller's way.

Every registry function that moves an alias takes ``on_alias_change=`` (a
``storage.audit.Notifier``) and calls it after the commit. An
:class:`AliasChangePublisher` is that notifier: it publishes the change on
``RedisKeys.alias_changes_channel``. Replicas listen with
:func:`watch_alias_changes` (or an :class:`AliasChangeSubscriber`) and
reconcile from the registry when a message arrives; they also reconcile
periodically, because pub/sub delivers at most once and only to listeners
connected at the time. A message is a JSON object (``AliasChange.to_dict()``:
tenant, alias, version_id, previous_version_id, fraction, revision, action,
actor, at).

Redis clients come from :mod:`feedback.connections`, and the channel name from
:mod:`feedback.keys`, like every other Redis client and name of loraloop.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import Counter

from feedback.connections import REDIS_ERRORS, sync_client, text
from feedback.keys import RedisKeys

log = logging.getLogger(__name__)

NOTIFY_FAILURES = Counter(
    "loraloop_alias_notify_failures_total",
    "Alias-change notifications that could not be published to Redis.",
)


def encode_change(change: Any) -> str:
    """JSON of an ``AliasChange``-like object (``to_dict()``) or a mapping."""
    data = change.to_dict() if hasattr(change, "to_dict") else dict(change)
    return json.dumps(data, sort_keys=True, default=str)


class AliasChangePublisher:
    """A notifier for the registry: ``publisher(change)`` publishes, never raises.

    ``published`` and ``failures`` count the outcomes (failures also go to the
    ``loraloop_alias_notify_failures_total`` Prometheus counter).
    """

    def __init__(self, client: Any, keys: RedisKeys) -> None:
        self.client = client  # a redis.Redis (feedback.connections.sync_client)
        self.keys = keys
        self.published = 0
        self.failures = 0
        self._lock = threading.Lock()

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str = "loraloop", timeout_s: float = 1.0
    ) -> AliasChangePublisher:
        """A publisher with short timeouts and no retries, so a Redis outage costs at
        most ``timeout_s`` per change."""
        return cls(sync_client(url, timeout_s=timeout_s), RedisKeys(prefix))

    def __call__(self, change: Any) -> bool:
        """Publish ``change``; ``True`` if Redis took it (receivers may still be zero)."""
        try:
            self.client.publish(self.keys.alias_changes_channel, encode_change(change))
        except REDIS_ERRORS as exc:
            with self._lock:
                self.failures += 1
            NOTIFY_FAILURES.inc()
            log.warning(
                "could not publish alias change to %s: %s (replicas will pick it up "
                "at their next periodic reconcile)",
                self.keys.alias_changes_channel,
                exc,
            )
            return False
        with self._lock:
            self.published += 1
        return True

    def close(self) -> None:
        self.client.close()


class AliasChangeSubscriber:
    """Receives alias-change messages; use as a context manager or call :meth:`close`."""

    def __init__(self, client: Any, keys: RedisKeys) -> None:
        self.keys = keys
        self._pubsub = client.pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(keys.alias_changes_channel)
        # Wait for the subscription to be active, so no message published after
        # the constructor returns is missed.
        self._pubsub.get_message(timeout=1.0)

    def get(self, timeout: float = 1.0) -> dict[str, Any] | None:
        """The next message as a dict, or ``None`` if none arrived within ``timeout`` s.

        Malformed messages are logged and skipped.
        """
        message = self._pubsub.get_message(timeout=timeout)
        if message is None or message.get("type") != "message":
            return None
        data = message["data"]
        try:
            decoded = json.loads(text(data))
        except ValueError:
            log.warning("ignoring malformed alias-change message %r", data[:200])
            return None
        if not isinstance(decoded, Mapping):
            log.warning("ignoring alias-change message that is not an object: %r", decoded)
            return None
        return dict(decoded)

    def close(self) -> None:
        self._pubsub.close()

    def __enter__(self) -> AliasChangeSubscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def watch_alias_changes(redis_url: str, keys: RedisKeys,
                        on_change: Callable[[dict[str, Any]], object], *,
                        reconnect_s: float = 1.0) -> Callable[[], None]:
    """Call ``on_change(message)`` from a daemon thread for every alias change; returns ``stop``.

    Survives Redis restarts (it resubscribes); a message missed while
    disconnected is covered by the replicas' periodic reconcile.
    """
    stopping = threading.Event()

    def listen() -> None:
        while not stopping.is_set():
            # No socket timeout: the listener waits for messages in get(timeout=...).
            client = sync_client(redis_url, timeout_s=None, connect_timeout_s=1.0)
            try:
                with AliasChangeSubscriber(client, keys) as subscriber:
                    while not stopping.is_set():
                        message = subscriber.get(timeout=0.5)
                        if message is not None:
                            on_change(message)
            except REDIS_ERRORS:
                log.debug("alias-change subscription lost; reconnecting", exc_info=True)
                stopping.wait(reconnect_s)
            finally:
                client.close()

    threading.Thread(target=listen, name="alias-changes", daemon=True).start()
    return stopping.set
