"""One worked example per request and answer model, for /docs and /openapi.json.

They tell one story, taken from a real session on the demo shop: a buyer threatens a bad review over a slow
parcel, agent Lin claims the ticket, replies and resolves it. tests/api/test_service.py checks that every
operation shows an example and that each one validates against its model, so they cannot drift from the API.
"""

from typing import Any

SHOP_ID = "demo"
AGENT_ID = "6c1f0e9a-3b52-4d7e-9f10-2a8b7c4d5e61"
TICKET_ID = "70b68bbd-cc69-4631-9489-5b45d80c74db"
SLA_TARGETS = {"P1": 20, "P2": 30, "P3": 40, "P4": 60}
BUYER_TEXT = "亲，快递三天没动了，再不到就给差评"
REPLY_TEXT = "亲，已经帮您催促快递了，今天内一定送到"

TRIAGE: dict[str, Any] = {
    "primary": "bad_review_threat", "tier": "P1", "priority": 825,
    "intents": [
        {"intent": "bad_review_threat", "tier": "P1", "score": 1.0,
         "evidence": [{"rule": "zh.bad_review.threat", "start": 14, "end": 17, "text": "给差评"}]},
        {"intent": "logistics", "tier": "P3", "score": 2.0,
         "evidence": [{"rule": "zh.logistics.in_transit", "start": 2, "end": 4, "text": "快递"},
                      {"rule": "zh.logistics.not_received", "start": 10, "end": 13, "text": "再不到"}]}],
    "emotion": "negative", "urgent": False, "language": "zh-Hans", "queue": "complaints", "ruleset": "default@1",
}
# As stored with the message: the buyer's standing added 20 points (VIP level 2).
STORED_TRIAGE = {**TRIAGE, "priority": 845,
                 "priority_context": {"vip_level": 2, "prior_contacts": 0, "waiting_seconds": 0.0}}

INBOUND = {"id": 1, "direction": "inbound", "text": BUYER_TEXT, "sent_at": "2026-11-25T08:00:00Z",
           "received_at": "2026-11-25T08:00:01.120Z", "order_id": "o-9", "agent_id": None, "triage": STORED_TRIAGE}
OUTBOUND = {"id": 3, "direction": "outbound", "text": REPLY_TEXT, "sent_at": "2026-11-25T08:00:14.310Z",
            "received_at": "2026-11-25T08:00:14.310Z", "order_id": None, "agent_id": AGENT_ID, "triage": None}

TICKET: dict[str, Any] = {
    "id": TICKET_ID, "shop_id": SHOP_ID, "platform": "taobao", "conversation_id": "c-77", "queue": "complaints",
    "status": "assigned", "tier": "P1", "priority": 845, "primary": "bad_review_threat",
    "intents": ["bad_review_threat", "logistics"], "escalated": False,
    "customer": {"id": "tb_buyer_42", "platform": "taobao", "nick": "小王", "vip_level": 2, "contacts": 1},
    "messages": [INBOUND], "assigned_agent_id": AGENT_ID, "lease_expires_at": "2026-11-25T08:02:06.480Z",
    "deliveries": 0, "unread": 1, "created_at": "2026-11-25T08:00:01.120Z", "opened_at": "2026-11-25T08:00:01.120Z",
    "awaiting_since": "2026-11-25T08:00:01.120Z", "first_response_due_at": "2026-11-25T08:00:21.120Z",
    "first_response_at": None, "resolved_at": None, "episodes": 1, "updated_at": "2026-11-25T08:00:06.480Z",
    "snoozed_until": None, "held_for": None, "held_until": None,
}
TICKET_REPLIED = {**TICKET, "messages": [INBOUND, OUTBOUND], "unread": 0, "awaiting_since": None,
                  "first_response_at": "2026-11-25T08:00:14.310Z", "lease_expires_at": "2026-11-25T08:02:14.310Z",
                  "updated_at": "2026-11-25T08:00:14.310Z"}

EVENTS = [
    {"id": 1, "at": "2026-11-25T08:00:01.120Z", "kind": "message_received", "actor": "webhook",
     "data": {"message_id": "m-1001", "primary": "bad_review_threat", "tier": "P1", "priority": 845}},
    {"id": 2, "at": "2026-11-25T08:00:01.120Z", "kind": "created", "actor": "webhook",
     "data": {"tier": "P1", "priority": 845, "primary": "bad_review_threat", "queue": "complaints"}},
    {"id": 3, "at": "2026-11-25T08:00:06.480Z", "kind": "claimed", "actor": f"agent:{AGENT_ID}",
     "data": {"agent_id": AGENT_ID, "lease_expires_at": "2026-11-25T08:02:06.480Z"}},
    {"id": 4, "at": "2026-11-25T08:00:14.310Z", "kind": "replied", "actor": f"agent:{AGENT_ID}",
     "data": {"message_id": 3, "first_response": True, "lease_expires_at": "2026-11-25T08:02:14.310Z",
              "within_target": True}},
    {"id": 5, "at": "2026-11-25T08:01:02.900Z", "kind": "resolved", "actor": f"agent:{AGENT_ID}",
     "data": {"agent_id": AGENT_ID}},
]

SHIFTS = [{"name": "day", "start": "09:00", "end": "18:00", "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]},
          {"name": "evening", "start": "15:00", "end": "24:00",
           "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]}]
OFF_HOURS_REPLY = "亲，客服上班时间为每天 9:00-24:00，您的消息我们已收到，上班后第一时间回复您"
SHOP = {"id": SHOP_ID, "name": "Demo shop", "sla_targets": SLA_TARGETS, "active_ruleset_version": None,
        "timezone": "Asia/Shanghai", "shifts": SHIFTS, "holidays": "CN", "holiday_data_until": "2026-12-31",
        "closed_dates": ["2026-12-31"], "off_hours_reply": OFF_HOURS_REPLY,
        "auto_close_after_hours": 72, "sticky_hours": 72, "created_at": "2026-11-24T10:00:00Z"}
QUEUE = {"name": "aftersale", "description": "Logistics, returns and refunds, quality, false advertising, "
         "price protection", "sla_targets": {"P1": 15, "P2": 25, "P3": 40, "P4": 60}, "sla_override": True,
         "created_at": "2026-11-24T10:00:00Z"}
AGENT = {"id": AGENT_ID, "shop_id": SHOP_ID, "name": "Lin", "queues": ["aftersale", "complaints", "presale"],
         "level": "senior", "capacity": 5, "active": True, "shifts": ["day"], "created_at": "2026-11-24T10:05:00Z",
         "presence": "online", "seen_at": "2026-11-25T08:00:06.480Z"}
OTHER_AGENT_ID = "0d4b8e2f-7a61-4c3e-8b95-1f2e3d4c5b6a"
PRESENCE = {"agent_id": AGENT_ID, "presence": "online", "set": "online", "seen_at": "2026-11-25T08:00:06.480Z",
            "offline_at": "2026-11-25T08:02:06.480Z"}

_LIN = {"id": AGENT_ID, "name": "Lin"}
COVERAGE = {"shop_id": SHOP_ID, "date": "2026-11-26", "timezone": "Asia/Shanghai", "day": "ordinary",
            "holiday_data": True, "shifts": [
                {"name": "day", "start": "09:00", "end": "18:00", "runs": True, "opens_at": "2026-11-26T01:00:00Z",
                 "closes_at": "2026-11-26T10:00:00Z",
                 "covered": [{"queue": "aftersale", "agents": [_LIN]}, {"queue": "presale", "agents": [_LIN]}],
                 "gaps": ["complaints", "escalations"]},
                {"name": "evening", "start": "15:00", "end": "24:00", "runs": True,
                 "opens_at": "2026-11-26T07:00:00Z", "closes_at": "2026-11-26T16:00:00Z",
                 "covered": [{"queue": "presale", "agents": [{"id": "0b7e4a52-8f0d-4c1e-a5b3-6d2f9e8c7a14",
                                                              "name": "Wang"}]}],
                 "gaps": ["aftersale", "complaints", "escalations"]}]}

# A day of the demo shop in which only logistics questions (aftersale, P3) came in: every queue and tier is
# listed, as the service lists them, the idle ones with nothing measured.
_NOTHING = {"count": 0, "mean": None, "p50": None, "p90": None}
_IDLE = {"conversations_received": 0, "replied": 0, "reply_rate": None, "first_response": _NOTHING,
         "sla_breaches": 0, "resolution": _NOTHING, "auto_closed": 0, "round_response": {**_NOTHING, "unanswered": 0},
         "buyers_received": 0, "buyers_replied": 0, "buyer_reply_rate": None}
_LEVELS = {"conversations_received": 40, "replied": 38, "reply_rate": 0.95,
           "first_response": {"count": 38, "mean": 18.5, "p50": 15.0, "p90": 41.2}, "sla_breaches": 4,
           "resolution": {"count": 35, "mean": 312.4, "p50": 240.0, "p90": 655.0}, "auto_closed": 1,
           "round_response": {"count": 96, "mean": 42.3, "p50": 21.0, "p90": 95.5, "unanswered": 2},
           "buyers_received": 37, "buyers_replied": 36, "buyer_reply_rate": 0.973}
_EMPTY = {"depth": {"P1": 0, "P2": 0, "P3": 0, "P4": 0}, "total": 0, "oldest_wait_seconds": None}
_BACKLOG = {"depth": {"P1": 0, "P2": 0, "P3": 2, "P4": 0}, "total": 2, "oldest_wait_seconds": 12.6}
STATS: dict[str, Any] = {
    "shop_id": SHOP_ID, "since": "2026-11-24T08:00:00Z", "until": "2026-11-25T08:00:00Z",
    "generated_at": "2026-11-25T08:00:00Z",
    "overall": {**_LEVELS, "backlog": _BACKLOG},
    "queues": [{**_LEVELS, "queue": "aftersale", "backlog": _BACKLOG},
               *({**_IDLE, "queue": name, "backlog": _EMPTY} for name in ("complaints", "escalations", "presale"))],
    "tiers": [{**(_LEVELS if tier == "P3" else _IDLE), "tier": tier, "first_response_target_seconds": target,
               "depth": 2 if tier == "P3" else 0, "oldest_wait_seconds": 12.6 if tier == "P3" else None}
              for tier, target in SLA_TARGETS.items()],
    "agents": [{**_LEVELS, "agent_id": AGENT_ID, "name": "Lin", "holding": 2, "presence": "online"}],
}
QUEUES = {"shop_id": SHOP_ID, "queues": [
    {"name": "aftersale", **_BACKLOG}, {"name": "complaints", **_EMPTY}, {"name": "presale", **_EMPTY}]}


def examples(*values: Any) -> dict[str, Any]:
    """Model config that shows `values` as the model's examples."""
    return {"json_schema_extra": {"examples": list(values)}}
