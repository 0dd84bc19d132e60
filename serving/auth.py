"""Who is calling: API keys mapped to users and tenants, or the `user` field when auth is off;
and the admin token of ``/admin``.

Refusals are :class:`AuthError` subclasses; ``serving.http_errors`` gives each
its status (401 or 403) and code.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pydantic import BaseModel, Field


class ApiKey(BaseModel):
    """What one API key stands for."""

    user: str = Field(min_length=1)
    tenant: str | None = Field(default=None, description="Restrict the key to one tenant.")


@dataclass(frozen=True)
class Caller:
    user: str | None  # raw; hashed before anything is stored
    tenant: str | None  # the only tenant the caller may use, or None for any
    authenticated: bool


class AuthError(Exception):
    """Base class of the refusals of a caller."""


class MissingApiKey(AuthError):
    """Auth is on and the request sent no bearer key."""


class InvalidApiKey(AuthError):
    """The bearer key is none of the configured ones."""


class WrongTenant(AuthError, PermissionError):
    """The key is restricted to another tenant."""


class MissingAdminToken(AuthError):
    """An ``/admin`` request sent no bearer token."""


class InvalidAdminToken(AuthError):
    """The bearer token is not the admin token (or the admin API is disabled)."""


class NotAdmin(AuthError, PermissionError):
    """A user's API key was sent to ``/admin``."""


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or ``None``."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def _same(token: str, secret: str) -> bool:
    return hmac.compare_digest(token.encode(), secret.encode())


def identify(keys: dict[str, ApiKey], authorization: str | None, body_user: str | None) -> Caller:
    """The caller of a request. With no keys configured, auth is off and ``user`` is trusted."""
    if not keys:
        return Caller(body_user, None, authenticated=False)
    token = bearer_token(authorization)
    if token is None:
        raise MissingApiKey("missing API key: send `Authorization: Bearer <key>`")
    for key, who in keys.items():  # constant-time compare for each configured key
        if _same(token, key):
            return Caller(who.user, who.tenant, authenticated=True)
    raise InvalidApiKey("invalid API key")


def check_tenant(caller: Caller, tenant: str) -> None:
    if caller.tenant is not None and tenant not in (caller.tenant, "base"):
        raise WrongTenant(f"this API key is for tenant {caller.tenant!r}, not {tenant!r}")


def admin_check(
    admin_token: str, user_keys: Iterable[str] | Callable[[str], bool] = ()
) -> Callable[[str | None], None]:
    """A check of an ``Authorization`` header against the admin token.

    No token or a wrong one is refused as unauthenticated; a valid *user* key
    (``user_keys``: a collection or a predicate) is refused as forbidden; an
    empty ``admin_token`` refuses everything.
    """
    is_user_key = user_keys if callable(user_keys) else frozenset(user_keys).__contains__

    def check(authorization: str | None) -> None:
        token = bearer_token(authorization)
        if token is None:
            raise MissingAdminToken(
                "missing admin token: send 'Authorization: Bearer <token>' "
                "with the admin token (LORALOOP_ADMIN_TOKEN)"
            )
        if admin_token and _same(token, admin_token):
            return
        if is_user_key(token):
            raise NotAdmin(
                "this is a user API key; /admin endpoints need the admin "
                "token (LORALOOP_ADMIN_TOKEN)"
            )
        raise InvalidAdminToken(
            "the admin API is disabled: LORALOOP_ADMIN_TOKEN is empty"
            if not admin_token
            else "invalid admin token"
        )

    return check
