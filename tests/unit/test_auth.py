"""Identifying the caller from API keys (or the `user` field when auth is off)."""

from __future__ import annotations

import pytest

from serving.auth import ApiKey, AuthError, check_tenant, identify

KEYS = {"sk-alice": ApiKey(user="alice", tenant="acme"), "sk-ops": ApiKey(user="ops")}


def test_auth_off_trusts_the_user_field():
    caller = identify({}, None, "bob")
    assert (caller.user, caller.authenticated) == ("bob", False)


def test_a_key_names_the_user_and_overrides_the_body():
    caller = identify(KEYS, "Bearer sk-alice", "mallory")
    assert (caller.user, caller.tenant, caller.authenticated) == ("alice", "acme", True)


@pytest.mark.parametrize("header", [None, "", "Bearer", "Basic sk-alice", "Bearer sk-nope"])
def test_missing_or_wrong_keys_get_401(header):
    with pytest.raises(AuthError) as refused:
        identify(KEYS, header, "alice")
    assert refused.value.status == 401


def test_a_tenant_key_cannot_use_another_tenant():
    alice = identify(KEYS, "Bearer sk-alice", None)
    check_tenant(alice, "acme")
    check_tenant(alice, "base")
    with pytest.raises(AuthError, match="tenant 'acme', not 'beta'") as refused:
        check_tenant(alice, "beta")
    assert refused.value.status == 403
    check_tenant(identify(KEYS, "Bearer sk-ops", None), "beta")  # no tenant: any
