"""Dashboard figures from the worker's own Prometheus registry: pure functions from two
snapshots of its samples (now and a few seconds ago) to the JSON the page draws.

A panel whose metric families have no samples at all is `None`: nothing feeds it yet, and the
page says so instead of showing a zero. Rates and percentiles cover the window between the two
snapshots; percentiles are estimated from histogram buckets as PromQL's histogram_quantile does.
"""

from __future__ import annotations

import calendar
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client.metrics_core import Metric

from runtime.metrics import CACHE_READ_LAYERS

LabelSet = tuple[tuple[str, str], ...]
Series = Mapping[LabelSet, float]
Json = dict[str, Any]

QUANTILES = (0.5, 0.95, 0.99)
BREAKER_STATES = {0: "closed", 1: "half-open", 2: "open"}
HEALTH_STATES = {0: "healthy", 1: "degraded", 2: "unhealthy"}
KEPT_PREFIXES = ("scribe_", "process_")


@dataclass(frozen=True)
class Snapshot:
    """Every sample of the registry at one moment (`at`, Unix seconds), by sample name."""

    at: float
    samples: Mapping[str, Series] = field(default_factory=dict)

    def series(self, name: str) -> Series:
        return self.samples.get(name, {})

    def has(self, name: str) -> bool:
        return bool(self.samples.get(name))


def take_snapshot(families: Iterable[Metric], at: float) -> Snapshot:
    samples: dict[str, dict[LabelSet, float]] = defaultdict(dict)
    for family in families:
        if not family.name.startswith(KEPT_PREFIXES):
            continue
        for sample in family.samples:
            samples[sample.name][tuple(sorted(sample.labels.items()))] = float(sample.value)
    return Snapshot(at, dict(samples))


def label(labels: LabelSet, name: str) -> str:
    for key, value in labels:
        if key == name:
            return value
    return ""


def increase(current: Snapshot, earlier: Snapshot, name: str) -> dict[LabelSet, float]:
    """Per series, how much a counter grew between the snapshots; a counter that went down was
    reset (the worker restarted), so all of its current value is new."""
    before = earlier.series(name)
    result = {}
    for labels, value in current.series(name).items():
        previous = before.get(labels, 0.0)
        result[labels] = value - previous if value >= previous else value
    return result


def sum_by(series: Mapping[LabelSet, float], *names: str) -> dict[tuple[str, ...], float]:
    grouped: dict[tuple[str, ...], float] = defaultdict(float)
    for labels, value in series.items():
        grouped[tuple(label(labels, n) for n in names)] += value
    return dict(grouped)


def _window(current: Snapshot, earlier: Snapshot) -> float:
    return max(current.at - earlier.at, 1e-9)


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The q-quantile from cumulative buckets `(upper bound, count)` sorted by bound, the last
    one +Inf; linear inside a bucket; None with no observations. As PromQL: a rank that falls in
    the +Inf bucket answers the highest finite bound."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound


def latency_rows(
    current: Snapshot, earlier: Snapshot, family: str, group: Sequence[str]
) -> list[Json] | None:
    """Per group of labels: observations in the window, their rate, p50/p95/p99 (None when the
    window saw none) and the mean."""
    bucket_name = f"{family}_bucket"
    if not current.has(bucket_name):
        return None
    grown = increase(current, earlier, bucket_name)
    sums = sum_by(increase(current, earlier, f"{family}_sum"), *group)
    by_group: dict[tuple[str, ...], dict[float, float]] = defaultdict(lambda: defaultdict(float))
    for labels, value in grown.items():
        key = tuple(label(labels, n) for n in group)
        by_group[key][float(label(labels, "le"))] += value
    rows = []
    window = _window(current, earlier)
    for key in sorted(by_group):
        buckets = sorted(by_group[key].items())
        count = buckets[-1][1] if buckets else 0.0
        row: Json = dict(zip(group, key, strict=True))
        row["count"] = round(count)
        row["per_s"] = count / window
        for q in QUANTILES:
            row[f"p{round(q * 100)}"] = histogram_quantile(q, buckets)
        row["mean"] = sums.get(key, 0.0) / count if count else None
        rows.append(row)
    return rows


def _rates(current: Snapshot, earlier: Snapshot, name: str, *group: str) -> dict[str, float]:
    window = _window(current, earlier)
    grown = sum_by(increase(current, earlier, name), *group)
    return {"/".join(k): v / window for k, v in grown.items()}


def _totals(current: Snapshot, name: str, *group: str) -> dict[str, float]:
    return {"/".join(k): v for k, v in sum_by(current.series(name), *group).items()}


def throughput(current: Snapshot, earlier: Snapshot) -> Json | None:
    names = ("scribe_messages_in_total", "scribe_messages_out_total", "scribe_dead_letters_total")
    if not any(current.has(n) for n in names):
        return None
    in_rate = _rates(current, earlier, names[0], "topic")
    out_rate = _rates(current, earlier, names[1], "topic")
    dlq_rate = _rates(current, earlier, names[2], "topic")
    in_total = _totals(current, names[0], "topic")
    out_total = _totals(current, names[1], "topic")
    dlq_total = _totals(current, names[2], "topic")
    topics = sorted(
        {*in_total, *dlq_total, *(t for t in out_total if not t.endswith(".dlq"))} - {""}
    )
    rows = [
        {
            "topic": topic,
            "in_per_s": in_rate.get(topic),
            "out_per_s": out_rate.get(topic),
            "dlq_per_s": dlq_rate.get(topic),
            "in_total": in_total.get(topic),
            "out_total": out_total.get(topic),
            "dlq_total": dlq_total.get(topic),
        }
        for topic in topics
    ]
    return {
        "rows": rows,
        "in_per_s": sum(in_rate.values()),
        "out_per_s": sum(out_rate.values()),
        "dlq_per_s": sum(dlq_rate.values()),
        "in_total": sum(in_total.values()),
        "out_total": sum(out_total.values()),
        "dlq_total": sum(dlq_total.values()),
    }


def consumer_lag(current: Snapshot) -> Json | None:
    series = current.series("scribe_consumer_lag_messages")
    if not series:
        return None
    partitions = sorted(
        (
            {
                "group": label(ls, "group"),
                "topic": label(ls, "topic"),
                "partition": int(label(ls, "partition")),
                "lag": v,
            }
            for ls, v in series.items()
        ),
        key=lambda p: (p["group"], p["topic"], p["partition"]),
    )
    return {
        "total": sum(series.values()),
        "by_topic": _totals(current, "scribe_consumer_lag_messages", "topic"),
        "by_group": _totals(current, "scribe_consumer_lag_messages", "group"),
        "partitions": partitions,
    }


def latency(current: Snapshot, earlier: Snapshot) -> Json | None:
    processing = latency_rows(current, earlier, "scribe_processing_seconds", ["agent"])
    end_to_end = latency_rows(current, earlier, "scribe_end_to_end_seconds", ["agent", "sink"])
    if processing is None and end_to_end is None:
        return None
    return {"processing": processing, "end_to_end": end_to_end}


def sinks(current: Snapshot, earlier: Snapshot) -> Json | None:
    batches = latency_rows(current, earlier, "scribe_sink_batch_size", ["sink"])
    writes = latency_rows(current, earlier, "scribe_sink_write_seconds", ["sink"])
    errors = _totals(current, "scribe_sink_errors_total", "sink")
    retries = _totals(current, "scribe_sink_retries_total", "sink")
    if batches is None and writes is None and not errors:
        return None
    batch_by_sink = {row["sink"]: row for row in batches or []}
    write_by_sink = {row["sink"]: row for row in writes or []}
    names = sorted({*batch_by_sink, *write_by_sink, *errors, *retries})
    return {
        "rows": [
            {
                "sink": name,
                "batches_per_s": batch_by_sink.get(name, {}).get("per_s"),
                "mean_batch": batch_by_sink.get(name, {}).get("mean"),
                "write_p95": write_by_sink.get(name, {}).get("p95"),
                "errors_total": errors.get(name, 0.0),
                "retries_total": retries.get(name, 0.0),
            }
            for name in names
        ]
    }


def project_month_end(month_to_date: float, now: datetime) -> float:
    """Linear from the month so far; at least one day of history is assumed, so the first
    hours of a month do not blow a few cents up into a fortune."""
    days_in_month = calendar.monthrange(now.year, now.month)[1]
    start = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    elapsed_days = max((now - start).total_seconds() / 86400, 1.0)
    return month_to_date / elapsed_days * days_in_month


def cost(current: Snapshot, earlier: Snapshot, now: datetime) -> Json | None:
    today = _totals(current, "scribe_cost_today_usd", "service", "model")
    month = _totals(current, "scribe_cost_month_to_date_usd", "service", "model")
    spend_rate = _rates(current, earlier, "scribe_cost_usd_total", "service", "model")
    if not today and not month and not current.has("scribe_cost_usd_total"):
        return None
    rows = []
    for key in sorted({*today, *month, *spend_rate}):
        service, model = key.split("/", 1)
        mtd = month.get(key, 0.0)
        rows.append(
            {
                "service": service,
                "model": model,
                "today": today.get(key, 0.0),
                "month_to_date": mtd,
                "projected": project_month_end(mtd, now),
                "per_hour": spend_rate[key] * 3600 if key in spend_rate else None,
            }
        )
    mtd_total = sum(month.values())
    return {
        "rows": rows,
        "today": sum(today.values()),
        "month_to_date": mtd_total,
        "projected": project_month_end(mtd_total, now),
    }


def _share(part: float, whole: float) -> float | None:
    return part / whole if whole else None


def routing(current: Snapshot, earlier: Snapshot) -> Json | None:
    decisions = "scribe_routing_decisions_total"
    calls = "scribe_provider_calls_total"
    free_tier = "scribe_free_tier_requests_total"
    if not any(current.has(n) for n in (decisions, calls, free_tier)):
        return None
    by_route = _totals(current, decisions, "route")
    free, paid = by_route.get("free", 0.0), by_route.get("paid", 0.0)
    call_rates = _rates(current, earlier, calls, "provider", "model")
    ok_totals = {
        "/".join(k[:2]): v
        for k, v in sum_by(current.series(calls), "provider", "model", "outcome").items()
        if k[2] == "ok"
    }
    call_totals = _totals(current, calls, "provider", "model")
    call_latency = {
        f"{r['provider']}/{r['model']}": r
        for r in latency_rows(
            current, earlier, "scribe_provider_call_seconds", ["provider", "model"]
        )
        or []
    }
    providers = []
    for key in sorted(call_totals):
        provider, model = key.split("/", 1)
        providers.append(
            {
                "provider": provider,
                "model": model,
                "per_s": call_rates.get(key, 0.0),
                "total": call_totals[key],
                "ok_share": _share(ok_totals.get(key, 0.0), call_totals[key]),
                "p95": call_latency.get(key, {}).get("p95"),
            }
        )
    quota = [
        {
            "provider": label(ls, "provider"),
            "key_id": label(ls, "key_id"),
            "window": label(ls, "window"),
            "used": v,
        }
        for ls, v in sorted(current.series("scribe_provider_key_quota_used_ratio").items())
    ]
    return {
        "by_route": by_route,
        "by_lane": _totals(current, decisions, "lane"),
        "route_per_s": _rates(current, earlier, decisions, "route"),
        "free_share": _share(free, free + paid),
        "providers": providers,
        "free_tier": _totals(current, free_tier, "provider", "outcome"),
        "key_quota": quota,
    }


def breakers(current: Snapshot) -> list[Json] | None:
    series = current.series("scribe_breaker_state")
    if not series:
        return None
    return [
        {
            "provider": label(ls, "provider"),
            "model": label(ls, "model"),
            "state": BREAKER_STATES.get(int(v), f"unknown ({v:g})"),
        }
        for ls, v in sorted(series.items())
    ]


def world(current: Snapshot, earlier: Snapshot) -> Json | None:
    if not current.has("scribe_world_ticks_total"):
        return None
    lag_rows = latency_rows(current, earlier, "scribe_world_tick_lag_seconds", []) or [{}]
    active = current.series("scribe_worlds_active")
    return {
        "ticks_per_s": sum(_rates(current, earlier, "scribe_world_ticks_total").values()),
        "ticks_total": sum(current.series("scribe_world_ticks_total").values()),
        "tick_lag": {q: lag_rows[0].get(q) for q in ("p50", "p95", "p99")},
        "worlds_active": sum(active.values()) if active else None,
    }


def invalidation(current: Snapshot, earlier: Snapshot) -> Json | None:
    end_to_end = [
        row
        for row in latency_rows(current, earlier, "scribe_end_to_end_seconds", ["agent", "sink"])
        or []
        if row["agent"] == "invalidation"
    ]
    if not current.has("scribe_invalidations_total") and not end_to_end:
        return None
    window_stages = sum_by(increase(current, earlier, "scribe_coalesce_targets_total"), "stage")
    total_stages = sum_by(current.series("scribe_coalesce_targets_total"), "stage")

    def reduction(stages: Mapping[tuple[str, ...], float]) -> float | None:
        received = stages.get(("received",), 0.0)
        return 1 - stages.get(("emitted",), 0.0) / received if received else None

    return {
        "per_s": _rates(current, earlier, "scribe_invalidations_total", "sink"),
        "totals": _totals(current, "scribe_invalidations_total", "sink"),
        "latency": [
            {k: row[k] for k in ("sink", "count", "p50", "p95", "p99")} for row in end_to_end
        ],
        "coalescing": {"window": reduction(window_stages), "total": reduction(total_stages)},
    }


def _hit_ratio(reads: Mapping[str, float]) -> float | None:
    """Reads answered by L1 or Redis over all reads (by layer)."""
    return _share(reads.get("l1", 0.0) + reads.get("redis", 0.0), sum(reads.values()))


def cache_reads(current: Snapshot, earlier: Snapshot) -> Json | None:
    """The hit ratio of the cache clients in this process, per cache name and overall, over the
    window and since start."""
    name = "scribe_cache_reads_total"
    if not current.has(name):
        return None
    window = sum_by(increase(current, earlier, name), "cache", "layer")
    total = sum_by(current.series(name), "cache", "layer")

    def by_layer(
        counts: Mapping[tuple[str, ...], float], cache: str | None = None
    ) -> dict[str, float]:
        layers: dict[str, float] = defaultdict(float)
        for (of_cache, layer), value in counts.items():
            if cache is None or of_cache == cache:
                layers[layer] += value
        return layers

    seconds = _window(current, earlier)
    rows = []
    for cache in sorted({c for c, _ in total}):
        in_window, since_start = by_layer(window, cache), by_layer(total, cache)
        rows.append(
            {
                "cache": cache,
                "reads_per_s": sum(in_window.values()) / seconds,
                "hit_ratio": _hit_ratio(in_window),
                "hit_ratio_total": _hit_ratio(since_start),
                "reads": {layer: since_start.get(layer, 0.0) for layer in CACHE_READ_LAYERS},
            }
        )
    return {
        "rows": rows,
        "hit_ratio": _hit_ratio(by_layer(window)),
        "hit_ratio_total": _hit_ratio(by_layer(total)),
    }


def health_states(current: Snapshot) -> dict[str, str] | None:
    series = current.series("scribe_health_status")
    if not series:
        return None
    return {label(ls, "component"): HEALTH_STATES.get(int(v), "?") for ls, v in series.items()}


def process(current: Snapshot) -> Json:
    rss = sum(current.series("process_resident_memory_bytes").values())
    started = sum(current.series("process_start_time_seconds").values())
    return {
        "rss_bytes": rss or None,
        "uptime_s": current.at - started if started else None,
        "cpu_seconds": sum(current.series("process_cpu_seconds_total").values()) or None,
    }


def chart_point(frame: Json) -> Json:
    """What the charts keep per frame (a few numbers), so the page can get minutes of history
    on connect without the full frames."""
    flow = frame["throughput"] or {}
    lag = frame["lag"] or {}
    timing = frame["latency"] or {}
    return {
        "t": frame["t"],
        "in": {r["topic"]: r["in_per_s"] for r in flow.get("rows", []) if r["in_per_s"]},
        "lag": lag.get("total"),
        "p95": {r["agent"]: r["p95"] for r in timing.get("processing") or []},
        "e2e_p95": {f"{r['agent']}/{r['sink']}": r["p95"] for r in timing.get("end_to_end") or []},
    }


def build_frame(current: Snapshot, earlier: Snapshot, now: datetime) -> Json:
    frame: Json = {
        "t": round(current.at * 1000),
        "at": now.isoformat(),
        "window_s": current.at - earlier.at,
        "throughput": throughput(current, earlier),
        "lag": consumer_lag(current),
        "latency": latency(current, earlier),
        "sinks": sinks(current, earlier),
        "cost": cost(current, earlier, now),
        "routing": routing(current, earlier),
        "breakers": breakers(current),
        "world": world(current, earlier),
        "invalidation": invalidation(current, earlier),
        "cache": cache_reads(current, earlier),
        "health_states": health_states(current),
        "process": process(current),
    }
    frame["point"] = chart_point(frame)
    return frame
