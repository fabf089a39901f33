"""Reply templates: a shop's set (read, replace) and the suggestions for a ticket (SPEC 11)."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from app.db.models import Agent
from app.db.session import DriverConnections
from app.db.templates import template_store
from app.errors import ShopNotFound, TemplateInvalid
from app.schemas.tickets import MessageRead, TicketRead
from app.services import queues
from app.services.directory import ShopDirectory
from app.triage.replies import (VARIABLES, Template, TemplateError, default_templates, suggest,
                                templates_from_list)

# Most upset first: the emotion a reply must meet is the worst of the buyer's unanswered messages.
_EMOTION_ORDER = ("angry", "negative", "neutral", "positive")


def _invalid(error: TemplateError) -> TemplateInvalid:
    field = f"body.{error.path}"
    return TemplateInvalid(f"invalid template entry {field}: {error.reason}",
                           details=[{"field": field, "reason": error.reason, "type": "invalid_template"}])


async def _require_shop(directory: ShopDirectory, shop_id: str) -> Any:
    shop = await directory.get(shop_id)
    if shop is None:
        raise ShopNotFound(f"no shop '{shop_id}'")
    return shop


def _view(shop_id: str, templates: Sequence[Template], *, source: str, version: int,
          updated_at: datetime | None) -> dict[str, Any]:
    return {"shop_id": shop_id, "source": source, "version": version, "updated_at": updated_at,
            "variables": list(VARIABLES), "templates": [template.to_dict() for template in templates]}


async def _templates_of(drivers: DriverConnections, shop_id: str) -> tuple[tuple[Template, ...], Any]:
    async with template_store(drivers) as store:
        stored = await store.get(shop_id=shop_id)
    if stored is None:
        return default_templates(), None
    return templates_from_list(stored.templates), stored


async def read(drivers: DriverConnections, *, directory: ShopDirectory, shop_id: str) -> dict[str, Any]:
    """The shop's templates, or the shipped ones while it stored none."""
    await _require_shop(directory, shop_id)
    templates, stored = await _templates_of(drivers, shop_id)
    if stored is None:
        return _view(shop_id, templates, source="shipped", version=0, updated_at=None)
    return _view(shop_id, templates, source="shop", version=stored.version, updated_at=stored.updated_at)


async def replace(drivers: DriverConnections, *, directory: ShopDirectory, shop_id: str,
                  items: list[dict[str, Any]], now: datetime) -> dict[str, Any]:
    """Check the whole set (each text, ids unique, no review-for-money wording) and store it in place of the old."""
    await _require_shop(directory, shop_id)
    try:
        templates = templates_from_list(items)
    except TemplateError as error:
        raise _invalid(error) from None
    async with template_store(drivers) as store:
        stored = await store.put(shop_id=shop_id, templates=[t.to_dict() for t in templates], now=now)
    return _view(shop_id, templates, source="shop", version=stored.version, updated_at=stored.updated_at)


def buyer_mood(messages: Sequence[MessageRead]) -> tuple[str, str]:
    """(emotion, language) of the buyer now: the most upset unanswered message, the latest one's language."""
    inbound = [m for m in messages if m.direction == "inbound" and m.triage]
    if not inbound:
        return "neutral", "zh-Hans"
    last_reply = max((m.id for m in messages if m.direction == "outbound"), default=0)
    unanswered = [m for m in inbound if m.id > last_reply] or inbound[-1:]
    emotions = [str(m.triage.get("emotion", "neutral")) for m in unanswered if m.triage]
    emotion = min(emotions, key=lambda e: _EMOTION_ORDER.index(e) if e in _EMOTION_ORDER else 2)
    return emotion, str(inbound[-1].triage.get("language") or "zh-Hans") if inbound[-1].triage else "zh-Hans"


def _values(ticket: TicketRead, *, shop_name: str, agent: Agent | None) -> dict[str, str | None]:
    order_ids = [m.order_id for m in ticket.messages if m.direction == "inbound" and m.order_id]
    return {"buyer_nick": ticket.customer.nick if ticket.customer else None,
            "order_id": order_ids[-1] if order_ids else None,
            "shop_name": shop_name or None, "agent_name": agent.name if agent is not None else None}


async def suggestions(drivers: DriverConnections, *, directory: ShopDirectory, caller: Agent | None,
                      ticket_id: str) -> dict[str, Any]:
    """The shop's templates fitting the ticket's primary intent and the buyer's emotion, best first, filled in."""
    ticket = await queues.read_ticket(drivers, caller=caller, ticket_id=ticket_id)
    shop = await directory.get(ticket.shop_id)
    templates, _ = await _templates_of(drivers, ticket.shop_id)
    emotion, language = buyer_mood(ticket.messages)
    values = _values(ticket, shop_name=shop.name if shop is not None else "", agent=caller)
    found = suggest(templates, intent=ticket.primary, emotion=emotion, language=language, values=values)
    return {"ticket_id": ticket.id, "primary": ticket.primary, "emotion": emotion, "language": language,
            "suggestions": [item.to_dict() for item in found]}
