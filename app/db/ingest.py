"""The store of webhook ingestion: one group's transaction in four steps (IngestStore), on the bare driver.

Ingestion is the hot path: a group of requests can carry hundreds of messages, and SQLAlchemy's
per-row parameter processing cost more than the database work (docs/design.md). SharedIngestStore
writes the steps once, with multi-row VALUES, and is what SQLite runs; PostgresIngestStore replaces all
four, because PostgreSQL takes whole columns as arrays through unnest() and groups there run side by
side (prepare waits for a concurrent insert of the same row instead of failing). Column layouts
follow app/db/models.py.
"""

import functools
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import orjson
from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Integer, SmallInteger, String
from sqlalchemy.types import TypeDecorator

from app.db.base import Base
from app.db.driver import Driver, Record, decoded, json_decoded, json_text, placeholders
from app.db.models import Customer, Message, MessageIdempotencyKey, Ticket, TicketEvent
from app.domain import TICKET_FIELDS, Status

ConversationKey = tuple[str, str, str]  # shop, platform, conversation id
MessageKey = tuple[str, str, str]  # shop, platform, message id
CustomerKey = tuple[str, str, str]  # shop, platform, customer id

# unnest() takes each column as an array of its base type: a domain's check (migration 0006) then runs where the
# value is assigned, as in every other write.
_PG_TYPES = ((BigInteger, "bigint"), (SmallInteger, "smallint"), (Integer, "int"), (Boolean, "boolean"),
             (String, "text"), (DateTime, "timestamptz"), (JSON, "jsonb"))


def pg_types(model: type[Base], names: Sequence[str]) -> dict[str, str]:
    """The columns of `model` named, with their PostgreSQL base types ("text", "jsonb"...), in the order given."""
    def base(kind: Any) -> str:
        kind = kind.impl if isinstance(kind, TypeDecorator) else kind
        return next(name for sa_type, name in _PG_TYPES if isinstance(kind, sa_type))
    return {name: base(model.__table__.c[name].type) for name in names}


# The ticket's columns in TicketState order, as app/db/models.py types them.
TICKET_COLUMNS = pg_types(Ticket, TICKET_FIELDS)
UPDATABLE = ("queue", "status", "tier", "priority", "primary_intent", "intents", "escalated", "deliveries", "unread",
             "ruleset", "updated_at", "opened_at", "opened_seq", "awaiting_since", "first_response_due_at",
             "first_response_at", "last_message_at", "resolved_at", "episodes", "snoozed_until", "held_for", "held_until")
MESSAGE_COLUMNS = pg_types(Message, ("ticket_id", "shop_id", "platform", "external_id", "direction", "text", "sent_at",
                                     "received_at", "order_id", "primary_intent", "tier", "priority", "triage", "kind",
                                     "content"))
# A message's idempotency key with the answer its receipt got (MessageIdempotencyKey); `queue` is its triage's.
KEY_COLUMNS = pg_types(MessageIdempotencyKey, ("shop_id", "platform", "external_id", "received_at", "ticket_id",
                                               "primary_intent", "tier", "priority", "queue"))
_RECEIVED_COLUMNS = {**MESSAGE_COLUMNS, "queue": KEY_COLUMNS["queue"]}
EVENT_COLUMNS = pg_types(TicketEvent, ("ticket_id", "shop_id", "at", "kind", "actor", "data"))
CUSTOMER_COLUMNS = pg_types(Customer, ("shop_id", "platform", "external_id", "nick", "vip_level"))


# What a row prepare reads stands for: a customer, a ticket made now, or a ticket that was there.
CUSTOMER, NEW_TICKET, TICKET = "customer", "new ticket", "ticket"


class Raced(Exception):
    """A row another transaction created while this one waited for it is gone again: the group is retried."""


@dataclass(slots=True)
class Prepared:
    """What prepare found or made for a group."""

    # id, conversations opened so far, the agent who last replied to the buyer and when (sticky owner)
    customers: dict[CustomerKey, tuple[int, int, str | None, datetime | None]] = field(default_factory=dict)
    tickets: dict[ConversationKey, str] = field(default_factory=dict)  # every conversation's ticket id
    created: set[str] = field(default_factory=set)  # the tickets made now
    # Existing tickets with an open episode: since when the buyer awaits an answer (None once answered). Read
    # without a lock on PostgreSQL, so a reply committing meanwhile is not seen: priority context only.
    open_episodes: dict[ConversationKey, datetime | None] = field(default_factory=dict)
    # Rows another group committed while prepare waited for them, read after that commit (PostgreSQL): a late
    # ticket's episode is among its buyer's contacts only if the buyer's row was read late too.
    late_tickets: set[ConversationKey] = field(default_factory=set)
    late_customers: set[CustomerKey] = field(default_factory=set)
    # The conversations whose open episode's latest buyer texts (tickets.context) were asked for, and those texts as
    # read: JSON text from PostgreSQL, decoded by `context`.
    wanted: frozenset[ConversationKey] = frozenset()
    contexts: dict[ConversationKey, str | list[str]] = field(default_factory=dict)

    def ticket(self, kind: str, ticket_id: str, key: ConversationKey, status: str | None,
               awaiting_since: datetime | None, context: str | list[str] | None = None, *, late: bool = False) -> None:
        self.tickets[key] = ticket_id
        if late:
            self.late_tickets.add(key)
        if kind == NEW_TICKET:
            self.created.add(ticket_id)
        elif status is not None and status != Status.RESOLVED:
            self.open_episodes[key] = awaiting_since
            if context is not None and key in self.wanted:
                self.contexts[key] = context

    def collect(self, records: Sequence[Sequence[Any]], *, late: bool) -> None:
        """Take rows of (kind, ticket id, customer id, shop, platform, external id, contacts, status, awaiting, last
        agent, last agent reply, context)."""
        for (kind, ticket_id, customer_id, shop_id, platform, external_id, contacts, status, awaiting, last_agent,
             last_reply, context) in records:
            if kind == CUSTOMER:
                self.customers[(shop_id, platform, external_id)] = (customer_id, contacts, last_agent, last_reply)
                if late:
                    self.late_customers.add((shop_id, platform, external_id))
            else:
                self.ticket(kind, ticket_id, (shop_id, platform, external_id), status, awaiting, context, late=late)

    def context(self, key: ConversationKey) -> list[str]:
        """The latest buyer texts of the conversation's open episode, oldest first; none without one."""
        texts = self.contexts.get(key, [])
        return orjson.loads(texts) if isinstance(texts, str) else texts

    def counted(self, conversation: ConversationKey, customer: CustomerKey) -> bool:
        """Whether the open episode of `conversation` is among `customer`'s contacts as read."""
        return conversation not in self.late_tickets or customer in self.late_customers


class IngestStore(Protocol):
    """The steps of one group's transaction. Only lock_tickets and finish lock existing rows, so a group holds
    those locks for its last two steps and the commit; groups running side by side overlap the steps before."""

    async def prepare(self, customers: Sequence[dict[str, Any]], conversations: Sequence[tuple[ConversationKey, str]],
                      *, now: datetime, contexts: frozenset[ConversationKey] = frozenset()) -> Prepared:
        """Customers' ids and contacts, creating new customers; the conversations' ticket ids, creating a placeholder
        ticket (in the queue given) for each new conversation; the ids of those created, the open episodes, and the
        latest buyer texts of those of `contexts`."""
        ...

    async def insert_messages(self, messages: Sequence[dict[str, Any]]) -> dict[MessageKey, int]:
        """The ids of the messages stored now; a message stored before is skipped."""
        ...

    async def lock_tickets(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        """The tickets, locked until commit."""
        ...

    async def finish(self, *, deleted: Sequence[str], saved: Sequence[dict[str, Any]], events: Sequence[dict[str, Any]],
                     customers: Sequence[dict[str, Any]], channel: str, payloads: Sequence[str],
                     previous: Sequence[MessageKey], now: datetime) -> dict[MessageKey, dict[str, Any]]:
        """Every write after the lock; returns the stored messages the `previous` keys name."""
        ...

    async def insert_auto_replies(self, messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Store outbound messages the service sends by itself (the off-hours reply), in order; each as stored."""
        ...


def _columns(spec: dict[str, str]) -> str:
    return ", ".join(spec)


# Text columns travel packed: one string per column, each value preceded by a separator that occurs in none of
# them, split again by string_to_array (nulls marked by a string that no value equals). A list parameter costs
# asyncpg an abstract-base-class check or two per element, more than the rest of its encoding: 4.7 µs a row of 15
# text columns against 0.55 packed, the same work for PostgreSQL (docs/design.md, "Packed text columns").
# Every statement that packs takes the separator as $1 and the null marker as $2.
_SEPARATOR, _NULL = "$1", "$2"
_MARKS = ("\x1f", "\x1e")


def _packed_array(n: int) -> str:
    """The text[] that parameter n packs."""
    return f"(string_to_array(${n}, {_SEPARATOR}, {_NULL}))[2:]"


def _column_param(n: int, kind: str) -> str:
    return _packed_array(n) if kind in ("text", "jsonb") else f"${n}::{kind}[]"


def _pack(values: Sequence[str | None], separator: str, null: str) -> str | None:
    """`values` packed with `separator` before each, None written as `null`; None if they cannot be."""
    if values.count(null):
        return None
    texts = [null if v is None else v for v in values] if None in values else values
    packed = separator + separator.join(texts) if texts else ""
    return packed if packed.count(separator) == len(texts) else None


def _statement_params(columns: Sequence[Any], packed: Sequence[int]) -> list[Any]:
    """The parameters of a packing statement: separator, null marker, then `columns`, those at the indexes in
    `packed` packed with the first marks that none of their values holds."""
    separator, null = _MARKS
    while True:
        params = list(columns)
        for i in packed:
            params[i] = _pack(columns[i], separator, null)
            if params[i] is None:
                break
        else:
            return [separator, null, *params]
        # Some value holds a mark: marks no text can hold by chance.
        separator, null = f"\x1f{uuid.uuid4().hex}\x1f", f"\x1e{uuid.uuid4().hex}\x1e"


class _Params:
    """A packing statement's parameters in order, each column as unnest() takes it (text and jsonb packed)."""

    def __init__(self) -> None:
        self._values: list[Any] = []
        self._packed: list[int] = []

    def rows(self, spec: dict[str, str], rows: Sequence[dict[str, Any]]) -> "_Params":
        for c, kind in spec.items():
            if kind == "jsonb":
                self.texts([json_text(r[c]) for r in rows])
            elif kind == "text":
                self.texts([r[c] for r in rows])
            else:
                self.value([r[c] for r in rows])
        return self

    def keys(self, keys: Sequence[tuple[str, str, str]]) -> "_Params":
        for column in (list(column) for column in zip(*keys, strict=True)) if keys else ([], [], []):
            self.texts(column)
        return self

    def texts(self, values: list[str | None]) -> "_Params":
        self._packed.append(len(self._values))
        self._values.append(values)
        return self

    def value(self, value: Any) -> "_Params":
        self._values.append(value)
        return self

    def all(self) -> list[Any]:
        return _statement_params(self._values, self._packed)


def _unnest(spec: dict[str, str], first: int, alias: str = "u") -> str:
    # jsonb travels as text and is cast per element (_select).
    args = ", ".join(_column_param(first + i, t) for i, t in enumerate(spec.values()))
    return f"unnest({args}) AS {alias}({_columns(spec)})"


def _select(spec: dict[str, str], alias: str = "u") -> str:
    return ", ".join(f"{alias}.{c}::jsonb" if t == "jsonb" else f"{alias}.{c}" for c, t in spec.items())


# customer_id too: a placeholder ticket gets its customer here.
_SAVED_COLUMNS = {"id": "text", "customer_id": "bigint", **{c: TICKET_COLUMNS[c] for c in UPDATABLE},
                  "context": "jsonb"}
# Per customer in finish: the latest nick and VIP level, and how many conversations the group opened or reopened.
_TOUCHED_COLUMNS = {**CUSTOMER_COLUMNS, "opened": "int"}
# What a new conversation's ticket holds until finish, in the same transaction, writes its state: valid values only.
_PLACEHOLDER = {"status": "'queued'", "tier": "4", "priority": "0", "primary_intent": "''", "intents": "'[]'",
                "escalated": "false", "deliveries": "0", "unread": "0", "ruleset": "''", "episodes": "1"}
_PLACEHOLDER_TIMES = ("created_at", "updated_at", "opened_at", "last_message_at")
_PREPARE = (
    # New customers and tickets are inserted; a concurrent insert of the same key is waited for and skipped, and
    # read by the next statement. Existing rows are only read (an insert attempt on them would wait for groups
    # updating them): they are locked late, in lock_tickets and finish. Customers come before tickets (UNION ALL
    # runs its parts in order), rows in key order, as in every group, so that groups creating the same keys wait
    # for each other instead of deadlocking: the ORDER BYs say so, for the join to the tickets may come out in any
    # order (a hash join did, and two groups deadlocked on their new tickets, each time a second lost before
    # PostgreSQL's deadlock_timeout). The LATERAL ... LIMIT 1 lookups of customers and tickets keep to the unique
    # indexes even when the plan was made while the table was small: a join let a connection's cached plan read
    # every ticket for each group once it had (bench/ingest.py, 2.8 ms a group at 4,000 tickets).
    f"WITH k AS (SELECT k.*, c.id, c.contacts, c.last_agent_id, c.last_agent_reply_at "
    f"FROM {_unnest(CUSTOMER_COLUMNS, 3, alias='k')} LEFT JOIN LATERAL "
    "(SELECT id, contacts, last_agent_id, last_agent_reply_at FROM customers c WHERE c.shop_id = k.shop_id AND c.platform = k.platform "
    "AND c.external_id = k.external_id LIMIT 1) c ON true), "
    f"added AS (INSERT INTO customers ({_columns(CUSTOMER_COLUMNS)}, contacts, first_seen_at, last_seen_at) "
    f"SELECT {_select(CUSTOMER_COLUMNS, 'k')}, 0, $8, $8 FROM k WHERE k.id IS NULL "
    "ORDER BY k.shop_id, k.platform, k.external_id "
    "ON CONFLICT (shop_id, platform, external_id) DO NOTHING RETURNING id, shop_id, platform, external_id, contacts), "
    "v AS (SELECT v.*, t.id, t.status, t.awaiting_since, CASE WHEN v.wanted THEN t.context END AS context "
    f"FROM unnest({_packed_array(9)}, {_packed_array(10)}, {_packed_array(11)}, {_packed_array(12)}, $13::boolean[]) "
    "AS v(shop_id, platform, "
    "conversation_id, queue, wanted) LEFT JOIN LATERAL (SELECT id, status, awaiting_since, context FROM tickets t "
    "WHERE t.shop_id = v.shop_id AND t.platform = v.platform AND t.conversation_id = v.conversation_id LIMIT 1) t "
    "ON true), "
    f"opened AS (INSERT INTO tickets (id, shop_id, platform, conversation_id, queue, {_columns(_PLACEHOLDER)}, "
    f"{', '.join(_PLACEHOLDER_TIMES)}) SELECT gen_random_uuid()::text, v.shop_id, v.platform, v.conversation_id, "
    f"v.queue, {', '.join(_PLACEHOLDER.values())}, {', '.join(['$8'] * len(_PLACEHOLDER_TIMES))} FROM v "
    "WHERE v.id IS NULL ORDER BY v.shop_id, v.platform, v.conversation_id "
    "ON CONFLICT (shop_id, platform, conversation_id) DO NOTHING "
    "RETURNING id, shop_id, platform, conversation_id) "
    "SELECT 'customer' AS kind, NULL AS ticket_id, id, shop_id, platform, external_id, contacts, NULL::text AS status, "
    "NULL::timestamptz AS awaiting_since, NULL::text AS last_agent_id, NULL::timestamptz AS last_agent_reply_at, "
    "NULL::jsonb AS context FROM added "
    "UNION ALL SELECT 'customer', NULL, id, shop_id, platform, external_id, contacts, NULL, NULL, last_agent_id, "
    "last_agent_reply_at, NULL FROM k WHERE id IS NOT NULL "
    "UNION ALL SELECT 'new ticket', id, NULL, shop_id, platform, conversation_id, NULL, NULL, NULL, NULL, NULL, NULL "
    "FROM opened "
    "UNION ALL SELECT 'ticket', id, NULL, shop_id, platform, conversation_id, NULL, status, awaiting_since, NULL, NULL, "
    "context FROM v WHERE id IS NOT NULL")
_REREAD = (
    # What another transaction created and committed while prepare waited for it.
    "SELECT 'customer', NULL, id, shop_id, platform, external_id, contacts, NULL::text, NULL::timestamptz, "
    "last_agent_id, last_agent_reply_at, NULL::jsonb FROM customers "
    f"WHERE (shop_id, platform, external_id) IN (SELECT * FROM unnest({_packed_array(3)}, {_packed_array(4)}, "
    f"{_packed_array(5)})) "
    "UNION ALL SELECT 'ticket', id, NULL, shop_id, platform, conversation_id, NULL, status, awaiting_since, NULL, NULL, "
    "context FROM tickets "
    f"WHERE (shop_id, platform, conversation_id) IN (SELECT * FROM unnest({_packed_array(6)}, {_packed_array(7)}, "
    f"{_packed_array(8)}))")
_INSERT_MESSAGES = (
    # The keys first: a message whose key another group (or an earlier request) took is skipped. Ids are drawn
    # row by row as unnest yields them, so they follow the order of the rows.
    f"WITH u AS (SELECT nextval('messages_id_seq') AS id, u.* FROM {_unnest(_RECEIVED_COLUMNS, 3)}), "
    f"k AS (INSERT INTO message_keys ({_columns(KEY_COLUMNS)}) SELECT {_select(KEY_COLUMNS)} FROM u "
    "ON CONFLICT (shop_id, platform, external_id) DO NOTHING RETURNING shop_id, platform, external_id) "
    f"INSERT INTO messages (id, {_columns(MESSAGE_COLUMNS)}) SELECT u.id, {_select(MESSAGE_COLUMNS)} "
    "FROM u JOIN k ON k.shop_id = u.shop_id AND k.platform = u.platform AND k.external_id = u.external_id "
    "RETURNING id, shop_id, platform, external_id")
_LOCK_TICKETS = (
    # In id order (the ids come sorted, the nested loop locks as it goes), so that concurrent groups queue behind
    # each other instead of deadlocking. NO KEY UPDATE is all an update of these columns needs, and it lets other
    # groups insert messages referencing the ticket meanwhile.
    f"SELECT t.* FROM unnest({_packed_array(3)}) AS v(id) CROSS JOIN LATERAL (SELECT {_columns(TICKET_COLUMNS)}, context "
    "FROM tickets WHERE tickets.id = v.id LIMIT 1 FOR NO KEY UPDATE) t")


def _finish_sql() -> str:
    n = 4
    saved = _unnest(_SAVED_COLUMNS, n)
    n += len(_SAVED_COLUMNS)
    events = _unnest(EVENT_COLUMNS, n)
    n += len(EVENT_COLUMNS)
    touched = _unnest(_TOUCHED_COLUMNS, n)
    n += len(_TOUCHED_COLUMNS)
    assignments = ", ".join(f"{c} = u.{c}::jsonb" if t == "jsonb" else f"{c} = u.{c}"
                            for c, t in _SAVED_COLUMNS.items() if c != "id")
    # One statement. Customers are updated through ON CONFLICT, which takes their rows in the (sorted) order
    # given: groups updating the same buyers wait for each other instead of deadlocking. The pg_notify SELECT
    # is joined in so that it runs even when no duplicate is read; notifications go out at commit. Tickets and keys
    # are found by LATERAL ... LIMIT 1 lookups, as in _PREPARE: a join's plan made while the table was small
    # read the whole table for every group after.
    return (
        f"WITH gone AS (DELETE FROM tickets WHERE id IN (SELECT unnest({_packed_array(3)}))), "
        f"saved AS (UPDATE tickets SET {assignments} FROM {saved} CROSS JOIN LATERAL "
        "(SELECT t.ctid AS row_id FROM tickets t WHERE t.id = u.id LIMIT 1) found WHERE tickets.ctid = found.row_id), "
        f"logged AS (INSERT INTO ticket_events ({_columns(EVENT_COLUMNS)}) SELECT {_select(EVENT_COLUMNS)} "
        f"FROM {events}), "
        f"touched AS (INSERT INTO customers ({_columns(CUSTOMER_COLUMNS)}, contacts, first_seen_at, last_seen_at) "
        f"SELECT {_select(CUSTOMER_COLUMNS)}, u.opened, ${n}, ${n} FROM {touched} "
        "ON CONFLICT (shop_id, platform, external_id) DO UPDATE SET nick = excluded.nick, "
        "vip_level = excluded.vip_level, last_seen_at = excluded.last_seen_at, "
        "contacts = customers.contacts + excluded.contacts), "
        f"notified AS (SELECT count(pg_notify(${n + 1}, p)) AS n FROM unnest({_packed_array(n + 2)}) AS p), "
        "previous AS (SELECT m.* FROM unnest("
        f"{_packed_array(n + 3)}, {_packed_array(n + 4)}, {_packed_array(n + 5)}) AS p(shop_id, platform, external_id) "
        "CROSS JOIN LATERAL "
        "(SELECT shop_id, platform, external_id, ticket_id, primary_intent, tier, priority, queue FROM message_keys k "
        "WHERE k.shop_id = p.shop_id AND k.platform = p.platform AND k.external_id = p.external_id LIMIT 1) m) "
        "SELECT previous.* FROM notified LEFT JOIN previous ON true")


_FINISH = _finish_sql()


def _params(spec: dict[str, str], row: dict[str, Any]) -> list[Any]:
    return [json_text(row[c]) if t == "jsonb" else row[c] for c, t in spec.items()]


@functools.cache
def _row_placeholders(rows: int, width: int) -> str:
    """"($1, $2), ($3, $4)" for rows=2, width=2."""
    return ", ".join(f"({placeholders(1 + i * width, width)})" for i in range(rows))


@functools.cache
def _keys_listed(rows: int) -> str:
    """A list of `rows` three-part keys to match with IN. SQLite scans the whole table for `(a, b, c) IN (VALUES
    ...)` and looks each key up in the unique index for `IN (SELECT ... FROM (VALUES ...))`."""
    return f"(SELECT column1, column2, column3 FROM (VALUES {_row_placeholders(rows, 3)}) AS k)"


_TICKET_READ = f"SELECT {_columns(TICKET_COLUMNS)}, context FROM tickets WHERE (shop_id, platform, conversation_id) IN "
_PREVIOUS_READ = ("SELECT shop_id, platform, external_id, ticket_id, primary_intent, tier, priority, queue "
                  "FROM message_keys WHERE (shop_id, platform, external_id) IN ")
_OPENED_SPEC = {"id": "text", "shop_id": "text", "platform": "text", "conversation_id": "text", "queue": "text"}
_LOG = f"INSERT INTO ticket_events ({_columns(EVENT_COLUMNS)}) VALUES ({placeholders(1, len(EVENT_COLUMNS))})"
_SAVED_NAMES = tuple(_SAVED_COLUMNS)
_SAVED_JSON = frozenset(i for i, t in enumerate(_SAVED_COLUMNS.values()) if t == "jsonb")


@functools.lru_cache(maxsize=1024)  # the sets of columns a group's tickets change are a few dozen kinds
def _save_sql(columns: tuple[int, ...]) -> str:
    """The update of a ticket's saved columns at these positions of `_SAVED_NAMES` (0 is its id, the key)."""
    assignments = ", ".join(f"{_SAVED_NAMES[c]} = ${n + 2}" for n, c in enumerate(columns))
    return f"UPDATE tickets SET {assignments} WHERE id = $1"


_AUTO_REPLY = ("INSERT INTO messages (ticket_id, shop_id, platform, direction, text, sent_at, received_at, kind, "
               "content) VALUES ($1, $2, $3, 'outbound', $4, $5, $5, 'text', $6) "
               "RETURNING id, ticket_id, text, sent_at, agent_id")


class SharedIngestStore:
    """Ingestion written once on the driver: multi-row VALUES with RETURNING, and the rest row by row in one call.

    The service runs it on SQLite, where the transaction holds the one write lock from its BEGIN IMMEDIATE:
    the tickets prepare reads are the ones lock_tickets returns. It runs on PostgreSQL too (prepare's read then
    locks the tickets) for the contract tests, one writer at a time: groups racing to create the same row need
    PostgresIngestStore's prepare.
    """

    CHUNK = 400  # rows per statement, well under SQLite's 32,766 parameters

    def __init__(self, db: Driver) -> None:
        self.db = db
        self._tickets: dict[str, dict[str, Any]] = {}
        # Each existing ticket's saved columns as prepare read them (the rows above are the caller's to change).
        self._read: dict[str, tuple[Any, ...]] = {}

    async def _each_chunk(self, rows: Sequence[Any], statement: Callable[[int], str],
                          params: Callable[[Any], Sequence[Any]]) -> list[Record]:
        """The rows of `statement(n)` run once per chunk of n rows, with each row's `params` in turn."""
        found: list[Record] = []
        for start in range(0, len(rows), self.CHUNK):
            chunk = rows[start:start + self.CHUNK]
            found.extend(await self.db.rows(statement(len(chunk)), *(p for row in chunk for p in params(row))))
        return found

    async def prepare(self, customers: Sequence[dict[str, Any]], conversations: Sequence[tuple[ConversationKey, str]],
                      *, now: datetime, contexts: frozenset[ConversationKey] = frozenset()) -> Prepared:
        # Customers are upserted at once (their nick, VIP level and last seen; finish adds their contacts).
        width = len(CUSTOMER_COLUMNS) + 3
        found = await self._each_chunk(
            customers, lambda n: _upsert_customers_sql(n, width),
            lambda c: [*_params(CUSTOMER_COLUMNS, c), 0, now, now])
        prepared = Prepared(customers={(r["shop_id"], r["platform"], r["external_id"]): (
            r["id"], r["contacts"], r["last_agent_id"], decoded(r)["last_agent_reply_at"]) for r in found},
            wanted=contexts)
        for row in await self._each_chunk([k for k, _ in conversations],
                                          lambda n: _TICKET_READ + _keys_listed(n)
                                          + self.db.for_update, lambda k: k):
            ticket = decoded(row)
            self._tickets[ticket["id"]] = ticket
            # Copies: the caller appends to the context list it is given.
            self._read[ticket["id"]] = tuple(v.copy() if v.__class__ is list else v
                                             for v in map(ticket.get, _SAVED_NAMES))
            prepared.ticket(TICKET, ticket["id"], (ticket["shop_id"], ticket["platform"], ticket["conversation_id"]),
                            ticket["status"], ticket["awaiting_since"], ticket["context"])
        opened = [{"id": str(uuid.uuid4()), "shop_id": key[0], "platform": key[1], "conversation_id": key[2],
                   "queue": queue} for key, queue in conversations if key not in prepared.tickets]
        await self._each_chunk(opened, _open_tickets_sql, lambda r: [*_params(_OPENED_SPEC, r), now])
        for r in opened:
            prepared.ticket(NEW_TICKET, r["id"], (r["shop_id"], r["platform"], r["conversation_id"]), None, None)
        return prepared

    async def insert_messages(self, messages: Sequence[dict[str, Any]]) -> dict[MessageKey, int]:
        # The keys first, then the messages whose key this group took, in the order given.
        taken = {(r["shop_id"], r["platform"], r["external_id"]) for r in await self._each_chunk(
            messages, _insert_keys_sql, lambda m: _params(KEY_COLUMNS, _with_queue(m)))}
        fresh = [m for m in messages if (m["shop_id"], m["platform"], m["external_id"]) in taken]
        stored = await self._each_chunk(fresh, _insert_messages_sql, lambda m: _params(MESSAGE_COLUMNS, m))
        return {(r["shop_id"], r["platform"], r["external_id"]): r["id"] for r in stored}

    async def lock_tickets(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        return [self._tickets[i] for i in ids]

    async def finish(self, *, deleted: Sequence[str], saved: Sequence[dict[str, Any]], events: Sequence[dict[str, Any]],
                     customers: Sequence[dict[str, Any]], channel: str, payloads: Sequence[str],
                     previous: Sequence[MessageKey], now: datetime) -> dict[MessageKey, dict[str, Any]]:
        # No notifications: SQLite has no NOTIFY; other processes find the work at their periodic re-check.
        await self.db.execute_many("DELETE FROM tickets WHERE id = $1", [[i] for i in deleted])
        for statement, rows in self._changes(saved).items():
            await self.db.execute_many(statement, rows)
        await self.db.execute_many(_LOG, [_params(EVENT_COLUMNS, r) for r in events])
        await self.db.execute_many("UPDATE customers SET contacts = contacts + $1 "
                                   "WHERE shop_id = $2 AND platform = $3 AND external_id = $4",
                                   [[c["opened"], c["shop_id"], c["platform"], c["external_id"]]
                                    for c in customers if c["opened"]])
        rows = await self._each_chunk(previous, lambda n: _PREVIOUS_READ + _keys_listed(n),
                                      lambda k: k)
        return {(r["shop_id"], r["platform"], r["external_id"]): decoded(r) for r in rows}

    def _changes(self, saved: Sequence[dict[str, Any]]) -> dict[str, list[list[Any]]]:
        """The saved tickets' updates, each setting only the columns that differ from what prepare read (all of a
        ticket made in this group), grouped by statement. SQLite rewrites the entries of every index that holds a
        column the statement sets, changed or not, and most messages change none of the indexed columns
        (docs/design.md, "SQLite writes only the changed columns")."""
        statements: dict[str, list[list[Any]]] = {}
        for row in saved:
            values = [row[c] for c in _SAVED_NAMES]
            before = self._read.get(row["id"])
            changed = tuple(range(1, len(values))) if before is None else tuple(
                i for i in range(1, len(values)) if values[i] != before[i])
            if changed:
                statements.setdefault(_save_sql(changed), []).append(
                    [row["id"], *(json_text(values[i]) if i in _SAVED_JSON else values[i] for i in changed)])
        return statements

    async def insert_auto_replies(self, messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        # One statement each: only episodes opened while their shop is closed have one, so this is off the busy path.
        stored = []
        for m in messages:
            row = await self.db.row(_AUTO_REPLY, m["ticket_id"], m["shop_id"], m["platform"], m["text"], m["sent_at"],
                                    json_text(m["content"]))
            stored.append(decoded(row or {}))
        return stored


@functools.cache
def _upsert_customers_sql(rows: int, width: int) -> str:
    return (f"INSERT INTO customers ({_columns(CUSTOMER_COLUMNS)}, contacts, first_seen_at, last_seen_at) "
            f"VALUES {_row_placeholders(rows, width)} ON CONFLICT (shop_id, platform, external_id) DO UPDATE SET "
            "nick = excluded.nick, vip_level = excluded.vip_level, last_seen_at = excluded.last_seen_at "
            "RETURNING id, shop_id, platform, external_id, contacts, last_agent_id, last_agent_reply_at")


@functools.cache
def _open_tickets_sql(rows: int) -> str:
    # Each row: its five values, then `now` for every time column.
    width = len(_OPENED_SPEC) + 1
    values = ", ".join(f"({placeholders(1 + i * width, len(_OPENED_SPEC))}, {', '.join(_PLACEHOLDER.values())}, "
                       f"{', '.join([f'${(i + 1) * width}'] * len(_PLACEHOLDER_TIMES))})" for i in range(rows))
    return (f"INSERT INTO tickets ({_columns(_OPENED_SPEC)}, {_columns(_PLACEHOLDER)}, "
            f"{', '.join(_PLACEHOLDER_TIMES)}) VALUES {values}")


def _with_queue(message: dict[str, Any]) -> dict[str, Any]:
    """A message's row with the queue its triage named (what a resend is answered)."""
    return {**message, "queue": (message["triage"] or {}).get("queue")}


@functools.cache
def _insert_keys_sql(rows: int) -> str:
    return (f"INSERT INTO message_keys ({_columns(KEY_COLUMNS)}) VALUES {_row_placeholders(rows, len(KEY_COLUMNS))} "
            "ON CONFLICT (shop_id, platform, external_id) DO NOTHING RETURNING shop_id, platform, external_id")


@functools.cache
def _insert_messages_sql(rows: int) -> str:
    return (f"INSERT INTO messages ({_columns(MESSAGE_COLUMNS)}) "
            f"VALUES {_row_placeholders(rows, len(MESSAGE_COLUMNS))} RETURNING id, shop_id, platform, external_id")


class PostgresIngestStore(SharedIngestStore):
    """Whole columns as arrays through unnest(): one round trip per step whatever the number of rows.

    A group costs BEGIN, four statements and COMMIT. Each round trip also waits its turn on the event loop,
    busy parsing and triaging the next requests, so what can share a statement does (CTEs). prepare inserts new
    rows or waits for a concurrent group's insert of them; existing tickets are locked late (lock_tickets), so
    groups side by side overlap their first steps. The records are read positionally, as asyncpg gives them.
    """

    async def prepare(self, customers: Sequence[dict[str, Any]], conversations: Sequence[tuple[ConversationKey, str]],
                      *, now: datetime, contexts: frozenset[ConversationKey] = frozenset()) -> Prepared:
        keys = [k for k, _ in conversations]
        found = Prepared(wanted=contexts)
        fetch = self.db.connection.fetch
        # Only the contexts asked for travel: a fragment's conversation is one of a few dozen.
        params = (_Params().rows(CUSTOMER_COLUMNS, customers).value(now).keys(keys)
                  .texts([queue for _, queue in conversations]).value([k in contexts for k in keys]))
        found.collect(await fetch(_PREPARE, *params.all()), late=False)
        absent = [k for k in ((c["shop_id"], c["platform"], c["external_id"]) for c in customers)
                  if k not in found.customers]
        unticketed = [k for k in keys if k not in found.tickets]
        if absent or unticketed:
            found.collect(await fetch(_REREAD, *_Params().keys(absent).keys(unticketed).all()), late=True)
            if len(found.customers) < len(customers) or len(found.tickets) < len(keys):
                raise Raced  # created and deleted again meanwhile: start over
        return found

    async def insert_messages(self, messages: Sequence[dict[str, Any]]) -> dict[MessageKey, int]:
        params = _Params().rows(_RECEIVED_COLUMNS, [_with_queue(m) for m in messages])
        records = await self.db.connection.fetch(_INSERT_MESSAGES, *params.all())
        return {(r[1], r[2], r[3]): r[0] for r in records}

    async def lock_tickets(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        return [json_decoded(r) for r in await self.db.rows(_LOCK_TICKETS, *_Params().texts(list(ids)).all())] if ids else []

    async def finish(self, *, deleted: Sequence[str], saved: Sequence[dict[str, Any]], events: Sequence[dict[str, Any]],
                     customers: Sequence[dict[str, Any]], channel: str, payloads: Sequence[str],
                     previous: Sequence[MessageKey], now: datetime) -> dict[MessageKey, dict[str, Any]]:
        rows = await self.db.rows(
            _FINISH, *_Params().texts(list(deleted)).rows(_SAVED_COLUMNS, saved).rows(EVENT_COLUMNS, events)
            .rows(_TOUCHED_COLUMNS, customers).value(now).value(channel).texts(list(payloads)).keys(previous).all())
        return {(r["shop_id"], r["platform"], r["external_id"]): json_decoded(r) for r in rows if r["shop_id"] is not None}


@asynccontextmanager
async def ingest_transaction(db: Driver) -> AsyncIterator[IngestStore]:
    """A store on `db`'s connection, inside a transaction committed when the block ends."""
    async with db.transaction():
        yield PostgresIngestStore(db) if db.postgres else SharedIngestStore(db)
