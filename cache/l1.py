"""The in-process cache: bounded LRU with expiry and a tag index, so a broadcast can drop by
key, pattern or tag. No I/O and no clock of its own: callers pass `now` (monotonic seconds)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cache.patterns import compile_glob


@dataclass
class _Entry:
    value: Any
    expires_at: float
    tags: tuple[str, ...]


class L1Cache:
    def __init__(self, max_entries: int = 10_000) -> None:
        if max_entries < 1:
            raise ValueError("an L1 cache needs room for at least one entry")
        self.max_entries = max_entries
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._by_tag: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def get(self, key: str, now: float) -> tuple[bool, Any]:
        """(True, value) for a live entry; (False, None) for a miss or an expired entry."""
        entry = self._entries.get(key)
        if entry is None:
            return False, None
        if entry.expires_at <= now:
            self._remove(key)
            return False, None
        self._entries.move_to_end(key)
        return True, entry.value

    def put(self, key: str, value: Any, expires_at: float, tags: Iterable[str] = ()) -> None:
        if key in self._entries:
            self._remove(key)
        entry = _Entry(value, expires_at, tuple(dict.fromkeys(tags)))
        self._entries[key] = entry
        for tag in entry.tags:
            self._by_tag.setdefault(tag, set()).add(key)
        while len(self._entries) > self.max_entries:
            oldest = next(iter(self._entries))
            self._remove(oldest)

    def drop(
        self,
        keys: Iterable[str] = (),
        patterns: Iterable[str] = (),
        tags: Iterable[str] = (),
    ) -> int:
        """Remove every entry named by key, matching a pattern, or carrying a tag."""
        doomed = {key for key in keys if key in self._entries}
        for tag in tags:
            doomed |= self._by_tag.get(tag, set())
        compiled = [compile_glob(p) for p in patterns]
        if compiled:
            doomed |= {
                key for key in self._entries if any(c.fullmatch(key.encode()) for c in compiled)
            }
        for key in doomed:
            self._remove(key)
        return len(doomed)

    def clear(self) -> int:
        count = len(self._entries)
        self._entries.clear()
        self._by_tag.clear()
        return count

    def _remove(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        for tag in entry.tags:
            members = self._by_tag.get(tag)
            if members is not None:
                members.discard(key)
                if not members:
                    del self._by_tag[tag]
