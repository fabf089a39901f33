"""Service-level statistics of a shop (README, "Operations"), for ops (admin token)."""

from typing import Annotated

from fastapi import APIRouter, Query, Response

from app.clock import utcnow
from app.deps import STRICT_QUERY, AdminDep, SessionDep
from app.metrics import CONTENT_TYPE
from app.routers.docs import errors
from app.schemas.base import Rfc3339
from app.schemas.stats import ShopStats
from app.services import stats

router = APIRouter(prefix="/v1/shops", tags=["ops: statistics"], dependencies=STRICT_QUERY)
metrics_router = APIRouter(tags=["operations"])

DEFINITIONS = """
Per shop overall, and broken down per queue, per tier and per agent. Everything is counted per
**episode**: a conversation from the buyer message that opens it (a new ticket, or a message on a
resolved ticket, which reopens it) until it is resolved. A ticket resolved and reopened twice is
three episodes.

* **conversations_received**: episodes opened in `[since, until)`. All other figures are about
  these episodes, with what happened to them up to now (a reply after `until` to a conversation
  opened before it counts).
* **first_response**: seconds from the episode's start (when the service received its first unanswered
  buyer message; the platform's `sent_at` is another clock, and a late delivery is no agent's delay) to the
  first agent reply; mean, p50, p90 (continuous percentiles, interpolated), over answered episodes.
* **reply_rate**: episodes with at least one agent reply / episodes received.
* **sla_breaches**: episodes whose first reply came later than their first-response target, or
  that were still unanswered and unresolved when the target passed, judged at `until` (or now, if
  earlier). The target is that of the episode's most urgent tier (the shop's targets, or the
  queue's own), so it tightens when a later message raises the tier. An episode resolved without a
  reply before its target is no breach.
* **resolution**: seconds from the episode's start to its resolution; mean, p50, p90 over
  resolved episodes.
* **queue and tier** of an episode: its most urgent tier, and the queue it is in now or was in
  when resolved (after any re-routing or transfer).
* **agent** of an episode: the agent who replied first; else the agent who resolved it; else the
  agent holding it now. Episodes nobody handled appear under their queue and tier only.
* **backlog / depth / oldest_wait_seconds**: queued tickets now (not in the range), and the age of
  the oldest queued episode. **holding**: tickets an agent holds now.

`since` and `until` are RFC 3339 times with a zone (default: the 24 hours before now); the range
must be non-empty and at most 92 days (`422` otherwise).
"""


@router.get("/{shop_id}/stats", response_model=ShopStats, summary="Service levels of a shop",
            description=DEFINITIONS, responses=errors(401, 404, 422))
async def shop_stats(shop_id: str, session: SessionDep, _: AdminDep,
                     since: Annotated[Rfc3339 | None, Query(
                         description="Start of the range (inclusive), RFC 3339",
                         examples=["2026-11-24T00:00:00Z"])] = None,
                     until: Annotated[Rfc3339 | None, Query(
                         description="End of the range (exclusive), RFC 3339; default now",
                         examples=["2026-11-25T00:00:00Z"])] = None) -> ShopStats:
    now = utcnow()
    start, end = stats.stats_range(since=since, until=until, now=now)
    return await stats.shop_stats(session, shop_id=shop_id, since=start, until=end, now=now)


METRICS = """
Prometheus text format (0.0.4), no token. Counters and histograms are this process's, or every
process's when `PROMETHEUS_MULTIPROC_DIR` is set; the `triage_queue_*` and
`triage_first_response_overdue` gauges are read from the database at each scrape, so any process
answers the same values. Labels stay bounded: shop ids, queue names, tiers, intents, error codes,
route templates (never raw paths).
"""


@metrics_router.get("/metrics", response_class=Response, summary="Prometheus metrics", description=METRICS,
                    responses={200: {"content": {CONTENT_TYPE: {"example": "triage_queue_depth{queue=\"aftersale\","
                                                                "shop=\"demo\",tier=\"P2\"} 3.0\n"}},
                                     "description": "Metrics in the Prometheus text format"}})
async def prometheus_metrics(session: SessionDep) -> Response:
    return Response(await stats.metrics_exposition(session, now=utcnow()), media_type=CONTENT_TYPE)
