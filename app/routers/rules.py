"""Ops endpoints for a shop's triage rules: read, validate, activate, backtest, roll back (admin token)."""

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request

from app.clock import utcnow
from app.deps import STRICT_QUERY, AdminDep, SessionDep
from app.routers.docs import errors
from app.schemas.rules import (
    EXAMPLE_MOVE_BAD_REVIEWS,
    EXAMPLE_RULESET,
    BacktestReport,
    BacktestRequest,
    RollbackRequest,
    RulesetActivate,
    RulesetCandidate,
    RulesetRead,
    RulesetSummary,
    RulesetVersions,
)
from app.services import rules

router = APIRouter(prefix="/v1/shops/{shop_id}/rules", tags=["ops: rules"], dependencies=STRICT_QUERY)

_INVALID = ("`422 invalid_ruleset` when the candidate cannot be used: `details` is "
            "`[{\"field\": \"body.ruleset.<entry>\", \"reason\": ...}]` naming the faulty entry (e.g. "
            "`body.ruleset.intents.bad_review_threat.rules[0].phrases[2]`), including a route to a queue the shop "
            "does not have (`body.ruleset.routes.<intent>`).")

_CANDIDATE_EXAMPLES: dict[str, Any] = {
    "summer-sale": {"summary": "Chinese and English phrases, routes to the default queues",
                    "value": {"ruleset": EXAMPLE_RULESET}},
    "bad reviews to P2": {"summary": "差评 / bad review counted as a quality issue (P2, aftersale)",
                          "value": {"ruleset": EXAMPLE_MOVE_BAD_REVIEWS}},
}

_BACKTEST_EXAMPLES: dict[str, Any] = {
    name: {**example, "value": {**example["value"], "limit": 1000}} for name, example in _CANDIDATE_EXAMPLES.items()}


@router.get("", response_model=RulesetRead, summary="The shop's active ruleset",
            description="The ruleset that triages the shop's messages now, with its canonical body (every default "
                        "filled in): a good starting point for a candidate. `source: shipped` with null "
                        "`activated_at` while the shop uses the default ruleset that ships with the service.",
            responses=errors(401, 404))
async def read_rules(shop_id: str, request: Request, session: SessionDep, _: AdminDep) -> dict[str, Any]:
    view = await rules.active_ruleset(session, directory=request.app.state.directory, shop_id=shop_id)
    return view.as_dict()


@router.get("/versions", response_model=RulesetVersions, summary="The shop's ruleset versions",
            description="Every version stored for the shop, newest first, without bodies, with the active one "
                        "flagged. No version is active while the shipped default ruleset is in force.",
            responses=errors(401, 404))
async def list_versions(shop_id: str, session: SessionDep, _: AdminDep) -> dict[str, Any]:
    return await rules.list_versions(session, shop_id=shop_id)


@router.post("/validate", response_model=RulesetSummary, summary="Validate a candidate ruleset",
             description="Checks a candidate without storing it: schema, phrase sanity, priority bases inside "
                         "their tier's band, unique rule ids, and routes to queues the shop has. Answers a summary "
                         "(rules and phrases per intent, routes, and the id it would get). " + _INVALID,
             responses=errors(401, 404, 422))
async def validate_rules(shop_id: str, session: SessionDep, _: AdminDep,
                         body: Annotated[RulesetCandidate, Body(openapi_examples=_CANDIDATE_EXAMPLES)]) -> dict[str, Any]:
    return await rules.validate(session, shop_id=shop_id, data=body.ruleset)


@router.post("", status_code=201, response_model=RulesetRead, summary="Activate a candidate ruleset",
             description="Validates the candidate, stores it as the shop's next version (1, 2, …; the mapping's "
                         "own `version` is ignored) and makes it the active one. Every message triaged from then "
                         "on, and every ticket it opens or re-ranks, records the new id (`name@version`); earlier "
                         "messages and tickets keep theirs. This process switches at once; other service "
                         "processes switch within their shop-cache lifetime (2 s). " + _INVALID,
             responses=errors(401, 404, 409, 422))
async def activate_rules(shop_id: str, request: Request, session: SessionDep, _: AdminDep,
                         body: Annotated[RulesetActivate, Body(openapi_examples=_CANDIDATE_EXAMPLES)]) -> dict[str, Any]:
    view = await rules.activate(session, directory=request.app.state.directory, shop_id=shop_id,
                                data=body.ruleset, name=body.name, now=utcnow())
    return view.as_dict()


@router.post("/backtest", response_model=BacktestReport, summary="Backtest a candidate ruleset",
             description="Replays the shop's last `limit` inbound messages (by receipt time, default 1,000) under "
                         "the active ruleset and under the candidate, and reports how many would change primary "
                         "intent, tier and queue (and in how many tickets), a matrix of tier moves, and up to 20 "
                         "examples of each kind of change with a text excerpt. Nothing is written: no ticket, "
                         "message or version changes. " + _INVALID,
             responses=errors(401, 404, 422))
async def backtest_rules(shop_id: str, request: Request, session: SessionDep, _: AdminDep,
                         body: Annotated[BacktestRequest, Body(openapi_examples=_BACKTEST_EXAMPLES)]) -> dict[str, Any]:
    return await rules.backtest(session, directory=request.app.state.directory, shop_id=shop_id,
                                data=body.ruleset, limit=body.limit)


@router.post("/rollback", response_model=RulesetRead, summary="Re-activate an earlier version",
             description="Makes a stored version (`version: n`) or the shipped default ruleset (`version: null`) "
                         "the active one again, without storing a new version. Like activation, later messages "
                         "record the id of the ruleset now in force. `404 ruleset_version_not_found` for a version "
                         "the shop never stored.",
             responses=errors(401, 404, 422))
async def rollback_rules(shop_id: str, body: RollbackRequest, request: Request, session: SessionDep,
                         _: AdminDep) -> dict[str, Any]:
    view = await rules.rollback(session, directory=request.app.state.directory, shop_id=shop_id,
                                version=body.version, now=utcnow())
    return view.as_dict()
