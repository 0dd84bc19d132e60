"""Artifact store: atomic publish, sha256 at every load, safetensors only, local and S3."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from storage import (
    ArtifactCorrupt,
    ArtifactNotFound,
    ArtifactStore,
    UnsafeArtifact,
    content_digest,
    count_versions,
    make_session_factory,
    migrate,
)
from tests.support.waiting import wait_until


def _expected_id(directory: Path) -> str:
    return content_digest(
        {
            p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in directory.iterdir()
            if p.suffix in (".json", ".safetensors")
        }
    )


def test_publish_and_load_round_trip(tmp_path, adapter_dir):
    store = ArtifactStore(tmp_path / "store")
    src = adapter_dir("a", seed=1)
    published = store.publish(src)
    assert published.version_id == published.sha256 == _expected_id(src)
    assert set(published.files) == {"adapter_config.json", "adapter_model.safetensors"}
    assert published.lora_config["r"] == 4
    assert store.list_versions() == [published.version_id]
    loaded = store.load(published.uri, sha256=published.sha256)
    assert (loaded / "adapter_model.safetensors").read_bytes() == (
        src / "adapter_model.safetensors"
    ).read_bytes()
    assert not (loaded / "README.md").exists()
    assert store.publish(src) == published  # same content, same id, no second copy
    other = store.publish(adapter_dir("b", seed=2))
    assert other.version_id != published.version_id
    assert not [p for p in (tmp_path / "store").iterdir() if p.name.startswith(".")]


def test_pickle_formats_are_refused(tmp_path, adapter_dir):
    store = ArtifactStore(tmp_path / "store")
    src = adapter_dir("bin")
    (src / "adapter_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(UnsafeArtifact, match=r"adapter_model\.bin.*safetensors"):
        store.publish(src)
    (src / "adapter_model.bin").unlink()
    (src / "adapter_model.safetensors").write_bytes(b"\x80\x04\x95pickled-torch-state-dict")
    with pytest.raises(UnsafeArtifact, match="not a safetensors file"):
        store.publish(src)
    assert store.list_versions() == []


@pytest.mark.parametrize("damage", ["flip", "truncate", "remove"])
def test_damaged_artifact_is_refused_at_load_naming_the_file(tmp_path, adapter_dir, damage):
    store = ArtifactStore(tmp_path / "store")
    published = store.publish(adapter_dir())
    store.load(published.uri, sha256=published.sha256)
    weights = Path(published.uri) / "adapter_model.safetensors"
    data = weights.read_bytes()
    if damage == "flip":
        weights.write_bytes(data[:-10] + bytes([data[-10] ^ 0xFF]) + data[-9:])
    elif damage == "truncate":
        weights.write_bytes(data[: len(data) // 2])
    else:
        weights.unlink()
    with pytest.raises(ArtifactCorrupt, match=str(weights)):
        store.load(published.uri, sha256=published.sha256)


def test_load_refuses_an_artifact_that_is_not_the_registered_one(tmp_path, adapter_dir):
    store = ArtifactStore(tmp_path / "store")
    a = store.publish(adapter_dir("a", seed=1))
    b = store.publish(adapter_dir("b", seed=2))
    with pytest.raises(ArtifactCorrupt, match="does not match the registry"):
        store.load(a.uri, sha256=b.sha256)
    with pytest.raises(ArtifactNotFound, match=r"manifest\.json is missing"):
        store.load(store.uri_for("0" * 64), sha256="0" * 64)


FILE_TOO_LARGE = """
import resource, signal, sys
from storage import ArtifactStore

store = ArtifactStore(sys.argv[1])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[3]), resource.RLIM_INFINITY))
try:
    store.publish(sys.argv[2])
except OSError as exc:
    print(f"OSError errno={exc.errno}")
else:
    print("published")
"""


def test_an_exception_during_the_copy_leaves_no_version(tmp_path, adapter_dir):
    # A real disk-full: the publisher's files may not grow past 256 KiB, so the copy of
    # the 1 MiB weights fails part-way with EFBIG.
    import errno

    store = ArtifactStore(tmp_path / "store")
    src = adapter_dir(size=1 << 20)
    child = subprocess.run(
        [sys.executable, "-c", FILE_TOO_LARGE, str(tmp_path / "store"), str(src), str(1 << 18)],
        capture_output=True, text=True, timeout=120,
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == f"OSError errno={errno.EFBIG}", child.stdout
    assert store.list_versions() == []
    assert not store.exists(_expected_id(src))
    assert list((tmp_path / "store").iterdir()) == []  # staging removed too
    assert store.publish(src).version_id == _expected_id(src)


KILLED_PUBLISHER = """
import sys, time
from pathlib import Path
import storage.artifacts as artifacts
from storage import ArtifactStore, make_session_factory, register_candidate

marker = Path(sys.argv[3])

def copy_then_hang(fsrc, fdst, hasher):
    fdst.write(fsrc.read(4096))
    fdst.flush()
    marker.write_text("copying")
    time.sleep(120)

artifacts._copy_stream = copy_then_hang
published = ArtifactStore(sys.argv[1]).publish(sys.argv[2])
register_candidate(make_session_factory(sys.argv[4])(), version_id=published.version_id,
                   tenant="killed", base_model="m", artifact_uri=published.uri,
                   artifact_sha256=published.sha256, lora_config=published.lora_config)
"""


def test_a_publish_killed_halfway_leaves_no_visible_version(tmp_path, adapter_dir):
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    migrate(url)
    root, marker = tmp_path / "store", tmp_path / "copying"
    src = adapter_dir(size=1 << 20)
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_PUBLISHER, str(root), str(src), str(marker), url]
    )

    def copying() -> bool:
        assert proc.poll() is None, "the publisher exited before it started copying"
        return marker.exists()

    wait_until(copying, what="the publisher started copying")
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(10) == -signal.SIGKILL

    store = ArtifactStore(root)
    assert [p.name.startswith(".staging-") for p in root.iterdir()] == [True]  # the torn copy
    assert store.list_versions() == [] and not store.exists(_expected_id(src))
    factory = make_session_factory(url)
    with factory() as session:
        assert count_versions(session) == 0
    factory.kw["bind"].dispose()
    assert store.clean_staging(older_than_s=0) and list(root.iterdir()) == []
    assert store.publish(src).version_id == _expected_id(src)


# -- object store (S3 API, moto's server) -------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    server_mod = pytest.importorskip(
        "moto.server",
        reason="moto[server] (dev extra) is not installed; the S3 artifact path needs it",
    )
    pytest.importorskip("s3fs", reason="s3fs (s3/dev extra) is not installed")
    port = _free_port()
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_store(s3_endpoint, tmp_path, monkeypatch):
    import uuid

    import s3fs

    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(var, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")  # no LocationConstraint for moto
    options = {"key": "testing", "secret": "testing", "endpoint_url": s3_endpoint}
    bucket = f"adapters-{uuid.uuid4().hex[:8]}"
    fs = s3fs.S3FileSystem(**options)
    fs.mkdir(bucket)
    fs.invalidate_cache()
    store = ArtifactStore(
        f"s3://{bucket}/prod", storage_options=options, cache_dir=tmp_path / "cache"
    )
    return store, fs


def test_s3_publish_load_and_corruption(s3_store, adapter_dir):
    store, fs = s3_store
    src = adapter_dir("s3", seed=3)
    published = store.publish(src)
    assert published.uri.startswith("s3://") and published.version_id == _expected_id(src)
    store.fs.invalidate_cache()
    assert store.list_versions() == [published.version_id]
    loaded = store.load(published.uri, sha256=published.sha256)
    assert (loaded / "adapter_model.safetensors").read_bytes() == (
        src / "adapter_model.safetensors"
    ).read_bytes()
    assert store.load(published.uri, sha256=published.sha256) == loaded  # cached, re-verified

    remote = f"{published.uri}/adapter_model.safetensors"
    data = fs.cat_file(remote)
    fs.pipe_file(remote, data[: len(data) // 2])  # truncated in the bucket
    (loaded / "adapter_model.safetensors").write_bytes(b"garbage")  # and in the cache
    with pytest.raises(ArtifactCorrupt, match=r"adapter_model\.safetensors"):
        store.load(published.uri, sha256=published.sha256)


class _ResetWriter:
    """A write handle whose connection resets at the first write."""

    def __init__(self, handle) -> None:
        self._handle = handle

    def write(self, data: bytes) -> int:
        raise ConnectionError("connection reset (injected)")

    def __getattr__(self, name: str):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._handle.close()


def _flaky_s3(fail_on_write: int):
    """An S3 filesystem (protocol ``flakys3``) whose ``fail_on_write``-th file opened for
    writing breaks off, once."""
    import fsspec
    import s3fs

    class FlakyS3(s3fs.S3FileSystem):
        protocol = ("flakys3",)
        writes = 0

        def _open(self, path, mode="rb", **kw):
            handle = super()._open(path, mode, **kw)
            if "w" in mode:
                FlakyS3.writes += 1
                if FlakyS3.writes == fail_on_write:
                    return _ResetWriter(handle)
            return handle

    fsspec.register_implementation("flakys3", FlakyS3, clobber=True)
    return FlakyS3


def test_s3_publish_interrupted_leaves_no_version(s3_store, adapter_dir):
    store, _ = s3_store
    src = adapter_dir("s3-torn", seed=4, size=1 << 18)
    _flaky_s3(fail_on_write=2)  # the first file is uploaded, the second breaks off
    flaky = ArtifactStore(store.location.replace("s3://", "flakys3://", 1),
                          storage_options=store.fs.storage_options)
    with pytest.raises(ConnectionError, match="injected"):
        flaky.publish(src)
    store.fs.invalidate_cache()
    assert store.list_versions() == [] and not store.exists(_expected_id(src))
    with pytest.raises(ArtifactNotFound):
        store.load(store.uri_for(_expected_id(src)), sha256=_expected_id(src))
    assert store.publish(src).version_id == _expected_id(src)
