"""The configuration of handoff to an upstream model (:mod:`serving.compute.upstream`)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from feedback.connections import redact_url


class UpstreamConfig(BaseModel):
    """Where handoffs go, how long they may take, and what they may spend."""

    # The url may carry credentials: errors name it redacted, never as it was given.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    url: str = Field(default="", description="OpenAI-compatible base URL ending in /v1 "
                     "(e.g. https://api.openai.com/v1); empty: no upstream, handoff off.")
    model: str = Field(default="", description="The upstream's model name (required with url).")
    api_key: SecretStr = Field(default=SecretStr(""), description="Sent as a Bearer token; "
                               "empty: no Authorization header.")
    connect_timeout_s: float = Field(default=2.0, gt=0, description="Longest wait to connect.")
    first_token_timeout_s: float = Field(default=10.0, gt=0, description="No content within "
                                         "this long after sending is a timeout.")
    total_timeout_s: float = Field(default=60.0, gt=0, description="Longest a whole answer "
                                   "may take, from sending to the end of the stream.")
    breaker_failures: int = Field(default=3, ge=1, description="Consecutive failures that "
                                  "open the circuit (handoffs are refused without connecting).")
    breaker_cooldown_s: float = Field(default=30.0, gt=0, description="How long the circuit "
                                      "stays open before one trial request may go through.")
    budget_tokens: int = Field(default=200_000, ge=0, description="Upstream tokens (prompt "
                               "and completion) a tenant may spend per window; 0: none.")
    tenant_budget_tokens: dict[str, Annotated[int, Field(ge=0)]] = Field(
        default_factory=dict, description="tenant -> its own budget_tokens.")
    budget_window_s: int = Field(default=86_400, ge=1, description="Length of a budget "
                                 "window in seconds (windows are aligned to the epoch).")
    max_tokens: int = Field(default=1024, ge=1, description="Cap on a handoff's max_tokens.")

    @field_validator("url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value:
            return ""
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname \
                or not parts.path.endswith("/v1") or parts.query or parts.fragment:
            raise ValueError(
                f"upstream url {redact_url(value)!r} is not an OpenAI-compatible base URL: it "
                "must start with http:// or https://, name a host and end with /v1 (e.g. "
                "https://api.openai.com/v1 or http://10.0.0.5:8000/v1); leave it empty to turn "
                "handoff off")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> UpstreamConfig:
        if self.url and not self.model.strip():
            raise ValueError(f"upstream model is empty but url is {redact_url(self.url)!r}: "
                             "name the upstream's model (e.g. gpt-4o-mini)")
        if self.first_token_timeout_s > self.total_timeout_s:
            raise ValueError(f"first_token_timeout_s ({self.first_token_timeout_s:g}) is "
                             f"longer than total_timeout_s ({self.total_timeout_s:g}); the "
                             "first token must be able to arrive within the total")
        return self

    def budget_for(self, tenant: str) -> int:
        """Tokens ``tenant`` may spend per window."""
        return self.tenant_budget_tokens.get(tenant, self.budget_tokens)


