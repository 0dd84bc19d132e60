"""UpstreamConfig refuses what cannot work, naming the value (never a URL's password) and
what is allowed; UpstreamUnavailable crosses the Ray boundary with its reason and text."""

from __future__ import annotations

import pickle

import pytest
from pydantic import ValidationError

from serving.compute.upstream import Upstream, UpstreamConfig, UpstreamUnavailable


def test_defaults_are_off_and_bounded():
    config = UpstreamConfig()
    assert (config.url, config.connect_timeout_s, config.first_token_timeout_s,
            config.total_timeout_s) == ("", 2.0, 10.0, 60.0)
    assert (config.breaker_failures, config.breaker_cooldown_s) == (3, 30.0)
    assert (config.budget_tokens, config.budget_window_s) == (200_000, 86_400)
    with_own = UpstreamConfig(tenant_budget_tokens={"acme": 5})
    assert (with_own.budget_for("acme"), with_own.budget_for("beta")) == (5, 200_000)
    assert UpstreamConfig(url="https://api.example.com/v1/", model="m").url == \
        "https://api.example.com/v1"


@pytest.mark.parametrize("url", ["ftp://host/v1", "http://host:8000", "host/v1",
                                 "http:///v1", "http://host/v1?x=1"])
def test_a_url_that_is_not_an_openai_base_url_is_refused_by_name(url):
    with pytest.raises(ValidationError) as raised:
        UpstreamConfig(url=url, model="m")
    message = str(raised.value)
    assert repr(url) in message and "end with /v1" in message and "http://" in message


def test_errors_never_show_a_urls_password():
    with pytest.raises(ValidationError) as raised:
        UpstreamConfig(url="http://user:s3cret@host/api", model="m")
    assert "s3cret" not in str(raised.value) and "user:***@host" in str(raised.value)
    with pytest.raises(ValidationError) as raised:
        UpstreamConfig(url="http://user:s3cret@host/v1")
    assert "s3cret" not in str(raised.value) and "model is empty" in str(raised.value)


def test_inconsistent_limits_are_refused():
    with pytest.raises(ValidationError, match=r"first_token_timeout_s \(90\) is longer than "
                                              r"total_timeout_s \(60\)"):
        UpstreamConfig(first_token_timeout_s=90)
    for field, bad in {"breaker_failures": 0, "budget_tokens": -1, "connect_timeout_s": 0,
                       "tenant_budget_tokens": {"acme": -1}, "colour": "red"}.items():
        with pytest.raises(ValidationError, match=field):
            UpstreamConfig(**{field: bad})


def test_a_tenant_that_cannot_name_a_budget_key_is_refused():
    upstream = Upstream(UpstreamConfig())
    for tenant in ("", "a:b", "a b", "{a}"):
        with pytest.raises(ValueError, match="cannot name a budget"):
            upstream.stream(tenant, [], max_tokens=1, temperature=0)


def test_upstream_unavailable_pickles_with_its_reason_and_partial_text():
    error = UpstreamUnavailable("timeout", "no content in time", partial="Par")
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), copy.reason, copy.partial, str(copy)) == (
        UpstreamUnavailable, "timeout", "Par", "upstream unavailable (timeout): no content in "
        "time")
