"""usage.events -> the usage ledger, rollups and budgets in PostgreSQL (the usage flow, run
as a service of the worker), and the cost report page `/costs/report?user=&month=YYYY-MM`."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from typing import Any

import faust
import orjson

from agents.context import Resources
from agents.usage import flow
from agents.usage.report import ReportPolicy, build_report, parse_month, report_json
from schemas.model_catalog import load_catalog
from sinks.postgres.costs import load_cost_inputs


def register(app: faust.App, resources: Resources) -> None:
    app.service(resources.flow_service(flow.USAGE.flow, partial(flow.build, resources)))

    @app.page("/costs/report")
    async def cost_report(web: Any, request: Any) -> Any:
        now = datetime.now(UTC)
        try:
            month_text = request.query.get("month")
            month = parse_month(month_text) if month_text else now.date().replace(day=1)
        except ValueError as error:
            return web.json({"error": str(error)}, status=400)
        user = request.query.get("user")
        inputs = await resources.read(lambda pool: load_cost_inputs(pool, month, user))
        policy = ReportPolicy.from_settings(resources.settings.base.usage)
        report = build_report(inputs, load_catalog(), policy, now)
        return web.bytes(orjson.dumps(report_json(report)), content_type="application/json")
