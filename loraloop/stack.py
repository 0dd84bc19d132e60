"""`loraloop up`: start every part on one machine, stop them all on Ctrl-C / SIGTERM.

Redis (the configured URL, or an embedded redis-server in the data dir), the
registry database (migrated on start), a local Ray instance (or an existing
cluster's address) and the Serve application. A state file in the data dir
tells `loraloop status` and `loraloop down` what runs where.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

from feedback.connections import redact_url
from loraloop.compose import auto_promote_policy, learner_spec, serve_config
from loraloop.progress import StartupSteps
from loraloop.settings import Settings
from loraloop.stack_state import StackState, redis_url_for

__all__ = ["Stack", "StackState", "describe", "redis_url_for", "run_foreground", "try_it",
           "wait_until_ready"]  # StackState and redis_url_for live in loraloop.stack_state

logger = logging.getLogger(__name__)


class Stack:
    """The running parts, started in dependency order and stopped in reverse."""

    def __init__(self, settings: Settings, *, replicas: int, address: str | None) -> None:
        self.settings = settings
        self.replicas = replicas
        self.address = address
        self._redis = None
        self._ray_started = False

    def start(self, steps: Callable[[str], AbstractContextManager] | None = None) -> StackState:
        """Start every part; ``steps(name)`` (e.g. :class:`loraloop.progress.StartupSteps`)
        wraps each start-up step: redis, database, model, ray, serve app, learner."""
        step = steps or (lambda _name: contextlib.nullcontext())
        settings = self.settings
        _, promotion = auto_promote_policy(settings)  # refuses an unsafe policy before starting
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        redis_url = settings.redis_url
        with step("redis"):
            if not redis_url:
                from feedback.redis_server import EmbeddedRedis

                fsync = "always" if settings.feedback_config.strict_durability else "everysec"
                self._redis = EmbeddedRedis(settings.data_dir, appendfsync=fsync).start()
                redis_url = self._redis.url
        logger.info("redis at %s", redact_url(redis_url))

        with step("database"):
            from storage.db import migrate

            migrate(settings.sqlalchemy_url)
        with step("model"):  # builds a built-in model at first use (builtin:smollm2: ~30 s)
            config = serve_config(settings, redis_url=redis_url, replicas=self.replicas)

        with step("ray"):
            import ray
            from ray import serve

            ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
            self._ray_started = True
        with step("serve app"):
            from serving.app import build_app

            serve.start(http_options={"host": settings.http_host, "port": settings.http_port})
            serve.run(build_app(config), name="loraloop", route_prefix="/")
        if settings.learner:
            with step("learner"):
                from learner.actor import start_actor

                start_actor(learner_spec(settings, redis_url=redis_url))
        return StackState(
            pid=os.getpid(),
            http_url=f"http://{settings.http_host}:{settings.http_port}",
            redis_url=redis_url,
            redis_embedded=self._redis is not None,
            database_url=redact_url(settings.sqlalchemy_url),
            ray_address=ray.get_runtime_context().gcs_address,
            replicas=self.replicas,
            engine=settings.engine,
            model=settings.model,
            learner=settings.learner,
            promotion=promotion if settings.learner else "",
        )

    def stop(self) -> None:
        import psutil

        # Ray's agents can outlive `ray.shutdown()` for a while; whatever this
        # process started is ended explicitly so `down` leaves nothing behind.
        started = psutil.Process().children(recursive=True)
        self._stop_parts()
        _, alive = psutil.wait_procs(started, timeout=5)
        for process in alive:
            process.terminate()
        _, alive = psutil.wait_procs(alive, timeout=5)
        for process in alive:
            logger.warning(
                "killing %s (pid %d), still running after shutdown", process.name(), process.pid
            )
            process.kill()

    def _stop_parts(self) -> None:
        if self._ray_started:
            import ray
            from ray import serve

            try:
                from learner.actor import stop_actor

                stop_actor()
                serve.shutdown()
            finally:
                ray.shutdown()
            self._ray_started = False
        if self._redis is not None:
            self._redis.stop()
            self._redis = None


def run_foreground(settings: Settings, *, replicas: int, address: str | None, echo) -> None:
    """Start the stack, report it, and block until SIGINT/SIGTERM; then stop everything."""
    stopping = threading.Event()

    def on_signal(*_) -> None:
        stopping.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    stack = Stack(settings, replicas=replicas, address=address)
    try:
        state = stack.start(StartupSteps(echo))
        # ray.init() installs its own SIGTERM handler (which exits without our
        # clean-up); take the signals back now that Ray is up.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, on_signal)
        state.save(settings.data_dir)
        echo(describe(state))
        echo("\nTry it:\n" + try_it(state.http_url))
        echo("\nloraloop is up; Ctrl-C (or `loraloop down`) stops it.")
        while not stopping.wait(0.5):
            pass
        echo("stopping ...")
    finally:
        stack.stop()
        StackState.path(settings.data_dir).unlink(missing_ok=True)
    echo("stopped.")


def describe(state: StackState) -> str:
    redis_kind = "embedded" if state.redis_embedded else "external"
    return "\n".join(
        [
            f"  HTTP API   {state.http_url}/v1  (OpenAI-compatible; /healthz /readyz /metrics)",
            f"  replicas   {state.replicas} x {state.engine} engine, model {state.model}",
            f"  Redis      {redact_url(state.redis_url)} ({redis_kind})",
            f"  database   {state.database_url}",
            f"  Ray        {state.ray_address}",
            f"  learner    {'running (loraloop learner status)' if state.learner else 'off'}",
            *([f"  promotion  {state.promotion}"] if state.promotion else []),
            f"  pid        {state.pid}",
        ]
    )


def try_it(http_url: str) -> str:
    """A curl line that asks the running API something."""
    body = ('{"model": "default", "messages": [{"role": "user", "content": '
            '"What is the capital of France?"}], "max_tokens": 32}')
    return (f"  curl -si {http_url}/v1/chat/completions -H 'content-type: application/json' "
            f"-d '{body}'")


def wait_until_ready(url: str, timeout_s: float) -> bool:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return False
