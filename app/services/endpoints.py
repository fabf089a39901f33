"""Ops use cases of the outbound channel: a shop's delivery endpoints, its deliveries, resending a failed one."""

import secrets
from datetime import datetime, timedelta
from typing import Any

from app.db.claims import claim_store
from app.db.deliveries import DeliveryStore, delivery_store
from app.db.driver import Record
from app.db.session import DriverConnections
from app.domain import event_mask, mask_events
from app.errors import DeliveryNotFailed, DeliveryNotFound, EndpointNotFound, InvalidInput, ShopNotFound
from app.schemas.deliveries import (AttemptRead, DeliveryDetail, DeliveryList, DeliveryRead, EndpointCreate,
                                    EndpointCreated, EndpointRead, EndpointSecretRotated, EndpointUpdate)
from app.security import new_webhook_secret
from app.services import egress
from app.services.notify import Notifier


def endpoint_view(row: Record, *, now: datetime) -> EndpointRead:
    until = row["previous_valid_until"]
    return EndpointRead(id=row["id"], shop_id=row["shop_id"], url=row["url"], events=mask_events(row["event_mask"]),
                        description=row["description"], enabled=row["enabled"], disabled_reason=row["disabled_reason"],
                        created_at=row["created_at"], updated_at=row["updated_at"],
                        previous_secret_valid_until=until if row["previous_secret"] and until and until > now else None)


async def checked_url(url: str, *, allow_private: bool) -> str:
    """The URL if deliveries may go there now; 422 naming body.url otherwise."""
    try:
        await egress.check(url, allow_private=allow_private)
    except egress.UnsafeUrl as refused:
        raise InvalidInput(f"body.url: {refused}", details=[
            {"field": "body.url", "reason": str(refused), "type": "url_not_allowed"}]) from None
    return url


async def _shop_exists(drivers: DriverConnections, shop_id: str) -> None:
    async with claim_store(drivers) as tickets:
        if not await tickets.shop_exists(shop_id=shop_id):
            raise ShopNotFound(f"no shop with id '{shop_id}'")


async def _endpoint(store: DeliveryStore, *, shop_id: str, endpoint_id: str) -> Record:
    row = await store.endpoint(shop_id=shop_id, endpoint_id=endpoint_id)
    if row is None:
        raise EndpointNotFound(f"no delivery endpoint '{endpoint_id}' in shop '{shop_id}'")
    return row


async def create_endpoint(drivers: DriverConnections, *, shop_id: str, data: EndpointCreate, now: datetime,
                          allow_private: bool) -> EndpointCreated:
    """A new endpoint, enabled, with its own signing secret (shown in this answer only)."""
    await _shop_exists(drivers, shop_id)
    url = await checked_url(data.url, allow_private=allow_private)
    secret = new_webhook_secret()
    values = {"id": f"ep_{secrets.token_hex(8)}", "shop_id": shop_id, "url": url, "event_mask": event_mask(data.events),
              "description": data.description, "secret": secret, "previous_secret": None,
              "previous_valid_until": None, "enabled": True, "disabled_reason": None, "created_at": now,
              "updated_at": now}
    async with delivery_store(drivers) as store:
        row = await store.create_endpoint(values)
    return EndpointCreated(**endpoint_view(row, now=now).model_dump(), secret=secret)


async def list_endpoints(drivers: DriverConnections, *, shop_id: str, now: datetime) -> list[EndpointRead]:
    """The shop's endpoints, oldest first; secrets are never listed."""
    await _shop_exists(drivers, shop_id)
    async with delivery_store(drivers) as store:
        return [endpoint_view(r, now=now) for r in await store.endpoints(shop_id=shop_id)]


async def read_endpoint(drivers: DriverConnections, *, shop_id: str, endpoint_id: str, now: datetime) -> EndpointRead:
    """One endpoint of the shop."""
    await _shop_exists(drivers, shop_id)
    async with delivery_store(drivers) as store:
        return endpoint_view(await _endpoint(store, shop_id=shop_id, endpoint_id=endpoint_id), now=now)


async def update_endpoint(drivers: DriverConnections, *, shop_id: str, endpoint_id: str, data: EndpointUpdate,
                          now: datetime, allow_private: bool, notifier: Notifier) -> EndpointRead:
    """Change the URL, events, description or enabled flag; fields left out keep their value."""
    await _shop_exists(drivers, shop_id)
    values: dict[str, Any] = {"updated_at": now}
    if data.url is not None:
        values["url"] = await checked_url(data.url, allow_private=allow_private)
    if data.events is not None:
        values["event_mask"] = event_mask(data.events)
    if data.description is not None:
        values["description"] = data.description
    if data.enabled is not None:
        values["enabled"] = data.enabled
        if data.enabled:
            values["disabled_reason"] = None
    async with delivery_store(drivers) as store:
        row = await store.update_endpoint(shop_id=shop_id, endpoint_id=endpoint_id, values=values)
        if row is None:
            raise EndpointNotFound(f"no delivery endpoint '{endpoint_id}' in shop '{shop_id}'")
        if data.enabled:
            await store.notify()  # deliveries that waited may go now
    if data.enabled:
        notifier.outbox_written()
    return endpoint_view(row, now=now)


async def delete_endpoint(drivers: DriverConnections, *, shop_id: str, endpoint_id: str) -> None:
    """Remove the endpoint, with its deliveries (pending ones are not sent)."""
    await _shop_exists(drivers, shop_id)
    async with delivery_store(drivers) as store:
        if not await store.delete_endpoint(shop_id=shop_id, endpoint_id=endpoint_id):
            raise EndpointNotFound(f"no delivery endpoint '{endpoint_id}' in shop '{shop_id}'")


async def rotate_secret(drivers: DriverConnections, *, shop_id: str, endpoint_id: str, now: datetime,
                        overlap: timedelta) -> EndpointSecretRotated:
    """A new signing secret (shown this once); deliveries carry a signature by the old one too for `overlap`."""
    await _shop_exists(drivers, shop_id)
    secret = new_webhook_secret()
    until = now + overlap if overlap > timedelta(0) else None
    async with delivery_store(drivers) as store, store.transaction():
        old = await _endpoint(store, shop_id=shop_id, endpoint_id=endpoint_id)
        await store.update_endpoint(shop_id=shop_id, endpoint_id=endpoint_id, values={
            "secret": secret, "previous_secret": old["secret"] if until else None, "previous_valid_until": until,
            "updated_at": now})
    return EndpointSecretRotated(secret=secret, previous_valid_until=until)


def delivery_view(row: Record) -> DeliveryRead:
    return DeliveryRead(id=row["id"], endpoint_id=row["endpoint_id"], type=row["type"],
                        webhook_id=f"msg_{row['event_id']}", ticket_id=row["ticket_id"], message_id=row["message_id"],
                        status=row["status"], attempts=row["attempts"],
                        next_attempt_at=row["next_attempt_at"] if row["status"] == "pending" else None,
                        last_status=row["last_status"], last_error=row["last_error"], created_at=row["created_at"],
                        delivered_at=row["delivered_at"])


async def list_deliveries(drivers: DriverConnections, *, shop_id: str, status: str | None, endpoint_id: str | None,
                          before: int | None, limit: int) -> DeliveryList:
    """A page of the shop's deliveries, newest first."""
    await _shop_exists(drivers, shop_id)
    async with delivery_store(drivers) as store:
        rows = await store.deliveries(shop_id=shop_id, status=status, endpoint_id=endpoint_id, before=before,
                                      limit=limit + 1)
    page = rows[:limit]
    return DeliveryList(deliveries=[delivery_view(r) for r in page],
                        next_before=page[-1]["id"] if len(rows) > limit else None)


async def read_delivery(drivers: DriverConnections, *, shop_id: str, delivery_id: int) -> DeliveryDetail:
    """One delivery with its event's data and every attempt."""
    await _shop_exists(drivers, shop_id)
    async with delivery_store(drivers) as store:
        row = await store.delivery(shop_id=shop_id, delivery_id=delivery_id)
        if row is None:
            raise DeliveryNotFound(f"no delivery {delivery_id} in shop '{shop_id}'")
        attempts = await store.attempts(delivery_id=delivery_id)
    return DeliveryDetail(**delivery_view(row).model_dump(), data=row["data"],
                          attempt_log=[AttemptRead(**a) for a in attempts])


async def retry_delivery(drivers: DriverConnections, *, shop_id: str, delivery_id: int, now: datetime,
                         notifier: Notifier) -> DeliveryDetail:
    """Send a failed delivery again, with the same webhook-id and body, for another TRIAGE_DELIVERY_MAX_HOURS."""
    await _shop_exists(drivers, shop_id)
    async with delivery_store(drivers) as store:
        async with store.transaction():
            if await store.retry(shop_id=shop_id, delivery_id=delivery_id, now=now) is None:
                row = await store.delivery(shop_id=shop_id, delivery_id=delivery_id)
                if row is None:
                    raise DeliveryNotFound(f"no delivery {delivery_id} in shop '{shop_id}'")
                raise DeliveryNotFailed(f"delivery {delivery_id} is {row['status']}; only a failed one can be resent",
                                        details={"status": row["status"]})
            await store.notify()
    notifier.outbox_written()
    return await read_delivery(drivers, shop_id=shop_id, delivery_id=delivery_id)
