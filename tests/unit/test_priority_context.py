"""The buyer standing each message's priority counts (README, "How a ticket is ranked"), from what a group's prepare step read."""

from datetime import UTC, datetime, timedelta

from app.db.ingest import Prepared
from app.schemas.webhooks import WebhookMessage
from app.services.directory import ShopInfo
from app.services.ingest import _Entry, priority_contexts
from app.triage import classify, default_ruleset
from tests.support.webhooks import message

NOW = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
SHOP = ShopInfo(id="s1", sla_targets={}, queue_targets={"presale": None}, secrets=(), ruleset=default_ruleset())


def entry(conversation: str, customer: str = "b1", vip: int = 0) -> _Entry:
    msg = WebhookMessage.model_validate(message("快递到哪了", conversation=conversation, customer=customer, vip=vip))
    return _Entry(0, 0, SHOP, "taobao", msg, classify(msg.text, SHOP.ruleset))


def standing(entries: list[_Entry]) -> list[tuple[int, int, float]]:
    return [(e.context.vip_level, e.context.prior_contacts, e.context.waiting_seconds) for e in entries]


def test_conversations_opened_in_one_group_count_each_other_in_order() -> None:
    entries = [entry("c-a", vip=2), entry("c-b", vip=2), entry("c-a", vip=2), entry("c-b", vip=2)]
    prepared = Prepared(customers={("s1", "taobao", "b1"): (7, 3)})  # three conversations before this group
    priority_contexts(entries, prepared, now=NOW)
    assert standing(entries) == [(2, 3, 0.0), (2, 4, 0.0), (2, 4, 0.0), (2, 4, 0.0)]


def test_an_open_episode_is_not_its_own_prior_contact_and_counts_the_wait() -> None:
    waiting_since = NOW - timedelta(minutes=7)
    prepared = Prepared(customers={("s1", "taobao", "b1"): (7, 2)},
                        open_episodes={("s1", "taobao", "c-open"): waiting_since, ("s1", "taobao", "c-answered"): None})
    entries = [entry("c-open"), entry("c-answered"), entry("c-new")]
    priority_contexts(entries, prepared, now=NOW)
    # Each open one has the other as prior contact; c-new, opened after them, has both.
    assert standing(entries) == [(0, 1, 420.0), (0, 1, 0.0), (0, 2, 0.0)]


def test_a_ticket_another_group_committed_meanwhile_counts_as_the_buyer_row_was_read() -> None:
    key = ("s1", "taobao", "c-late")
    just_opened = NOW - timedelta(milliseconds=5)
    # The buyer's row was read before the other group's commit: its count lacks that episode.
    before = Prepared(customers={("s1", "taobao", "b1"): (7, 2)}, open_episodes={key: just_opened},
                      late_tickets={key})
    # The buyer's row was read after it (the buyer was new to this group's snapshot too): the count has it.
    after = Prepared(customers={("s1", "taobao", "b1"): (7, 3)}, open_episodes={key: just_opened},
                     late_tickets={key}, late_customers={("s1", "taobao", "b1")})
    for prepared in (before, after):
        entries = [entry("c-late")]
        priority_contexts(entries, prepared, now=NOW)
        assert standing(entries) == [(0, 2, 0.005)]
