"""Reply templates (admin) and the suggestions an agent's console shows beside a ticket (SPEC 11)."""

from typing import Any

from fastapi import APIRouter, Request

from app.clock import utcnow
from app.deps import STRICT_QUERY, AdminDep, AdminOrAgentDep
from app.routers.docs import errors
from app.schemas.templates import SuggestionList, TemplatesPut, TemplatesRead
from app.services import templates

router = APIRouter(dependencies=STRICT_QUERY)

_INVALID = ("`422 invalid_template` names the faulty entry in `details` (`body.templates[2].text.zh`): an unknown "
            "variable, unpaired braces, an id used twice, or wording that asks the buyer to delete or change a "
            "review in exchange for money, a refund or a coupon (删评返现, 改好评送券, \"update your review for a "
            "refund\"), which platforms penalise.")


@router.get("/v1/shops/{shop_id}/templates", response_model=TemplatesRead, tags=["ops: templates"],
            summary="The shop's reply templates",
            description="The templates suggestions are made from: the shop's own set, or the shipped defaults "
                        "(`source: shipped`, one or more for every intent, in Chinese and English) until it stores "
                        "one.",
            responses=errors(401, 404))
async def read_templates(shop_id: str, request: Request, _: AdminDep) -> dict[str, Any]:
    return await templates.read(request.app.state.drivers, directory=request.app.state.directory, shop_id=shop_id)


@router.put("/v1/shops/{shop_id}/templates", response_model=TemplatesRead, tags=["ops: templates"],
            summary="Replace the shop's reply templates",
            description="Stores the whole set in place of the shop's current one (an empty list: no suggestions). "
                        "Each template answers an intent (or `any`) and an emotion (or `any`); `apology` ones are "
                        "offered first to an angry or upset buyer. Nothing is stored unless every template is "
                        "valid. " + _INVALID,
            responses=errors(401, 404, 422))
async def replace_templates(shop_id: str, body: TemplatesPut, request: Request, _: AdminDep) -> dict[str, Any]:
    items = [item.model_dump(exclude_none=True) for item in body.templates]
    return await templates.replace(request.app.state.drivers, directory=request.app.state.directory,
                                   shop_id=shop_id, items=items, now=utcnow())


@router.get("/v1/tickets/{ticket_id}/suggestions", response_model=SuggestionList, tags=["agents"],
            summary="Suggested replies for a ticket",
            description="The shop's templates that fit the ticket's primary intent and the buyer's emotion (the "
                        "most upset of the messages since the last reply), best first: an apology first for an "
                        "angry or upset buyer, then the intent's own templates before generic ones. Filled in with "
                        "the buyer's nick, the latest order id, the shop's name and the agent's; a variable without "
                        "a value stays `{name}` and is listed in `missing`. In the latest buyer message's language "
                        "(Traditional characters for a Traditional-script buyer). Who may read it: as for the "
                        "ticket (`404` otherwise).",
            responses=errors(401, 404))
async def ticket_suggestions(ticket_id: str, request: Request, caller: AdminOrAgentDep) -> dict[str, Any]:
    return await templates.suggestions(request.app.state.drivers, directory=request.app.state.directory,
                                       caller=caller, ticket_id=ticket_id)
