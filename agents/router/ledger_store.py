"""The router's per-user state in Redis, exact across redelivery, crashes, rebalances and
several workers deciding the same user at once.

- `router:ledger:{user_id}`: a hash {v: version, ledger: UserLedger}; expires 35 days after
  its last write (the ledger holds only today's and this month's counters).
- `router:request:{request_id}`: the decision record, a hash {origin, topic, message,
  response, settled}: where the decision went and what was sent (a re-read of the same record
  sends it again), and the response once settled. `...:waiting` is the set of the duplicates'
  origins (topic/partition/offset) that wait for the response. Both expire after the
  idempotency window.

Writes are optimistic: a batch is decided from a read of the ledgers and records, then
committed by one script that, user by user, checks the ledger's version is still the one read
(and that the records it creates are absent, the ones it settles unsettled) and only then
writes. A user whose check fails writes nothing and is read and decided again by the caller.
One server (or one primary): the script spans users, so it cannot run across cluster slots.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis

from agents.router.policy import UserLedger

LEDGER_TTL_S = 35 * 86_400

# ARGV[1]: the plan, JSON {request_ttl, ledger_ttl, users: [{key, v, ledger?, ops: [...]}]}.
# KEYS: every key the plan names (declared; the plan says what to do with each).
# Returns JSON {conflicts: [user index], answers: {ref: response}, waiting: {ref: count}}.
COMMIT = """
local plan = cjson.decode(ARGV[1])
local conflicts, answers, waiting = {}, {}, {}
for i, user in ipairs(plan.users) do
  local version = tonumber(redis.call('HGET', user.key, 'v') or '0')
  local ok = version == user.v
  if ok then
    for _, op in ipairs(user.ops) do
      local exists = redis.call('EXISTS', op.key) == 1
      if op.op == 'create' then ok = not exists
      elseif op.op == 'wait' then ok = exists
      else ok = not exists or redis.call('HGET', op.key, 'settled') ~= '1' end
      if not ok then break end
    end
  end
  if not ok then
    conflicts[#conflicts + 1] = i
  else
    if user.ledger then
      redis.call('HSET', user.key, 'v', version + 1, 'ledger', user.ledger)
      redis.call('EXPIRE', user.key, plan.ledger_ttl)
    end
    for _, op in ipairs(user.ops) do
      if op.op == 'create' then
        redis.call('HSET', op.key, 'origin', op.origin, 'topic', op.topic,
          'message', op.message, 'settled', op.settled)
        if op.response then redis.call('HSET', op.key, 'response', op.response) end
        redis.call('EXPIRE', op.key, plan.request_ttl)
        if #op.waiting > 0 then
          redis.call('SADD', op.wkey, unpack(op.waiting))
          redis.call('EXPIRE', op.wkey, plan.request_ttl)
        end
      elseif op.op == 'wait' then
        local response = redis.call('HGET', op.key, 'response')
        if response then
          answers[op.ref] = response
        else
          redis.call('SADD', op.wkey, op.origin)
          redis.call('EXPIRE', op.wkey, plan.request_ttl)
        end
      else
        if redis.call('EXISTS', op.key) == 0 then
          redis.call('HSET', op.key, 'origin', '', 'topic', '', 'message', '')
          redis.call('EXPIRE', op.key, plan.request_ttl)
        end
        redis.call('HSET', op.key, 'response', op.response, 'settled', '1')
        waiting[op.ref] = redis.call('SCARD', op.wkey)
      end
    end
  end
end
return cjson.encode({conflicts = conflicts, answers = answers, waiting = waiting})
"""


# KEYS: the users' ledger keys, then each request's record and waiting keys. ARGV[1]: how many
# users. One JSON reply: {ledgers: [[v, ledger]], records: [[origin, topic, message,
# response, settled, waiting]]} (false for what is absent), parsed in one go, not per command.
READ = """
local users = tonumber(ARGV[1])
local ledgers, records = {}, {}
for i = 1, users do
  ledgers[i] = redis.call('HMGET', KEYS[i], 'v', 'ledger')
end
for i = users + 1, #KEYS, 2 do
  local record = redis.call('HMGET', KEYS[i], 'origin', 'topic', 'message', 'response', 'settled')
  record[6] = redis.call('SCARD', KEYS[i + 1])
  records[#records + 1] = record
end
return cjson.encode({ledgers = ledgers, records = records})
"""


def ledger_key(user_id: str) -> str:
    return f"router:ledger:{user_id}"


def request_key(request_id: str) -> str:
    return f"router:request:{request_id}"


def waiting_key(request_id: str) -> str:
    return f"router:request:{request_id}:waiting"


@dataclass(frozen=True)
class StoredLedger:
    ledger: UserLedger
    version: int = 0


@dataclass(frozen=True)
class RequestRecord:
    """What decide did with a request id: `message` sent to `topic` when the record was made
    by the record at `origin`; `response` once it is known (a rejection at once)."""

    origin: str
    topic: str
    message: bytes
    response: bytes | None = None
    settled: bool = False
    waiting: int = 0


@dataclass(frozen=True)
class Create:
    """Record a new decision (the record must be absent); `waiting`: duplicates of it in the
    same batch."""

    request_id: str
    record: RequestRecord
    waiting: tuple[str, ...] = ()


@dataclass(frozen=True)
class Wait:
    """A duplicate from `origin`: answered with the response if there is one (under `ref`),
    else counted as waiting for it (once per origin)."""

    ref: str
    request_id: str
    origin: str


@dataclass(frozen=True)
class Settle:
    """Store the response, mark the record settled (it must not be yet); the count of
    duplicates waiting comes back under `ref`."""

    ref: str
    request_id: str
    response: bytes


Op = Create | Wait | Settle


@dataclass
class UserCommit:
    """One user's part of a commit: written only if the ledger is still at `version`."""

    user_id: str
    version: int
    ledger: UserLedger | None  # None: unchanged
    ops: list[Op] = field(default_factory=list)


@dataclass(frozen=True)
class Committed:
    conflicts: frozenset[str]  # users whose state moved: nothing of theirs was written
    answers: dict[str, bytes]  # Wait.ref -> the response it found
    waiting: dict[str, int]  # Settle.ref -> duplicates that waited


@dataclass(frozen=True)
class Snapshot:
    ledgers: dict[str, StoredLedger]
    records: dict[str, RequestRecord | None]


def _raw(text: str | bool | None) -> bytes | None:
    return text.encode() if isinstance(text, str) and text else None


def _op(op: Op) -> dict[str, Any]:
    if isinstance(op, Create):
        record = op.record
        plan: dict[str, Any] = {
            "op": "create",
            "key": request_key(op.request_id),
            "wkey": waiting_key(op.request_id),
            "origin": record.origin,
            "topic": record.topic,
            "message": record.message.decode(),
            "settled": "1" if record.settled else "0",
            "waiting": list(op.waiting),
        }
        if record.response is not None:
            plan["response"] = record.response.decode()
        return plan
    if isinstance(op, Wait):
        return {
            "op": "wait",
            "ref": op.ref,
            "key": request_key(op.request_id),
            "wkey": waiting_key(op.request_id),
            "origin": op.origin,
        }
    return {
        "op": "settle",
        "ref": op.ref,
        "key": request_key(op.request_id),
        "wkey": waiting_key(op.request_id),
        "response": op.response.decode(),
    }


class RouterStore:
    def __init__(
        self, client: aioredis.Redis, request_ttl_s: int, ledger_ttl_s: int = LEDGER_TTL_S
    ) -> None:
        self.client = client
        self.request_ttl_s = max(1, int(request_ttl_s))
        self.ledger_ttl_s = ledger_ttl_s
        self._commit = client.register_script(COMMIT)
        self._read = client.register_script(READ)

    async def read(self, users: Iterable[str], request_ids: Iterable[str]) -> Snapshot:
        """The users' ledgers and the requests' records, in one round trip."""
        users, request_ids = list(dict.fromkeys(users)), list(dict.fromkeys(request_ids))
        keys = [ledger_key(user) for user in users]
        for request_id in request_ids:
            keys.extend((request_key(request_id), waiting_key(request_id)))
        reply = orjson.loads(await self._read(keys=keys, args=[len(users)]))
        # Lua's cjson encodes an empty table as {}.
        ledgers = {
            user: StoredLedger(UserLedger.loads(_raw(raw)), int(version or 0))
            for user, (version, raw) in zip(users, reply["ledgers"] or [], strict=True)
        }
        records: dict[str, RequestRecord | None] = {
            request_id: None
            if not isinstance(origin, str)  # false: no record (one made by settle has "")
            else RequestRecord(
                origin, topic or "", _raw(message) or b"", _raw(response), settled == "1", waiting
            )
            for request_id, (origin, topic, message, response, settled, waiting) in zip(
                request_ids, reply["records"] or [], strict=True
            )
        }
        return Snapshot(ledgers, records)

    async def commit(self, commits: Iterable[UserCommit]) -> Committed:
        commits = list(commits)
        if not commits:
            return Committed(frozenset(), {}, {})
        users = []
        keys: list[str] = []
        for commit in commits:
            user: dict[str, Any] = {
                "key": ledger_key(commit.user_id),
                "v": commit.version,
                "ops": [_op(op) for op in commit.ops],
            }
            if commit.ledger is not None:
                user["ledger"] = commit.ledger.dumps().decode()
            users.append(user)
            keys.append(user["key"])
            for op in user["ops"]:
                keys.extend((op["key"], op["wkey"]))
        plan = {
            "request_ttl": self.request_ttl_s,
            "ledger_ttl": self.ledger_ttl_s,
            "users": users,
        }
        result = orjson.loads(await self._commit(keys=keys, args=[orjson.dumps(plan)]))
        # Lua's cjson encodes an empty table as {}: a list or a mapping, either may be empty.
        conflicts = frozenset(commits[i - 1].user_id for i in (result["conflicts"] or []))
        answers = {ref: v.encode() for ref, v in dict(result["answers"] or {}).items()}
        waiting = {ref: int(n) for ref, n in dict(result["waiting"] or {}).items()}
        return Committed(conflicts, answers, waiting)
