"""Reading provider answers: usage, exact reported cost, images, Retry-After and RetryInfo."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest

from agents.router.keys import ProviderKey, key_id
from agents.router.providers import (
    Failure,
    ProviderError,
    parse_gemini,
    parse_openrouter,
    retry_after_seconds,
)
from devkit.stack.provider_simulator import key_fingerprint
from schemas import parse_json
from schemas.events import RequestKind

PNG = base64.b64encode(b"\x89PNG fake").decode()


def test_retry_after_header_in_seconds_or_as_a_date() -> None:
    assert retry_after_seconds(httpx.Headers({"Retry-After": "7"}), None) == 7.0
    now = datetime(2026, 11, 27, 14, 0, 0, tzinfo=UTC)
    date_header = httpx.Headers({"Retry-After": "Fri, 27 Nov 2026 14:00:30 GMT"})
    assert retry_after_seconds(date_header, None, now=now) == 30.0
    assert retry_after_seconds(httpx.Headers(), None) == 0.0


def test_retry_info_delay_from_a_gemini_error_body() -> None:
    body = parse_json(
        b'{"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "details": ['
        b'{"@type": "type.googleapis.com/google.rpc.QuotaFailure"},'
        b'{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2.5s"}]}}'
    )
    assert retry_after_seconds(httpx.Headers(), body) == 2.5


def test_openrouter_text_usage_and_exact_reported_cost() -> None:
    body = parse_json(
        b'{"choices": [{"message": {"content": "Hello"}}],'
        b' "usage": {"prompt_tokens": 12, "completion_tokens": 30, "cost": 0.000123456789012}}'
    )
    reply = parse_openrouter(body, RequestKind.TEXT)
    assert reply.text == "Hello"
    assert (reply.input_tokens, reply.output_tokens, reply.images) == (12, 30, 0)
    assert reply.reported_cost_usd == Decimal("0.000123456789012")


def test_openrouter_image_from_a_data_url() -> None:
    body = parse_json(
        b'{"choices": [{"message": {"content": "", "images": [{"type": "image_url",'
        b' "image_url": {"url": "data:image/png;base64,' + PNG.encode() + b'"}}]}}],'
        b' "usage": {"prompt_tokens": 5, "completion_tokens": 1290}}'
    )
    reply = parse_openrouter(body, RequestKind.IMAGE)
    assert reply.image == b"\x89PNG fake" and reply.image_type == "image/png"
    assert reply.images == 1 and reply.reported_cost_usd is None


def test_gemini_text_and_image_with_usage_metadata() -> None:
    body = parse_json(
        b'{"candidates": [{"content": {"parts": [{"text": "Hi "}, {"text": "there"},'
        b' {"inlineData": {"mimeType": "image/png", "data": "' + PNG.encode() + b'"}}]}}],'
        b' "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 1300}}'
    )
    reply = parse_gemini(body, RequestKind.IMAGE)
    assert reply.text == "Hi there" and reply.image == b"\x89PNG fake"
    assert (reply.input_tokens, reply.output_tokens, reply.images) == (9, 1300, 1)


@pytest.mark.parametrize(
    ("parse", "body"),
    [
        (parse_openrouter, b'{"choices": []}'),
        (parse_openrouter, b'{"choices": [{"message": {"content": "no image"}}]}'),
        (parse_gemini, b'{"candidates": [{"content": {"parts": [{"text": "no image"}]}}]}'),
        (parse_gemini, b'{"promptFeedback": {"blockReason": "SAFETY"}}'),
    ],
)
def test_answers_without_what_was_asked_are_refusals(parse: object, body: bytes) -> None:
    with pytest.raises(ProviderError) as caught:
        parse(parse_json(body), RequestKind.IMAGE)  # type: ignore[operator]
    assert caught.value.failure is Failure.REFUSED
    assert not caught.value.counts_against_model


def test_a_key_is_named_by_its_id_never_shown() -> None:
    key = ProviderKey.of("gemini", "AIza-secret-value")
    assert key.id == key_id("gemini", "AIza-secret-value") == key_fingerprint("gemini", key.secret)
    assert key.id.startswith("gemini:") and "secret" not in key.id
    assert "AIza-secret-value" not in repr(key)


@pytest.mark.parametrize(
    ("parse", "body", "reason"),
    [
        (parse_openrouter, b'{"choices": [{"message": "hi"}]}', "message is a str"),
        (parse_openrouter, b'{"choices": [{"message": {"content": 7}}]}', "content is a int"),
        (
            parse_openrouter,
            b'{"choices": [{"message": {"content": "hi"}}], "usage": {"cost": "a lot"}}',
            "usage.cost 'a lot' is not a cost",
        ),
        (
            parse_openrouter,
            b'{"choices": [{"message": {"content": "hi"}}], "usage": {"cost": -1}}',
            "is not a cost",
        ),
        (parse_openrouter, b'{"choices": [{"message": {"content": "hi"}}], "usage": [1]}', "usage"),
        (
            parse_openrouter,
            b'{"choices": [{"message": {"content": "hi"}}], "usage": {"prompt_tokens": "12"}}',
            "usage.prompt_tokens '12' is not a token count",
        ),
        (
            parse_openrouter,
            b'{"choices": [{"message": {"content": "hi"}}], "usage": {"completion_tokens": -3}}',
            "usage.completion_tokens '-3' is not a token count",
        ),
        (parse_gemini, b'{"candidates": [{"content": {"parts": 7}}]}', "parts is a int"),
        (
            parse_gemini,
            b'{"candidates": [{"content": {"parts": [{"text": "hi"}]}}], "usageMetadata": "x"}',
            "usageMetadata is a str",
        ),
        (
            parse_gemini,
            b'{"candidates": [{"content": {"parts": [{"text": "hi"}]}}],'
            b' "usageMetadata": {"candidatesTokenCount": 1.5}}',
            "usageMetadata.candidatesTokenCount '1.5' is not a token count",
        ),
    ],
)
def test_answers_of_the_wrong_shape_are_malformed_count_against_the_model_and_say_why(
    parse: object, body: bytes, reason: str
) -> None:
    """A provider answering 200 with a broken body: a failed attempt, never a crash (an
    AttributeError here used to fail the whole request), never an empty success, and never
    read as 0 tokens (token counts of the wrong type used to be)."""
    with pytest.raises(ProviderError) as caught:
        parse(parse_json(body), RequestKind.TEXT)  # type: ignore[operator]
    assert caught.value.failure is Failure.MALFORMED
    assert caught.value.counts_against_model
    assert reason in str(caught.value)


@pytest.mark.parametrize(
    ("parse", "body"),
    [
        (parse_openrouter, b'{"choices": [{"message": {"content": ""}}]}'),
        (parse_gemini, b'{"candidates": [{"content": {"parts": [{"text": 4}]}}]}'),
    ],
)
def test_a_text_request_answered_without_text_is_refused(parse: object, body: bytes) -> None:
    with pytest.raises(ProviderError) as caught:
        parse(parse_json(body), RequestKind.TEXT)  # type: ignore[operator]
    assert caught.value.failure is Failure.REFUSED
    assert "without text" in str(caught.value)
