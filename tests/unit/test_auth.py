"""Identifying the caller from API keys (or the `user` field when auth is off), and the
admin token. Statuses come from the error table (``serving.http_errors``)."""

from __future__ import annotations

import pytest

from serving.auth import ApiKey, AuthError, admin_check, check_tenant, identify
from serving.http_errors import rule_for

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
    assert rule_for(refused.value).status == 401


def test_a_tenant_key_cannot_use_another_tenant():
    alice = identify(KEYS, "Bearer sk-alice", None)
    check_tenant(alice, "acme")
    check_tenant(alice, "base")
    with pytest.raises(AuthError, match="tenant 'acme', not 'beta'") as refused:
        check_tenant(alice, "beta")
    assert rule_for(refused.value).status == 403
    check_tenant(identify(KEYS, "Bearer sk-ops", None), "beta")  # no tenant: any


def test_the_admin_token_is_not_a_user_key():
    check = admin_check("admin-secret", {"sk-alice"})
    check("Bearer admin-secret")
    refusals = {}
    for header in (None, "Basic admin-secret", "Bearer wrong", "Bearer sk-alice"):
        with pytest.raises(AuthError) as refused:
            check(header)
        refusals[header] = (rule_for(refused.value).status, rule_for(refused.value).code)
    assert refusals == {
        None: (401, "missing_admin_token"),
        "Basic admin-secret": (401, "missing_admin_token"),
        "Bearer wrong": (401, "invalid_admin_token"),
        "Bearer sk-alice": (403, "not_admin"),
    }
    with pytest.raises(AuthError, match="LORALOOP_ADMIN_TOKEN is empty"):
        admin_check("", {"sk-alice"})("Bearer anything")
