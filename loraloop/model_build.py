"""Building a built-in model into the data dir: once, under a lock, atomically.

Every built-in model (``builtin:tiny``, ``builtin:smollm2``) is made on first
use by a builder function that writes a complete model directory. This module
runs such a builder so that concurrent first uses (replicas, the learner, the
CLI) build it once and nobody ever sees a half-written directory: the builder
writes into a staging directory next to the destination, which is renamed into
place when it is complete. A model directory counts as built when its
done-marker file (written last by the builder) exists.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class BuiltinModelUnavailable(ValueError):
    """A built-in model cannot be built here, e.g. a package it is built from is missing."""


def build_once(dest: Path, build: Callable[[Path], object], *, marker: str) -> Path:
    """Return ``dest``, first running ``build(staging)`` if ``dest/marker`` is missing.

    ``build`` must write a complete model directory into the (empty, existing)
    staging directory it is given, its done-marker ``marker`` last. Safe to
    call from several processes at once: the build runs under a file lock and
    its result is renamed into place; a failed build leaves nothing behind.
    """
    dest = Path(dest)
    if (dest / marker).exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(dest.parent / f".{dest.name}.lock"):
        if (dest / marker).exists():  # another process built it while we waited
            return dest
        staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
        started = time.monotonic()
        try:
            build(staging)
            if dest.exists():  # a leftover from an interrupted older build
                shutil.rmtree(dest)
            os.replace(staging, dest)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    logger.info("built %s in %.1f s", dest, time.monotonic() - started)
    return dest


def write_marker(dest: Path, marker: str, fields: Mapping[str, Any]) -> None:
    """Write the done-marker: sorted JSON, so that a rebuild writes the same bytes."""
    text = json.dumps(dict(fields), indent=2, sort_keys=True) + "\n"
    (Path(dest) / marker).write_text(text, encoding="utf-8")


def sha256_file(path: Path) -> str:
    """The hex sha256 of a (possibly large) file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # say why nothing moves: the build can take half a minute
            logger.warning("another process is building %s; waiting for it to finish",
                           path.name.removeprefix(".").removesuffix(".lock"))
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
