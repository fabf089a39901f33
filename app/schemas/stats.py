"""Service-level statistics of a shop (README, "Operations")."""

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from app.schemas import examples as ex

TierName = Literal["P1", "P2", "P3", "P4"]


class Durations(BaseModel):
    count: int = Field(description="Episodes measured")
    mean: float | None = Field(description="Seconds; null when nothing was measured", examples=[18.5])
    p50: float | None = Field(description="Median, seconds (continuous percentile)", examples=[15.0])
    p90: float | None = Field(description="90th percentile, seconds (continuous percentile)", examples=[41.2])


class RoundDurations(Durations):
    count: int = Field(description="Buyer rounds measured: answered ones, and unanswered ones counted at the cap")
    unanswered: int = Field(description="Of those, rounds no agent or seller answered (counted as 600 s each)")


class ServiceLevels(BaseModel):
    conversations_received: int = Field(description="Episodes (new or reopened conversations) opened in the range")
    replied: int = Field(description="Of those, episodes with at least one agent reply")
    reply_rate: float | None = Field(description="replied / conversations_received; null when none was received",
                                     examples=[0.95])
    first_response: Durations
    sla_breaches: int = Field(description="Episodes answered after their due time (counted in the shop's open hours), "
                                          "or unanswered past it")
    resolution: Durations = Field(description="Episodes resolved by an agent or ops; auto-closed ones are not in it")
    auto_closed: int = Field(description="Episodes the service resolved after the buyer went silent for the shop's "
                                         "auto_close_after_hours (not resolutions)")
    round_response: RoundDurations = Field(
        description="Per-round response time (平均响应时间), seconds: every buyer round of these episodes to the next "
                    "agent or seller reply, capped at 600 s; an unanswered round counts 600 s")
    buyers_received: int = Field(description="Distinct buyers of these episodes")
    buyers_replied: int = Field(description="Of those, buyers with at least one episode that got a reply")
    buyer_reply_rate: float | None = Field(description="buyers_replied / buyers_received; null when none was received",
                                           examples=[0.97])


class Backlog(BaseModel):
    depth: dict[TierName, int] = Field(description="Queued tickets now, per tier",
                                       examples=[{"P1": 0, "P2": 3, "P3": 5, "P4": 0}])
    total: int
    oldest_wait_seconds: float | None = Field(description="Age of the oldest queued episode now; null when empty")


class OverallStats(ServiceLevels):
    backlog: Backlog


class QueueStats(ServiceLevels):
    queue: str = Field(examples=["aftersale"])
    backlog: Backlog


class TierStats(ServiceLevels):
    tier: TierName
    first_response_target_seconds: int = Field(description="The shop's target for this tier (queues may override)")
    depth: int = Field(description="Queued tickets of this tier now")
    oldest_wait_seconds: float | None


class AgentStats(ServiceLevels):
    agent_id: str
    name: str | None = Field(description="Null for an agent that no longer exists")
    holding: int = Field(description="Tickets the agent holds now")
    presence: Literal["online", "away", "offline"] = Field(
        description="Now (offline for an agent that no longer exists or is deactivated)")


class ShopStats(BaseModel):
    shop_id: str
    since: datetime
    until: datetime
    generated_at: datetime
    overall: OverallStats
    queues: list[QueueStats]
    tiers: list[TierStats]
    agents: list[AgentStats]

    model_config = ex.examples(ex.STATS)
