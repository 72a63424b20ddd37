"""How cached values, leases, tag sets and the L1 broadcast look in Redis. The cache client
writes this layout and the invalidation sink removes from it, so both import it from here.

- A cached value lives in a hash at the app's own key: field `v` holds the encoded value,
  field `l` the lease token of a loader that is filling it. Removing the key (UNLINK) removes
  both, which is what makes an invalidation also cancel any fill in flight.
- A tag is a set at `cache:tag:<tag>` holding the keys filled under that tag.
- After Redis, the pipeline publishes a `Broadcast` on `L1_CHANNEL`; every client drops the
  matching entries of its in-process cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

VALUE_FIELD = "v"
LEASE_FIELD = "l"
TAG_SET_PREFIX = "cache:tag:"
L1_CHANNEL = "cache:l1-invalidations"


def tag_set_key(tag: str) -> str:
    return f"{TAG_SET_PREFIX}{tag}"


def is_tag_set_key(key: str) -> bool:
    """Tag sets are bookkeeping: a pattern or key invalidation must never remove one."""
    return key.startswith(TAG_SET_PREFIX)


class BroadcastError(ValueError):
    """A message on the L1 channel is not a broadcast this client understands."""


@dataclass(frozen=True)
class Broadcast:
    """What every in-process cache drops, and the ids of the invalidations it carries out
    (so app code can wait until its own write's invalidation reached its process)."""

    keys: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    ids: tuple[str, ...] = field(default=())

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "keys": list(self.keys),
                "patterns": list(self.patterns),
                "tags": list(self.tags),
                "ids": list(self.ids),
            }
        )

    @classmethod
    def decode(cls, raw: bytes) -> Broadcast:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise BroadcastError(f"L1 broadcast is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise BroadcastError("L1 broadcast is not a JSON object")
        parts: dict[str, tuple[str, ...]] = {}
        for name in ("keys", "patterns", "tags", "ids"):
            value = data.get(name, [])
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise BroadcastError(f"L1 broadcast field {name!r} is not a list of strings")
            parts[name] = tuple(value)
        return cls(**parts)
