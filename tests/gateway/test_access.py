"""Tokens: parsed from settings, scoped to families, compared by digest, never echoed."""

from __future__ import annotations

import pytest

from scribe.gateway.access import PUBLISHABLE, TokenBook, TokenConfigError

GAME = "game-token-0123456789"
WEB = "web-token-abcdefghijkl"


def _book() -> TokenBook:
    return TokenBook.parse(f"game:{GAME}:usage.events|world.ticks, web:{WEB}:*")


def test_a_bearer_token_names_its_client_and_families() -> None:
    game = _book().authenticate(f"Bearer {GAME}")
    assert game is not None and game.name == "game"
    assert game.may_publish("usage.events") and game.may_publish("world.ticks")
    assert not game.may_publish("ai.requests")
    web = _book().authenticate(f"bearer  {WEB} ")
    assert web is not None and web.families == PUBLISHABLE


@pytest.mark.parametrize(
    "header", [None, "", GAME, f"Basic {GAME}", "Bearer ", f"Bearer {GAME}x", f"Bearer {GAME[:-1]}"]
)
def test_anything_but_a_configured_bearer_token_authenticates_nobody(header: str | None) -> None:
    assert _book().authenticate(header) is None


def test_output_topics_are_not_publishable() -> None:
    assert "ai.responses" not in PUBLISHABLE and "budget.alerts" not in PUBLISHABLE
    with pytest.raises(TokenConfigError, match=r"unknown families \['ai\.responses'\]"):
        TokenBook.parse(f"router:{GAME}:ai.responses")


def test_the_file_form_allows_comments_and_names_its_lines() -> None:
    book = TokenBook.parse(file_text=f"# producers\n\ngame:{GAME}:*\n", file_name="tokens.txt")
    assert [c.name for c in book.clients] == ["game"]
    with pytest.raises(TokenConfigError, match=r"tokens\.txt:2"):
        TokenBook.parse(file_text=f"game:{GAME}:*\nbroken", file_name="tokens.txt")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("game", "expected name:token:family"),
        (f"game:{GAME}:", "expected name:token:family"),
        ("game:short:*", "at least 16 characters"),
        (f"ga me:{GAME}:*", "letters, digits"),
        (f"game:{GAME}:usage.event", "unknown families"),
        (f"game:{GAME}:*, game:{WEB}:*", "repeated: \\['game'\\]"),
        (f"game:{GAME}:*, web:{GAME}:*", "share one token"),
    ],
)
def test_bad_entries_say_what_is_wrong_without_the_token(text: str, message: str) -> None:
    with pytest.raises(TokenConfigError, match=message) as caught:
        TokenBook.parse(text)
    assert GAME not in str(caught.value) and WEB not in str(caught.value)


def test_the_book_shows_names_only() -> None:
    shown = repr(_book()) + repr(_book().clients)
    assert "game" in shown and GAME not in shown and WEB not in shown
