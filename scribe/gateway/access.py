"""Who may publish what: bearer tokens, each named and scoped to event families (topics).

Entries come from `SCRIBE_GATEWAY_TOKENS` (comma-separated) and/or `SCRIBE_GATEWAY_TOKENS_FILE`
(one per line, `#` comments), each `name:token:family|family` or `name:token:*`. The name is
what logs, metrics and the rate limiter see; a token is kept only as its SHA-256 digest and is
never logged or shown in an error.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass

from runtime.settings import SettingsError
from topics.catalog import INPUT_TOPICS

ALL_FAMILIES = "*"
MIN_TOKEN_LENGTH = 16
PUBLISHABLE = frozenset(t.name for t in INPUT_TOPICS)
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


class TokenConfigError(SettingsError):
    """A token entry is malformed; the message names the entry (never the token)."""


@dataclass(frozen=True)
class Client:
    """An authenticated producer: its name and the topics it may publish to."""

    name: str
    families: frozenset[str]

    def may_publish(self, topic: str) -> bool:
        return topic in self.families


@dataclass(frozen=True)
class _Entry:
    client: Client
    digest: bytes


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def token_entries(
    inline: str, file_text: str, setting: str, file_name: str
) -> list[tuple[str, str]]:
    """Each token entry's text and where it came from, for errors that name it: comma-separated
    in the setting, then one per line of the file (blank lines and `#` comments skipped)."""
    entries = [
        (part.strip(), f"{setting} entry {number}")
        for number, part in enumerate(inline.split(","), start=1)
        if part.strip()
    ]
    for number, line in enumerate(file_text.splitlines(), start=1):
        text = line.strip()
        if text and not text.startswith("#"):
            entries.append((text, f"{file_name}:{number}"))
    return entries


def _parse_entry(text: str, where: str) -> _Entry:
    name, sep, rest = text.partition(":")
    token, sep2, families_text = rest.rpartition(":")
    if not (sep and sep2 and name and token and families_text):
        raise TokenConfigError(f"{where}: expected name:token:family|family (or name:token:*)")
    name = name.strip()
    if not set(name) <= _NAME_CHARS:
        raise TokenConfigError(f"{where}: client name {name!r} may use only letters, digits, ._-")
    if len(token) < MIN_TOKEN_LENGTH or token != token.strip():
        raise TokenConfigError(
            f"{where} ({name}): the token must be at least {MIN_TOKEN_LENGTH} characters without "
            "surrounding spaces; make one with: python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))'"
        )
    requested = {part.strip() for part in families_text.split("|") if part.strip()}
    if requested == {ALL_FAMILIES}:
        families = PUBLISHABLE
    else:
        unknown = requested - PUBLISHABLE
        if unknown or not requested:
            raise TokenConfigError(
                f"{where} ({name}): unknown families {sorted(unknown)}; the gateway accepts "
                f"{', '.join(sorted(PUBLISHABLE))} or *"
            )
        families = frozenset(requested)
    return _Entry(Client(name, families), _digest(token))


class TokenBook:
    """The configured clients. `authenticate` compares digests in constant time, against
    every entry, so the time taken says nothing about which token came close."""

    def __init__(self, entries: Iterable[_Entry]) -> None:
        self._entries = tuple(entries)
        names = [e.client.name for e in self._entries]
        if len(set(names)) != len(names):
            duplicated = sorted({n for n in names if names.count(n) > 1})
            raise TokenConfigError(f"client names must be unique; repeated: {duplicated}")
        if len({e.digest for e in self._entries}) != len(self._entries):
            raise TokenConfigError("two clients share one token; give each its own")

    @classmethod
    def parse(cls, inline: str = "", file_text: str = "", file_name: str = "") -> TokenBook:
        sources = token_entries(
            inline, file_text, "SCRIBE_GATEWAY_TOKENS", file_name or "tokens file"
        )
        return cls([_parse_entry(text, where) for text, where in sources])

    @property
    def clients(self) -> tuple[Client, ...]:
        return tuple(e.client for e in self._entries)

    def __repr__(self) -> str:
        return f"TokenBook({[c.name for c in self.clients]})"

    def authenticate(self, authorization: str | None) -> Client | None:
        """The client whose token the `Authorization: Bearer <token>` header carries, if any."""
        if not authorization:
            return None
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        presented = _digest(token.strip())
        found: Client | None = None
        for entry in self._entries:
            if hmac.compare_digest(entry.digest, presented):
                found = entry.client
        return found
