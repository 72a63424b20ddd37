"""Who calls the OpenAI-compatible API: a bearer token names a user id and a tier.

Two kinds of token, either or both configured:
- static: `SCRIBE_GATEWAY_API_TOKENS` (comma-separated) and/or `SCRIBE_GATEWAY_API_TOKENS_FILE`
  (one per line, `#` comments), each `user_id:token:tier` (tier `free` or `premium`); kept only
  as SHA-256 digests, compared in constant time, never logged;
- JWT: verified against `SCRIBE_GATEWAY_JWT_KEY` (a PEM public key, or a shared secret with
  `SCRIBE_GATEWAY_JWT_ALGORITHMS=HS256`) or the keys at `SCRIBE_GATEWAY_JWT_JWKS_URL`; `sub` is
  the user id, the claim `SCRIBE_GATEWAY_JWT_TIER_CLAIM` (default `tier`) the tier (absent:
  free); `exp` is required, `aud`/`iss` checked when `SCRIBE_GATEWAY_JWT_AUDIENCE`/`_ISSUER` set.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt

from runtime.settings import SettingsError
from schemas.events import UserTier
from scribe.gateway.access import token_entries

MIN_TOKEN_LENGTH = 16
# The AIRequest's user_id pattern: a `sub` outside it cannot be a user id.
USER_ID = re.compile(r"^[A-Za-z0-9._:@/-]{1,128}$")
DEFAULT_JWT_ALGORITHMS = ("RS256", "ES256")


@dataclass(frozen=True)
class Caller:
    user_id: str
    tier: UserTier


class AuthError(Exception):
    """The token is missing or refused: `status` 401 (not valid) or 403 (valid, not usable)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _tier(text: str, where: str) -> UserTier:
    try:
        return UserTier(text.strip().lower())
    except ValueError:
        tiers = ", ".join(t.value for t in UserTier)
        raise SettingsError(f"{where}: tier {text!r} is not one of {tiers}") from None


def _static_entry(text: str, where: str) -> tuple[bytes, Caller]:
    user_id, sep, rest = text.partition(":")
    token, sep2, tier = rest.rpartition(":")
    user_id = user_id.strip()
    if not (sep and sep2 and user_id and token and tier):
        raise SettingsError(f"{where}: expected user_id:token:tier")
    if not USER_ID.match(user_id):
        raise SettingsError(f"{where}: user id {user_id!r} may use only letters, digits, ._:@/-")
    if len(token) < MIN_TOKEN_LENGTH or token != token.strip():
        raise SettingsError(
            f"{where} ({user_id}): the token must be at least {MIN_TOKEN_LENGTH} characters "
            "without surrounding spaces"
        )
    return _digest(token), Caller(user_id, _tier(tier, where))


@dataclass(frozen=True)
class JwtSettings:
    key: str = ""  # a PEM public key or a shared secret
    jwks_url: str = ""
    algorithms: tuple[str, ...] = DEFAULT_JWT_ALGORITHMS
    audience: str = ""
    issuer: str = ""
    tier_claim: str = "tier"

    @property
    def enabled(self) -> bool:
        return bool(self.key or self.jwks_url)


@dataclass(frozen=True)
class ApiAuthSettings:
    static: tuple[tuple[bytes, Caller], ...] = ()
    jwt: JwtSettings = field(default_factory=JwtSettings)

    def __post_init__(self) -> None:
        users = [c.user_id for _, c in self.static]
        if len(set(users)) != len(users):
            raise SettingsError("SCRIBE_GATEWAY_API_TOKENS: each user id may have one token")
        if len({d for d, _ in self.static}) != len(self.static):
            raise SettingsError("SCRIBE_GATEWAY_API_TOKENS: two users share one token")

    @classmethod
    def parse(cls, inline: str = "", file_text: str = "", file_name: str = "") -> ApiAuthSettings:
        sources = token_entries(
            inline, file_text, "SCRIBE_GATEWAY_API_TOKENS", file_name or "API tokens file"
        )
        return cls(tuple(_static_entry(text, where) for text, where in sources))

    @classmethod
    def from_env(cls) -> ApiAuthSettings:
        env = os.environ
        path = env.get("SCRIBE_GATEWAY_API_TOKENS_FILE") or ""
        text = _read(path, "SCRIBE_GATEWAY_API_TOKENS_FILE") if path else ""
        key = env.get("SCRIBE_GATEWAY_JWT_KEY") or ""
        key_file = env.get("SCRIBE_GATEWAY_JWT_KEY_FILE") or ""
        if key_file:
            key = _read(key_file, "SCRIBE_GATEWAY_JWT_KEY_FILE")
        algorithms = tuple(
            a.strip() for a in (env.get("SCRIBE_GATEWAY_JWT_ALGORITHMS") or "").split(",") if a
        )
        unknown = set(algorithms) - set(jwt.algorithms.get_default_algorithms())
        if unknown:
            raise SettingsError(f"SCRIBE_GATEWAY_JWT_ALGORITHMS: unknown {sorted(unknown)}")
        parsed = cls.parse(env.get("SCRIBE_GATEWAY_API_TOKENS", ""), text, path)
        return cls(
            parsed.static,
            JwtSettings(
                key=key,
                jwks_url=env.get("SCRIBE_GATEWAY_JWT_JWKS_URL") or "",
                algorithms=algorithms or DEFAULT_JWT_ALGORITHMS,
                audience=env.get("SCRIBE_GATEWAY_JWT_AUDIENCE") or "",
                issuer=env.get("SCRIBE_GATEWAY_JWT_ISSUER") or "",
                tier_claim=env.get("SCRIBE_GATEWAY_JWT_TIER_CLAIM") or "tier",
            ),
        )


def _read(path: str, setting: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise SettingsError(f"{setting}: cannot read {path}: {exc.strerror}") from None


def _looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("eyJ")


class ApiAuth:
    def __init__(self, settings: ApiAuthSettings) -> None:
        self.settings = settings
        self._jwks = jwt.PyJWKClient(settings.jwt.jwks_url) if settings.jwt.jwks_url else None

    @property
    def configured(self) -> bool:
        return bool(self.settings.static) or self.settings.jwt.enabled

    async def authenticate(self, authorization: str | None) -> Caller:
        scheme, _, token = (authorization or "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthError(401, "a bearer token is required: Authorization: Bearer <token>")
        if self.settings.jwt.enabled and _looks_like_jwt(token):
            return await self._verified(token)
        presented = _digest(token)
        found: Caller | None = None
        for digest, caller in self.settings.static:
            if hmac.compare_digest(digest, presented):
                found = caller
        if found is None:
            raise AuthError(401, "the bearer token is not valid")
        return found

    async def _verified(self, token: str) -> Caller:
        config = self.settings.jwt
        try:
            if self._jwks is not None:
                # PyJWKClient fetches (and caches) the key set with blocking I/O.
                key: Any = (await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)).key
            else:
                key = config.key
            claims = jwt.decode(
                token,
                key,
                algorithms=list(config.algorithms),
                audience=config.audience or None,
                issuer=config.issuer or None,
                options={"require": ["exp", "sub"], "verify_aud": bool(config.audience)},
            )
        except jwt.PyJWTError as exc:
            raise AuthError(401, f"the bearer token (JWT) is not valid: {exc}") from None
        subject = str(claims["sub"])
        if not USER_ID.match(subject):
            raise AuthError(
                403, "the JWT's sub may use only letters, digits and ._:@/- as a user id"
            )
        raw_tier = claims.get(config.tier_claim, UserTier.FREE.value)
        try:
            tier = UserTier(str(raw_tier).lower())
        except ValueError:
            raise AuthError(
                403, f"the JWT's {config.tier_claim} claim {raw_tier!r} is not free or premium"
            ) from None
        return Caller(subject, tier)
