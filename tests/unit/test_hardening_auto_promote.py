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
