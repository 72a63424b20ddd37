from __future__ import annotations

import pytest

from sinks.cdn.adapters import (
    CloudflareAdapter,
    FastlyAdapter,
    Outcome,
    PurgeKind,
    classify,
)


def test_fastly_surrogate_keys_go_in_batches_of_256() -> None:
    adapter = FastlyAdapter("token", "svc")
    tags = [f"t{i}" for i in range(600)] + ["t0"]
    calls = adapter.calls(PurgeKind.TAG, tags)
    assert [len(c.targets) for c in calls] == [256, 256, 88]
    first = calls[0]
    assert first.path == "/service/svc/purge"
    assert first.headers["Fastly-Key"] == "token"
    assert first.json == {"surrogate_keys": list(first.targets)}


def test_fastly_purges_one_url_per_call_without_the_scheme() -> None:
    calls = FastlyAdapter("token", "svc").calls(
        PurgeKind.URL, ["https://cdn.example/a?x=1", "http://cdn.example/b"]
    )
    assert [c.path for c in calls] == ["/purge/cdn.example/a?x=1", "/purge/cdn.example/b"]
    assert all(c.json is None for c in calls)


def test_cloudflare_files_and_tags_go_in_batches_of_30() -> None:
    adapter = CloudflareAdapter("token", "zone")
    urls = [f"https://cdn.example/{i}" for i in range(65)]
    calls = adapter.calls(PurgeKind.URL, urls)
    assert [len(c.targets) for c in calls] == [30, 30, 5]
    assert calls[0].path == "/zones/zone/purge_cache"
    assert calls[0].headers["Authorization"] == "Bearer token"
    assert calls[0].json == {"files": urls[:30]}
    (tag_call,) = adapter.calls(PurgeKind.TAG, ["a", "b"])
    assert tag_call.json == {"tags": ["a", "b"]}


def test_no_targets_no_calls() -> None:
    assert FastlyAdapter("t", "s").calls(PurgeKind.TAG, []) == []


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Outcome.OK),
        (204, Outcome.OK),
        (429, Outcome.RATE_LIMITED),
        (500, Outcome.SERVER_ERROR),
        (503, Outcome.SERVER_ERROR),
        (408, Outcome.SERVER_ERROR),
        (400, Outcome.CLIENT_ERROR),
        (401, Outcome.CLIENT_ERROR),
        (404, Outcome.CLIENT_ERROR),
    ],
)
def test_classify(status: int, outcome: Outcome) -> None:
    assert classify(status) is outcome
    assert outcome.retryable is (outcome not in (Outcome.OK, Outcome.CLIENT_ERROR))


def test_api_level_errors_in_a_success_body() -> None:
    cloudflare = CloudflareAdapter("t", "z")
    assert cloudflare.error_in(b'{"success": true, "errors": []}') is None
    error = cloudflare.error_in(b'{"success": false, "errors": [{"code": 1, "message": "nope"}]}')
    assert error == "cloudflare answered success=false: nope"
    fastly = FastlyAdapter("t", "s")
    assert fastly.error_in(b'{"status": "ok", "id": "1"}') is None
    assert fastly.error_in(b'{"k1": "id1"}') is None
    assert fastly.error_in(b'{"status": "error"}') == "fastly answered status 'error'"
