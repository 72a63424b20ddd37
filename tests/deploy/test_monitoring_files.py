"""The Prometheus alert rules and the Grafana dashboard parse, and every PromQL expression in
them uses only metric names and labels that runtime/metrics.py defines."""

from __future__ import annotations

import json
from typing import Any

import promql_parser
import pytest
from prometheus_client import REGISTRY

from agents.router.breaker import BreakerState
from agents.router.providers import Failure
from runtime.metrics import family_specs
from tests.deploy.monitoring import (
    DASHBOARD,
    alert_rules,
    dashboard_targets,
    nodes,
    parse,
    selectors,
)

SCRAPE_LABELS = {"job", "instance"}  # added by Prometheus to every scraped sample
SEVERITIES = {"info", "warning", "critical"}


def known_samples() -> dict[str, set[str]]:
    """Every sample name a worker exposes, with the labels it can carry."""
    samples: dict[str, set[str]] = {}
    for spec in family_specs():
        for name in spec.sample_names:
            samples[name] = set(spec.labels) | ({"le"} if name.endswith("_bucket") else set())
    for family in REGISTRY.collect():  # prometheus-client's own process_* families
        if family.name.startswith("process_"):
            for sample in family.samples:
                samples[sample.name] = set(sample.labels)
    return samples


def check_expression(expr: str) -> list[str]:
    """Problems with one expression: unknown metrics, or labels its metrics do not have."""
    tree = parse(expr)
    known = known_samples()
    problems = []
    used_labels: set[str] = set(SCRAPE_LABELS)
    grouping: set[str] = set()
    for node in nodes(tree):
        if isinstance(node, promql_parser.VectorSelector):
            if node.name not in known:
                problems.append(f"unknown metric {node.name}")
                continue
            used_labels |= known[node.name]
            for matcher in node.matchers.matchers:
                if matcher.name not in known[node.name] | SCRAPE_LABELS:
                    problems.append(f"{node.name} has no label {matcher.name!r}")
        elif isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            grouping |= set(node.modifier.labels)
        elif isinstance(node, promql_parser.BinaryExpr) and node.modifier is not None:
            matching = node.modifier.matching
            if matching is not None:
                grouping |= set(matching.labels)
    problems += [f"grouping by unknown label {name!r}" for name in sorted(grouping - used_labels)]
    return problems


def test_the_checker_catches_unknown_names_and_labels() -> None:
    assert check_expression("sum by (topic) (rate(scribe_messages_in_total[5m]))") == []
    assert check_expression("rate(scribe_no_such_thing_total[5m])") == [
        "unknown metric scribe_no_such_thing_total"
    ]
    assert check_expression('scribe_consumer_lag_messages{user_id="u"}') == [
        "scribe_consumer_lag_messages has no label 'user_id'"
    ]
    assert check_expression("sum by (world_id) (scribe_consumer_lag_messages)") == [
        "grouping by unknown label 'world_id'"
    ]
    with pytest.raises(ValueError, match="unclosed left parenthesis"):
        check_expression("sum by (topic (scribe_messages_in_total")


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_alert_rule(rule: dict[str, Any]) -> None:
    assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}
    assert rule["labels"]["severity"] in SEVERITIES
    assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    assert check_expression(rule["expr"]) == []


def test_alert_rules_cover_the_product_targets() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    assert {
        "ScribeProcessingLatencyP95High",
        "ScribeErrorRateHigh",
        "ScribeDeadLettersGrowing",
        "ScribeConsumerLagGrowing",
        "ScribeUserBudgetsExceeded",
        "ScribeProjectedMonthSpendHigh",
        "ScribeCacheHitRatioLow",
    } <= names
    error_rate = next(r for r in alert_rules() if r["alert"] == "ScribeErrorRateHigh")
    assert error_rate["expr"].strip().endswith("> 0.001")  # the product's 0.1 %


@pytest.mark.parametrize(
    ("title", "expr"), dashboard_targets(), ids=[title for title, _ in dashboard_targets()]
)
def test_dashboard_query(title: str, expr: str) -> None:
    assert check_expression(expr) == [], title


def test_dashboard_is_provisionable_and_shows_every_family() -> None:
    document = json.loads(DASHBOARD.read_text())
    assert document["uid"] == "scribe-pipeline"
    assert [v["name"] for v in document["templating"]["list"]] == ["datasource"]
    panels = [p for p in document["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in document["panels"]}) == len(document["panels"])
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
    queries = " ".join(expr for _, expr in dashboard_targets())
    unshown = [s.name for s in family_specs() if s.name not in queries]
    assert unshown == []


def test_the_provider_alerts_match_what_the_router_reports() -> None:
    """The outcomes the failure alert counts are the router's failure kinds, and the breaker
    alert's threshold is the open state's gauge value."""
    rules = {rule["alert"]: rule["expr"] for rule in alert_rules()}
    outcomes = {
        alternative
        for selector in selectors(rules["ScribeProviderErrorRateHigh"])
        for matcher in selector.matchers.matchers
        if matcher.name == "outcome"
        for alternative in matcher.value.split("|")
    }
    assert outcomes == {Failure.SERVER, Failure.TIMEOUT, Failure.MALFORMED}
    assert rules["ScribeBreakerOpen"].strip().endswith(f"== {int(BreakerState.OPEN)}")
