"""A load error on one replica fails a version for the fleet only if the artifact is bad.

Real engine (builtin:tiny), real registry (SQLite) and artifact store; the faults
are real: the store's directory disappears (an unmounted volume, a store
outage) and every adapter slot is leased by a request in flight.
"""

from __future__ import annotations

import asyncio
import shutil
import socket

import pytest

from serving.adapters import AdapterManager
from serving.engines import EngineConfig
from serving.engines.hf import HFEngine
from serving.load_retries import LoadRetries
from storage import get_version
from tests.support.registry import LocalRegistry
from tests.support.s3_server import S3_ENV, new_bucket
from tests.support.waiting import until

pytestmark = pytest.mark.asyncio(loop_scope="function")


@pytest.fixture
def registry(tmp_path) -> LocalRegistry:
    return LocalRegistry.create(tmp_path)


async def _engine(tiny_model_dir, max_loras: int) -> HFEngine:
    engine = HFEngine(EngineConfig(model=str(tiny_model_dir), model_name="builtin:tiny",
                                   threads=1, max_loras=max_loras, max_cpu_loras=max_loras))
    await engine.start()
    return engine


def _status(registry: LocalRegistry, version_id: str) -> str:
    with registry.sessions() as session:
        return get_version(session, version_id=version_id).status


async def test_a_store_outage_is_retried_and_never_fails_the_version(
        registry, tiny_model_dir, make_adapter, tmp_path):
    engine = await _engine(tiny_model_dir, max_loras=4)
    try:
        manager = AdapterManager(engine, registry.view,
                                 retries=LoadRetries(base_s=0.05, max_s=0.2))
        good = registry.register(make_adapter("outage-good", seed=61))
        registry.promote(good)
        await manager.reconcile()
        new = registry.register(make_adapter("outage-new", seed=62))
        registry.promote(new)

        store, away = tmp_path / "artifacts", tmp_path / "artifacts-unmounted"
        store.rename(away)  # the store is gone for a while
        await manager.reconcile()
        await manager.reconcile()

        # This replica keeps serving what it had; the fleet still sees the version live.
        assert manager.routes["acme"].live == good
        assert _status(registry, new) == "live" and new not in manager.failed
        status = manager.status()
        assert status["retrying"][new]["kind"] == "transient"
        assert "ArtifactNotFound" in status["retrying"][new]["error"]
        assert status["load_errors"]["transient"] >= 1

        away.rename(store)  # the store is back: the next due retry loads it
        await until(lambda: manager.retries.due(new), what="the retry's backoff ends")
        await manager.reconcile()
        assert manager.routes["acme"].live == new
        assert new not in manager.status()["retrying"]
    finally:
        await engine.shutdown()


async def test_the_reconciler_retries_by_itself_after_the_backoff(
        registry, tiny_model_dir, make_adapter, tmp_path):
    from serving.adapters import run_reconciler

    engine = await _engine(tiny_model_dir, max_loras=4)
    manager = AdapterManager(engine, registry.view, retries=LoadRetries(base_s=0.05, max_s=0.2))
    new = registry.register(make_adapter("outage-loop", seed=63))
    registry.promote(new)
    store, away = tmp_path / "artifacts", tmp_path / "artifacts-unmounted"
    store.rename(away)
    task = asyncio.create_task(run_reconciler(manager, interval_s=3600))  # no periodic help
    try:
        await until(lambda: manager.retries.counts["transient"] >= 2,
                    what="the reconciler retries the load after its backoff")
        away.rename(store)
        await until(lambda: manager.routes.get("acme") and manager.routes["acme"].live == new,
                    what="the version loads once the store is back")
        assert _status(registry, new) == "live"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await engine.shutdown()
        shutil.rmtree(away, ignore_errors=True)


async def test_every_slot_leased_by_a_stream_waits_instead_of_failing(
        registry, make_adapter, one_slot_held):
    manager, old = one_slot_held
    new = registry.register(make_adapter("slots-new", seed=65))
    registry.promote(new)
    await manager.reconcile()
    assert manager.routes["acme"].live == old  # the stream's version keeps serving
    assert _status(registry, new) == "live" and new not in manager.failed
    assert manager.status()["retrying"][new]["kind"] == "slots"

    manager.release(old)  # the stream ends: its slot frees and a reconcile is asked for
    assert manager.kick.is_set()
    await manager.reconcile()
    assert manager.routes["acme"].live == new
    assert manager.engine.loaded_adapters() == [new]


async def test_a_pinned_request_waits_for_a_slot(registry, make_adapter, one_slot_held):
    manager, live = one_slot_held
    pinned = registry.register(make_adapter("pin-other", seed=67))
    waiter = asyncio.create_task(manager.acquire("acme", "live", "u", pinned))
    await until(lambda: manager.retries.counts["slots"] >= 1,
                what="the pinned load finds every slot leased")
    assert not waiter.done()
    manager.release(live)
    assert await waiter == pinned
    manager.release(pinned)
    assert _status(registry, pinned) == "gated" and pinned not in manager.failed


@pytest.fixture
async def one_slot_held(registry, tiny_model_dir, make_adapter):
    """An engine with one adapter slot, held by a stream (a lease) on the live version."""
    held = registry.register(make_adapter("slot-held", seed=64))
    registry.promote(held)
    manager = AdapterManager(await _engine(tiny_model_dir, max_loras=1), registry.view)
    await manager.reconcile()
    assert await manager.acquire("acme", "live", "u", None) == held  # until the test ends it
    yield manager, held
    await manager.engine.shutdown()


class _S3:
    """moto's S3 server on a fixed loopback port, to stop and start again (its buckets
    live in the process, so they are still there after a restart; tests.support.s3_server's
    runs once)."""

    def __init__(self) -> None:
        self.server_mod = pytest.importorskip("moto.server", reason="moto[server] (dev extra)")
        pytest.importorskip("s3fs", reason="s3fs (s3/dev extra) is not installed")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = None

    def start(self) -> None:
        self.server = self.server_mod.ThreadedMotoServer(ip_address="127.0.0.1",
                                                         port=self.port, verbose=False)
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


@pytest.fixture
def s3(monkeypatch):
    server = _S3()
    from s3fs import S3FileSystem

    for var, value in S3_ENV.items():
        monkeypatch.setenv(var, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.url)  # botocore reads it; no options needed
    # fsspec caches filesystems by their arguments: one built by an earlier test would
    # still talk to that test's (stopped) endpoint.
    S3FileSystem.clear_instance_cache()
    server.start()
    yield server
    server.stop()
    S3FileSystem.clear_instance_cache()


async def test_an_object_store_outage_is_retried_and_never_fails_the_version(
        s3, tiny_model_dir, make_adapter, tmp_path):
    from serving.registry_view import RegistryView
    from storage import RegistryOps
    from storage.db import open_registry

    location, database = f"s3://{new_bucket(s3.url)}/prod", f"sqlite:///{tmp_path / 'registry.db'}"
    sessions = open_registry(database)
    ops = RegistryOps(sessions, actor="test", artifacts=location)
    version = ops.register(make_adapter("s3-outage", seed=68), tenant="acme",
                           base_model="builtin:tiny")
    ops.gate(version.id, passed=True)
    ops.promote(version.id)
    view = RegistryView(database_url=database, artifacts_location=location,
                        cache_dir=tmp_path / "cache")
    engine = await _engine(tiny_model_dir, max_loras=4)
    try:
        manager = AdapterManager(engine, view, retries=LoadRetries(base_s=0.05, max_s=0.2))
        s3.stop()  # the object store is down
        await manager.reconcile()
        assert "acme" not in manager.routes  # base answers meanwhile
        with sessions() as session:
            assert get_version(session, version_id=version.id).status == "live"
        retrying = manager.status()["retrying"][version.id]
        assert retrying["kind"] == "transient" and "connect" in retrying["error"].lower()

        s3.start()  # back: the next due retry loads the version
        await until(lambda: manager.retries.due(version.id), what="the backoff ends")
        await manager.reconcile()
        assert manager.routes["acme"].live == version.id
    finally:
        await engine.shutdown()
