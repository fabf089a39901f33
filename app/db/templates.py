"""The template store: a shop's own reply templates, read whole and replaced whole (migration 0009).

Read on every suggestion an agent asks for, so it runs on the bare driver beside the ticket store; each
statement is written once for both databases (SQLite reads the same text with its placeholders).
"""

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from app.db.driver import Driver, decoded, driver, json_text
from app.db.session import DriverConnections

_READ = "SELECT templates, version, updated_at FROM reply_templates WHERE shop_id = $1"
# Whole-set replacement with a write counter (the caller checked the shop exists; the foreign key holds it).
_WRITE = ("INSERT INTO reply_templates (shop_id, templates, version, updated_at) VALUES ($1, $2, 1, $3) "
          "ON CONFLICT (shop_id) DO UPDATE SET templates = excluded.templates, "
          "version = reply_templates.version + 1, updated_at = excluded.updated_at "
          "RETURNING version, updated_at")


@dataclass(frozen=True, slots=True)
class StoredTemplates:
    templates: list[dict[str, Any]]
    version: int
    updated_at: datetime


class TemplateStore(Protocol):
    """A shop's stored reply templates."""

    async def get(self, *, shop_id: str) -> StoredTemplates | None:
        """The shop's own set, or None while it uses the shipped one."""

    async def put(self, *, shop_id: str, templates: list[dict[str, Any]], now: datetime) -> StoredTemplates:
        """Replace the shop's set."""


class SharedTemplateStore:
    """Both databases, one text per statement."""

    def __init__(self, db: Driver) -> None:
        self._db = db

    async def get(self, *, shop_id: str) -> StoredTemplates | None:
        row = await self._db.row(_READ, shop_id)
        if row is None:
            return None
        templates = decoded(row)["templates"]
        return StoredTemplates(json.loads(templates) if isinstance(templates, str) else templates,
                               int(row["version"]), row["updated_at"])

    async def put(self, *, shop_id: str, templates: list[dict[str, Any]], now: datetime) -> StoredTemplates:
        async with self._db.transaction():
            row = await self._db.row(_WRITE, shop_id, json_text(templates), now)
        assert row is not None  # an upsert always returns its row
        return StoredTemplates(templates, int(row["version"]), decoded(row)["updated_at"])


@asynccontextmanager
async def template_store(drivers: DriverConnections) -> AsyncIterator[TemplateStore]:
    """A template store on one pooled driver connection, for one request."""
    async with driver(drivers) as db:
        yield SharedTemplateStore(db)
