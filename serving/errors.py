"""Errors raised by serving and its engines. The HTTP edge maps them to 4xx/503
(``serving.http_errors``).

They also cross the Ray boundary between an LLM replica and the ingress as
values (see ``serving.replica``), so every one of them pickles, whatever its
constructor takes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class ServingError(Exception):
    """Base class of every error serving raises on purpose."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Exceptions unpickle as ``cls(*args)``, which breaks subclasses whose
        # constructor takes other arguments than the message; restore the state
        # directly instead.
        return _restore, (type(self), self.args, self.__dict__)


def _restore(cls: type[ServingError], args: tuple, state: dict) -> ServingError:
    error = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(state)
    return error


class EngineNotStarted(ServingError, RuntimeError):
    """The engine was used before ``start()`` finished (or after ``shutdown()``)."""


class EngineUnhealthy(ServingError, RuntimeError):
    """The engine cannot serve (its worker died or its model failed)."""


class EngineOverloaded(ServingError, RuntimeError):
    """The engine's queue is full; the client should retry later."""


class ReplicasBusy(ServingError, RuntimeError):
    """Every LLM replica's queue (Ray Serve's, in front of the engines) is full."""


class PromptTooLong(ServingError, ValueError):
    """The prompt leaves no room for a completion in the model's context."""


class AdapterNotLoaded(ServingError, LookupError):
    """A request named an adapter version that is not resident in the engine."""


class AdapterBusy(ServingError, RuntimeError):
    """An adapter cannot be unloaded while requests still use it."""


class AdapterLimitReached(ServingError, RuntimeError):
    """The engine already holds ``max_loras`` adapters; unload one first."""


class AdapterValidationError(ServingError, ValueError):
    """An adapter was refused before anything changed; lists every problem found."""

    def __init__(self, version_id: str, path: str, problems: Sequence[str]) -> None:
        self.version_id = version_id
        self.path = path
        self.problems = list(problems)
        listing = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            f"adapter {version_id!r} at {path} was refused ({len(self.problems)} "
            f"problem{'s' if len(self.problems) != 1 else ''}):\n{listing}"
        )


class InvalidCompute(ServingError, ValueError):
    """A request's test-time compute (``loraloop`` object, ``reasoning_effort``) is not
    allowed here; ``param`` names the field."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class UnknownModel(ServingError, LookupError):
    """A request's ``model`` names no tenant, alias or version."""

    def __init__(self, model: str, valid: list[str]) -> None:
        self.model = model
        self.valid = valid
        super().__init__(
            f"model {model!r} does not exist; use one of {valid} "
            "(a tenant, <tenant>@canary, <tenant>@<version>, or base)"
        )
