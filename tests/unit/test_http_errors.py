"""The one table from errors to HTTP: rules, bodies, headers, and the handler every app installs."""

from __future__ import annotations

import pickle

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from feedback.errors import (
    FeedbackTooLarge,
    IdempotencyKeyReused,
    InvalidFeedback,
    RateLimited,
)
from serving.auth import MissingAdminToken, WrongTenant
from serving.errors import (
    AdapterNotLoaded,
    AdapterValidationError,
    EngineOverloaded,
    EngineUnhealthy,
    PromptTooLong,
    ReplicasBusy,
    ServingError,
    UnknownModel,
)
from serving.http_errors import (
    RULES,
    BodyTooLarge,
    InvalidRequest,
    error_response,
    install_error_handlers,
    parse_body,
    rule_for,
)
from storage.errors import ArtifactCorrupt, Conflict, IllegalTransition, InvalidArgument


def test_the_most_specific_class_wins():
    assert rule_for(IdempotencyKeyReused("reused")).status == 422  # an InvalidFeedback too
    assert rule_for(InvalidFeedback("meh")).status == 400
    assert rule_for(ArtifactCorrupt("bad")).code == "artifact_error"  # via ArtifactError
    assert rule_for(EngineUnhealthy("dead")).code == "engine_error"  # via ServingError
    assert rule_for(RuntimeError("bug")) is None


def test_bodies_name_the_parameter_from_the_error_or_the_rule():
    body = error_response(FeedbackTooLarge("correction", 9000, 8000, "max_correction_chars")).body
    assert b'"param":"correction"' in body
    error = error_response(InvalidArgument("fraction 2", param="fraction"))
    assert error.status_code == 400 and b'"param":"fraction"' in error.body
    moved = IllegalTransition(version_id="v", current="live", requested="gated", allowed=[])
    assert b'"param":"status"' in error_response(moved).body
    assert b'"param":"model"' in error_response(UnknownModel("x", ["base"])).body


def test_retry_after_comes_from_the_error_else_the_default():
    limited = error_response(RateLimited("user", 60, 60, 7))
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "7")
    overloaded = error_response(EngineOverloaded("queue is full"), retry_after_s=3)
    assert (overloaded.status_code, overloaded.headers["retry-after"]) == (429, "3")
    assert "retry-after" not in error_response(Conflict("lost")).headers
    assert error_response(MissingAdminToken("no token")).headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "error",
    [
        PromptTooLong("too long"),
        AdapterNotLoaded("not here"),
        EngineOverloaded("full"),
        ReplicasBusy("busy"),
        AdapterValidationError("v1", "/tmp/v1", ["rank 64 > 16", "wrong base model"]),
        UnknownModel("nobody", ["base", "acme"]),
    ],
)
def test_serving_errors_cross_a_process_boundary_as_themselves(error):
    """The replica yields these to the ingress through Ray, which pickles them."""
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is type(error) and str(back) == str(error)
    assert back.__dict__ == error.__dict__
    assert rule_for(back) == rule_for(error)


def test_every_rule_is_for_an_exception_class():
    assert all(isinstance(cls, type) and issubclass(cls, BaseException) for cls in RULES)
    assert ServingError in RULES  # engine errors without a rule of their own are 500s


class _Body(BaseModel):
    n: int


def _raising(error: Exception):
    def route():
        raise error

    return route


def _app() -> TestClient:
    app = FastAPI()
    seen: list[tuple[int, str]] = []
    install_error_handlers(app, retry_after_s=2, on_error=lambda *e: seen.append(e))
    raised = {
        "/conflict": Conflict("another change won"),
        "/tenant": WrongTenant("this API key is for tenant 'acme', not 'beta'"),
        "/busy": ReplicasBusy("all LLM replicas are busy"),
        "/bug": RuntimeError("secret detail"),
    }
    for path, error in raised.items():
        app.add_api_route(path, _raising(error))

    @app.post("/body")
    def body(payload: _Body):
        return payload

    client = TestClient(app, raise_server_exceptions=False)
    client.seen = seen
    return client


def test_one_handler_answers_every_route():
    client = _app()
    r = client.get("/conflict")
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    r = client.get("/tenant")
    assert (r.status_code, r.json()["error"]["type"]) == (403, "permission_error")
    r = client.get("/busy")
    assert (r.status_code, r.headers["retry-after"]) == (503, "2")
    r = client.post("/body", json={"n": "many"})
    error = r.json()["error"]
    assert (r.status_code, error["code"], error["param"]) == (422, "invalid_request", "n")
    assert '"many"' in error["message"]
    r = client.get("/bug")
    assert r.status_code == 500 and "secret" not in r.text
    assert r.json()["error"]["message"].startswith("internal error ")
    assert client.seen == [(409, "conflict_error"), (403, "permission_error"),
                           (503, "server_error"), (422, "invalid_request_error"),
                           (500, "server_error")]


def test_parse_body_names_every_problem():
    with pytest.raises(InvalidRequest, match="not valid JSON"):
        parse_body(b"{nope", _Body)
    with pytest.raises(InvalidRequest, match="must be a JSON object"):
        parse_body(b"[1]", _Body)
    with pytest.raises(InvalidRequest, match=r"n: .* \(got \"x\"\)") as refused:
        parse_body(b'{"n": "x"}', _Body)
    assert refused.value.param == "n"
    assert rule_for(BodyTooLarge("big")).status == 413
