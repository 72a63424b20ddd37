from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from agents.usage.report import (
    ReportPolicy,
    build_report,
    parse_month,
    project_month_end,
    render_text,
    report_json,
)
from schemas.model_catalog import load_catalog
from sinks.postgres.costs import (
    CostInputs,
    DayUsage,
    HourOfDayWork,
    ModelUsage,
    SimilarRequests,
)

NOVEMBER = date(2026, 11, 1)
CATALOG = load_catalog()
POLICY = ReportPolicy(free_tier_daily_requests=10)


def model_usage(
    model: str,
    cost: str,
    service: str = "gemini",
    *,
    requests: int = 10,
    images: int = 0,
    free_images: int = 0,
) -> ModelUsage:
    return ModelUsage(
        service, model, requests, 100, 200, images, free_images, free_images, Decimal(cost)
    )


def inputs(**overrides: object) -> CostInputs:
    fields: dict[str, object] = {
        "month": NOVEMBER,
        "user_id": None,
        "models": [],
        "days": [],
        "hours": [],
        "similar": [],
    }
    return CostInputs(**(fields | overrides))  # type: ignore[arg-type]


def daily(costs: list[str]) -> dict[date, Decimal]:
    return {NOVEMBER + timedelta(days=i): Decimal(c) for i, c in enumerate(costs)}


# -- month to date and the free-tier share -----------------------------------------------


def test_month_to_date_is_the_exact_sum_by_model_dearest_first() -> None:
    report = build_report(
        inputs(
            models=[
                model_usage("gemini-2.5-flash", "0.000000000001"),
                model_usage("gemini-2.5-pro", "12.5"),
            ]
        ),
        CATALOG,
        POLICY,
        datetime(2026, 11, 27, tzinfo=UTC),
    )
    assert [m.model for m in report.models] == ["gemini-2.5-pro", "gemini-2.5-flash"]
    assert report.total_usd == Decimal("12.500000000001")
    assert report.requests == 20


@pytest.mark.parametrize(
    ("free_images", "share", "met"),
    [(86, Decimal("0.86"), True), (85, Decimal("0.85"), False)],
)
def test_free_tier_share_of_image_generation_must_be_above_85_percent(
    free_images: int, share: Decimal, met: bool
) -> None:
    report = build_report(
        inputs(
            models=[
                model_usage(
                    "google/gemini-2.5-flash-image-preview:free",
                    "0",
                    "openrouter",
                    requests=free_images,
                    images=free_images,
                    free_images=free_images,
                ),
                model_usage(
                    "gemini-2.5-flash-image",
                    "0.5",
                    requests=100 - free_images,
                    images=100 - free_images,
                ),
                model_usage("gemini-2.5-flash", "1"),
            ]
        ),
        CATALOG,
        POLICY,
        datetime(2026, 11, 27, tzinfo=UTC),
    )
    assert report.images == 100
    assert report.free_image_share == share
    assert report.free_image_target_met is met


def test_no_images_means_no_share_rather_than_zero() -> None:
    report = build_report(
        inputs(models=[model_usage("gemini-2.5-flash", "1")]),
        CATALOG,
        POLICY,
        datetime(2026, 11, 27, tzinfo=UTC),
    )
    assert report.free_image_share is None
    assert report.free_image_target_met is None


# -- projection --------------------------------------------------------------------------


def test_a_flat_trend_projects_the_same_cost_every_remaining_day() -> None:
    now = datetime(2026, 11, 11, 0, 0, tzinfo=UTC)  # 10 complete days of 30
    projection = project_month_end(NOVEMBER, daily(["1"] * 10), now)
    assert projection.month_end_usd == Decimal(30)
    assert "10 complete days" in projection.method


def test_a_rising_trend_is_extrapolated_linearly() -> None:
    now = datetime(2026, 11, 11, 0, 0, tzinfo=UTC)
    projection = project_month_end(NOVEMBER, daily([str(d) for d in range(10)]), now)
    assert projection.month_end_usd == Decimal(sum(range(30)))


def test_the_rest_of_today_counts_in_proportion() -> None:
    now = datetime(2026, 11, 11, 12, 0, tzinfo=UTC)  # half of day 11 to go
    costs = daily(["2"] * 10) | {date(2026, 11, 11): Decimal(1)}
    # 20 spent + 1 today so far + half a day at 2 + 19 later days at 2
    assert project_month_end(NOVEMBER, costs, now).month_end_usd == Decimal(60)


def test_a_falling_trend_never_projects_negative_days() -> None:
    now = datetime(2026, 11, 5, 0, 0, tzinfo=UTC)
    projection = project_month_end(NOVEMBER, daily(["8", "6", "4", "2"]), now)
    # trend: 8 - 2d -> day 4 is 0 and later days would be negative: clipped to 0
    assert projection.month_end_usd == Decimal(20)


def test_early_in_the_month_the_run_rate_is_used() -> None:
    now = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    projection = project_month_end(NOVEMBER, daily(["2"]), now)
    assert projection.month_end_usd == Decimal(120)
    assert "run rate" in projection.method


def test_a_past_month_projects_its_actual_total() -> None:
    projection = project_month_end(NOVEMBER, daily(["1.5", "2"]), datetime(2026, 12, 3, tzinfo=UTC))
    assert projection.month_end_usd == Decimal("3.5")


# -- recommendations ---------------------------------------------------------------------


def hour(h: int, priority: str | None, requests: int, cost: str) -> HourOfDayWork:
    return HourOfDayWork(h, priority, requests, Decimal(cost))


def recommendations(data: CostInputs) -> dict[str, Decimal]:
    report = build_report(data, CATALOG, POLICY, datetime(2026, 11, 27, tzinfo=UTC))
    return {r.kind: r.estimated_savings_usd for r in report.recommendations}


def test_off_peak_is_recommended_when_more_than_70_percent_of_deferrable_work_is_at_peak() -> None:
    hours = [
        hour(17, "low", 50, "4"),  # peak is 16:00-22:00 UTC
        hour(21, "background", 26, "2"),
        hour(3, "low", 24, "1"),
        hour(18, "urgent", 1000, "100"),  # urgent work stays where it is
    ]
    assert recommendations(inputs(hours=hours)) == {"off_peak": Decimal("3.0")}


def test_off_peak_is_not_recommended_at_exactly_70_percent() -> None:
    hours = [hour(17, "low", 70, "4"), hour(3, "low", 30, "1"), hour(22, "normal", 50, "1")]
    assert "off_peak" not in recommendations(inputs(hours=hours))


def test_unused_free_quota_savings_take_the_dearest_movable_requests_first() -> None:
    day = date(2026, 11, 2)
    days = [
        # 4 of 10 free-model requests used: 6 left
        DayUsage(day, "openrouter", "meta-llama/llama-3.3-70b-instruct:free", 4, 4, Decimal(0)),
        DayUsage(day, "gemini", "gemini-2.5-flash-lite", 10, 0, Decimal("0.1")),  # 0.01 each
        DayUsage(day, "gemini", "gemini-2.5-flash", 5, 0, Decimal("0.5")),  # 0.10 each
        DayUsage(day, "gemini", "gemini-2.5-pro", 5, 0, Decimal("50")),  # no free equivalent
    ]
    # 5 flash at 0.10 + 1 flash-lite at 0.01
    assert recommendations(inputs(days=days)) == {"free_tier_quota": Decimal("0.51")}


def test_free_quota_is_a_platform_matter_not_in_a_users_report() -> None:
    days = [DayUsage(date(2026, 11, 2), "gemini", "gemini-2.5-flash", 5, 0, Decimal("0.5"))]
    assert recommendations(inputs(days=days, user_id="u-1")) == {}
    assert "free_tier_quota" in recommendations(inputs(days=days))


def test_batching_counts_groups_of_similar_deferrable_requests() -> None:
    similar = [
        SimilarRequests("gemini", "gemini-2.5-flash", "background", 12, 3, Decimal("0.9")),
        SimilarRequests("gemini", "gemini-2.5-flash", "low", 9, 100, Decimal("50")),  # too few
        SimilarRequests("gemini", "gemini-2.5-flash", "urgent", 40, 10, Decimal("50")),
    ]
    report = build_report(
        inputs(similar=similar), CATALOG, POLICY, datetime(2026, 11, 27, tzinfo=UTC)
    )
    (batching,) = report.recommendations
    assert batching.kind == "batching"
    assert batching.estimated_savings_usd == Decimal("0.45")
    assert "36 non-urgent requests" in batching.message


# -- output ------------------------------------------------------------------------------


def test_json_carries_exact_decimal_strings_and_text_names_each_part() -> None:
    report = build_report(
        inputs(
            user_id="u-1",
            models=[model_usage("gemini-2.5-flash", "0.123456789012")],
            hours=[hour(17, "low", 9, "1"), hour(3, "low", 1, "1")],
            budget_usd=Decimal(1),
        ),
        CATALOG,
        POLICY,
        datetime(2026, 11, 27, tzinfo=UTC),
    )
    data = report_json(report)
    assert data["total_usd"] == "0.123456789012"
    assert data["by_model"][0]["cost_usd"] == "0.123456789012"
    assert data["month"] == "2026-11"
    assert data["recommendations"][0]["kind"] == "off_peak"
    text = render_text(report)
    assert "user u-1, November 2026" in text
    assert "projected month-end" in text
    assert "budget: 1.000000 USD/month, 12.3% used" in text
    assert "save ~0.500000 USD" in text


def test_parse_month() -> None:
    assert parse_month("2026-02") == date(2026, 2, 1)
    with pytest.raises(ValueError, match="YYYY-MM"):
        parse_month("Feb 2026")
