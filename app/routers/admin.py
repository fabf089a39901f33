"""Ops endpoints: shops, webhook secrets, queues and agents (admin token)."""

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request

from app.clock import utcnow
from app.deps import STRICT_QUERY, AdminDep, SessionDep, SettingsDep, agent_cache
from app.routers.docs import errors
from app.schemas.admin import (
    AgentCreate,
    AgentCreated,
    AgentRead,
    AgentUpdate,
    CoverageRead,
    QueueCreate,
    QueueRead,
    QueueUpdate,
    SecretRotate,
    SecretRotated,
    ShopCreate,
    ShopCreated,
    ShopRead,
    ShopUpdate,
)
from app.schemas.base import IsoDate
from app.schemas.tickets import AdminTicketAction, HandOverRequest, SnoozeRequest, TicketList, TicketRead
from app.services import admin, queues

router = APIRouter(prefix="/v1/shops", tags=["ops: shops"], dependencies=STRICT_QUERY)


@router.post("", status_code=201, response_model=ShopCreated, summary="Create a shop",
             description="Creates the shop with the default queues (presale, aftersale, complaints, escalations) "
                         "and its first webhook signing secret, which is shown in this answer only.",
             responses=errors(401, 409, 422))
async def create_shop(body: ShopCreate, session: SessionDep, _: AdminDep) -> ShopCreated:
    shop, secret = await admin.create_shop(session, data=body, now=utcnow())
    return ShopCreated(id=shop.id, name=shop.name, webhook_secret=secret)


@router.get("", response_model=list[ShopRead], summary="List shops",
            description="Every shop with its first-response targets; secrets are never listed.",
            responses=errors(401))
async def list_shops(session: SessionDep, _: AdminDep) -> list[ShopRead]:
    return [ShopRead.model_validate(admin.shop_view(s)) for s in await admin.list_shops(session)]


@router.get("/{shop_id}", response_model=ShopRead, summary="Read a shop",
            description="The shop's name, first-response targets per tier and service hours; the secret is never "
                        "shown again.",
            responses=errors(401, 404))
async def read_shop(shop_id: str, session: SessionDep, _: AdminDep) -> ShopRead:
    return ShopRead.model_validate(admin.shop_view(await admin.require_shop(session, shop_id)))


@router.patch("/{shop_id}", response_model=ShopRead,
              summary="Rename a shop, change its first-response targets or its service hours",
              description="Fields left out keep their value. Targets are seconds per tier (P1 20, P2 30, P3 40, "
                          "P4 60 by default); they apply to tickets opened from now on. Service hours: `timezone` "
                          "(IANA), `shifts`, `holidays` (`CN` or null), `closed_dates`, `off_hours_reply`; first-"
                          "response due times count open seconds only, from tickets opened (or re-ranked) after "
                          "the change. A value the schema allows but the hours cannot take (25:00, an unknown time "
                          "zone, a shift that starts when it ends, a name, shift or date given twice) is `422` "
                          "with type `shop_hours` naming the field; nothing of the request is stored then.",
              responses=errors(401, 404, 422))
async def update_shop(shop_id: str, body: ShopUpdate, request: Request, session: SessionDep,
                      _: AdminDep) -> ShopRead:
    shop = await admin.update_shop(session, shop_id=shop_id, data=body, directory=request.app.state.directory)
    return ShopRead.model_validate(admin.shop_view(shop))


@router.post("/{shop_id}/webhook-secrets", status_code=201, response_model=SecretRotated,
             summary="Rotate the webhook signing secret",
             description="Issues a new secret (shown this once). Secrets in use before keep verifying for the "
                         "overlap window (TRIAGE_SECRET_OVERLAP_HOURS, default 24 h), so the platform can switch "
                         "without losing a message; `previous_valid_seconds` sets another window, and `0` revokes "
                         "them at once (a leaked secret: this process refuses them now, other processes within "
                         "their 2 s shop cache). The body is optional.",
             responses=errors(401, 404, 422))
async def rotate_secret(shop_id: str, request: Request, session: SessionDep, settings: SettingsDep, _: AdminDep,
                        body: SecretRotate | None = None) -> SecretRotated:
    seconds = body.previous_valid_seconds if body is not None else None
    overlap = timedelta(hours=settings.secret_overlap_hours) if seconds is None else timedelta(seconds=seconds)
    secret, until = await admin.rotate_webhook_secret(session, shop_id=shop_id, now=utcnow(), overlap=overlap,
                                                      directory=request.app.state.directory)
    return SecretRotated(webhook_secret=secret, previous_valid_until=until)


@router.get("/{shop_id}/queues", response_model=list[QueueRead], tags=["ops: queues"], summary="List a shop's queues",
            description="Every queue of the shop, the four defaults included, with its own first-response targets "
                        "when it has any.", responses=errors(401, 404))
async def list_queues(shop_id: str, session: SessionDep, _: AdminDep) -> list[QueueRead]:
    return [QueueRead.model_validate(q) for q in await admin.list_queues(session, shop_id=shop_id)]


@router.post("/{shop_id}/queues", status_code=201, response_model=QueueRead, tags=["ops: queues"],
             summary="Create a queue",
             description="A queue agents can serve and routes or transfers can name; `409 queue_exists` when the "
                         "shop has one of that name.", responses=errors(401, 404, 409, 422))
async def create_queue(shop_id: str, body: QueueCreate, session: SessionDep, _: AdminDep) -> QueueRead:
    return QueueRead.model_validate(await admin.create_queue(session, shop_id=shop_id, data=body, now=utcnow()))


@router.patch("/{shop_id}/queues/{name}", response_model=QueueRead, tags=["ops: queues"],
              summary="Change a queue's description or first-response targets",
              description="`sla_targets: null` removes the queue's own targets, so the shop's apply again.",
              responses=errors(401, 404, 422))
async def update_queue(shop_id: str, name: str, body: QueueUpdate, session: SessionDep, _: AdminDep) -> QueueRead:
    return QueueRead.model_validate(await admin.update_queue(session, shop_id=shop_id, name=name, data=body))


@router.post("/{shop_id}/agents", status_code=201, response_model=AgentCreated, tags=["ops: agents"],
             summary="Create an agent",
             description="The answer carries the agent's bearer token, shown this once and stored only as a hash.",
             responses=errors(401, 404, 422))
async def create_agent(shop_id: str, body: AgentCreate, session: SessionDep, settings: SettingsDep,
                       _: AdminDep) -> AgentCreated:
    view = await admin.create_agent(session, shop_id=shop_id, data=body, now=utcnow(),
                                    default_capacity=settings.default_agent_capacity)
    return AgentCreated.model_validate(view.as_dict())


@router.get("/{shop_id}/agents", response_model=list[AgentRead], tags=["ops: agents"], summary="List a shop's agents",
            description="Agents with their queues, level, capacity, active flag and presence now (`online`, `away` "
                        "or `offline`: what the agent set, `online` from its last claim, and `offline` once it has "
                        "been silent for TRIAGE_PRESENCE_TIMEOUT_SECONDS or is deactivated); tokens are never listed.",
            responses=errors(401, 404))
async def list_agents(shop_id: str, session: SessionDep, settings: SettingsDep, _: AdminDep) -> list[AgentRead]:
    return [AgentRead.model_validate(v.as_dict()) for v in await admin.list_agents(
        session, shop_id=shop_id, now=utcnow(), presence_timeout=settings.presence_timeout_seconds)]


@router.get("/{shop_id}/coverage", response_model=CoverageRead, tags=["ops: agents"],
            summary="Which queues each shift covers on a date",
            description="For each of the shop's shifts on `date` (a date in the shop's time zone): whether it runs "
                        "(public holidays and closed dates run none; an adjusted working day runs the working days' "
                        "shifts), when, and per queue the active agents serving it who work that shift (an agent "
                        "with `shifts: null` works every shift); `gaps` lists the shop's queues nobody covers. "
                        "`date` between 2000-01-01 and 2100-12-31 (`422` otherwise).",
            responses=errors(401, 404, 422))
async def coverage(shop_id: str, session: SessionDep, _: AdminDep,
                   day: Annotated[IsoDate, Query(alias="date", description="A local date, YYYY-MM-DD",
                                                 examples=["2026-11-26"])]) -> CoverageRead:
    return CoverageRead.model_validate(await admin.coverage(session, shop_id=shop_id, day=day))


@router.get("/{shop_id}/agents/{agent_id}/tickets", response_model=TicketList, tags=["ops: agents"],
            summary="The tickets an agent holds",
            description="What the agent is working on now, most urgent first, each with its thread, `unread` buyer "
                        "messages and the `escalated` flag (the ops page's agents table). Empty when it holds none.",
            responses=errors(401, 404))
async def agent_tickets(shop_id: str, agent_id: str, request: Request, session: SessionDep,
                        _: AdminDep) -> TicketList:
    return await admin.agent_tickets(session, request.app.state.drivers, shop_id=shop_id, agent_id=agent_id)


@router.patch("/{shop_id}/agents/{agent_id}", response_model=AgentRead, tags=["ops: agents"],
              summary="Change an agent's queues, level, capacity or deactivate it",
              description="Fields left out keep their value. Deactivating an agent stops its claims at once and "
                          "hands the tickets it holds back to their queues, each at its place in order and with no "
                          "delivery counted (a `released` event by `admin`); its token stops working within "
                          "seconds.", responses=errors(401, 404, 422))
async def update_agent(shop_id: str, agent_id: str, body: AgentUpdate, request: Request, session: SessionDep,
                       settings: SettingsDep, _: AdminDep) -> AgentRead:
    view = await admin.update_agent(session, shop_id=shop_id, agent_id=agent_id, data=body, now=utcnow(),
                                    notifier=request.app.state.notifier, agents=agent_cache(request),
                                    presence_timeout=settings.presence_timeout_seconds)
    return AgentRead.model_validate(view.as_dict())


@router.post("/{shop_id}/agents/{agent_id}/token", status_code=201, response_model=AgentCreated,
             tags=["ops: agents"], summary="Issue an agent a new token",
             description="For a lost or leaked token: the answer carries a new bearer token, shown this once; the "
                         "old one stops working at once in this process and within 5 s in the others. The agent "
                         "keeps its id, queues, tickets and statistics.", responses=errors(401, 404))
async def reissue_agent_token(shop_id: str, agent_id: str, request: Request, session: SessionDep,
                              settings: SettingsDep, _: AdminDep) -> AgentCreated:
    view = await admin.reissue_agent_token(session, shop_id=shop_id, agent_id=agent_id, agents=agent_cache(request),
                                           now=utcnow(), presence_timeout=settings.presence_timeout_seconds)
    return AgentCreated.model_validate(view.as_dict())


_NO_NUL = r"^[^\x00]+$"  # PostgreSQL text cannot hold NUL


@router.get("/{shop_id}/tickets", response_model=TicketList, tags=["ops: tickets"],
            summary="Find a conversation's ticket (ops)",
            description="The ticket of a conversation as the shop platform names it (platform and conversation id, "
                        "as posted in webhooks), with its thread: where ops start when a platform or a shop asks "
                        "about a conversation; its audit trail is then `GET /v1/tickets/{id}/events`. An empty "
                        "list when the service never received that conversation.",
            responses=errors(401, 404, 422))
async def find_ticket(shop_id: str, request: Request, _: AdminDep,
                      platform: Annotated[str, Query(min_length=1, max_length=32, pattern=_NO_NUL,
                                                     examples=["taobao"])],
                      conversation_id: Annotated[str, Query(min_length=1, max_length=128, pattern=_NO_NUL,
                                                            examples=["c-77"])],
                      ) -> TicketList:
    return await queues.find_conversation(request.app.state.drivers, shop_id=shop_id, platform=platform,
                                          conversation_id=conversation_id)


@router.post("/{shop_id}/tickets/{ticket_id}/resolve", response_model=TicketRead, tags=["ops: tickets"],
             summary="Resolve a ticket (ops)",
             description="Closes an open ticket of the shop, queued or held, with an optional reason (spam, a "
                         "buyer who wrote elsewhere, a console that is gone). A holder loses it at once: its later "
                         "writes are `409 ticket_not_held`. The `resolved` event names the admin as actor and the "
                         "holder it had. A resolved ticket is `409 ticket_already_resolved`; a later buyer message "
                         "reopens it, as after any resolve. The body is optional.",
             responses=errors(401, 404, 409, 422))
async def resolve_ticket(shop_id: str, ticket_id: str, request: Request, _: AdminDep,
                         body: AdminTicketAction | None = None) -> TicketRead:
    return await queues.admin_resolve(request.app.state.drivers, shop_id=shop_id, ticket_id=ticket_id,
                                      reason=body.reason if body else None, now=utcnow())


@router.post("/{shop_id}/tickets/{ticket_id}/release", response_model=TicketRead, tags=["ops: tickets"],
             summary="Take a held ticket back to its queue (ops)",
             description="Hands a held ticket back to its queue, at its place in order and with no delivery "
                         "counted: a console stuck on an urgent ticket, an agent gone for the day. The holder loses "
                         "it at once (its later writes are `409 ticket_not_held`) and waiting claimers are woken. "
                         "The `released` event names the admin and the holder. A ticket nobody holds is "
                         "`409 ticket_not_held`. The body is optional.",
             responses=errors(401, 404, 409, 422))
async def release_ticket(shop_id: str, ticket_id: str, request: Request, _: AdminDep,
                         body: AdminTicketAction | None = None) -> TicketRead:
    return await queues.admin_release(request.app.state.drivers, shop_id=shop_id, ticket_id=ticket_id,
                                      reason=body.reason if body else None, now=utcnow(),
                                      notifier=request.app.state.notifier)


@router.post("/{shop_id}/tickets/{ticket_id}/transfer", response_model=TicketRead, tags=["ops: tickets"],
             summary="Give a ticket to a named agent (ops)",
             description="Hands an open ticket of the shop, queued, held or snoozed (`pending`), to the agent named: it "
                         "is `assigned` to that agent from now, under a fresh lease of TRIAGE_LEASE_SECONDS, and a "
                         "holder loses it at once (its later writes are `409 ticket_not_held`). The `transferred` "
                         "event names the admin, the holder it had (`agent_id`) and `to_agent`. The agent named must "
                         "be of the shop (`422 unknown_agent` otherwise), active (`422 agent_inactive`), not the "
                         "holder already (`422 same_agent`) and serve the ticket's queue (`422 queue_not_served`); an "
                         "agent that is offline is `409 agent_offline`, one at its capacity `409 agent_at_capacity`. "
                         "A resolved ticket is `409 ticket_already_resolved`.",
             responses=errors(401, 404, 409, 422))
async def transfer_ticket(shop_id: str, ticket_id: str, body: HandOverRequest, request: Request,
                          settings: SettingsDep, _: AdminDep) -> TicketRead:
    return await queues.admin_hand_over(request.app.state.drivers, shop_id=shop_id, ticket_id=ticket_id,
                                        to_agent=body.agent_id, reason=body.reason, now=utcnow(),
                                        lease_seconds=settings.lease_seconds,
                                        presence_timeout=settings.presence_timeout_seconds)


@router.post("/{shop_id}/tickets/{ticket_id}/snooze", response_model=TicketRead, tags=["ops: tickets"],
             summary="Snooze a ticket (ops)",
             description="Puts an open ticket of the shop, queued, held or already snoozed, aside (`pending`) until "
                         "`until` or the buyer's next message, as an agent's snooze does; a holder loses it at once "
                         "(its later writes are `409 ticket_not_held`). The `snoozed` event names the admin, the "
                         "holder it had (`agent_id`), the status before and `until`. `until` must be after now and "
                         "at most 30 days ahead (`422`, detail type `snooze_until` on `body.until`). A resolved "
                         "ticket is `409 ticket_already_resolved`.",
             responses=errors(401, 404, 409, 422))
async def snooze_ticket(shop_id: str, ticket_id: str, body: SnoozeRequest, request: Request,
                        _: AdminDep) -> TicketRead:
    return await queues.admin_snooze(request.app.state.drivers, shop_id=shop_id, ticket_id=ticket_id,
                                     until=body.until, reason=body.reason, now=utcnow())
