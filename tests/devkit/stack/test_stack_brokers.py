"""Which broker the local stack runs, and how `down`/`status` find the one that was started."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devkit.stack import LocalStack, StackError


def _record(root: Path, *names: str) -> None:
    root.mkdir(parents=True, exist_ok=True)
    entries = {
        name: {"pid": 1, "started_at": 0.0, "port": 9000 + i, "url": f"x://127.0.0.1:{9000 + i}"}
        for i, name in enumerate(names)
    }
    (root / "stack.json").write_text(json.dumps(entries))


def test_tansu_by_default_apache_on_request_none_when_kafka_is_elsewhere(tmp_path: Path) -> None:
    def names(stack: LocalStack) -> list[str]:
        return [s.name for s in stack.services]

    rest = names(LocalStack(tmp_path, broker=None))
    assert "postgres" in rest and "redis" in rest and "kafka" not in rest
    assert names(LocalStack(tmp_path)) == ["kafka", *rest]
    assert names(LocalStack(tmp_path, broker="apache")) == ["apache-kafka", *rest]


def test_an_unknown_broker_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="unknown broker 'redpanda'"):
        LocalStack(tmp_path, broker="redpanda")


def test_the_recorded_broker_is_the_one_down_and_status_handle(tmp_path: Path) -> None:
    assert LocalStack.at(tmp_path).broker == "tansu"
    _record(tmp_path, "apache-kafka", "postgres", "redis")
    assert LocalStack.at(tmp_path).broker == "apache"


def test_short_group_timeouts_and_lingering_sends_only_with_tansu(tmp_path: Path) -> None:
    _record(tmp_path / "t", "kafka", "postgres", "redis")
    _record(tmp_path / "a", "apache-kafka", "postgres", "redis")
    tansu_env = LocalStack.at(tmp_path / "t").environment()
    assert (tansu_env["SCRIBE_FAST_REBALANCE"], tansu_env["SCRIBE_PRODUCER_LINGER_MS"]) == (
        "1",
        "5",
    )
    apache_env = LocalStack.at(tmp_path / "a").environment()
    assert "SCRIBE_FAST_REBALANCE" not in apache_env
    assert "SCRIBE_PRODUCER_LINGER_MS" not in apache_env
    assert apache_env["SCRIBE_KAFKA_URL"] == "x://127.0.0.1:9000"


def test_up_refuses_a_second_broker_beside_the_recorded_one(tmp_path: Path) -> None:
    _record(tmp_path, "apache-kafka")
    with pytest.raises(StackError, match="runs another broker"):
        LocalStack(tmp_path, broker="tansu").up()
