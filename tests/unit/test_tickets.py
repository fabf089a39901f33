"""How a ticket changes when a buyer message arrives (app/services/tickets.py): pure, so tested without I/O."""

from datetime import UTC, datetime, timedelta

from app.services.directory import ShopInfo
from app.domain import TicketState
from app.services.tickets import InboundDecision, new_ticket, receive
from app.triage import default_ruleset

T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
SHOP_TARGETS = {"P1": 20, "P2": 30, "P3": 40, "P4": 60}


def shop(**queue_targets: dict[str, int] | None) -> ShopInfo:
    queues: dict[str, dict[str, int] | None] = {name: None for name in ("presale", "aftersale", "complaints",
                                                                        "escalations")}
    queues.update(queue_targets)
    return ShopInfo(id="s1", sla_targets=dict(SHOP_TARGETS), queue_targets=queues, secrets=(),
                    ruleset=default_ruleset())


def decision(message_id: str, primary: str, tier: str, priority: int) -> InboundDecision:
    return InboundDecision(message_id=message_id, primary=primary, tier=tier, priority=priority, intents=(primary,),
                           ruleset="default@1")


def opened(info: ShopInfo, first: InboundDecision) -> TicketState:
    ticket = new_ticket(ticket_id="t1", shop=info, platform="taobao", conversation_id="c1", customer_id=1,
                        decision=first, now=T0)
    receive(ticket, first, shop=info, now=T0, seq=1)
    return ticket


def test_a_new_ticket_is_due_by_its_queue_and_tier_target() -> None:
    ticket = opened(shop(aftersale={"P3": 90}), decision("m1", "logistics", "P3", 350))
    assert (ticket.queue, ticket.status, ticket.tier) == ("aftersale", "queued", 3)
    assert ticket.first_response_due_at == T0 + timedelta(seconds=90)


def test_a_rerouted_ticket_is_due_by_the_target_of_the_queue_it_moves_to() -> None:
    # complaints promises a faster answer for P1 than the shop default; the ticket starts in aftersale.
    info = shop(complaints={"P1": 10})
    ticket = opened(info, decision("m1", "logistics", "P3", 350))
    events = receive(ticket, decision("m2", "bad_review_threat", "P1", 800), shop=info,
                     now=T0 + timedelta(seconds=3), seq=2)
    assert ticket.queue == "complaints"
    assert ("routed", {"from": "aftersale", "to": "complaints", "reason": "tier rose"}) in events
    # The clock still runs from the first unanswered message; only the target changed.
    assert ticket.first_response_due_at == T0 + timedelta(seconds=10)


def test_a_held_ticket_whose_tier_rises_is_flagged_kept_and_routed_for_its_return() -> None:
    info = shop(complaints={"P1": 10})
    ticket = opened(info, decision("m1", "logistics", "P3", 350))
    ticket.status, ticket.assigned_agent_id = "assigned", "a1"
    events = receive(ticket, decision("m2", "rights_protection", "P1", 900), shop=info,
                     now=T0 + timedelta(seconds=5), seq=2)
    # The holder keeps it and the console shows the flag; should it go back, it goes to complaints.
    assert ticket.escalated and ticket.assigned_agent_id == "a1" and ticket.queue == "complaints"
    assert [kind for kind, _ in events] == ["message_received", "reranked", "escalated", "routed"]
    assert ticket.first_response_due_at == T0 + timedelta(seconds=10)


def test_a_calmer_message_never_lowers_the_ticket_or_loosens_its_due_time() -> None:
    info = shop()
    ticket = opened(info, decision("m1", "complaint", "P1", 760))
    due = ticket.first_response_due_at
    events = receive(ticket, decision("m2", "logistics", "P3", 320), shop=info, now=T0 + timedelta(seconds=4), seq=2)
    assert (ticket.tier, ticket.priority, ticket.primary_intent) == (1, 760, "complaint")
    assert ticket.first_response_due_at == due and ticket.queue == "complaints"
    assert [kind for kind, _ in events] == ["message_received"]
    assert ticket.intents == ["complaint", "logistics"] and ticket.unread == 2
