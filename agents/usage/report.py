"""The monthly cost report: month-to-date spend by service and model, the projected month-end
from the daily trend, the free-tier share of image generation, and the product's
recommendations with estimated savings. Pure: the rows, the catalog and the clock come in.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from runtime.settings import UsageSettings
from schemas.model_catalog import ModelCatalog, ModelPrice, UnknownModelError
from sinks.postgres.costs import (
    CostInputs,
    DayUsage,
    HourOfDayWork,
    ModelUsage,
    SimilarRequests,
    month_bounds,
)

ZERO = Decimal(0)
PROJECTION_QUANTUM = Decimal("0.000001")
SECONDS_PER_DAY = Decimal(86_400)


@dataclass(frozen=True)
class ReportPolicy:
    """The product's rules of thumb. Discounts are assumptions, stated in each message:
    providers' batch APIs (Gemini, OpenAI) bill half price; off-peak pricing where offered
    (e.g. DeepSeek) is half price or less."""

    peak_hours_utc: tuple[int, int] = (16, 22)
    peak_share_trigger: Decimal = Decimal("0.70")
    off_peak_discount: Decimal = Decimal("0.5")
    # Work that can wait hours; urgent, high and normal requests are interactive.
    deferrable_priorities: frozenset[str] = frozenset({"low", "background"})
    free_tier_daily_requests: int = 1000
    batch_min_requests: int = 10
    batch_discount: Decimal = Decimal("0.5")
    free_image_share_target: Decimal = Decimal("0.85")

    @classmethod
    def from_settings(cls, usage: UsageSettings) -> ReportPolicy:
        return cls(
            peak_hours_utc=usage.peak_hours_utc,
            free_tier_daily_requests=usage.free_tier_daily_requests,
        )


@dataclass(frozen=True)
class Recommendation:
    kind: str  # "off_peak", "free_tier_quota" or "batching"
    message: str
    estimated_savings_usd: Decimal


@dataclass(frozen=True)
class Projection:
    month_end_usd: Decimal
    method: str


@dataclass(frozen=True)
class CostReport:
    month: date
    user_id: str | None
    as_of: datetime
    models: Sequence[ModelUsage]
    total_usd: Decimal
    requests: int
    projection: Projection
    images: int
    free_tier_images: int
    free_image_share: Decimal | None  # None: no images this month
    free_image_share_target: Decimal
    budget_usd: Decimal | None
    recommendations: Sequence[Recommendation] = field(default_factory=list)

    @property
    def free_image_target_met(self) -> bool | None:
        if self.free_image_share is None:
            return None
        return self.free_image_share > self.free_image_share_target


def parse_month(text: str) -> date:
    """`YYYY-MM` -> the first day of that month."""
    try:
        parsed = datetime.strptime(text, "%Y-%m")
    except ValueError:
        raise ValueError(f"{text!r} is not a month; use YYYY-MM, e.g. 2026-11") from None
    return parsed.date()


def _fraction_of_day(moment: datetime) -> Decimal:
    midnight = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    seconds = Decimal((moment - midnight).total_seconds())
    return seconds / SECONDS_PER_DAY


def _linear_fit(values: Sequence[Decimal]) -> tuple[Decimal, Decimal]:
    """Least squares y = a + b*x over x = 0..n-1, exactly in Decimal."""
    n = Decimal(len(values))
    xs = [Decimal(x) for x in range(len(values))]
    mean_x = sum(xs, ZERO) / n
    mean_y = sum(values, ZERO) / n
    spread = sum(((x - mean_x) ** 2 for x in xs), ZERO)
    slope = sum(((x - mean_x) * (y - mean_y) for x, y in zip(xs, values, strict=True)), ZERO)
    slope = slope / spread if spread else ZERO
    return mean_y - slope * mean_x, slope


def project_month_end(month: date, daily_cost: dict[date, Decimal], now: datetime) -> Projection:
    """Month-to-date plus the rest of the month on the trend of the complete days so far."""
    start, end = month_bounds(month)
    spent = sum(daily_cost.values(), ZERO)
    if now >= end:
        return Projection(spent, "month complete: actual total")
    if now < start:
        return Projection(ZERO, "month not started")
    days_in_month = (end - start).days
    complete_days = (now - start).days
    if complete_days < 2:
        elapsed = Decimal((now - start).total_seconds()) / SECONDS_PER_DAY
        if elapsed <= 0:
            return Projection(spent, "no time elapsed yet")
        rate = spent / elapsed
        return Projection(
            (rate * days_in_month).quantize(PROJECTION_QUANTUM),
            "run rate so far (fewer than 2 complete days)",
        )
    series = [daily_cost.get(month + timedelta(days=d), ZERO) for d in range(complete_days)]
    intercept, slope = _linear_fit(series)

    def trend(day_index: int) -> Decimal:
        return max(intercept + slope * day_index, ZERO)

    rest_of_today = (1 - _fraction_of_day(now)) * trend(complete_days)
    later_days = sum((trend(d) for d in range(complete_days + 1, days_in_month)), ZERO)
    return Projection(
        (spent + rest_of_today + later_days).quantize(PROJECTION_QUANTUM),
        f"linear trend over {complete_days} complete days",
    )


def _off_peak(hours: Iterable[HourOfDayWork], policy: ReportPolicy) -> Recommendation | None:
    start, end = policy.peak_hours_utc
    deferrable = [h for h in hours if h.priority in policy.deferrable_priorities]
    total = sum(h.requests for h in deferrable)
    at_peak = [h for h in deferrable if start <= h.hour < end]
    peak_requests = sum(h.requests for h in at_peak)
    if total == 0 or Decimal(peak_requests) / total <= policy.peak_share_trigger:
        return None
    share = Decimal(peak_requests) / total
    savings = sum((h.cost_usd for h in at_peak), ZERO) * policy.off_peak_discount
    priorities = "/".join(sorted(policy.deferrable_priorities))
    return Recommendation(
        "off_peak",
        f"{share:.0%} of non-urgent ({priorities}) requests ran at peak "
        f"({start:02d}:00-{end:02d}:00 UTC): move {peak_requests:,} of them off-peak "
        f"(assumes off-peak capacity at {policy.off_peak_discount:.0%} off)",
        savings,
    )


def _free_alternative(price: ModelPrice, catalog: ModelCatalog) -> ModelPrice | None:
    """A free model of the same kind, at least as good, or None."""
    candidates = [
        m for m in catalog.models if m.free and m.kind == price.kind and m.quality >= price.quality
    ]
    return max(candidates, key=lambda m: m.quality, default=None)


def _free_tier_quota(
    days: Iterable[DayUsage], catalog: ModelCatalog, policy: ReportPolicy
) -> Recommendation | None:
    by_day: dict[date, list[DayUsage]] = defaultdict(list)
    for row in days:
        by_day[row.day].append(row)
    movable_requests = 0
    savings = ZERO
    for rows in by_day.values():
        unused = max(policy.free_tier_daily_requests - sum(r.free_tier_requests for r in rows), 0)
        # The dearest paid requests per request go to the free quota first.
        candidates: list[tuple[Decimal, int]] = []
        for row in rows:
            try:
                price = catalog.get(row.service, row.model)
            except UnknownModelError:
                continue
            paid = row.requests - row.free_tier_requests
            if price.free or paid <= 0 or row.cost_usd <= 0:
                continue
            if _free_alternative(price, catalog) is not None:
                candidates.append((row.cost_usd / paid, paid))
        for cost_per_request, paid in sorted(candidates, reverse=True):
            moved = min(unused, paid)
            if moved == 0:
                break
            unused -= moved
            movable_requests += moved
            savings += cost_per_request * moved
    if movable_requests == 0:
        return None
    return Recommendation(
        "free_tier_quota",
        f"{movable_requests:,} paid requests could have used unused free-tier quota "
        f"({policy.free_tier_daily_requests:,} free-model requests/day) on a free model of "
        "the same kind and at least the same quality",
        savings,
    )


def _batching(similar: Iterable[SimilarRequests], policy: ReportPolicy) -> Recommendation | None:
    batchable = [
        s
        for s in similar
        if s.priority in policy.deferrable_priorities and s.size >= policy.batch_min_requests
    ]
    requests = sum(s.size * s.groups for s in batchable)
    cost = sum((s.cost_usd for s in batchable), ZERO)
    if requests == 0 or cost <= 0:
        return None
    return Recommendation(
        "batching",
        f"{requests:,} non-urgent requests came in groups of {policy.batch_min_requests}+ "
        "similar ones (same user, model and hour): send them through the provider's batch "
        f"API (assumes {policy.batch_discount:.0%} off)",
        cost * policy.batch_discount,
    )


def build_report(
    inputs: CostInputs, catalog: ModelCatalog, policy: ReportPolicy, now: datetime
) -> CostReport:
    models = sorted(inputs.models, key=lambda m: (-m.cost_usd, m.service, m.model))
    daily: dict[date, Decimal] = defaultdict(lambda: ZERO)
    for row in inputs.days:
        daily[row.day] += row.cost_usd
    images = sum(m.images for m in models)
    free_images = sum(m.free_tier_images for m in models)
    candidates = [_off_peak(inputs.hours, policy), _batching(inputs.similar, policy)]
    if inputs.user_id is None:
        # The free-tier quota belongs to the platform's account, not to one user.
        candidates.append(_free_tier_quota(inputs.days, catalog, policy))
    recommendations = sorted(
        (r for r in candidates if r is not None), key=lambda r: -r.estimated_savings_usd
    )
    return CostReport(
        month=inputs.month,
        user_id=inputs.user_id,
        as_of=now,
        models=models,
        total_usd=sum((m.cost_usd for m in models), ZERO),
        requests=sum(m.requests for m in models),
        projection=project_month_end(inputs.month, dict(daily), now),
        images=images,
        free_tier_images=free_images,
        free_image_share=Decimal(free_images) / images if images else None,
        free_image_share_target=policy.free_image_share_target,
        budget_usd=inputs.budget_usd,
        recommendations=recommendations,
    )


def _money(value: Decimal) -> str:
    return f"{value:,.6f}"


def report_json(report: CostReport) -> dict[str, Any]:
    """Exact amounts as decimal strings, so a JSON reader never sees a float."""
    return {
        "month": report.month.strftime("%Y-%m"),
        "user_id": report.user_id,
        "as_of": report.as_of.isoformat(),
        "total_usd": str(report.total_usd),
        "requests": report.requests,
        "by_model": [
            {
                "service": m.service,
                "model": m.model,
                "requests": m.requests,
                "input_tokens": m.input_tokens,
                "output_tokens": m.output_tokens,
                "images": m.images,
                "free_tier_requests": m.free_tier_requests,
                "free_tier_images": m.free_tier_images,
                "cost_usd": str(m.cost_usd),
            }
            for m in report.models
        ],
        "projected_month_end_usd": str(report.projection.month_end_usd),
        "projection_method": report.projection.method,
        "images": report.images,
        "free_tier_images": report.free_tier_images,
        "free_tier_image_share": (
            None if report.free_image_share is None else str(report.free_image_share)
        ),
        "free_tier_image_share_target": str(report.free_image_share_target),
        "free_tier_image_target_met": report.free_image_target_met,
        "budget_usd": None if report.budget_usd is None else str(report.budget_usd),
        "recommendations": [
            {
                "kind": r.kind,
                "message": r.message,
                "estimated_savings_usd": str(r.estimated_savings_usd),
            }
            for r in report.recommendations
        ],
    }


def render_text(report: CostReport) -> str:
    scope = f"user {report.user_id}" if report.user_id else "all users"
    lines = [
        f"Costs for {scope}, {report.month:%B %Y} (as of {report.as_of:%Y-%m-%d %H:%M} UTC)",
        "",
        f"{'service':<12}{'model':<44}{'requests':>10}{'images':>8}{'cost USD':>18}",
    ]
    for m in report.models:
        lines.append(
            f"{m.service:<12}{m.model:<44}{m.requests:>10,}{m.images:>8,}{_money(m.cost_usd):>18}"
        )
    lines.append(
        f"{'total':<56}{report.requests:>10,}{report.images:>8,}{_money(report.total_usd):>18}"
    )
    lines.append("")
    lines.append(
        f"projected month-end: {_money(report.projection.month_end_usd)} USD "
        f"({report.projection.method})"
    )
    if report.free_image_share is None:
        lines.append("free-tier share of image generation: no images this month")
    else:
        met = "met" if report.free_image_target_met else "NOT met"
        lines.append(
            f"free-tier share of image generation: {report.free_image_share:.1%} of "
            f"{report.images:,} images (target above {report.free_image_share_target:.0%}: "
            f"{met})"
        )
    if report.budget_usd is not None:
        used = report.total_usd / report.budget_usd
        lines.append(f"budget: {_money(report.budget_usd)} USD/month, {used:.1%} used this month")
    lines.append("recommendations:" if report.recommendations else "recommendations: none")
    for r in report.recommendations:
        lines.append(f"  - save ~{_money(r.estimated_savings_usd)} USD: {r.message}")
    return "\n".join(lines)
