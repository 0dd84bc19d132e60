"""Artifact store: published LoRA adapters, by version id, in a directory or any fsspec URL.

Layout: ``<root>/<version_id>/`` holds the adapter's files and a
``manifest.json`` listing each file's size and sha256. A version exists iff
its manifest does.

* **Publish is atomic.** On a local filesystem the files are copied into
  ``<root>/.staging-<random>/`` and the directory is renamed into place; on an
  object store the files are uploaded first and the manifest (one atomic PUT)
  last. A publish killed halfway leaves no visible version.
* **Integrity.** The version id is the sha256 of the manifest's file list
  (content-derived: weights and config). Each file is hashed while it is
  written and verified again at every :meth:`ArtifactStore.load`.
* **Safetensors only.** Pickle-based formats (``.bin``, ``.pt``, ``.pkl``...)
  are refused; ``.safetensors`` headers are checked.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import struct
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from storage.errors import ArtifactCorrupt, ArtifactNotFound, UnsafeArtifact

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = "loraloop-adapter/1"
REQUIRED_FILES = ("adapter_config.json", "adapter_model.safetensors")
ALLOWED_SUFFIXES = (".safetensors", ".json")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy")
CHUNK = 1 << 20
_MAX_HEADER = 100 << 20


@dataclass(frozen=True)
class PublishedArtifact:
    """Where a published adapter lives and what it holds."""

    version_id: str
    uri: str
    sha256: str
    files: dict[str, dict[str, Any]]
    lora_config: dict[str, Any] = field(default_factory=dict)


def content_digest(file_hashes: Mapping[str, str]) -> str:
    """The content id: sha256 of the sorted ``{file name: sha256}`` as canonical JSON."""
    canonical = json.dumps(dict(sorted(file_hashes.items())), separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def adapter_files(source_dir: str | Path) -> list[Path]:
    """The files of an adapter directory that get published; refuses pickle formats."""
    src = Path(source_dir)
    if not src.is_dir():
        raise ArtifactNotFound(f"adapter directory {src} does not exist or is not a directory")
    names = {p.name for p in src.iterdir() if p.is_file()}
    unsafe = sorted(n for n in names if n.lower().endswith(PICKLE_SUFFIXES))
    if unsafe:
        raise UnsafeArtifact(
            f"adapter directory {src} holds pickle-based files {unsafe}; only safetensors is "
            "accepted: save with `save_pretrained(..., safe_serialization=True)` and remove them"
        )
    missing = [n for n in REQUIRED_FILES if n not in names]
    if missing:
        raise ArtifactNotFound(
            f"adapter directory {src} lacks {missing}; a peft adapter saved "
            f"with save_pretrained has {list(REQUIRED_FILES)}"
        )
    skipped = sorted(n for n in names if not n.endswith(ALLOWED_SUFFIXES))
    if skipped:
        log.info("not publishing %s from %s (only %s files are)", skipped, src, ALLOWED_SUFFIXES)
    files = sorted(src / n for n in names if n.endswith(ALLOWED_SUFFIXES))
    for path in files:
        if path.suffix == ".safetensors":
            check_safetensors_header(path)
    return files


def check_safetensors_header(path: Path) -> None:
    """Refuse a file that does not start with a safetensors header (8-byte size + JSON)."""
    size = path.stat().st_size
    with path.open("rb") as f:
        raw = f.read(8)
        n = struct.unpack("<Q", raw)[0] if len(raw) == 8 else -1
        ok = 0 < n <= min(size - 8, _MAX_HEADER)
        if ok:
            try:
                ok = isinstance(json.loads(f.read(n)), dict)
            except ValueError:
                ok = False
    if not ok:
        raise UnsafeArtifact(
            f"{path} is not a safetensors file (its header is unreadable); "
            "re-save the adapter with safe_serialization=True"
        )


def _copy_stream(src: IO[bytes], dst: IO[bytes], hasher: Any) -> int:
    """Copy ``src`` to ``dst`` in chunks, hashing the bytes; returns the byte count."""
    total = 0
    while chunk := src.read(CHUNK):
        hasher.update(chunk)
        dst.write(chunk)
        total += len(chunk)
    return total


def _hash_file(path: Path) -> tuple[int, str]:
    h, size = hashlib.sha256(), 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


class ArtifactStore:
    """Published adapters under ``location``: a directory or an fsspec URL (``s3://b/p``)."""

    def __init__(
        self,
        location: str | Path,
        *,
        storage_options: Mapping[str, Any] | None = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        self.location = str(location)
        self.fs, root = fsspec.core.url_to_fs(self.location, **dict(storage_options or {}))
        self.local = isinstance(self.fs, LocalFileSystem)
        self.root = root.rstrip("/")
        if self.local:
            Path(self.root).mkdir(parents=True, exist_ok=True)
        self.cache_dir = Path(cache_dir) if cache_dir else None

    def __repr__(self) -> str:
        return f"ArtifactStore({self.location!r})"

    # -- names ---------------------------------------------------------------------------
    def uri_for(self, version_id: str) -> str:
        """The URI recorded in the registry for ``version_id``."""
        if self.local:
            return f"{self.root}/{version_id}"
        return self.fs.unstrip_protocol(f"{self.root}/{version_id}")

    def _path(self, uri: str) -> str:
        return self.fs._strip_protocol(uri).rstrip("/")

    def exists(self, version_id: str) -> bool:
        """Whether ``version_id`` is published (its manifest exists)."""
        return bool(self.fs.exists(f"{self.root}/{version_id}/{MANIFEST}"))

    def list_versions(self) -> list[str]:
        """Ids of the published versions."""
        if not self.fs.exists(self.root):
            return []
        names = [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(self.root, detail=False)]
        return sorted(n for n in names if not n.startswith(".") and self.exists(n))

    # -- publish -------------------------------------------------------------------------
    def publish(self, source_dir: str | Path) -> PublishedArtifact:
        """Publish the adapter in ``source_dir`` atomically; idempotent for equal content."""
        files = adapter_files(source_dir)
        lora_config = json.loads((Path(source_dir) / "adapter_config.json").read_text())
        if self.local:
            return self._publish_local(files, lora_config)
        return self._publish_remote(files, lora_config)

    def _publish_local(self, files: list[Path], lora_config: dict[str, Any]) -> PublishedArtifact:
        staging = Path(self.root) / f".staging-{uuid.uuid4().hex}"
        staging.mkdir(parents=True)
        try:
            entries: dict[str, dict[str, Any]] = {}
            for path in files:
                h = hashlib.sha256()
                with path.open("rb") as src, (staging / path.name).open("wb") as dst:
                    size = _copy_stream(src, dst, h)
                    dst.flush()
                    os.fsync(dst.fileno())
                entries[path.name] = {"size": size, "sha256": h.hexdigest()}
            manifest = self._manifest(entries)
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
            final = Path(self.root) / manifest["version_id"]
            if (final / MANIFEST).exists():
                log.info("adapter %s is already published", manifest["version_id"])
            else:
                if final.exists():  # left by a foreign tool without a manifest: not a version
                    shutil.rmtree(final)
                os.rename(staging, final)
                _fsync_dir(Path(self.root))
            return self._published(manifest, lora_config)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _publish_remote(self, files: list[Path], lora_config: dict[str, Any]) -> PublishedArtifact:
        entries = {}
        for path in files:
            size, digest = _hash_file(path)
            entries[path.name] = {"size": size, "sha256": digest}
        manifest = self._manifest(entries)
        prefix = f"{self.root}/{manifest['version_id']}"
        if not self.exists(manifest["version_id"]):
            for path in files:
                with path.open("rb") as src, self.fs.open(f"{prefix}/{path.name}", "wb") as dst:
                    _copy_stream(src, dst, hashlib.sha256())
            # The manifest goes last, in one PUT: before it exists the version does not.
            self.fs.pipe_file(
                f"{prefix}/{MANIFEST}", json.dumps(manifest, indent=1, sort_keys=True).encode()
            )
        return self._published(manifest, lora_config)

    @staticmethod
    def _manifest(entries: dict[str, dict[str, Any]]) -> dict[str, Any]:
        digest = content_digest({name: e["sha256"] for name, e in entries.items()})
        return {"format": FORMAT, "version_id": digest, "sha256": digest, "files": entries}

    def _published(
        self, manifest: dict[str, Any], lora_config: dict[str, Any]
    ) -> PublishedArtifact:
        vid = manifest["version_id"]
        return PublishedArtifact(
            version_id=vid,
            uri=self.uri_for(vid),
            sha256=manifest["sha256"],
            files=manifest["files"],
            lora_config=lora_config,
        )

    # -- load ----------------------------------------------------------------------------
    def read_manifest(self, uri: str) -> dict[str, Any]:
        """The manifest of the artifact at ``uri``; :class:`ArtifactNotFound` if unpublished."""
        path = f"{self._path(uri)}/{MANIFEST}"
        try:
            return json.loads(self.fs.cat_file(path))
        except FileNotFoundError:
            raise ArtifactNotFound(
                f"no published adapter at {uri} ({MANIFEST} is missing); "
                "it was never published or its publish did not finish"
            ) from None

    def load(self, uri: str, *, sha256: str, dest: str | Path | None = None) -> Path:
        """A local directory holding the verified adapter at ``uri``.

        ``sha256`` is the digest the registry recorded. Every file is checked
        (size and sha256) on every call; :class:`ArtifactCorrupt` names the
        first bad file. Remote artifacts are downloaded under ``dest`` (or the
        store's ``cache_dir``) first.
        """
        manifest = self.read_manifest(uri)
        files: dict[str, dict[str, Any]] = manifest.get("files", {})
        listed = content_digest({name: e["sha256"] for name, e in files.items()})
        if manifest.get("sha256") != sha256 or listed != sha256:
            raise ArtifactCorrupt(
                f"artifact manifest {uri}/{MANIFEST} does not match the registry: recorded "
                f"sha256 {sha256}, manifest says {manifest.get('sha256')} and lists files "
                f"hashing to {listed}; republish the adapter or mark the version failed"
            )
        if self.local:
            local = Path(self._path(uri))
            _verify_all(local, files)
            return local
        base = Path(dest) if dest else self.cache_dir
        if base is None:
            raise ValueError(
                f"loading {uri} from an object store needs a local directory: "
                "pass dest= or create the ArtifactStore with cache_dir="
            )
        local = self._download(uri, files, base / manifest["version_id"], fresh=False)
        try:
            _verify_all(local, files)
        except ArtifactCorrupt:
            log.warning("cached copy of %s is damaged; downloading it again", uri)
            local = self._download(uri, files, local, fresh=True)
            try:
                _verify_all(local, files)
            except ArtifactCorrupt as exc:
                raise ArtifactCorrupt(f"{exc} (the copy downloaded from {uri})") from None
        return local

    def _download(self, uri: str, files: Mapping[str, Any], target: Path, *, fresh: bool) -> Path:
        if not fresh and all((target / n).exists() for n in files):
            return target  # the caller verifies it, like a local artifact
        tmp = target.with_name(f".{target.name}-{uuid.uuid4().hex}")
        tmp.mkdir(parents=True)
        try:
            for name in files:
                self.fs.get_file(f"{self._path(uri)}/{name}", str(tmp / name))
            shutil.rmtree(target, ignore_errors=True)
            os.rename(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target

    def clean_staging(self, *, older_than_s: float = 3600.0) -> list[str]:
        """Remove local staging directories left by killed publishes; returns their names."""
        if not self.local:
            return []
        cutoff = time.time() - older_than_s
        removed = []
        for path in Path(self.root).glob(".staging-*"):
            if path.stat().st_mtime < cutoff:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path.name)
        return removed

    def delete(self, version_id: str) -> None:
        """Remove a published version (its manifest first, so it disappears at once)."""
        prefix = f"{self.root}/{version_id}"
        if self.fs.exists(f"{prefix}/{MANIFEST}"):
            self.fs.rm_file(f"{prefix}/{MANIFEST}")
        if self.fs.exists(prefix):
            self.fs.rm(prefix, recursive=True)


def _verify_all(local: Path, files: Mapping[str, Mapping[str, Any]]) -> None:
    for name, e in sorted(files.items()):
        _verify_file(local / name, e["size"], e["sha256"])


def _verify_file(path: Path, size: int, sha256: str) -> None:
    if not path.is_file():
        raise ArtifactCorrupt(f"artifact file {path} is missing; republish the adapter")
    actual_size = path.stat().st_size
    if actual_size != size:
        raise ArtifactCorrupt(
            f"artifact file {path} is truncated or corrupted: {actual_size} "
            f"bytes, published with {size}; republish the adapter"
        )
    _, digest = _hash_file(path)
    if digest != sha256:
        raise ArtifactCorrupt(
            f"artifact file {path} is corrupted: sha256 {digest}, published "
            f"with {sha256}; republish the adapter or mark the version failed"
        )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
