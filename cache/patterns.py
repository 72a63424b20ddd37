"""Redis glob patterns (`KEYS`/`SCAN MATCH` syntax) matched in Python, so an in-process cache
drops exactly what a pattern invalidation removed from Redis.

Redis syntax: `*` any run, `?` one byte, `[abc]` `[a-z]` `[^a]` a class, `\\x` the byte x.
Unlike `fnmatch`, negation is `^` and a backslash escapes; and Redis matches bytes, so a `?`
never matches a two-byte UTF-8 character. Matching here is on the UTF-8 bytes too.
"""

from __future__ import annotations

import re
from functools import lru_cache


def _byte(pattern: bytes, i: int) -> bytes:
    return pattern[i : i + 1]


def _class(pattern: bytes, start: int) -> tuple[bytes, int]:
    """Translate the class opening at `start` (just after `[`); return regex and next index.
    An unterminated class runs to the end of the pattern, as in Redis."""
    i = start
    negate = _byte(pattern, i) == b"^"
    if negate:
        i += 1
    items: list[bytes] = []
    while i < len(pattern) and _byte(pattern, i) != b"]":
        char = _byte(pattern, i)
        if char == b"\\" and i + 1 < len(pattern):
            items.append(re.escape(_byte(pattern, i + 1)))
            i += 2
            continue
        if i + 2 < len(pattern) and _byte(pattern, i + 1) == b"-" and _byte(pattern, i + 2) != b"]":
            low, high = sorted((char, _byte(pattern, i + 2)))
            items.append(re.escape(low) + b"-" + re.escape(high))
            i += 3
            continue
        items.append(re.escape(char))
        i += 1
    body = b"".join(items)
    if not body:
        # `[]` matches nothing and `[^]` any single byte.
        return (b"." if negate else b"(?!)"), i + 1
    return b"[" + (b"^" if negate else b"") + body + b"]", i + 1


@lru_cache(maxsize=1024)
def compile_glob(pattern: str) -> re.Pattern[bytes]:
    """A regex over a key's UTF-8 bytes; use `.fullmatch(key.encode())`."""
    raw = pattern.encode()
    parts: list[bytes] = []
    i = 0
    while i < len(raw):
        char = _byte(raw, i)
        if char == b"*":
            parts.append(b".*")
            i += 1
        elif char == b"?":
            parts.append(b".")
            i += 1
        elif char == b"[":
            regex, i = _class(raw, i + 1)
            parts.append(regex)
        elif char == b"\\" and i + 1 < len(raw):
            parts.append(re.escape(_byte(raw, i + 1)))
            i += 2
        else:
            parts.append(re.escape(char))
            i += 1
    return re.compile(b"".join(parts), re.DOTALL)


def glob_matches(pattern: str, key: str) -> bool:
    return compile_glob(pattern).fullmatch(key.encode()) is not None
