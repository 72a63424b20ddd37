"""Consumer lag from committed offsets and the two end-offset answers (`runtime/lag.py`)."""

from __future__ import annotations

from runtime.lag import partition_lag


def test_lag_is_end_minus_committed() -> None:
    assert partition_lag(committed=40, fetched_highwater=100, listed_end=100) == 60


def test_the_larger_end_offset_wins() -> None:
    # Tansu answers ListOffsets with the last batch's base offset + 1: too small.
    assert partition_lag(committed=10, fetched_highwater=250, listed_end=1) == 240
    # A paused partition is not fetched, so the fetch high watermark can be the stale one.
    assert partition_lag(committed=10, fetched_highwater=50, listed_end=400) == 390


def test_one_end_offset_is_enough() -> None:
    assert partition_lag(committed=5, fetched_highwater=None, listed_end=9) == 4
    assert partition_lag(committed=5, fetched_highwater=9, listed_end=None) == 4


def test_no_end_offset_means_no_figure() -> None:
    assert partition_lag(committed=5, fetched_highwater=None, listed_end=None) is None


def test_without_a_commit_the_group_starts_at_the_log_start() -> None:
    assert partition_lag(committed=None, fetched_highwater=30, listed_end=None) == 30
    assert partition_lag(committed=None, fetched_highwater=30, listed_end=None, log_start=25) == 5


def test_lag_never_goes_negative() -> None:
    assert partition_lag(committed=12, fetched_highwater=10, listed_end=None) == 0
