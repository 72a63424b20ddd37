from __future__ import annotations

import pytest

from cache.layout import Broadcast, BroadcastError, is_tag_set_key, tag_set_key


def test_broadcast_round_trip() -> None:
    message = Broadcast(keys=("a", "b"), patterns=("w:*",), tags=("t",), ids=("inv-1",))
    assert Broadcast.decode(message.encode()) == message


def test_missing_fields_are_empty() -> None:
    assert Broadcast.decode(b'{"keys": ["a"]}') == Broadcast(keys=("a",))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"keys": "a"}', "'keys' is not a list of strings"),
        (b'{"ids": [1]}', "'ids' is not a list of strings"),
    ],
)
def test_unreadable_broadcast_is_an_error(raw: bytes, message: str) -> None:
    with pytest.raises(BroadcastError, match=message):
        Broadcast.decode(raw)


def test_tag_sets_live_in_their_own_namespace() -> None:
    assert is_tag_set_key(tag_set_key("world:1"))
    assert not is_tag_set_key("world:1")
