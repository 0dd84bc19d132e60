"""Errors of the storage package: the adapter registry and the artifact store.

One base class, :class:`RegistryError`; each subclass also inherits the
built-in an ordinary caller would catch (``LookupError`` for unknown ids,
``ValueError`` for bad values and illegal status moves). Each class names its
``outcome``: the word the audit log records for an attempt it refused, and
what the CLI's exit codes (``loraloop.render``) are keyed by. The HTTP edge
maps the classes to statuses in ``serving.http_errors``.
"""

from __future__ import annotations

from collections.abc import Iterable


class RegistryError(Exception):
    """Base class of every error raised by ``storage``."""

    #: How a refused attempt ends in the audit log (``AuditEntry.outcome``).
    outcome = "error"


class VersionNotFound(RegistryError, LookupError):
    """No adapter version has the given id (or id prefix)."""

    outcome = "not_found"


class AliasNotFound(RegistryError, LookupError):
    """The tenant has no such alias (for example no ``live`` version yet)."""

    outcome = "not_found"


class Conflict(RegistryError):
    """The change lost a race or its precondition no longer holds.

    Raised when another writer changed the alias first (``expected_live`` or
    ``expected_revision`` no longer match), when an alias is pinned, or when
    the current state makes the request meaningless (nothing to roll back to).
    Re-read the state and retry if the change still makes sense.
    """

    outcome = "conflict"


class InvalidArgument(RegistryError, ValueError):
    """A value is out of range or malformed (for example a canary fraction)."""

    outcome = "invalid"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class IllegalTransition(RegistryError, ValueError):
    """A status move that the state machine does not allow."""

    outcome = "illegal"

    def __init__(
        self, *, version_id: str, current: str, requested: str, allowed: Iterable[str]
    ) -> None:
        self.version_id = version_id
        self.current = current
        self.requested = requested
        self.allowed = tuple(sorted(allowed))
        choices = ", ".join(self.allowed) or "none: it is a final status"
        super().__init__(
            f"version {version_id} cannot move from {current!r} to {requested!r}; "
            f"allowed next statuses from {current!r}: {choices}"
        )


class ArtifactError(RegistryError):
    """Base class of artifact store errors."""

    outcome = "artifact"


class ArtifactNotFound(ArtifactError, FileNotFoundError):
    """No published artifact at the given URI (or its manifest is missing)."""


class ArtifactCorrupt(ArtifactError, ValueError):
    """A file of a published artifact does not match its recorded size or sha256."""


class UnsafeArtifact(ArtifactError, ValueError):
    """The adapter directory holds a format other than safetensors (pickle, ``.bin``)."""
