"""Who is calling: API keys mapped to users and tenants, or the `user` field when auth is off."""

from __future__ import annotations

import hmac
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
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def identify(keys: dict[str, ApiKey], authorization: str | None, body_user: str | None) -> Caller:
    """The caller of a request. With no keys configured, auth is off and ``user`` is trusted."""
    if not keys:
        return Caller(body_user, None, authenticated=False)
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise AuthError(401, "missing API key: send `Authorization: Bearer <key>`")
    for key, who in keys.items():  # constant-time compare for each configured key
        if hmac.compare_digest(key.encode(), token.strip().encode()):
            return Caller(who.user, who.tenant, authenticated=True)
    raise AuthError(401, "invalid API key")


def check_tenant(caller: Caller, tenant: str) -> None:
    if caller.tenant is not None and tenant not in (caller.tenant, "base"):
        raise AuthError(403, f"this API key is for tenant {caller.tenant!r}, not {tenant!r}")
