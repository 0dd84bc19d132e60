"""The learner as a named, detached Ray actor that restarts after a crash.

``loraloop up`` starts it; ``loraloop learner run`` runs the same loop in the
foreground without Ray. Either way it writes its status to
``<data_dir>/run/learner.json`` for ``loraloop learner status``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, Field

from learner.health import StepHealth
from learner.loop import Learner, LearnerConfig
from learner.round_log import pending, resolve_live

logger = logging.getLogger(__name__)
ACTOR_NAME = "loraloop-learner"
NAMESPACE = "loraloop"


class LearnerSpec(BaseModel):
    """Everything a learner process needs, passed explicitly (no environment reads)."""

    redis_url: str
    redis_prefix: str
    database_url: str
    artifacts_location: str
    base_model: str  #: resolved local path
    base_model_name: str  #: the configured name, written into adapters
    data_dir: str
    config: LearnerConfig = LearnerConfig()
    #: Acknowledged feedback is trimmed from the stream after every round that acked
    #: some, and at least this often (``FeedbackSource.trim``: never an unacked entry).
    trim_interval_s: float = Field(300.0, gt=0)
    #: A failing step is retried after 1, 2, 4 ... seconds, at most this long.
    max_backoff_s: float = Field(300.0, ge=1)
    #: How often rounds whose version is not live yet are looked up in the registry's
    #: audit trail for their feedback-to-live time (also at once after a round or a
    #: canary decision; :mod:`learner.round_log`).
    live_check_interval_s: float = Field(5.0, gt=0)

    @property
    def artifact_cache(self) -> Path:
        """Where artifacts of an object store are downloaded to (replay reads them)."""
        return Path(self.data_dir) / "learner" / "artifact-cache"

    @property
    def status_path(self) -> Path:
        return Path(self.data_dir) / "run" / "learner.json"


def build_learner(spec: LearnerSpec) -> Learner:
    from feedback.keys import RedisKeys
    from storage import ArtifactStore
    from storage.alias_events import AliasChangePublisher
    from storage.db import open_registry

    return Learner(
        redis_url=spec.redis_url,
        keys=RedisKeys(spec.redis_prefix),
        sessions=open_registry(spec.database_url),
        # An object store (s3://, the k8s default) needs a local copy to replay from.
        artifacts=ArtifactStore(spec.artifacts_location, cache_dir=spec.artifact_cache),
        base_model=spec.base_model,
        base_model_name=spec.base_model_name,
        work_dir=Path(spec.data_dir) / "learner",
        config=spec.config,
        notifier=AliasChangePublisher.from_url(spec.redis_url, prefix=spec.redis_prefix),
    )


def build_canary_controller(spec: LearnerSpec, learner: Learner):
    """The canary controller over the learner's registry, Redis and notifier."""
    from feedback.connections import sync_client
    from learner.canary_controller import CanaryController

    return CanaryController(
        redis_client=sync_client(spec.redis_url, timeout_s=10),
        keys=learner.keys,
        sessions=learner.sessions,
        policy=spec.config.canary,
        notifier=learner.notifier,
    )


async def run_forever(spec: LearnerSpec, stop: threading.Event, holder: dict,
                      on_status: Callable[[dict], None] | None = None) -> None:
    """Poll and run rounds until ``stop`` is set, decide on running canaries every
    ``canary_interval_s`` and trim acknowledged feedback. A failed step is counted in the
    status (``step_failures_total``, ``failing``) and retried with exponential backoff.
    ``on_status(status)`` is called (on the loop, best effort) at each published status:
    after every step and as a round progresses (`loraloop learner run` shows it)."""
    learner = build_learner(spec)
    holder["learner"] = learner
    health = StepHealth(max_delay_s=spec.max_backoff_s)
    learner.status.update(health.report())

    def show(status: dict) -> None:
        if on_status is not None:
            try:
                on_status(status)
            except Exception:  # a display never stops the learner
                logger.warning("showing the learner's status failed", exc_info=True)

    async def publish(status: dict) -> None:  # progress within a round, as it happens
        show(status)
        await learner.publish_status(learner.write_status(spec.status_path))

    learner.on_status = publish
    await learner.start()
    canaries = build_canary_controller(spec, learner) if spec.config.canary.enabled else None
    next_canary_check = time.monotonic()
    next_trim = time.monotonic()
    next_live_check = time.monotonic()
    try:
        while not stop.is_set():
            delay = 0.0
            try:
                reports = await learner.step()
                health.succeeded()
            except Exception as exc:  # the round's entries stay pending: retried later
                reports = []
                delay = health.failed(exc)
            learner.status.update(health.report())
            check_live = bool(reports) or time.monotonic() >= next_live_check
            if reports or time.monotonic() >= next_trim:
                next_trim = time.monotonic() + spec.trim_interval_s
                await _trim(learner)
            # A round that just started a canary gets it looked at now, not in 30 s.
            due = learner.canary_started or time.monotonic() >= next_canary_check
            if canaries is not None and due:
                learner.canary_started = False
                next_canary_check = time.monotonic() + spec.config.canary_interval_s
                try:
                    reports = await asyncio.to_thread(canaries.evaluate)
                    acted = [r for r in reports if r["verdict"] != "wait"]
                    check_live = check_live or bool(acted)
                    learner.status["canaries"] = reports  # the canaries running now
                    learner.status["canary_actions"] = [
                        *learner.status.get("canary_actions", []), *acted
                    ][-10:]
                except Exception:
                    logger.exception("canary check failed; retrying in %.0f s",
                                     spec.config.canary_interval_s)
            if check_live:
                next_live_check = time.monotonic() + spec.live_check_interval_s
                await _resolve_live(learner)
            show(learner.status)
            text = learner.write_status(spec.status_path)
            with contextlib.suppress(Exception):  # Redis down: the step above logged it
                await learner.publish_status(text)
            if delay:
                await asyncio.to_thread(stop.wait, delay)
    finally:
        await learner.close()
        if canaries is not None:
            canaries.redis.close()


async def _trim(learner: Learner) -> None:
    """Trim the acknowledged feedback (best effort: a failure waits for the next time)."""
    try:
        removed = await learner.source.trim()
    except Exception:
        logger.warning("trimming the feedback stream failed; trying again later", exc_info=True)
        return
    learner.status["trimmed_total"] = learner.status.get("trimmed_total", 0) + removed
    learner.status["last_trim_at"] = time.time()


async def _resolve_live(learner: Learner) -> None:
    """Feedback-to-live of recent rounds whose version may still go live (best effort)."""
    rows = pending(learner.status.get("recent_rounds", []))
    if not rows:
        return
    try:
        await asyncio.to_thread(resolve_live, learner.sessions, rows)
    except Exception:
        logger.warning("reading when versions went live failed; trying again later",
                       exc_info=True)


def _actor_class():
    import ray

    @ray.remote(max_restarts=-1, max_task_retries=-1, num_cpus=0)
    class LearnerActor:
        """Runs :func:`run_forever` on a thread of its own; restarted by Ray if it dies."""

        def __init__(self, spec: LearnerSpec) -> None:
            self._stop = threading.Event()
            self._holder: dict = {}
            self._started = time.time()
            self._thread = threading.Thread(
                target=lambda: asyncio.run(run_forever(spec, self._stop, self._holder)),
                name="learner",
                daemon=True,
            )
            self._thread.start()

        def status(self) -> dict:
            learner = self._holder.get("learner")
            return {
                "alive": self._thread.is_alive(),
                "started_at": self._started,
                **(learner.status if learner else {}),
            }

        def stop(self) -> None:
            self._stop.set()
            self._thread.join(timeout=30)

    return LearnerActor


def start_actor(spec: LearnerSpec):
    """Start (or find) the detached learner actor of this cluster."""
    return (
        _actor_class()
        .options(name=ACTOR_NAME, namespace=NAMESPACE, lifetime="detached", get_if_exists=True)
        .remote(spec)
    )


def stop_actor() -> None:
    import ray

    try:
        actor = ray.get_actor(ACTOR_NAME, namespace=NAMESPACE)
    except ValueError:
        return
    try:
        ray.get(actor.stop.remote(), timeout=30)
    finally:
        ray.kill(actor, no_restart=True)
