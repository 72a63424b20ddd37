"""What the monitoring files read: the alert rules' and the Grafana panels' PromQL expressions,
parsed, and the metric families the live dashboard's figures take from the registry."""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import yaml

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "scribe.json"
FIGURES = ROOT / "scribe" / "dashboard" / "figures.py"
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
FAMILY_NAME = re.compile(r"^(scribe|process)_[a-z0-9_]+$")


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard_targets() -> list[tuple[str, str]]:
    """(panel title, expression) of every Grafana panel target."""
    document = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in document["panels"]
        for target in panel.get("targets", [])
    ]


def parse(expr: str) -> Any:
    """The expression's syntax tree, Grafana's variables replaced by plain durations."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return promql_parser.parse(expr)


def nodes(node: Any) -> Iterator[Any]:
    yield node
    for attr in ("expr", "lhs", "rhs", "param", "vector_selector"):
        child = getattr(node, attr, None)
        if child is not None and not isinstance(child, (str, int, float)):
            yield from nodes(child)
    for arg in getattr(node, "args", None) or []:
        yield from nodes(arg)


def selectors(expr: str) -> list[Any]:
    """Every vector selector (metric name and label matchers) of an expression."""
    return [n for n in nodes(parse(expr)) if isinstance(n, promql_parser.VectorSelector)]


def figure_families() -> set[str]:
    """The metric and sample names the dashboard figures read: every string literal of
    figures.py that is a `scribe_` or `process_` name (a histogram appears as its family)."""
    tree = ast.parse(FIGURES.read_text())
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and FAMILY_NAME.match(node.value)
    }
