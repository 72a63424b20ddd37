"""The OpenAI-compatible API's bearer tokens: static entries and JWTs, each to a user and tier."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from runtime.settings import SettingsError
from schemas.events import UserTier
from scribe.gateway.api_auth import ApiAuth, ApiAuthSettings, AuthError, Caller, JwtSettings

TOKEN_A = "a" * 20
TOKEN_B = "b" * 24
KEY = ec.generate_private_key(ec.SECP256R1())
PUBLIC_PEM = (
    KEY.public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)


def _auth(**jwt_settings: Any) -> ApiAuth:
    static = ApiAuthSettings.parse(f"alice:{TOKEN_A}:premium", f"# users\nbob:{TOKEN_B}:free\n")
    return ApiAuth(ApiAuthSettings(static.static, JwtSettings(key=PUBLIC_PEM, **jwt_settings)))


def _token(**claims: Any) -> str:
    # Made when the tests are collected, maybe many minutes before one runs.
    return jwt.encode({"exp": int(time.time()) + 3600, **claims}, KEY, algorithm="ES256")


async def test_static_tokens_name_user_and_tier() -> None:
    auth = _auth()
    assert await auth.authenticate(f"Bearer {TOKEN_A}") == Caller("alice", UserTier.PREMIUM)
    assert await auth.authenticate(f"bearer  {TOKEN_B} ") == Caller("bob", UserTier.FREE)
    for header in (None, "", f"Basic {TOKEN_A}", "Bearer " + "c" * 20):
        with pytest.raises(AuthError) as refused:
            await auth.authenticate(header)
        assert refused.value.status == 401 and TOKEN_A not in refused.value.message


async def test_jwt_sub_is_the_user_and_the_tier_claim_the_tier() -> None:
    auth = _auth()
    caller = await auth.authenticate(f"Bearer {_token(sub='carol', tier='premium')}")
    assert caller == Caller("carol", UserTier.PREMIUM)
    assert (await auth.authenticate(f"Bearer {_token(sub='dan')}")).tier is UserTier.FREE
    plan = _auth(tier_claim="plan")
    assert (await plan.authenticate(f"Bearer {_token(sub='e', plan='premium')}")).tier.value == (
        "premium"
    )


@pytest.mark.parametrize(
    ("token", "status"),
    [
        (_token(sub="x", exp=int(time.time()) - 10), 401),  # expired
        (jwt.encode({"sub": "x"}, KEY, algorithm="ES256"), 401),  # no exp
        (_token(sub="auth0|x"), 403),  # not a usable user id
        (_token(sub="x", tier="gold"), 403),
        (
            jwt.encode(
                {"sub": "x", "exp": int(time.time()) + 3600},
                ec.generate_private_key(ec.SECP256R1()),
                algorithm="ES256",
            ),
            401,
        ),  # another key
    ],
)
async def test_jwt_refusals(token: str, status: int) -> None:
    with pytest.raises(AuthError) as refused:
        await _auth().authenticate(f"Bearer {token}")
    assert refused.value.status == status


async def test_audience_and_issuer_are_checked_when_set() -> None:
    auth = _auth(audience="scribe", issuer="https://id.example")
    good = _token(sub="f", aud="scribe", iss="https://id.example")
    assert (await auth.authenticate(f"Bearer {good}")).user_id == "f"
    with pytest.raises(AuthError):
        await auth.authenticate(f"Bearer {_token(sub='f', aud='other', iss='https://id.example')}")


@pytest.mark.parametrize(
    "entry",
    ["alice:short:free", f"alice:{TOKEN_A}:gold", f"al ice:{TOKEN_A}:free", f"{TOKEN_A}:free"],
)
def test_malformed_static_entries_are_refused_without_the_token(entry: str) -> None:
    with pytest.raises(SettingsError) as refused:
        ApiAuthSettings.parse(entry)
    assert TOKEN_A not in str(refused.value)


def test_a_token_or_user_may_not_repeat() -> None:
    with pytest.raises(SettingsError):
        ApiAuthSettings.parse(f"a:{TOKEN_A}:free,b:{TOKEN_A}:free")
    with pytest.raises(SettingsError):
        ApiAuthSettings.parse(f"a:{TOKEN_A}:free,a:{TOKEN_B}:free")


async def test_jwt_verified_against_a_jwks_url() -> None:
    jwk = jwt.algorithms.ECAlgorithm.to_jwk(KEY.public_key(), as_dict=True)
    jwks = {"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "ES256"}]}

    async def key_set(request: web.Request) -> web.Response:
        return web.json_response(jwks)

    app = web.Application()
    app.router.add_get("/jwks.json", key_set)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        auth = ApiAuth(
            ApiAuthSettings(jwt=JwtSettings(jwks_url=f"http://127.0.0.1:{port}/jwks.json"))
        )
        signed = jwt.encode(
            {"sub": "gina", "tier": "premium", "exp": int(time.time()) + 60},
            KEY,
            algorithm="ES256",
            headers={"kid": "k1"},
        )
        assert await auth.authenticate(f"Bearer {signed}") == Caller("gina", UserTier.PREMIUM)
        unknown_kid = jwt.encode(
            {"sub": "gina", "exp": int(time.time()) + 60},
            KEY,
            algorithm="ES256",
            headers={"kid": "k2"},
        )
        with pytest.raises(AuthError) as refused:
            await auth.authenticate(f"Bearer {unknown_kid}")
        assert refused.value.status == 401
    finally:
        await runner.cleanup()
