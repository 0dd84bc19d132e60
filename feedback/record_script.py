"""The Lua script behind :meth:`feedback.store.FeedbackStore.record`: one post, one round trip.

Everything a rating must pass and everything it writes happens inside Redis, atomically:
the interaction is loaded and its owner checked, the rate limits applied, the event
``XADD``\\ ed and the "current rating" and idempotency keys written. A post that has
nothing to redact therefore costs one Redis round trip; one with a correction or a
comment costs two (a ``check`` run first, so that a caller who is not the owner, or is
already over a limit, is refused before its text is redacted).

Two facts come from the interaction, which only the script reads:

* **its tenant**, which names the tenant's rate counter (a key, so the caller must name
  it in ``KEYS``). The caller passes the tenant it built that key for (its guess: the
  API key's tenant, or the one its last post found); if the interaction's tenant is
  another, the script writes nothing and answers ``{'tenant_is', tenant}``, and the
  caller runs it again with the right key. A wrong guess costs a round trip, never a
  wrong count.
* **its adapter version**, which the feedback event records. The caller sends the event
  JSON without ``adapter_version`` and the script appends it (``cjson.encode``d), so the
  stored event is the whole :class:`~feedback.events.Feedback`.

An interaction the script cannot read (not JSON, another schema version, a field of the
wrong type) is answered ``{'malformed'}``; the caller parses it itself to raise the
precise error.

KEYS: 1 interaction, 2 user rate counter, 3 tenant rate counter (of ARGV[12]; any key
      when ARGV[12] is ''), 4 feedback stream, 5 current-rating key, 6 idempotency key
      (unused when ARGV[9] is ''), 7 client-address rate counter (unused when ARGV[11]
      is '').
ARGV: 1 user limit, 2 tenant limit, 3 ms to the end of the rate window, 4 feedback id,
      5 hashed user, 6 interaction id, 7 event JSON without adapter_version,
      8 current-rating TTL ms, 9 request fingerprint ('' without an Idempotency-Key),
      10 idempotency TTL ms, 11 address limit ('' when the caller's address is unknown),
      12 the tenant KEYS[3] counts ('' when unknown), 13 the caller's tenant ('' when not
      known: any tenant may own the interaction), 14 'write' or 'check' (check: every
      test, no write, answers {'checked'}), 15 the interaction schema version read.
Returns {'ok', stream id} | {'checked'} | {'gone'} | {'malformed'}
      | {'not_owner', 'user'} | {'not_owner', 'tenant', the interaction's tenant}
      | {'tenant_is', the interaction's tenant}
      | {'user' | 'tenant' | 'address', ms until the window ends}
      | {'repeat', '<feedback id> <fingerprint>'} (the idempotency key was used before).
"""

from __future__ import annotations

import hashlib
import time
from typing import Protocol

from feedback.events import INTERACTION_SCHEMA_VERSION, Feedback, new_interaction_id
from feedback.keys import RedisKeys

RECORD_FEEDBACK_LUA = """
local raw = redis.call('GET', KEYS[1])
if not raw then return {'gone'} end
local parsed, interaction = pcall(cjson.decode, raw)
if not parsed or type(interaction) ~= 'table'
    or interaction.schema_version ~= tonumber(ARGV[15])
    or type(interaction.user) ~= 'string' or type(interaction.tenant) ~= 'string'
    or type(interaction.adapter_version) ~= 'string' then
  return {'malformed'}
end
if interaction.user ~= ARGV[5] then return {'not_owner', 'user'} end
if ARGV[13] ~= '' and interaction.tenant ~= ARGV[13] then
  return {'not_owner', 'tenant', interaction.tenant}
end
if interaction.tenant ~= ARGV[12] then return {'tenant_is', interaction.tenant} end
if ARGV[9] ~= '' then
  local earlier = redis.call('GET', KEYS[6])
  if earlier then return {'repeat', earlier} end
end
if tonumber(redis.call('GET', KEYS[2]) or '0') >= tonumber(ARGV[1]) then
  return {'user', redis.call('PTTL', KEYS[2])}
end
if tonumber(redis.call('GET', KEYS[3]) or '0') >= tonumber(ARGV[2]) then
  return {'tenant', redis.call('PTTL', KEYS[3])}
end
local last = 3
if ARGV[11] ~= '' then
  if tonumber(redis.call('GET', KEYS[7]) or '0') >= tonumber(ARGV[11]) then
    return {'address', redis.call('PTTL', KEYS[7])}
  end
  last = 4
end
if ARGV[14] == 'check' then return {'checked'} end
for i = 2, last do
  local key = KEYS[i == 4 and 7 or i]
  if redis.call('INCR', key) == 1 then redis.call('PEXPIRE', key, ARGV[3]) end
end
local event = string.sub(ARGV[7], 1, -2) .. ',"adapter_version":'
              .. cjson.encode(interaction.adapter_version) .. '}'
local id = redis.call('XADD', KEYS[4], '*', 'id', ARGV[4], 'user', ARGV[5],
                      'interaction_id', ARGV[6], 'event', event)
redis.call('SET', KEYS[5], event, 'PX', ARGV[8])
if ARGV[9] ~= '' then redis.call('SET', KEYS[6], ARGV[4] .. ' ' .. ARGV[9], 'PX', ARGV[10]) end
return {'ok', id}
"""


class Limits(Protocol):
    """What the script is told of the store's configuration (``FeedbackConfig`` has it)."""

    rate_window_s: int
    user_limit: int
    tenant_limit: int
    address_limit: int
    current_ttl_s: int
    idempotency_ttl_s: int


class RecordCall:
    """One call of :meth:`~feedback.store.FeedbackStore.record` as the record script sees it.

    ``tenant`` is the tenant whose rate counter the script is given: the caller's
    (API key) when known, else a guess the script corrects (see above).
    ``fields`` are the event's (all but tenant and adapter_version), set once redacted.
    """

    def __init__(self, keys: RedisKeys, interaction_id: str, user_hash: str,
                 caller_tenant: str | None, address: str | None) -> None:
        self.keys, self.interaction_id, self.user_hash = keys, interaction_id, user_hash
        self.ikey = keys.interaction(interaction_id)  # ValueError: not an interaction id
        self.current_key = keys.feedback_current(interaction_id, user_hash)
        self.caller_tenant, self.tenant = caller_tenant, caller_tenant
        self.address = address
        self.feedback_id = new_interaction_id()
        self.fields: dict = {}
        self.request_key, self.fingerprint = self.current_key, ""  # no Idempotency-Key

    def script_call(self, mode: str, cfg: Limits,
                    hint: str | None) -> tuple[list[str], list]:
        """KEYS and ARGV of the record script in ``mode`` (``check`` or ``write``)."""
        tenant = self.tenant = self.tenant or hint
        window_ms = cfg.rate_window_s * 1000
        now_ms = int(time.time() * 1000)
        window = now_ms // window_ms
        rate = self.keys.rate_limit
        event = ""
        if mode == "write" and tenant is not None:  # else the script writes nothing
            event = Feedback(id=self.feedback_id, tenant=tenant, **self.fields).model_dump_json(
                exclude={"adapter_version"})  # the script adds the interaction's
        keys = [self.ikey, rate(RedisKeys.USER_FEEDBACK, self.user_hash, window),
                rate(RedisKeys.TENANT_FEEDBACK, tenant, window) if tenant else self.ikey,
                self.keys.feedback_stream, self.current_key, self.request_key,
                rate(RedisKeys.ADDRESS_FEEDBACK, digest(self.address or ""), window)]
        args = [cfg.user_limit, cfg.tenant_limit, (window + 1) * window_ms - now_ms,
                self.feedback_id, self.user_hash, self.interaction_id, event,
                cfg.current_ttl_s * 1000, self.fingerprint if mode == "write" else "",
                cfg.idempotency_ttl_s * 1000, cfg.address_limit if self.address else "",
                tenant or "", self.caller_tenant or "", mode, INTERACTION_SCHEMA_VERSION]
        return keys, args


def digest(data: str) -> str:
    """A short sha256 of ``data``: the key part of an address or an Idempotency-Key."""
    return hashlib.sha256(data.encode()).hexdigest()[:32]
