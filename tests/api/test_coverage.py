"""Coverage (GET /v1/shops/{id}/coverage?date=): per shift, the queues with an active agent on it, and the gaps."""

from typing import Any

import httpx
import pytest

from tests.support.queues import new_agent

pytestmark = pytest.mark.asyncio


async def agent(client: httpx.AsyncClient, admin_headers: dict[str, str], shop_id: str, name: str,
                queues: list[str], shifts: list[str] | None) -> str:
    response = await client.post(f"/v1/shops/{shop_id}/agents", headers=admin_headers,
                                 json={"name": name, "queues": queues, "shifts": shifts})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def coverage(client: httpx.AsyncClient, admin_headers: dict[str, str], shop_id: str, day: str) -> dict[str, Any]:
    response = await client.get(f"/v1/shops/{shop_id}/coverage", params={"date": day}, headers=admin_headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_coverage_shows_a_missing_evening_aftersale_agent(client: httpx.AsyncClient,
                                                                 admin_headers: dict[str, str], new_shop: Any) -> None:
    sid = (await new_shop(always_open=False))["id"]
    lin = await agent(client, admin_headers, sid, "Lin", ["presale", "aftersale"], ["day"])
    wang = await agent(client, admin_headers, sid, "Wang", ["presale"], ["evening"])
    zhao = await agent(client, admin_headers, sid, "Zhao", ["complaints"], None)         # every shift
    gone = await agent(client, admin_headers, sid, "Gone", ["aftersale"], ["evening"])   # deactivated below
    assert (await client.patch(f"/v1/shops/{sid}/agents/{gone}", headers=admin_headers,
                               json={"active": False})).status_code == 200

    day = await coverage(client, admin_headers, sid, "2026-11-19")   # an ordinary Thursday
    assert (day["date"], day["timezone"], day["day"], day["holiday_data"]) == (
        "2026-11-19", "Asia/Shanghai", "ordinary", True)
    shifts = {s["name"]: s for s in day["shifts"]}
    covered = {name: {c["queue"]: sorted(a["name"] for a in c["agents"]) for c in s["covered"]}
               for name, s in shifts.items()}
    assert covered == {"day": {"presale": ["Lin"], "aftersale": ["Lin"], "complaints": ["Zhao"]},
                       "evening": {"presale": ["Wang"], "complaints": ["Zhao"]}}
    assert shifts["day"]["gaps"] == ["escalations"]
    assert shifts["evening"]["gaps"] == ["aftersale", "escalations"]      # nobody active takes aftersale at night
    assert (shifts["evening"]["opens_at"], shifts["evening"]["closes_at"]) == (
        "2026-11-19T07:00:00Z", "2026-11-19T16:00:00Z")
    assert {lin, wang, zhao} == {a["id"] for s in day["shifts"] for c in s["covered"] for a in c["agents"]}

    # National Day: no shift runs, so nothing is covered and nothing is missing.
    holiday = await coverage(client, admin_headers, sid, "2026-10-01")
    assert holiday["day"] == "holiday"
    assert [(s["runs"], s["opens_at"], s["covered"], s["gaps"]) for s in holiday["shifts"]] == [
        (False, None, [], [])] * 2
    # Hiring an evening aftersale agent closes the gap.
    await new_agent(client, admin_headers, sid, queues=("aftersale",))
    evening = {s["name"]: s for s in (await coverage(client, admin_headers, sid, "2026-11-19"))["shifts"]}["evening"]
    assert evening["gaps"] == ["escalations"]


@pytest.mark.parametrize(("query", "status", "field"), [
    ("", 422, "query.date"),                       # required
    ("date=2026-13-01", 422, "query.date"),
    ("date=20261119", 422, "query.date"),
    ("date=1999-12-31", 422, "query.date"),        # out of the range answered
    ("date=2026-11-19&extra=1", 422, "query.extra"),
])
async def test_bad_dates_are_422(client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any,
                                 query: str, status: int, field: str) -> None:
    sid = (await new_shop())["id"]
    response = await client.get(f"/v1/shops/{sid}/coverage?{query}", headers=admin_headers)
    assert response.status_code == status, response.text
    assert field in [d["field"] for d in response.json()["error"]["details"]]


async def test_an_unknown_shop_is_404(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    response = await client.get("/v1/shops/no-such-shop/coverage?date=2026-11-19", headers=admin_headers)
    assert response.status_code == 404
