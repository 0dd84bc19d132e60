"""Automatic promotion behind a proxy: a configured client-address header means clients come
through a proxy, so a loopback host is no longer "only this machine"."""

from __future__ import annotations

import pytest

from loraloop.compose import auto_promote_policy, serve_config
from loraloop.settings import Settings

PROXY = "LORALOOP_FEEDBACK_CONFIG__CLIENT_ADDRESS_HEADER"


def test_loopback_defaults_still_close_the_loop():
    assert auto_promote_policy(Settings())[0] == "canary"


def test_a_proxy_header_reaches_the_ingress_and_turns_auto_promotion_off(monkeypatch,
                                                                         tmp_path,
                                                                         tiny_model_dir):
    monkeypatch.setenv(PROXY, "x-forwarded-for")
    settings = Settings(data_dir=tmp_path, model=str(tiny_model_dir))
    serve = serve_config(settings, redis_url="redis://127.0.0.1:6379/0")
    assert serve.ingress.feedback.client_address_header == "x-forwarded-for"
    policy, why = auto_promote_policy(settings)
    assert policy == "off" and "behind a proxy (x-forwarded-for)" in why


def test_explicit_promotion_behind_a_proxy_needs_keys_or_the_operators_word(monkeypatch):
    monkeypatch.setenv(PROXY, "x-forwarded-for")
    with pytest.raises(ValueError, match=r"behind a proxy.*TRUST_ANONYMOUS_FEEDBACK=true"):
        auto_promote_policy(Settings(learner_auto_promote="canary"))
    trusted = Settings(learner_auto_promote="canary", learner_trust_anonymous_feedback=True)
    assert auto_promote_policy(trusted)[0] == "canary"
    keyed = Settings(api_keys={"k": {"user": "u", "tenant": "default"}})
    assert auto_promote_policy(keyed) == ("canary",
                                          "gated versions go to a canary automatically "
                                          "(users need API keys)")


def _round_users(settings):
    from loraloop.compose import learner_spec

    config = learner_spec(settings, redis_url="redis://127.0.0.1:6379/0").config
    return config.max_user_share, config.min_round_users


def test_on_loopback_one_person_may_teach_alone_but_an_exposed_api_needs_several(
        monkeypatch, tmp_path, tiny_model_dir):
    base = {"data_dir": tmp_path, "model": str(tiny_model_dir)}
    assert _round_users(Settings(**base)) == (1.0, 1)
    exposed = Settings(**base, http_host="0.0.0.0", api_keys={"k": {"user": "u",
                                                                   "tenant": "default"}})
    assert _round_users(exposed) == (0.5, 2)
    monkeypatch.setenv(PROXY, "x-forwarded-for")
    assert _round_users(Settings(**base, api_keys=exposed.api_keys)) == (0.5, 2)
    monkeypatch.delenv(PROXY)
    # What the operator sets is kept, on loopback too.
    monkeypatch.setenv("LORALOOP_LEARNER_CONFIG__MIN_ROUND_USERS", "3")
    assert _round_users(Settings(**base)) == (1.0, 3)
