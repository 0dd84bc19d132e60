"""Replica faults through Ray Serve and real HTTP: a replica stopped under an open stream
(graceful drain, in both topologies), and a replica whose engine step never returns (hung),
detected by its health check and replaced. The faults are real: a forward pass slowed or
blocked forever in the replica's process (tests/support/faulty_replica.py), a redeploy that
stops the replica."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from tests.support.waiting import wait_until

PROMPT = [{"role": "user", "content": "Count to one hundred."}]


def _config(tiny_model_dir, **overrides):
    from serving.api import IngressConfig
    from serving.app import ServeConfig
    from serving.engines.base import EngineConfig

    return ServeConfig(
        engine="hf",
        engine_config=EngineConfig(model=str(tiny_model_dir), model_name="builtin:tiny",
                                   threads=1),
        ingress=IngressConfig(tenants=["acme"]),
        num_replicas=1,
        replica_cpus=0.25,
        **overrides,
    )


def _deploy(name: str, config) -> None:
    from ray import serve

    from serving.app import build_app
    from tests.support.faulty_replica import FaultyServer

    serve.run(build_app(config, llm_cls=FaultyServer), name=name, route_prefix=f"/{name}")


@pytest.fixture
def app(serve_url):
    """Deploys apps of its own beside the session's (same HTTP proxy); deletes them after."""
    from ray import serve

    deployed: list[str] = []

    def deploy(name: str, config) -> str:
        _deploy(name, config)
        deployed.append(name)
        url = f"{serve_url}/{name}"
        wait_until(lambda: _get(f"{url}/readyz") == 200, what=f"{name} ready", timeout_s=180)
        return url

    yield deploy
    for name in deployed:
        serve.delete(name)


def _get(url: str) -> int:
    try:
        return httpx.get(url, timeout=10).status_code
    except httpx.HTTPError:
        return 0


def _replica_ids(url: str) -> set[str]:
    try:
        found = httpx.get(f"{url}/status", timeout=15).json()["replicas"]
    except (httpx.HTTPError, ValueError, KeyError):
        return set()
    return {r["replica_id"] for r in found if "replica_id" in r}


def _llm(name: str):
    from ray import serve

    return serve.get_deployment_handle("llm", app_name=name)


class _Stream:
    """A streamed chat read in a thread: its SSE data lines, and how it ended."""

    def __init__(self, url: str, max_tokens: int) -> None:
        self.lines: list[str] = []
        self.error: BaseException | None = None
        self.ended_at: float | None = None
        body = {"model": "acme", "messages": PROMPT, "stream": True, "max_tokens": max_tokens,
                "temperature": 0, "stream_options": {"include_usage": True}}
        self._thread = threading.Thread(target=self._read, args=(url, body), daemon=True)
        self._thread.start()

    def _read(self, url: str, body: dict) -> None:
        try:
            with httpx.stream("POST", f"{url}/v1/chat/completions", json=body,
                              timeout=httpx.Timeout(300)) as response:
                assert response.status_code == 200, response.read()
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        self.lines.append(line.removeprefix("data: "))
        except BaseException as exc:  # a cut connection lands here
            self.error = exc
        finally:
            self.ended_at = time.monotonic()

    def content_seen(self) -> bool:
        return any(json.loads(line).get("choices", [{}])[0].get("delta", {}).get("content")
                   for line in self.lines if line.startswith("{") and '"choices":[{' in line)

    def join(self) -> None:
        self._thread.join(300)
        assert not self._thread.is_alive(), "the stream never ended"

    def events(self) -> list[dict]:
        return [json.loads(line) for line in self.lines if line != "[DONE]"]


def _redeploy_under(stream: _Stream, name: str, config) -> float:
    """Stop the app's replica (a redeploy replaces it) while ``stream`` is open on it."""
    wait_until(stream.content_seen, what="the stream's first tokens")
    assert stream.ended_at is None, "the stream ended before its replica was stopped"
    stopped_at = time.monotonic()
    _deploy(name, config.model_copy(update={"replica_cpus": 0.2}))  # new replicas, old drain
    return stopped_at


@pytest.mark.parametrize("topology", ["split", "one_hop"])
def test_a_replica_stopped_under_an_open_stream_finishes_it(app, tiny_model_dir, topology):
    config = _config(tiny_model_dir, drain_timeout_s=120, drain_poll_s=0.5, topology=topology)
    name = f"drain-{topology.replace('_', '-')}"
    url = app(name, config)
    # 50 tokens (greedy, this prompt ends at 62) at 0.5 s each: longer than Serve's default
    # drain of 20 s, within ours.
    old = _llm(name).slow_engine.remote(0.5).result()
    stream = _Stream(url, max_tokens=50)
    stopped_at = _redeploy_under(stream, name, config)
    stream.join()
    assert stream.error is None, f"the stream was cut: {stream.error!r}"
    assert stream.ended_at > stopped_at
    assert stream.lines[-1] == "[DONE]", stream.lines[-3:]
    events = stream.events()
    assert not [e for e in events if "error" in e], events[-3:]
    finish = [c["finish_reason"] for e in events for c in e.get("choices", [])
              if c.get("finish_reason")]
    usage = [e["usage"] for e in events if e.get("usage")]
    assert finish == ["length"] and usage[-1]["completion_tokens"] == 50, (finish, usage)
    wait_until(lambda: old not in _replica_ids(url) and _replica_ids(url),
               what="the drained replica replaced")


def test_a_stream_outliving_the_drain_ends_with_an_error_event_not_a_cut(app, tiny_model_dir):
    config = _config(tiny_model_dir, drain_timeout_s=2, drain_poll_s=0.5)
    url = app("cut", config)
    _llm("cut").slow_engine.remote(0.25).result()  # 400 tokens: far longer than the drain
    stream = _Stream(url, max_tokens=400)
    _redeploy_under(stream, "cut", config)
    stream.join()
    assert stream.error is None, f"the stream was cut: {stream.error!r}"
    events = stream.events()
    assert "error" in events[-1], stream.lines[-3:]
    assert "stopped" in events[-1]["error"]["message"]


def test_a_hung_replica_is_detected_by_its_health_check_and_replaced(app, tiny_model_dir):
    config = _config(tiny_model_dir, stall_after_s=3, health_check_period_s=1,
                     health_check_timeout_s=10, drain_timeout_s=5, drain_poll_s=0.5)
    url = app("hung", config)
    hung = _llm("hung").hang_engine.remote().result()
    stream = _Stream(url, max_tokens=8)  # waits on the hung engine
    ids = wait_until(lambda: (found := _replica_ids(url)) and hung not in found and found,
                     what="Serve replaced the hung replica", timeout_s=180)
    assert hung not in ids
    stream.join()
    assert stream.error is None, f"the stream was cut: {stream.error!r}"
    assert "error" in stream.events()[-1], stream.lines[-3:]
    answer = httpx.post(f"{url}/v1/chat/completions", timeout=60,
                        json={"model": "acme", "messages": PROMPT, "max_tokens": 4})
    assert answer.status_code == 200, answer.text
