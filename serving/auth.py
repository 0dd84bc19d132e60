"""Who is calling: API keys mapped to users and tenants, or the `user` field when auth is off;
and the admin token of ``/admin``.

Refusals are :class:`AuthError` subclasses; ``serving.http_errors`` gives each
its status (401 or 403) and code.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable, Mapping
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


class SecondAdminRequired(NotAdmin):
    """A manual gate pass needs a second, different admin's token, and none valid came."""


#: The audit ``actor`` of the one unnamed admin token (``LORALOOP_ADMIN_TOKEN``).
ADMIN_ACTOR = "admin-api"


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


def admin_tokens(admin_token: str, named: Mapping[str, str] | None = None) -> dict[str, str]:
    """name -> token of every admin: ``admin_token`` as :data:`ADMIN_ACTOR`, and the
    ``named`` ones (empty tokens dropped); refuses a token given to two names."""
    tokens = {name: token for name, token in (named or {}).items() if token}
    if admin_token:
        tokens = {ADMIN_ACTOR: admin_token, **tokens}
    if len(set(tokens.values())) != len(tokens):
        raise ValueError("two admin names share one token; give each admin its own token")
    return tokens


def admin_name(tokens: Mapping[str, str], token: str | None) -> str | None:
    """The name of the admin whose token is ``token`` (constant-time compares), or None."""
    found = None
    for name, secret in tokens.items():
        if token is not None and _same(token, secret):
            found = name
    return found


def admin_check(
    admin_token: str,
    user_keys: Iterable[str] | Callable[[str], bool] = (),
    named: Mapping[str, str] | None = None,
) -> Callable[[str | None], str]:
    """A check of an ``Authorization`` header against the admin tokens; returns the
    admin's name, the ``actor`` its changes are audited under.

    ``admin_token`` is named :data:`ADMIN_ACTOR`; ``named`` adds admins by name.
    No token or a wrong one is refused as unauthenticated; a valid *user* key
    (``user_keys``: a collection or a predicate) is refused as forbidden; no
    admin token at all refuses everything.
    """
    is_user_key = user_keys if callable(user_keys) else frozenset(user_keys).__contains__
    tokens = admin_tokens(admin_token, named)

    def check(authorization: str | None) -> str:
        token = bearer_token(authorization)
        if token is None:
            raise MissingAdminToken(
                "missing admin token: send 'Authorization: Bearer <token>' "
                "with the admin token (LORALOOP_ADMIN_TOKEN)"
            )
        name = admin_name(tokens, token)
        if name is not None:
            return name
        if is_user_key(token):
            raise NotAdmin(
                "this is a user API key; /admin endpoints need the admin "
                "token (LORALOOP_ADMIN_TOKEN)"
            )
        raise InvalidAdminToken(
            "the admin API is disabled: LORALOOP_ADMIN_TOKEN is empty"
            if not tokens
            else "invalid admin token"
        )

    return check
