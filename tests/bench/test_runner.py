"""The runner's bookkeeping: figures per run, ratios taken within each run, and a case that
cannot run or fails reported with its reason instead of a number."""

from __future__ import annotations

from pathlib import Path

from bench.cases import EVENTS_PER_S, Case, Context, Ratio
from bench.runner import Figure, run_cases, table


class Counted(Case):
    """A case whose figures are given per run."""

    def __init__(self, name: str, values: list[float]) -> None:
        self.name = name
        self.values = list(values)

    def measure(self, ctx: Context) -> dict[str, float]:
        return {EVENTS_PER_S.name: self.values.pop(0)}


class Unavailable(Case):
    name = "peer.absent"

    def unavailable(self, ctx: Context) -> str | None:
        return "not installed"

    def measure(self, ctx: Context) -> dict[str, float]:
        raise AssertionError("an unavailable case is never measured")


class Failing(Case):
    name = "peer.broken"

    def measure(self, ctx: Context) -> dict[str, float]:
        raise RuntimeError("broker went away")


def context(runs: int) -> Context:
    return Context({}, Path("/nonexistent"), 1000, runs, "embedded Tansu", lambda _: None)


def test_min_median_max_over_the_runs() -> None:
    figures, _ = run_cases([Counted("ours.x", [30, 10, 20])], [], context(3))
    assert figures[0].row() == {
        "case": "ours.x",
        "metric": "events_per_s",
        "unit": "events/s",
        "min": 10,
        "median": 20,
        "max": 30,
        "runs": 3,
    }


def test_ratios_are_taken_within_each_run() -> None:
    ours, base = Counted("ours.x", [100, 50, 90]), Counted("peer.y", [10, 25, 30])
    ratio = Ratio("ratio.x_vs_y", ("ours.x", "events_per_s"), ("peer.y", "events_per_s"))
    _, ratios = run_cases([ours, base], [ratio], context(3))
    assert ratios[0].values == [10.0, 2.0, 3.0]
    assert ratios[0].row()["median"] == 3.0


def test_unavailable_and_failed_cases_carry_their_reason_and_no_number() -> None:
    ratio = Ratio("ratio.x_vs_absent", ("ours.x", "events_per_s"), ("peer.absent", "events_per_s"))
    figures, ratios = run_cases(
        [Counted("ours.x", [1.0, 2.0]), Unavailable(), Failing()], [ratio], context(2)
    )
    rows = {f.case: f.row() for f in figures}
    assert rows["peer.absent"]["median"] is None
    assert rows["peer.absent"]["missing"] == "not installed"
    assert rows["peer.broken"]["median"] is None
    assert "broker went away" in rows["peer.broken"]["missing"]
    assert ratios[0].values == []
    assert "peer.absent" in str(ratios[0].missing)
    assert "not measured: not installed" in table(figures)


def test_a_figure_without_values_prints_dashes() -> None:
    line = table([Figure("peer.absent", "events_per_s", "events/s", missing="why")])
    assert "-" in line.splitlines()[1]


class Logged(Case):
    def __init__(self, name: str, group: str, log: list[str]) -> None:
        self.name, self.group, self.log = name, group, log

    def measure(self, ctx: Context) -> dict[str, float]:
        self.log.append(self.name)
        return {EVENTS_PER_S.name: 1.0}


def test_a_groups_cases_alternate_and_groups_run_one_after_the_other() -> None:
    log: list[str] = []
    cases: list[Case] = [
        Logged("limit.a", "usage", log),
        Logged("ours.b", "usage", log),
        Logged("ours.flow", "ours.flow", log),
    ]
    run_cases(cases, [], context(2))
    assert log == ["limit.a", "ours.b", "limit.a", "ours.b", "ours.flow", "ours.flow"]
