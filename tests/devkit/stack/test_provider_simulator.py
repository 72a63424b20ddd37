"""The provider simulator's prompt markers and rules (its HTTP side is exercised by the router's
executor and integration tests)."""

from __future__ import annotations

import pytest

from agents.router.providers import Failure, ProviderError, parse_gemini, parse_openrouter
from devkit.stack.provider_simulator import (
    MALFORMED,
    CallRecord,
    Rule,
    SimulatorState,
    _fault,
    _fault_from_prompt,
)
from schemas import DecodeError, parse_json
from schemas.events import RequestKind


def call(provider: str = "gemini", key_id: str = "gemini:abc") -> CallRecord:
    return CallRecord(0, provider, "m", key_id, "text", 0.0, "tag")


def test_markers_in_the_prompt() -> None:
    state = SimulatorState()
    limited = _fault_from_prompt(state, "hi [sim:429 retry=2.5]")
    assert limited is not None and limited.action == "429" and limited.retry_after_s == 2.5
    slow = _fault_from_prompt(state, "[sim:slow=800] hi")
    assert slow is not None and slow.action == "slow" and slow.delay_ms == 800
    timeout = _fault_from_prompt(state, "[sim:timeout]")
    assert timeout is not None and timeout.action == "timeout"
    assert _fault_from_prompt(state, "no markers") is None


def test_fail_marker_fails_only_the_first_calls_with_that_prompt() -> None:
    state = SimulatorState()
    actions = [_fault_from_prompt(state, "x [sim:fail=2]") for _ in range(4)]
    assert [a.action if a else None for a in actions] == ["500", "500", None, None]


def test_rules_match_by_provider_and_key_and_count_down() -> None:
    state = SimulatorState(
        rules=[Rule(action="503", provider="gemini", key_id="gemini:k", times=1)]
    )
    assert _fault(state, call(key_id="gemini:other"), "p") is None
    assert _fault(state, call(provider="openrouter", key_id="gemini:k"), "p") is None
    first = _fault(state, call(key_id="gemini:k"), "p")
    assert first is not None and first.action == "503"
    assert _fault(state, call(key_id="gemini:k"), "p") is None, "used up"


def test_a_rule_with_every_answers_only_every_nth_matching_call() -> None:
    state = SimulatorState(rules=[Rule(action="malformed", provider="gemini", every=3)])
    answered = [_fault(state, call(), "p") for _ in range(6)]
    assert [a.action if a else None for a in answered] == [None, None, "malformed"] * 2
    assert _fault(state, call(provider="openrouter"), "p") is None


def test_every_malformed_body_is_not_the_expected_shape() -> None:
    """Each body fails the router's parser for its provider: malformed, or refused when it
    lacks what was asked (a real provider's safety block looks like that). Both are failed
    attempts; the next model is tried."""
    for provider, parse in (("openrouter", parse_openrouter), ("gemini", parse_gemini)):
        for body in MALFORMED[provider]:
            try:
                parsed = parse_json(body)
            except DecodeError:
                continue  # invalid JSON: the client refuses it before parsing
            with pytest.raises(ProviderError) as caught:
                parse(parsed, RequestKind.TEXT)
            assert caught.value.failure in (Failure.MALFORMED, Failure.REFUSED), body
