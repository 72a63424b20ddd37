"""The routing policy: which models serve a request, in which lane, at what estimated cost, and
why. Pure: the decide agent passes in the user's ledger, budget and the clock, and stores the
ledger that comes back.

Model choice for text, from a complexity score (0-6):
- prompt size (estimated tokens, 4 characters each): under 200 -> 0, under 1,000 -> 1, under
  4,000 -> 2, else 3;
- structure: a code block, or several questions or list items -> +1;
- a reasoning cue ("step by step", "analyze", "compare", "prove", "plan", "why") -> +1;
- `model_hint` "cheap", "fast" or "lite" -> -2; "quality", "best", "reasoning" or "pro" -> +2.
Score 0-1 needs quality 1 (flash-lite), 2-3 quality 2 (flash), 4+ quality 3 (pro). Urgent and
high priority, and premium users, get at least quality 2; free-tier users at most quality 2.
The cheapest paid model of the needed quality is chosen (prices from the shared catalog); a
`model_hint` naming a catalog model picks it when the tier allows. Free text models are never
the first choice (their per-key limits cannot carry the text load); they end the fallback chain.

Images: the free OpenRouter model while the user's free images for the UTC day last (default
1,000), then the paid image models, cheapest first.

Budget: remaining = budget - max(spend the usage aggregator reports, what this router committed
this month). Committing each estimate at decide time, in the worker that owns the user, is what
stops concurrent requests from spending past the budget. When the chosen model's estimate is
over the remaining budget (or the request's `max_cost_usd`), `downgrade` takes the best paid
model that fits, else the free text model; `reject` answers with a clear error.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import lru_cache

import orjson

from schemas.events import (
    AIRequest,
    Lane,
    Priority,
    Refusal,
    RefusalKind,
    RequestKind,
    RouteChoice,
    RouterSettlement,
    UserTier,
)
from schemas.model_catalog import ModelCatalog, ModelPrice

CHARS_PER_TOKEN = 4
MAX_RATIONALE = 500
ZERO = Decimal(0)

LANE_OF_PRIORITY = {
    Priority.URGENT: Lane.URGENT,
    Priority.HIGH: Lane.URGENT,
    Priority.NORMAL: Lane.NORMAL,
    Priority.LOW: Lane.DEFERRED,
    Priority.BACKGROUND: Lane.DEFERRED,
}
LOWER_HINTS = frozenset({"cheap", "fast", "lite"})
HIGHER_HINTS = frozenset({"quality", "best", "reasoning", "pro"})
REASONING_CUE = re.compile(r"step by step|analy[sz]e|compare|prove|\bplan\b|\bwhy\b", re.I)
LIST_ITEM = re.compile(r"^\s*(?:[-*]|\d+[.)])\s", re.M)


@dataclass(frozen=True)
class PolicyConfig:
    services: frozenset[str]
    free_images_per_day: int = 1000
    over_budget: str = "downgrade"
    default_budget_usd: Decimal | None = None
    max_output_tokens: int = 1024


@dataclass(frozen=True)
class Budget:
    """A user's monthly budget as the usage aggregator last reported it."""

    month: date | None
    budget_usd: Decimal
    spent_usd: Decimal


@dataclass(frozen=True)
class UserLedger:
    """The counters the decide owner keeps per user in its table."""

    day: date | None = None
    free_images_used: int = 0
    month: date | None = None
    committed_usd: Decimal = ZERO

    def rolled(self, now: datetime) -> UserLedger:
        """The ledger as of `now`: a new UTC day resets the free images, a new month the spend."""
        today = now.astimezone(UTC).date()
        month = today.replace(day=1)
        if self.day == today and self.month == month:
            return self
        free = self.free_images_used if self.day == today else 0
        return UserLedger(today, free, month, self.committed_usd if self.month == month else ZERO)

    # The constructor, not dataclasses.replace: decide changes a ledger once or twice for every
    # request, and replace() costs several times as much.
    def with_free_images(self, used: int) -> UserLedger:
        return UserLedger(self.day, used, self.month, self.committed_usd)

    def with_committed(self, usd: Decimal) -> UserLedger:
        return UserLedger(self.day, self.free_images_used, self.month, usd)

    def dumps(self) -> bytes:
        return orjson.dumps(
            {
                "day": self.day.isoformat() if self.day else None,
                "free_images_used": self.free_images_used,
                "month": self.month.isoformat() if self.month else None,
                "committed_usd": str(self.committed_usd),
            }
        )

    @classmethod
    def loads(cls, raw: bytes | None) -> UserLedger:
        if not raw:
            return cls()
        data = orjson.loads(raw)
        return cls(
            day=date.fromisoformat(data["day"]) if data.get("day") else None,
            free_images_used=int(data.get("free_images_used", 0)),
            month=date.fromisoformat(data["month"]) if data.get("month") else None,
            committed_usd=Decimal(data.get("committed_usd", "0")),
        )


@dataclass(frozen=True)
class Complexity:
    score: int
    reasons: tuple[str, ...]

    @property
    def quality(self) -> int:
        if self.score <= 1:
            return 1
        if self.score <= 3:
            return 2
        return 3


@dataclass(frozen=True)
class FreeQuotaCheck:
    """An image request asked for one of the user's free images of the day: `provider` serves
    the free model; `granted` False when the day's free images were used up."""

    provider: str
    granted: bool


@dataclass(frozen=True)
class Route:
    lane: Lane
    chain: tuple[RouteChoice, ...]
    estimated_cost_usd: Decimal
    rationale: str
    free_slot_day: date | None
    ledger: UserLedger
    free_quota: FreeQuotaCheck | None = None


@dataclass(frozen=True)
class Rejection:
    error: str
    rationale: str
    ledger: UserLedger
    refusal: Refusal
    free_quota: FreeQuotaCheck | None = None


def seconds_until_next_month(now: datetime) -> int:
    """Until the UTC month turns, when the ledger's committed spend and the budget restart."""
    today = now.astimezone(UTC)
    first = today.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    turn = (first + timedelta(days=32)).replace(day=1)
    return max(1, math.ceil((turn - today).total_seconds()))


def seconds_until_next_day(now: datetime) -> int:
    """Until UTC midnight, when the free images of the day restart."""
    today = now.astimezone(UTC)
    turn = today.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    return max(1, math.ceil((turn - today).total_seconds()))


def estimate_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


def complexity(request: AIRequest, tokens: int | None = None) -> Complexity:
    """How demanding the request is; `tokens`: its prompt's estimate, when already made."""
    tokens = estimate_tokens(request.prompt) if tokens is None else tokens
    reasons = [f"~{tokens} prompt tokens"]
    score = 0 if tokens < 200 else 1 if tokens < 1000 else 2 if tokens < 4000 else 3
    if "```" in request.prompt or request.prompt.count("?") >= 2 or _list_items(request) >= 3:
        score += 1
        reasons.append("structured")
    if REASONING_CUE.search(request.prompt):
        score += 1
        reasons.append("reasoning cue")
    hint = (request.model_hint or "").strip().lower()
    if hint in LOWER_HINTS:
        score -= 2
        reasons.append(f"hint {hint}")
    elif hint in HIGHER_HINTS:
        score += 2
        reasons.append(f"hint {hint}")
    return Complexity(max(0, min(6, score)), tuple(reasons))


def _list_items(request: AIRequest) -> int:
    return len(LIST_ITEM.findall(request.prompt))


def remaining_budget(
    ledger: UserLedger, budget: Budget | None, config: PolicyConfig
) -> Decimal | None:
    """What the user may still spend this month; None when no budget applies."""
    if budget is not None and budget.month in (None, ledger.month):
        limit, reported = budget.budget_usd, budget.spent_usd
    elif budget is not None:
        limit, reported = budget.budget_usd, ZERO  # the report is from another month
    elif config.default_budget_usd is not None:
        limit, reported = config.default_budget_usd, ZERO
    else:
        return None
    return max(ZERO, limit - max(reported, ledger.committed_usd))


# Decide prices every candidate model for every request, and most prompts fall on a few
# hundred token counts: a cached estimate costs a fraction of the Decimal arithmetic.
@lru_cache(maxsize=8192)
def estimate(
    model: ModelPrice, input_tokens: int, kind: RequestKind, max_output_tokens: int
) -> Decimal:
    """An upper bound: output is capped at `max_output_tokens` when the call is made."""
    if kind is RequestKind.IMAGE:
        return model.cost(input_tokens, 0, 1)
    return model.cost(input_tokens, max_output_tokens, 0)


@dataclass(frozen=True)
class _Ask:
    """One request with what every routing step needs to know about it."""

    request: AIRequest
    lane: Lane
    remaining: Decimal | None
    config: PolicyConfig
    now: datetime
    input_tokens: int

    def fits(self, cost: Decimal) -> bool:
        limit = self.request.max_cost_usd
        return (self.remaining is None or cost <= self.remaining) and (
            limit is None or cost <= limit
        )

    def estimate(self, model: ModelPrice) -> Decimal:
        return estimate(model, self.input_tokens, self.request.kind, self.config.max_output_tokens)

    def over_limit(self, cost: Decimal) -> Refusal:
        """Why `cost` does not fit: the request's own max_cost_usd (waiting will not help), else
        the monthly budget (it restarts when the UTC month turns)."""
        limit = self.request.max_cost_usd
        if limit is not None and cost > limit:
            return Refusal(kind=RefusalKind.COST_LIMIT)
        return Refusal(kind=RefusalKind.BUDGET, retry_after_s=seconds_until_next_month(self.now))


def decide(
    request: AIRequest,
    ledger: UserLedger,
    budget: Budget | None,
    *,
    now: datetime,
    catalog: ModelCatalog,
    config: PolicyConfig,
) -> Route | Rejection:
    ledger = ledger.rolled(now)
    ask = _Ask(
        request,
        LANE_OF_PRIORITY[request.priority],
        remaining_budget(ledger, budget, config),
        config,
        now,
        estimate_tokens(request.prompt),
    )
    models = _candidates(catalog, request.kind, config.services)
    if not models:
        return Rejection(
            f"no configured provider serves {request.kind.value} requests",
            f"{request.kind.value}; configured services: {', '.join(sorted(config.services))}",
            ledger,
            Refusal(kind=RefusalKind.UNAVAILABLE),
        )
    if request.kind is RequestKind.IMAGE:
        return _route_image(ask, ledger, models)
    return _route_text(ask, ledger, models)


def _candidates(
    catalog: ModelCatalog, kind: RequestKind, services: frozenset[str]
) -> list[ModelPrice]:
    return [m for m in catalog.of_kind(kind.value) if m.service in services]


@lru_cache(maxsize=8192)  # a RouteChoice is frozen; validating one costs more than the lookup
def _choice(model: ModelPrice, cost: Decimal) -> RouteChoice:
    return RouteChoice(
        service=model.service, model=model.model, free_tier=model.free, estimated_cost_usd=cost
    )


@lru_cache(maxsize=8192)
def _usd(amount: Decimal) -> str:
    return f"{amount.normalize():f}"


def _describe(chain: Iterable[RouteChoice]) -> str:
    return ", ".join(f"{c.service}/{c.model} est {_usd(c.estimated_cost_usd)}" for c in chain)


def _budget_note(remaining: Decimal | None) -> str:
    return "no budget" if remaining is None else f"budget left {_usd(remaining)} USD"


def _route_image(ask: _Ask, ledger: UserLedger, models: list[ModelPrice]) -> Route | Rejection:
    chain: list[RouteChoice] = []
    notes = [f"image, priority {ask.request.priority.value}"]
    free_slot_day = None
    free_models = [m for m in models if m.free]
    quota = ask.config.free_images_per_day
    free_quota = None
    if free_models:
        free_quota = FreeQuotaCheck(free_models[0].service, ledger.free_images_used < quota)
    if free_quota is not None and free_quota.granted:
        ledger = ledger.with_free_images(ledger.free_images_used + 1)
        free_slot_day = ledger.day
        notes.append(f"free image {ledger.free_images_used}/{quota} today")
        chain.append(_choice(free_models[0], ask.estimate(free_models[0])))
    elif free_quota is not None:
        notes.append(f"free images used up ({quota}/{quota} today)")
    paid = sorted(
        ((ask.estimate(m), m) for m in models if not m.free),
        key=lambda pair: (pair[0], -pair[1].quality),
    )
    affordable = [_choice(m, cost) for cost, m in paid if ask.fits(cost)]
    if len(affordable) < len(paid):
        notes.append(f"paid image models over budget dropped ({_budget_note(ask.remaining)})")
    chain.extend(affordable)
    if not chain:
        if free_quota is not None:  # tomorrow's free images will serve it
            why = Refusal(kind=RefusalKind.QUOTA, retry_after_s=seconds_until_next_day(ask.now))
        else:
            why = ask.over_limit(min(cost for cost, _ in paid))
        return Rejection(
            "no free images left today and the paid image models cost more than the remaining "
            f"budget ({_budget_note(ask.remaining)})",
            "; ".join(notes),
            ledger,
            why,
            free_quota,
        )
    return _route(ask, ledger, chain, notes, free_slot_day, free_quota=free_quota)


def _route_text(ask: _Ask, ledger: UserLedger, models: list[ModelPrice]) -> Route | Rejection:
    request = ask.request
    score = complexity(request, ask.input_tokens)
    need = score.quality
    notes = [f"text, complexity {score.score} ({', '.join(score.reasons)})"]
    if request.priority in (Priority.URGENT, Priority.HIGH) and need < 2:
        need = 2
        notes.append(f"priority {request.priority.value} -> quality 2")
    if request.user_tier is UserTier.PREMIUM and need < 2:
        need = 2
        notes.append("premium -> quality 2")
    cap = 2 if request.user_tier is UserTier.FREE else 99
    if need > cap:
        need = cap
        notes.append("free tier -> quality at most 2")
    priced = [(ask.estimate(m), m) for m in models if m.quality <= cap]
    paid = [(c, m) for c, m in priced if not m.free]
    free = [(c, m) for c, m in priced if m.free]
    hinted = [(c, m) for c, m in priced if m.model == request.model_hint]
    if hinted:
        primary = hinted[0]
        notes.append(f"hint names {primary[1].model}")
    else:
        adequate = (
            [(c, m) for c, m in paid if m.quality >= need]
            or sorted(paid, key=lambda pair: -pair[1].quality)[:1]
            or free
        )
        if not adequate:
            return Rejection(
                "no text model is open to this user's tier",
                "; ".join(notes),
                ledger,
                Refusal(kind=RefusalKind.TIER),
            )
        primary = min(adequate, key=lambda pair: (pair[0], -pair[1].quality))
        notes.append(f"quality {need} needed")
    if not ask.fits(primary[0]):
        notes.append(f"{primary[1].model} est {_usd(primary[0])} over budget")
        fitting = [p for p in paid if ask.fits(p[0])]
        fallback = (
            sorted((p for p in fitting if p[1].quality <= need), key=_best_first)
            or sorted(fitting, key=lambda p: p[0])
            or [p for p in free if ask.fits(p[0])]
        )
        if ask.config.over_budget == "reject" or not fallback:
            return Rejection(
                f"over budget: {primary[1].model} would cost up to {_usd(primary[0])} USD; "
                f"{_budget_note(ask.remaining)}",
                "; ".join(notes),
                ledger,
                ask.over_limit(primary[0]),
            )
        primary = fallback[0]
        notes.append(f"downgraded to {primary[1].model}")
    cheaper = sorted(
        (p for p in paid if p[1] is not primary[1] and p[0] < primary[0] and ask.fits(p[0])),
        key=lambda pair: (-pair[1].quality, pair[0]),
    )
    tail = [p for p in free if p[1] is not primary[1]]
    chain = [_choice(m, c) for c, m in (primary, *cheaper, *tail)]
    notes.append(_budget_note(ask.remaining))
    return _route(ask, ledger, chain, notes, None)


def _best_first(priced: tuple[Decimal, ModelPrice]) -> tuple[int, Decimal]:
    return -priced[1].quality, priced[0]


def _route(
    ask: _Ask,
    ledger: UserLedger,
    chain: list[RouteChoice],
    notes: list[str],
    free_slot_day: date | None,
    *,
    free_quota: FreeQuotaCheck | None = None,
) -> Route:
    primary = chain[0]
    ledger = ledger.with_committed(ledger.committed_usd + primary.estimated_cost_usd)
    rationale = "; ".join(notes) + f" -> {_describe(chain[:1])}"
    if len(chain) > 1:
        rationale += f"; fallbacks: {_describe(chain[1:])}"
    return Route(
        lane=ask.lane,
        chain=tuple(chain),
        estimated_cost_usd=primary.estimated_cost_usd,
        rationale=_clip(rationale),
        free_slot_day=free_slot_day,
        ledger=ledger,
        free_quota=free_quota,
    )


def settle(ledger: UserLedger, settlement: RouterSettlement, now: datetime) -> UserLedger:
    """Apply execute's report: give back a free slot of today, true up the month's spend."""
    ledger = ledger.rolled(now)
    if settlement.released_free_slot_day == ledger.day and ledger.free_images_used > 0:
        ledger = ledger.with_free_images(ledger.free_images_used - 1)
    delta = settlement.actual_cost_usd - settlement.estimated_cost_usd
    if settlement.response.completed_at.astimezone(UTC).date().replace(day=1) == ledger.month:
        ledger = ledger.with_committed(max(ZERO, ledger.committed_usd + delta))
    return ledger


def _clip(text: str) -> str:
    return text if len(text) <= MAX_RATIONALE else text[: MAX_RATIONALE - 3] + "..."
