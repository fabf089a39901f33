"""Ops endpoints of the outbound channel: delivery endpoints and deliveries (admin token; SPEC 9.1)."""

from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request, Response

from app.clock import utcnow
from app.deps import STRICT_QUERY, AdminDep, SettingsDep
from app.routers.docs import errors
from app.schemas.deliveries import (DeliveryDetail, DeliveryList, EndpointCreate, EndpointCreated, EndpointRead,
                                    EndpointSecretRotate, EndpointSecretRotated, EndpointUpdate)
from app.services import endpoints

router = APIRouter(prefix="/v1/shops/{shop_id}", tags=["ops: delivery"], dependencies=STRICT_QUERY)

_URL_RULE = ("The URL must be http(s) and may not resolve to loopback, private, link-local or cloud-metadata "
             "addresses (`422` naming `body.url`; checked again at every delivery) unless "
             "TRIAGE_DELIVERY_ALLOW_PRIVATE=1.")
_ENDPOINT_ID = r"^[^\x00]{1,40}$"


@router.post("/endpoints", status_code=201, response_model=EndpointCreated, summary="Create a delivery endpoint",
             description="Where the shop's events are delivered: `reply.created` (an agent's reply, for the platform "
                         "to pass to the buyer), `ticket.tier_raised`, `ticket.escalated`, `sla.breached`. The "
                         "answer carries the endpoint's signing secret (`whsec_...`), shown this once. " + _URL_RULE,
             responses=errors(401, 404, 422))
async def create_endpoint(shop_id: str, body: EndpointCreate, request: Request, settings: SettingsDep,
                          _: AdminDep) -> EndpointCreated:
    return await endpoints.create_endpoint(request.app.state.drivers, shop_id=shop_id, data=body, now=utcnow(),
                                           allow_private=settings.delivery_allow_private)


@router.get("/endpoints", response_model=list[EndpointRead], summary="List delivery endpoints",
            description="The shop's endpoints, oldest first; secrets are never listed.", responses=errors(401, 404))
async def list_endpoints(shop_id: str, request: Request, _: AdminDep) -> list[EndpointRead]:
    return await endpoints.list_endpoints(request.app.state.drivers, shop_id=shop_id, now=utcnow())


@router.get("/endpoints/{endpoint_id}", response_model=EndpointRead, summary="Read a delivery endpoint",
            responses=errors(401, 404))
async def read_endpoint(shop_id: str, endpoint_id: str, request: Request, _: AdminDep) -> EndpointRead:
    return await endpoints.read_endpoint(request.app.state.drivers, shop_id=shop_id, endpoint_id=endpoint_id,
                                         now=utcnow())


@router.patch("/endpoints/{endpoint_id}", response_model=EndpointRead, summary="Change a delivery endpoint",
              description="Fields left out keep their value. `enabled: false` pauses deliveries (they wait, and "
                          "go when it is enabled again, also after a `410 Gone` disabled it). " + _URL_RULE,
              responses=errors(401, 404, 422))
async def update_endpoint(shop_id: str, endpoint_id: str, body: EndpointUpdate, request: Request,
                          settings: SettingsDep, _: AdminDep) -> EndpointRead:
    return await endpoints.update_endpoint(request.app.state.drivers, shop_id=shop_id, endpoint_id=endpoint_id,
                                           data=body, now=utcnow(), allow_private=settings.delivery_allow_private,
                                           notifier=request.app.state.notifier)


@router.delete("/endpoints/{endpoint_id}", status_code=204, summary="Delete a delivery endpoint",
               description="Removes the endpoint with its deliveries; pending ones are not sent.",
               responses=errors(401, 404))
async def delete_endpoint(shop_id: str, endpoint_id: str, request: Request, _: AdminDep) -> Response:
    await endpoints.delete_endpoint(request.app.state.drivers, shop_id=shop_id, endpoint_id=endpoint_id)
    return Response(status_code=204)


@router.post("/endpoints/{endpoint_id}/secret", status_code=201, response_model=EndpointSecretRotated,
             summary="Rotate a delivery endpoint's signing secret",
             description="Issues a new secret (shown this once). Until `previous_valid_until` each delivery carries "
                         "a signature by the old secret too (Standard Webhooks allows several), so the receiver can "
                         "switch without refusing one. The body is optional.", responses=errors(401, 404, 422))
async def rotate_secret(shop_id: str, endpoint_id: str, request: Request, settings: SettingsDep, _: AdminDep,
                        body: EndpointSecretRotate | None = None) -> EndpointSecretRotated:
    seconds = body.previous_valid_seconds if body is not None else None
    overlap = timedelta(hours=settings.secret_overlap_hours) if seconds is None else timedelta(seconds=seconds)
    return await endpoints.rotate_secret(request.app.state.drivers, shop_id=shop_id, endpoint_id=endpoint_id,
                                         now=utcnow(), overlap=overlap)


@router.get("/deliveries", response_model=DeliveryList, summary="List deliveries",
            description="The shop's deliveries, newest first, with their state, attempts and last error; by "
                        "`status` and `endpoint_id` when given. `next_before` pages on.", responses=errors(401, 404, 422))
async def list_deliveries(shop_id: str, request: Request, _: AdminDep,
                          status: Literal["pending", "delivered", "failed"] | None = None,
                          endpoint_id: Annotated[str | None, Query(pattern=_ENDPOINT_ID)] = None,
                          before: Annotated[int | None, Query(ge=1, le=2**62)] = None,
                          limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> DeliveryList:
    return await endpoints.list_deliveries(request.app.state.drivers, shop_id=shop_id, status=status,
                                           endpoint_id=endpoint_id, before=before, limit=limit)


@router.get("/deliveries/{delivery_id}", response_model=DeliveryDetail, summary="Read a delivery",
            description="One delivery with the event's data and every attempt (time, HTTP status or error, duration).",
            responses=errors(401, 404, 422))
async def read_delivery(shop_id: str, delivery_id: Annotated[int, Path(ge=1, le=2**62)], request: Request,
                        _: AdminDep) -> DeliveryDetail:
    return await endpoints.read_delivery(request.app.state.drivers, shop_id=shop_id, delivery_id=delivery_id)


@router.post("/deliveries/{delivery_id}/retry", response_model=DeliveryDetail, summary="Send a failed delivery again",
             description="A `failed` delivery goes again at once, with the same `webhook-id` and body, retried for "
                         "another TRIAGE_DELIVERY_MAX_HOURS; `409 delivery_not_failed` for any other.",
             responses=errors(401, 404, 409, 422))
async def retry_delivery(shop_id: str, delivery_id: Annotated[int, Path(ge=1, le=2**62)], request: Request,
                         _: AdminDep) -> DeliveryDetail:
    return await endpoints.retry_delivery(request.app.state.drivers, shop_id=shop_id, delivery_id=delivery_id,
                                          now=utcnow(), notifier=request.app.state.notifier)
