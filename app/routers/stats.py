"""Service-level statistics of a shop (README, "Operations"), for ops (admin token)."""

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from app.clock import utcnow
from app.deps import STRICT_QUERY, AdminDep, SessionDep, SettingsDep
from app.errors import Unauthorized
from app.metrics import CONTENT_TYPE, CachedAnswer
from app.routers.docs import errors
from app.schemas.base import Rfc3339
from app.schemas.stats import ShopStats
from app.security import tokens_equal
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
  first agent reply, wall-clock (a night message answered at the opening counts the night); mean, p50, p90
  (continuous percentiles, interpolated), over answered episodes. The shop's off-hours reply is no agent reply.
* **reply_rate**: episodes with at least one agent reply / episodes received.
* **sla_breaches**: episodes whose first reply came after their due time, or that were still
  unanswered and unresolved when it passed, judged at `until` (or now, if earlier). The due time is
  the target of the episode's most urgent tier (the shop's targets, or the queue's own) counted in the
  shop's **open hours only** (its shifts, holidays and closed dates, in its time zone): a message at
  02:00 with a 60 s target is due at the opening plus 60 s. It tightens when a later message raises
  the tier. An episode resolved without a reply before its due time is no breach. The same due time
  drives the `sla.breached` event, `triage_first_response_overdue` and `triage_sla_breaches_total`.
* **resolution**: seconds from the episode's start to its resolution by an agent or ops; mean, p50, p90
  over those episodes.
* **auto_closed**: episodes the service closed itself, queued while the buyer was silent for the shop's
  `auto_close_after_hours`; counted here, not as resolutions, and owned by no agent for that.
* **round_response** (平均响应时间): every buyer **round** of these episodes, from its first buyer
  message to the next agent reply or seller message (a seller's at its `sent_at`), in seconds, capped
  at 600; a round the episode ended without answering (resolved, or a new episode began), or still
  waiting after 600 s, counts 600 and is `unanswered`; one still waiting under 600 s is not counted
  yet. A round is the buyer messages after a reply (or the episode's start) up to the next reply;
  the shop's off-hours reply answers no round. Wall-clock seconds: a night round answered at the
  opening counts 600. mean, p50, p90 over the rounds counted. Its queue and tier are its episode's;
  its agent the one who answered it, else the episode's.
* **buyers_received / buyers_replied / buyer_reply_rate** (reply rate per buyer): distinct buyers of
  these episodes, those with at least one episode that got a reply, and their ratio; per agent, the
  buyers of the agent's episodes.
* **queue and tier** of an episode: its most urgent tier, and the queue it is in now or was in
  when resolved (after any re-routing or transfer).
* **agent** of an episode: the agent who replied first; else the agent who resolved it; else the
  agent holding it now. Episodes nobody handled appear under their queue and tier only.
* **backlog / depth / oldest_wait_seconds**: queued tickets now (not in the range), and the age of
  the oldest queued episode. **holding**: tickets an agent holds now. **presence**: the agent's now
  (`online`, `away`, `offline`), as `GET /v1/shops/{shop_id}/agents` shows it.

`since` and `until` are RFC 3339 times with a zone (default: the 24 hours before now); the range
must be non-empty and at most 92 days (`422` otherwise).
"""


@router.get("/{shop_id}/stats", response_model=ShopStats, summary="Service levels of a shop",
            description=DEFINITIONS, responses=errors(401, 404, 422))
async def shop_stats(shop_id: str, session: SessionDep, settings: SettingsDep, _: AdminDep,
                     since: Annotated[Rfc3339 | None, Query(
                         description="Start of the range (inclusive), RFC 3339",
                         examples=["2026-11-24T00:00:00Z"])] = None,
                     until: Annotated[Rfc3339 | None, Query(
                         description="End of the range (exclusive), RFC 3339; default now",
                         examples=["2026-11-25T00:00:00Z"])] = None) -> ShopStats:
    now = utcnow()
    start, end = stats.stats_range(since=since, until=until, now=now)
    return await stats.shop_stats(session, shop_id=shop_id, since=start, until=end, now=now,
                                  presence_timeout=settings.presence_timeout_seconds)


METRICS = """
Prometheus text format (0.0.4). No token, unless `TRIAGE_METRICS_TOKEN` is set: then a bearer token equal
to it is required (`401` otherwise). Counters and histograms are this process's, or every
process's when `PROMETHEUS_MULTIPROC_DIR` is set; the `triage_queue_*`, `triage_first_response_overdue` and
`triage_agents` (active agents per shop and presence) gauges are read from the database, so any process answers the same values.
Each process makes this answer at most once per `TRIAGE_METRICS_CACHE_SECONDS` (5 s unless changed) however
many scrape, concurrent scrapes sharing one: every value is at most that old. Labels stay bounded: shop ids, queue names, tiers, intents, error codes,
route templates (never raw paths).
"""


@metrics_router.get("/metrics", response_class=Response, summary="Prometheus metrics", description=METRICS,
                    responses={200: {"content": {CONTENT_TYPE: {"example": "triage_queue_depth{queue=\"aftersale\","
                                                                "shop=\"demo\",tier=\"P2\"} 3.0\n"}},
                                     "description": "Metrics in the Prometheus text format"}})
async def prometheus_metrics(request: Request) -> Response:
    settings = request.app.state.settings
    if settings.metrics_token is not None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not tokens_equal(token, settings.metrics_token.get_secret_value()):
            raise Unauthorized("missing or invalid metrics token (TRIAGE_METRICS_TOKEN)")
    return Response(await _answer(request).get(), media_type=CONTENT_TYPE)


def _answer(request: Request) -> CachedAnswer:
    """This process's cached /metrics answer."""
    cached: CachedAnswer | None = getattr(request.app.state, "metrics_answer", None)
    if cached is None:
        sessionmaker, drivers = request.app.state.sessionmaker, request.app.state.drivers
        cached = request.app.state.metrics_answer = CachedAnswer(
            lambda: stats.metrics_exposition(sessionmaker, drivers=drivers, now=utcnow(),
                                             presence_timeout=request.app.state.settings.presence_timeout_seconds),
            ttl=request.app.state.settings.metrics_cache_seconds)
    return cached
