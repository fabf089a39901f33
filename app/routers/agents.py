"""Agent consoles: claim work with a lease (long poll), read, reply, resolve, release, transfer (README,
"Agent consoles")."""

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response

from app.clock import utcnow
from app.deps import STRICT_QUERY, AdminOrAgentDep, CachedAgentDep, SessionDep, SettingsDep
from app.routers.docs import errors
from app.schemas.tickets import (
    AgentPresence,
    ColleagueList,
    PresenceUpdate,
    QueueList,
    ReleaseRequest,
    ReplyCreate,
    ReplyCreated,
    SnoozeRequest,
    TicketEvents,
    TicketList,
    TicketMessages,
    TicketRead,
    TransferRequest,
)
from app.services import presence, queues

router = APIRouter(tags=["agents"], dependencies=STRICT_QUERY)

IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", min_length=1, max_length=200,
    description="Any unique string per intended write. A retry with the same key answers as the first attempt "
                "did, with no second effect; the same key with a different request is 422.")]

_HELD = ("Only the agent holding the ticket under a running lease may do this: otherwise `409 ticket_not_held` "
         "(also after the lease ran out, even before the ticket was handed to someone else). A ticket of another "
         "shop, or of a queue the agent does not serve and does not hold, is `404`.")


@router.post("/v1/agents/me/claim", response_model=TicketRead, summary="Claim the most urgent ticket (long poll)",
             description="Assigns the agent the next ticket of the queues it serves (tier first, then priority, then "
                         "oldest first) with a lease of TRIAGE_LEASE_SECONDS (default 120 s). With `wait`, the call "
                         "waits up to that many seconds for a ticket to arrive and answers as soon as one does; "
                         "`204` when none arrived. `409 at_capacity` when the agent holds as many open tickets as "
                         "its capacity. A claim, answered or not, makes the agent `online`; while it waits, its "
                         "looks at the queues keep it online.",
             responses={200: {"description": "The claimed ticket with its messages, triage evidence and lease"},
                        204: {"description": "No ticket arrived within `wait` seconds"}, **errors(401, 409, 422)})
async def claim(request: Request, agent: CachedAgentDep, settings: SettingsDep,
                wait: Annotated[float, Query(ge=0, le=30, description="Seconds to wait for work (long poll)")] = 0
                ) -> TicketRead | Response:
    ticket = await queues.claim(request.app.state.drivers, agent=agent, notifier=request.app.state.notifier, wait=wait,
                                lease_seconds=settings.lease_seconds, presence_timeout=settings.presence_timeout_seconds,
                                clock=utcnow, gone=request.is_disconnected, recheck=settings.claim_recheck_seconds)
    return ticket if ticket is not None else Response(status_code=204)


@router.get("/v1/agents/me/tickets", response_model=TicketList, summary="The agent's open tickets",
            description="Tickets the agent holds, most urgent first, with `unread` buyer messages since its last "
                        "reply and `escalated` when a ticket became more urgent while held.",
            responses=errors(401))
async def my_tickets(request: Request, agent: CachedAgentDep) -> TicketList:
    return await queues.my_tickets(request.app.state.drivers, agent=agent)


@router.get("/v1/tickets/{ticket_id}", response_model=TicketRead, summary="Read a ticket",
            description="The ticket with every message and each inbound message's triage evidence. The admin token "
                        "reads any ticket; an agent reads tickets of its shop in the queues it serves, and those it "
                        "holds (others are `404`).",
            responses=errors(401, 404))
async def read_ticket(ticket_id: str, request: Request, caller: AdminOrAgentDep) -> TicketRead:
    return await queues.read_ticket(request.app.state.drivers, caller=caller, ticket_id=ticket_id)


@router.get("/v1/tickets/{ticket_id}/messages", response_model=TicketMessages, summary="A ticket's thread, in pages",
            description="The ticket's messages, oldest first within a page, newest page first: without `before` the "
                        "latest `limit`, then with `before` set to the answer's `next_before` the ones before them, "
                        "until `next_before` is null. Ticket answers carry the latest messages and `messages_before`, "
                        "the `before` of the rest. Who may read it: as for the ticket itself (`404` otherwise).",
            responses=errors(401, 404, 422))
async def ticket_messages(ticket_id: str, request: Request, caller: AdminOrAgentDep,
                          before: Annotated[int | None, Query(ge=1, le=2**62,
                                                              description="Messages before this id")] = None,
                          limit: Annotated[int, Query(ge=1, le=1000, description="Messages per page")] = 50,
                          ) -> TicketMessages:
    return await queues.ticket_messages(request.app.state.drivers, caller=caller, ticket_id=ticket_id,
                                        before=before, limit=limit)


@router.get("/v1/tickets/{ticket_id}/events", response_model=TicketEvents, summary="A ticket's audit trail",
            description="Every change of the ticket, oldest first, with who made it and when: messages received, "
                        "creation and reopening, re-ranking and routing, claims, lease extensions and expiries, "
                        "replies, releases, transfers, resolutions. Pages of `limit` events; `next_after` names the "
                        "`after` of the next page. Who may read it: as for the ticket itself (`404` otherwise).",
            responses=errors(401, 404, 422))
async def ticket_events(ticket_id: str, request: Request, caller: AdminOrAgentDep,
                        after: Annotated[int, Query(ge=0, le=2**62, description="Events after this id")] = 0,
                        limit: Annotated[int, Query(ge=1, le=1000, description="Events per page")] = 200,
                        ) -> TicketEvents:
    return await queues.ticket_events(request.app.state.drivers, caller=caller, ticket_id=ticket_id,
                                      after=after, limit=limit)


@router.post("/v1/tickets/{ticket_id}/heartbeat", response_model=TicketRead, summary="Extend the lease",
             description="Renews the lease to TRIAGE_LEASE_SECONDS from now; the agent counts as seen (its "
                         "presence stays what it set). " + _HELD,
             responses=errors(401, 404, 409))
async def heartbeat(ticket_id: str, request: Request, agent: CachedAgentDep, settings: SettingsDep) -> TicketRead:
    return await queues.heartbeat(request.app.state.drivers, agent=agent, ticket_id=ticket_id, now=utcnow(),
                                  lease_seconds=settings.lease_seconds,
                                  presence_timeout=settings.presence_timeout_seconds)


@router.post("/v1/tickets/{ticket_id}/replies", status_code=201, response_model=ReplyCreated,
             summary="Reply to the buyer",
             description="Stores the reply as an outbound message and renews the lease; the first reply of an "
                         "episode stops the first-response clock (`first_response_at`). " + _HELD,
             responses=errors(401, 404, 409, 422))
async def reply(ticket_id: str, body: ReplyCreate, request: Request, agent: CachedAgentDep, settings: SettingsDep,
                idempotency_key: IdempotencyKey = None) -> ReplyCreated:
    return await queues.reply(request.app.state.drivers, agent=agent, ticket_id=ticket_id, text=body.text, now=utcnow(),
                              lease_seconds=settings.lease_seconds, idempotency_key=idempotency_key,
                              notifier=request.app.state.notifier)


@router.post("/v1/tickets/{ticket_id}/resolve", response_model=TicketRead, summary="Resolve the ticket",
             description="Closes the conversation; a later buyer message reopens it, triaged afresh. " + _HELD,
             responses=errors(401, 404, 409, 422))
async def resolve(ticket_id: str, request: Request, agent: CachedAgentDep,
                  idempotency_key: IdempotencyKey = None) -> TicketRead:
    return await queues.resolve(request.app.state.drivers, agent=agent, ticket_id=ticket_id, now=utcnow(),
                                idempotency_key=idempotency_key)


@router.post("/v1/tickets/{ticket_id}/release", response_model=TicketRead, summary="Hand the ticket back",
             description="Returns the ticket to its queue at its place in order (its age is kept) for another "
                         "agent to claim. The body is optional. " + _HELD,
             responses=errors(401, 404, 409, 422))
async def release(ticket_id: str, request: Request, agent: CachedAgentDep,
                  body: ReleaseRequest | None = None, idempotency_key: IdempotencyKey = None) -> TicketRead:
    return await queues.release(request.app.state.drivers, agent=agent, ticket_id=ticket_id, reason=body.reason if body else None,
                                now=utcnow(), notifier=request.app.state.notifier, idempotency_key=idempotency_key)


@router.post("/v1/tickets/{ticket_id}/transfer", response_model=TicketRead,
             summary="Transfer to another queue or to a named agent",
             description="With `queue`: queues the ticket in another queue of the shop, keeping its age (it is not "
                         "sent to the back); transferring to `escalations` flags it escalated; an unknown queue is "
                         "`422 unknown_queue`. With `agent_id`: hands the ticket to that agent of the shop, who holds "
                         "it from now under a fresh lease (a `transferred` event with `to_agent`); the agent named "
                         "must be of the shop (`422 unknown_agent`), active (`422 agent_inactive`), another agent "
                         "(`422 same_agent`) and serve the ticket's queue (`422 queue_not_served`), and be online or "
                         "away (`409 agent_offline`) with room under its capacity (`409 agent_at_capacity`). Exactly "
                         "one of `queue` and `agent_id` (`422` otherwise). " + _HELD,
             responses=errors(401, 404, 409, 422))
async def transfer(ticket_id: str, body: TransferRequest, request: Request, agent: CachedAgentDep,
                   settings: SettingsDep, idempotency_key: IdempotencyKey = None) -> TicketRead:
    if body.agent_id is not None:
        return await queues.hand_over(request.app.state.drivers, agent=agent, ticket_id=ticket_id,
                                      to_agent=body.agent_id, reason=body.reason, now=utcnow(),
                                      lease_seconds=settings.lease_seconds,
                                      presence_timeout=settings.presence_timeout_seconds,
                                      idempotency_key=idempotency_key)
    assert body.queue is not None  # the model requires one of the two
    return await queues.transfer(request.app.state.drivers, agent=agent, ticket_id=ticket_id, queue=body.queue,
                                 reason=body.reason, now=utcnow(), notifier=request.app.state.notifier,
                                 idempotency_key=idempotency_key)


@router.post("/v1/tickets/{ticket_id}/snooze", response_model=TicketRead, summary="Snooze: wait for the buyer",
             description="Puts the ticket aside (`pending`): it leaves every queue and the agent's tickets, and comes "
                         "back to its queue at its place in order at `until` (the lease reaper wakes it) or at the "
                         "buyer's next message, whichever comes first, with a `woken` event; the `snoozed` event "
                         "names the agent and `until`. `until` must be after now and at most 30 days ahead (`422`, "
                         "detail type `snooze_until` on `body.until`); a time without an offset is `422`. A buyer "
                         "silent for the shop's `auto_close_after_hours` closes it meanwhile, as a queued ticket. "
                         + _HELD,
             responses=errors(401, 404, 409, 422))
async def snooze(ticket_id: str, body: SnoozeRequest, request: Request, agent: CachedAgentDep,
                 idempotency_key: IdempotencyKey = None) -> TicketRead:
    return await queues.snooze(request.app.state.drivers, agent=agent, ticket_id=ticket_id, until=body.until,
                               reason=body.reason, now=utcnow(), idempotency_key=idempotency_key)


@router.get("/v1/agents/me/presence", response_model=AgentPresence, summary="The agent's presence",
            description="`online`, `away` or `offline` now, what the agent last set, when it was last seen and when "
                        "silence makes it offline.", responses=errors(401))
async def my_presence(agent: CachedAgentDep, session: SessionDep, settings: SettingsDep) -> AgentPresence:
    return await presence.read_presence(session, agent=agent, now=utcnow(), timeout=settings.presence_timeout_seconds)


@router.put("/v1/agents/me/presence", response_model=AgentPresence, summary="Set the agent's presence",
            description="`online`: at the console and taking work; tickets held for it as a buyer's last agent (sticky "
                        "owner) wait for it. `away`: at the console, not taking work; such tickets do not wait for it. "
                        "`offline`: gone. Every call also counts as being seen: an agent with no claim, ticket "
                        "heartbeat or presence call for TRIAGE_PRESENCE_TIMEOUT_SECONDS (120 unless changed) is "
                        "offline until it acts again, so a console repeats this call while it is open. A claim makes "
                        "the agent `online`. The tickets it holds stay with it whatever it sets.",
            responses=errors(401, 422))
async def set_presence(body: PresenceUpdate, request: Request, agent: CachedAgentDep, session: SessionDep,
                       settings: SettingsDep) -> AgentPresence:
    return await presence.set_presence(session, agent=agent, status=body.status, now=utcnow(),
                                       timeout=settings.presence_timeout_seconds, notifier=request.app.state.notifier)


@router.get("/v1/agents/me/colleagues", response_model=ColleagueList, summary="The agent's colleagues",
            description="The other active agents of the agent's shop with the queues they serve and their presence "
                        "now: whom a held ticket may be handed to (`POST /v1/tickets/{ticket_id}/transfer` with "
                        "`agent_id`, which takes an agent serving the ticket's queue, online or away, with room "
                        "under its capacity). Tokens, capacities and levels are the admin's to read.",
            responses=errors(401))
async def my_colleagues(agent: CachedAgentDep, session: SessionDep, settings: SettingsDep) -> ColleagueList:
    return await presence.colleagues(session, agent=agent, now=utcnow(), timeout=settings.presence_timeout_seconds)


@router.get("/v1/queues", response_model=QueueList, tags=["agents", "ops: queues"], summary="Queue depths",
            description="Queued tickets per tier and the oldest wait of each queue. An agent sees the queues it "
                        "serves (`shop_id` may be omitted); the admin token must name the shop with `shop_id` and "
                        "sees all its queues.",
            responses=errors(401, 404, 422))
async def list_queues(caller: AdminOrAgentDep, request: Request,
                      shop_id: Annotated[str | None, Query(description="Required with the admin token")] = None
                      ) -> QueueList:
    return await queues.queue_depths(request.app.state.drivers, caller=caller, shop_id=shop_id, now=utcnow())
