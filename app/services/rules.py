"""Rules admin: read the active ruleset, validate, activate and backtest candidates, roll back (the
operations' descriptions at /docs say what each answers)."""

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


from app.db.errors import ConstraintViolation
from app.db.models import Shop
from app.db.session import Session
from app.db.shops import SessionShopStore, ShopStore
from app.domain import route as route_with_fallback
from app.domain import TIER_NAMES
from app.errors import Conflict, RulesetInvalid, RulesetVersionNotFound, ShopNotFound
from app.services.directory import ShopDirectory
from app.triage import TIERS, Ruleset, RulesetError, Triage, classify, default_ruleset

EXAMPLES_PER_KIND = 20
EXCERPT_CHARS = 80
CHANGE_KINDS = ("primary", "tier", "queue")
MAX_RULESET_CHARS = 1_000_000
MAX_RULESET_DEPTH = 16
_ACTIVATION_ATTEMPTS = 3
_REPLAY_SLICE = 250

# Text PostgreSQL cannot store (NUL) or that is not valid Unicode (lone surrogates).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclass(frozen=True, slots=True)
class RulesetView:
    name: str
    version: int
    source: str
    created_at: datetime | None
    activated_at: datetime | None
    body: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"id": f"{self.name}@{self.version}", "name": self.name, "version": self.version, "source": self.source,
                "created_at": self.created_at, "activated_at": self.activated_at, "body": self.body}


@dataclass(frozen=True, slots=True)
class Decision:
    primary: str
    tier: str
    queue: str

    def as_dict(self) -> dict[str, str]:
        return {"primary": self.primary, "tier": self.tier, "queue": self.queue}


@dataclass(slots=True)
class Replay:
    """Running totals of a backtest."""

    messages: int = 0
    changed: dict[str, int] = field(default_factory=lambda: dict.fromkeys((*CHANGE_KINDS, "any"), 0))
    tickets: dict[str, set[str]] = field(default_factory=lambda: {kind: set() for kind in (*CHANGE_KINDS, "any")})
    tier_moves: dict[str, dict[str, int]] = field(
        default_factory=lambda: {before: dict.fromkeys(TIER_NAMES, 0) for before in TIER_NAMES})
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {kind: [] for kind in CHANGE_KINDS})


def invalid(path: str, problem: str, *, prefix: str = "body.ruleset") -> RulesetInvalid:
    """The 422 for one faulty entry; `path` is the entry inside the ruleset, as RulesetError names it."""
    field_path = prefix if path in ("", "(root)") else f"{prefix}.{path}"
    return RulesetInvalid(f"invalid ruleset entry {field_path}: {problem}",
                          details=[{"field": field_path, "reason": problem, "type": "invalid_ruleset"}])


def _check_storable(data: Mapping[str, Any]) -> None:
    """Refuse what a JSON column cannot hold or what is too big to be a ruleset, naming the entry."""
    total = 0
    stack: list[tuple[str, Any, int]] = [("", data, 0)]
    while stack:
        path, value, depth = stack.pop()
        if depth > MAX_RULESET_DEPTH:
            raise invalid(path, f"nested deeper than {MAX_RULESET_DEPTH} levels")
        if isinstance(value, str):
            total += len(value)
            if _UNSTORABLE.search(value):
                raise invalid(path, "contains NUL or unpaired surrogate characters")
        elif isinstance(value, Mapping):
            for key, item in value.items():
                total += len(key)
                child = f"{path}.{key}" if path else str(key)
                if _UNSTORABLE.search(key):
                    raise invalid(path, "a key contains NUL or unpaired surrogate characters")
                stack.append((child, item, depth + 1))
        elif isinstance(value, list):
            stack.extend((f"{path}[{index}]", item, depth + 1) for index, item in enumerate(value))
        if total > MAX_RULESET_CHARS:
            raise invalid("", f"more than {MAX_RULESET_CHARS} characters of text")


def stored_name(shop_id: str, data: Mapping[str, Any], requested: str | None) -> str:
    """The name a shop's version is stored under: the request's, the mapping's, or the shop id.

    The shipped ruleset's name is kept for the shipped ruleset, so a ticket's `ruleset` ("name@version")
    never means two different rulesets.
    """
    shipped = default_ruleset().name
    given = data.get("name")
    if given is not None and not (isinstance(given, str) and _NAME.fullmatch(given)):
        raise invalid("name", f"expected 1-64 letters, digits, '.', '_' or '-', got {given!r}")
    if requested is not None:
        if requested == shipped:
            raise invalid("name", f"'{shipped}' is reserved for the shipped ruleset", prefix="body")
        return requested
    if given is None or given == shipped:
        return shop_id if shop_id != shipped else f"{shop_id}-shop"
    return given


def compile_candidate(data: Mapping[str, Any], *, name: str, version: int, queues: set[str]) -> Ruleset:
    """Validate and compile a candidate; every route must name a queue of the shop."""
    _check_storable(data)
    try:
        ruleset = Ruleset.from_mapping(data, name=name, version=version)
    except RulesetError as error:
        raise invalid(error.path, error.problem) from error
    for intent, queue in ruleset.routes.items():
        if queue not in queues:
            raise invalid(f"routes.{intent}",
                          f"queue '{queue}' does not exist in this shop (it has: {', '.join(sorted(queues))})")
    return ruleset


async def _require_shop(shops: ShopStore, shop_id: str, *, lock: bool = False) -> Shop:
    shop = await shops.get(shop_id, lock=lock)
    if shop is None:
        raise ShopNotFound(f"no shop with id '{shop_id}'")
    return shop


async def active_ruleset(session: Session, *, directory: ShopDirectory, shop_id: str) -> RulesetView:
    """The ruleset the shop triages with now, as stored in the database (not a process's cache)."""
    shops = SessionShopStore(session)
    shop = await _require_shop(shops, shop_id)
    version = shop.active_ruleset_version
    ruleset = await directory.ruleset(shops, shop_id, version)
    if version is None:
        return RulesetView(ruleset.name, ruleset.version, "shipped", None, None, ruleset.to_mapping())
    row = await shops.ruleset(shop_id=shop_id, version=version)
    return RulesetView(ruleset.name, ruleset.version, "shop", row.created_at if row else None,
                       row.activated_at if row else None, ruleset.to_mapping())


async def list_versions(session: Session, *, shop_id: str) -> dict[str, Any]:
    """The shop's stored versions, newest first, and which one is active (none: the shipped default)."""
    shops = SessionShopStore(session)
    shop = await _require_shop(shops, shop_id)
    active = shop.active_ruleset_version
    rows = await shops.versions(shop_id=shop_id)
    versions = [{"version": r.version, "name": r.name, "id": f"{r.name}@{r.version}", "created_at": r.created_at,
                 "activated_at": r.activated_at, "active": r.version == active} for r in rows]
    active_id = next((v["id"] for v in versions if v["active"]), default_ruleset().id)
    return {"active": active_id, "active_version": active, "versions": versions}


def summary(ruleset: Ruleset) -> dict[str, Any]:
    """What a ruleset holds: rules and phrases per intent, masks, routes."""
    data = ruleset.to_mapping()
    intents = {intent: {"tier": TIERS[intent], "base": entry["base"], "rules": len(entry["rules"]),
                        "phrases": sum(len(rule["phrases"]) for rule in entry["rules"])}
               for intent, entry in data["intents"].items()}
    return {"valid": True, "id": ruleset.id, "name": ruleset.name, "intents": intents,
            "phrases": sum(entry["phrases"] for entry in intents.values()), "masks": len(data["masks"]),
            "routes": dict(ruleset.routes)}


async def validate(session: Session, *, shop_id: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """Check a candidate against the schema and the shop's queues; the summary names the id it would get."""
    shops = SessionShopStore(session)
    await _require_shop(shops, shop_id)
    queues = await shops.queue_names(shop_id=shop_id)
    version = await shops.next_version(shop_id=shop_id)
    await shops.rollback()
    ruleset = compile_candidate(data, name=stored_name(shop_id, data, None), version=version, queues=queues)
    return summary(ruleset)


async def activate(session: Session, *, directory: ShopDirectory, shop_id: str, data: Mapping[str, Any],
                   name: str | None, now: datetime) -> RulesetView:
    """Store a candidate as the shop's next version and make it the active one."""
    shops = SessionShopStore(session)
    await _require_shop(shops, shop_id)
    queues = await shops.queue_names(shop_id=shop_id)
    await shops.rollback()
    name = stored_name(shop_id, data, name)
    compiled = compile_candidate(data, name=name, version=1, queues=queues)
    for attempt in range(_ACTIVATION_ATTEMPTS):
        try:
            # The shop row lock queues concurrent activations on PostgreSQL; the unique (shop_id, version)
            # constraint is what makes a lost race fail rather than share a number (SQLite, or no lock).
            await _require_shop(shops, shop_id, lock=True)
            version = await shops.next_version(shop_id=shop_id)
            body = {**compiled.to_mapping(), "version": version}
            row = await shops.add_version(shop_id=shop_id, version=version, name=name, body=body, now=now)
            await shops.set_active_version(shop_id=shop_id, version=version)
            created_at, activated_at = row.created_at, row.activated_at
            await shops.commit()
            break
        except ConstraintViolation:
            await shops.rollback()
            if attempt == _ACTIVATION_ATTEMPTS - 1:
                raise Conflict("another activation of this shop's rules took the version number; retry") from None
    directory.invalidate(shop_id)
    return RulesetView(name, version, "shop", created_at, activated_at, body)


async def rollback(session: Session, *, directory: ShopDirectory, shop_id: str, version: int | None,
                   now: datetime) -> RulesetView:
    """Make an earlier stored version, or the shipped default (None), the active ruleset again."""
    shops = SessionShopStore(session)
    await _require_shop(shops, shop_id, lock=True)
    if version is not None:
        if not await shops.version_exists(shop_id=shop_id, version=version):
            raise RulesetVersionNotFound(f"shop '{shop_id}' has no ruleset version {version}")
        await shops.mark_activated(shop_id=shop_id, version=version, now=now)
    await shops.set_active_version(shop_id=shop_id, version=version)
    await shops.commit()
    directory.invalidate(shop_id)
    return await active_ruleset(session, directory=directory, shop_id=shop_id)


def route(ruleset: Ruleset, primary: str, queues: set[str]) -> str:
    """The queue a ticket would go to, with the fallback the webhook path applies."""
    return route_with_fallback(ruleset.routes, primary, queues=queues)


def excerpt(text: str, focus: int, *, width: int = EXCERPT_CHARS) -> str:
    """At most `width` characters of the text around offset `focus`, marked with '…' where cut."""
    text = text.replace("\r", " ").replace("\n", " ")
    if len(text) <= width:
        return text
    start = max(0, focus - width // 3)
    if start == 0:
        return text[:width - 1] + "…"
    if start + width - 1 >= len(text):
        return "…" + text[len(text) - (width - 1):]
    return "…" + text[start:start + width - 2] + "…"


def _focus(*triages: Triage) -> int:
    for triage in triages:
        for hit in triage.intents:
            if hit.evidence:
                return hit.evidence[0].start
    return 0


async def backtest(session: Session, *, directory: ShopDirectory, shop_id: str, data: Mapping[str, Any],
                   limit: int) -> dict[str, Any]:
    """Replay the shop's last `limit` inbound messages under the active ruleset and a candidate; writes nothing."""
    shops = SessionShopStore(session)
    shop = await _require_shop(shops, shop_id)
    queues = await shops.queue_names(shop_id=shop_id)
    active = await directory.ruleset(shops, shop_id, shop.active_ruleset_version)
    version = await shops.next_version(shop_id=shop_id)
    candidate = compile_candidate(data, name=stored_name(shop_id, data, None), version=version, queues=queues)
    rows = await shops.recent_inbound(shop_id=shop_id, limit=limit)
    # The replay is CPU work: end the read first so no connection (SQLite has one) waits on it.
    await shops.rollback()

    replay = Replay()
    for index, row in enumerate(rows):
        if index and index % _REPLAY_SLICE == 0:
            await asyncio.sleep(0)  # let other requests run during a long replay
        old, new = classify(row.text, active), classify(row.text, candidate)
        before = Decision(old.primary, old.tier, route(active, old.primary, queues))
        after = Decision(new.primary, new.tier, route(candidate, new.primary, queues))
        replay.messages += 1
        replay.tier_moves[before.tier][after.tier] += 1
        kinds = [kind for kind in CHANGE_KINDS if getattr(before, kind) != getattr(after, kind)]
        if not kinds:
            continue
        example = {"message_id": row.id, "external_id": row.external_id, "ticket_id": row.ticket_id,
                   "received_at": row.received_at, "excerpt": excerpt(row.text, _focus(old, new)),
                   "before": before.as_dict(), "after": after.as_dict()}
        for kind in (*kinds, "any"):
            replay.changed[kind] += 1
            replay.tickets[kind].add(row.ticket_id)
            if kind != "any" and len(replay.examples[kind]) < EXAMPLES_PER_KIND:
                replay.examples[kind].append(example)
    return {"active": active.id, "candidate": candidate.id, "messages": replay.messages,
            "since": rows[-1].received_at if rows else None, "until": rows[0].received_at if rows else None,
            "changed": replay.changed, "tickets": {kind: len(ids) for kind, ids in replay.tickets.items()},
            "tier_moves": replay.tier_moves, "examples": replay.examples}
