"""Classifying a text without storing anything."""

from typing import Annotated

from fastapi import APIRouter, Body, Request

from app.deps import STRICT_QUERY, AdminOrAgentDep
from app.errors import ShopNotFound
from app.routers.docs import errors
from app.schemas.triage import ClassifyRequest, TriageRead
from app.triage import classify, default_ruleset

router = APIRouter(tags=["triage"], dependencies=STRICT_QUERY)

EXAMPLES = {
    "conditional threat": {"summary": "Logistics turning into a bad-review threat",
                           "value": {"text": "亲，快递三天没动了，再不到就给差评"}},
    "traditional": {"summary": "Traditional Chinese return request", "value": {"text": "請問幾時可以退貨？"}},
    "english": {"summary": "English, with a shop's own ruleset",
                "value": {"text": "I'm not leaving a bad review, just asking where my parcel is", "shop_id": "demo"}},
}


@router.post("/v1/triage/classify", response_model=TriageRead, summary="Triage a text (nothing is stored)",
             description="Intents with the evidence (rule and span of the original text) for each, emotion, "
                         "urgency, language, priority inside the tier's band, the queue it would go to and the "
                         "ruleset that decided. An agent may only name its own shop.",
             responses=errors(401, 404, 422))
async def classify_text(body: Annotated[ClassifyRequest, Body(openapi_examples=EXAMPLES)], caller: AdminOrAgentDep,
                        request: Request) -> TriageRead:
    ruleset = default_ruleset()
    if body.shop_id is not None:
        shop = None if caller is not None and caller.shop_id != body.shop_id else \
            await request.app.state.directory.get(body.shop_id)
        if shop is None:
            raise ShopNotFound(f"no shop with id '{body.shop_id}'")
        ruleset = shop.ruleset
    return TriageRead.model_validate(classify(body.text, ruleset).to_dict())
