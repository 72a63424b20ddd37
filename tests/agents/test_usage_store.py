"""The bisecting write: only what the sink refuses on its own is dead-lettered."""

from __future__ import annotations

from collections.abc import Sequence

from agents.usage.flow import USAGE
from agents.usage.store import write_isolating
from sinks.postgres.usage import LedgerWrite


class RefusedError(Exception):
    pass


async def test_a_refused_item_is_isolated_and_every_other_item_is_written() -> None:
    written: list[int] = []
    dead: list[tuple[int, str]] = []

    async def write(items: Sequence[int]) -> LedgerWrite:
        if 7 in items or 12 in items:
            raise RefusedError(f"bad item in {list(items)}")
        written.extend(items)
        return LedgerWrite(len(items), 1 if 3 in items else 0, 0)

    async def dead_letter(item: int, error: BaseException) -> None:
        dead.append((item, str(error)))

    result = await write_isolating(list(range(20)), write, (RefusedError,), dead_letter)

    assert sorted(written) == [i for i in range(20) if i not in (7, 12)]
    assert dead == [(7, "bad item in [7]"), (12, "bad item in [12]")]
    assert result == LedgerWrite(18, 1, 0)


async def test_other_errors_are_not_swallowed() -> None:
    async def write(items: Sequence[int]) -> LedgerWrite:
        raise KeyError("a bug")

    async def dead_letter(item: int, error: BaseException) -> None:
        raise AssertionError("must not be called")

    try:
        await write_isolating([1, 2], write, (RefusedError,), dead_letter)
    except KeyError:
        pass
    else:
        raise AssertionError("the bug was swallowed")


def test_the_usage_group_is_named_after_the_app_and_the_flow() -> None:
    assert USAGE.group_of("scribe") == "scribe.usage"
