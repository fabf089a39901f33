"""The webhook shop platforms post buyer messages to."""

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.routing import APIRoute

from app import metrics
from app.errors import AppError
from app.deps import STRICT_QUERY, no_unknown_query_parameters
from app.routers.docs import errors
from app.schemas import examples as ex
from app.schemas.webhooks import IngestResult, WebhookBatch
from app.services.webhooks import VerifiedWebhook, read_limited, verify_webhook


class _WebhookRoute(APIRoute):
    """The webhook's route answers without FastAPI's per-request machinery: the dependencies it declares (the query
    check, `verified_webhook`) are called directly instead of solved from its signature, and the answer is encoded
    once, not validated again against the response model. The route, its parameters, body and answer are declared
    as usual, so the API document describes it unchanged; errors reach the app's exception handlers the same way.
    It is the service's busiest route, and FastAPI's share of a request was a fifth of the process's CPU at one
    message a request (docs/design.md, "The webhook's own route")."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        # The handler below calls these two itself: a dependency declared on the route later would be skipped.
        declared = [dependency.call for dependency in self.dependant.dependencies]
        if declared != [no_unknown_query_parameters, verified_webhook]:
            raise TypeError(f"_WebhookRoute calls its dependencies itself and knows two, not {declared}")

        async def handle(request: Request) -> Response:
            await no_unknown_query_parameters(request)
            webhook = await verified_webhook(request.path_params["shop_id"], request)
            answer = await receive_messages(webhook, request)
            return Response(answer.model_dump_json(), status_code=202, media_type="application/json")
        return handle


router = APIRouter(tags=["webhooks"], dependencies=STRICT_QUERY, route_class=_WebhookRoute)

SIGNING = """
Signed with the shop's secret by the [Standard Webhooks](https://www.standardwebhooks.com/) scheme:

* `webhook-id`: a unique id of this delivery;
* `webhook-timestamp`: unix seconds; further from the server clock than the tolerance is refused (the setting
  `TRIAGE_WEBHOOK_TOLERANCE_SECONDS`, 300 s unless changed; exactly the tolerance is accepted);
* `webhook-signature`: `v1,<base64 HMAC-SHA256 of "{webhook-id}.{webhook-timestamp}.{raw body}">`, keyed with the
  base64-decoded part of the `whsec_...` secret; several space-separated signatures are allowed (during a rotation
  both the old and the new secret verify).

One request carries 1 to 100 messages and is all-or-nothing: any 4xx stores nothing of it. The `202` answer comes
only after the messages are committed. A message already received (same shop, platform and `message_id`) is not
stored again: it is answered as the first time with `duplicate: true`, however many days later it is retried.
"""


async def verified_webhook(shop_id: str, request: Request) -> VerifiedWebhook:
    settings = request.app.state.settings
    try:
        body = await read_limited(request.stream(), declared_length=request.headers.get("content-length"),
                                  limit=settings.max_body_bytes)
        return await verify_webhook(request.app.state.directory, shop_id=shop_id, headers=dict(request.headers),
                                    body=body, tolerance=settings.webhook_tolerance_seconds)
    except AppError as rejected:
        metrics.webhook_rejected(rejected.code)
        raise


VerifiedWebhookDep = Annotated[VerifiedWebhook, Depends(verified_webhook)]


@router.post(
    "/v1/shops/{shop_id}/webhooks/messages", status_code=202, response_model=IngestResult,
    summary="Receive buyer messages from a shop platform", description=SIGNING,
    responses=errors(400, 401, 404, 413, 415, 422, 503),
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/WebhookBatch"},
        "examples": {
            "zh": {"summary": "A Taobao buyer threatens a bad review over a stuck parcel",
                   "value": WebhookBatch.model_config["json_schema_extra"]["examples"][0]},  # type: ignore[index]
            "en": {"summary": "A Shopify buyer asks for a refund",
                   "value": {"platform": "shopify", "messages": [{
                       "message_id": "msg_88213", "conversation_id": "conv_5521", "sent_at": "2026-11-25T09:30:00Z",
                       "customer": {"id": "cust_1093", "nick": "Emma", "vip_level": 0},
                       "text": "The zipper broke after one day. How do I get a refund?", "order_id": "#4410"}]}},
        }}}},
        "responses": {"202": {"content": {"application/json": {"example": {"results": [{
            "message_id": "m-1001", "ticket_id": ex.TICKET_ID, "duplicate": False,
            "primary": "bad_review_threat", "tier": "P1", "priority": 845, "queue": "complaints"}]}}}}},
    },
)
async def receive_messages(webhook: VerifiedWebhookDep, request: Request) -> IngestResult:
    results = await request.app.state.ingestor.submit(webhook.shop, webhook.batch.platform, webhook.batch.messages)
    return IngestResult(results=results)
