"""Shop hours through the API (PATCH /v1/shops/{id}), and the shifts agents work, on both databases."""

from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.asyncio

EVERY_DAY = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DEFAULT_SHIFTS = [{"name": "day", "start": "09:00", "end": "18:00", "days": EVERY_DAY},
                  {"name": "evening", "start": "15:00", "end": "24:00", "days": EVERY_DAY}]


async def read(client: httpx.AsyncClient, admin_headers: dict[str, str], shop_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/shops/{shop_id}", headers=admin_headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_a_new_shop_has_the_default_hours(client: httpx.AsyncClient, admin_headers: dict[str, str],
                                                new_shop: Any) -> None:
    shop = await read(client, admin_headers, (await new_shop(always_open=False))["id"])
    assert (shop["timezone"], shop["shifts"], shop["holidays"], shop["closed_dates"], shop["off_hours_reply"]) == (
        "Asia/Shanghai", DEFAULT_SHIFTS, "CN", [], None)
    assert shop["holiday_data_until"] >= "2026-12-31"


async def test_hours_are_set_read_back_and_kept_when_left_out(client: httpx.AsyncClient,
                                                              admin_headers: dict[str, str], new_shop: Any) -> None:
    sid = (await new_shop(always_open=False))["id"]
    hours = {"timezone": "Europe/Berlin", "holidays": None, "closed_dates": ["2026-12-31", "2026-12-24"],
             "shifts": [{"name": "office", "start": "08:30", "end": "17:00", "days": ["fri", "mon"]},
                        {"name": "night", "start": "22:00", "end": "02:00"}],
             "off_hours_reply": "We are closed; we answer from 08:30."}
    response = await client.patch(f"/v1/shops/{sid}", headers=admin_headers, json=hours)
    assert response.status_code == 200, response.text
    expected = {**hours, "closed_dates": ["2026-12-24", "2026-12-31"], "holiday_data_until": None,
                "shifts": [{"name": "office", "start": "08:30", "end": "17:00", "days": ["mon", "fri"]},
                           {"name": "night", "start": "22:00", "end": "02:00", "days": EVERY_DAY}]}
    shop = await read(client, admin_headers, sid)
    assert {k: shop[k] for k in expected} == expected == {k: response.json()[k] for k in expected}
    # A rename leaves the hours alone; null clears the reply and brings no holiday calendar back.
    response = await client.patch(f"/v1/shops/{sid}", headers=admin_headers,
                                  json={"name": "Renamed", "off_hours_reply": None})
    assert response.status_code == 200, response.text
    shop = await read(client, admin_headers, sid)
    assert {k: shop[k] for k in expected} == {**expected, "off_hours_reply": None}
    assert shop["name"] == "Renamed"


def shifts(*items: tuple[str, str, str]) -> list[dict[str, str]]:
    return [{"name": n, "start": s, "end": e} for n, s, e in items]


@pytest.mark.parametrize(("body", "field", "kind"), [
    ({"timezone": "Mars/Olympus"}, "body.timezone", "shop_hours"),                        # no such zone
    ({"timezone": "../../etc/passwd"}, "body.timezone", "shop_hours"),
    ({"timezone": None}, "body.timezone", "string_type"),                                  # null is no zone
    ({"shifts": shifts(("day", "25:00", "18:00"))}, "body.shifts[0].start", "shop_hours"),
    ({"shifts": shifts(("day", "09:00", "24:30"))}, "body.shifts[0].end", "shop_hours"),
    ({"shifts": shifts(("day", "24:00", "09:00"))}, "body.shifts[0].start", "shop_hours"),  # 24:00 only ends
    ({"shifts": shifts(("day", "9:00", "18:00"))}, "body.shifts[0].start", "string_pattern_mismatch"),
    ({"shifts": shifts(("day", "09:00", "09:00"))}, "body.shifts", "shop_hours"),            # empty
    ({"shifts": shifts(("day", "09:00", "18:00"), ("day", "15:00", "24:00"))}, "body.shifts", "shop_hours"),
    ({"shifts": shifts(("day", "09:00", "18:00"), ("late", "09:00", "18:00"))}, "body.shifts", "shop_hours"),
    ({"shifts": [{"name": "day", "start": "09:00", "end": "18:00", "days": ["mon", "mon"]}]},
     "body.shifts[0].days", "shop_hours"),
    ({"shifts": [{"name": "day", "start": "09:00", "end": "18:00", "days": ["monday"]}]},
     "body.shifts[0].days[0]", "literal_error"),
    ({"shifts": []}, "body.shifts", "too_short"),
    ({"shifts": None}, "body.shifts", "list_type"),
    ({"holidays": "US"}, "body.holidays", "literal_error"),
    ({"closed_dates": ["2026-02-30"]}, "body.closed_dates[0]", "date_from_datetime_parsing"),
    ({"closed_dates": ["2026-12-31", "2026-12-31"]}, "body.closed_dates", "shop_hours"),
    ({"closed_dates": [0]}, "body.closed_dates[0]", "value_error"),                       # no day numbers
    ({"closed_dates": ["2026-12-31T00:00:00Z"]}, "body.closed_dates[0]", "value_error"),
    ({"off_hours_reply": ""}, "body.off_hours_reply", "too_short"),
    ({"off_hours_reply": "休息\x00中"}, "body.off_hours_reply", "value_error"),
])
async def test_bad_hours_are_422_naming_the_field_and_nothing_is_stored(
        client: httpx.AsyncClient, admin_headers: dict[str, str], new_shop: Any, body: dict[str, Any], field: str,
        kind: str) -> None:
    sid = (await new_shop(always_open=False))["id"]
    before = await read(client, admin_headers, sid)
    # A good change rides along: the whole request is refused, so it is not stored either.
    response = await client.patch(f"/v1/shops/{sid}", headers=admin_headers, json={"name": "Changed", **body})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert [(d["field"], d["type"]) for d in error["details"]] == [(field, kind)]
    assert await read(client, admin_headers, sid) == before


async def test_a_shop_may_be_created_with_its_hours(client: httpx.AsyncClient, admin_headers: dict[str, str],
                                                   new_shop: Any) -> None:
    sid = (await new_shop(always_open=False, timezone="Asia/Hong_Kong", holidays=None,
                          shifts=shifts(("all", "00:00", "24:00"))))["id"]
    shop = await read(client, admin_headers, sid)
    assert (shop["timezone"], shop["holidays"], shop["shifts"]) == (
        "Asia/Hong_Kong", None, [{"name": "all", "start": "00:00", "end": "24:00", "days": EVERY_DAY}])
    bad = await client.post("/v1/shops", headers=admin_headers, json={"id": "bad-hours", "name": "x",
                                                                      "timezone": "Nowhere/Else"})
    assert bad.status_code == 422
    assert (await client.get("/v1/shops/bad-hours", headers=admin_headers)).status_code == 404


async def test_agents_work_named_shifts_or_every_shift(client: httpx.AsyncClient, admin_headers: dict[str, str],
                                                      new_shop: Any) -> None:
    sid = (await new_shop(always_open=False))["id"]
    base = {"name": "Lin", "queues": ["aftersale"]}
    everyone = await client.post(f"/v1/shops/{sid}/agents", headers=admin_headers, json=base)
    assert everyone.status_code == 201 and everyone.json()["shifts"] is None
    evening = await client.post(f"/v1/shops/{sid}/agents", headers=admin_headers,
                                json={**base, "shifts": ["evening", "evening"]})
    assert evening.status_code == 201 and evening.json()["shifts"] == ["evening"]
    unknown = await client.post(f"/v1/shops/{sid}/agents", headers=admin_headers,
                                json={**base, "shifts": ["day", "night"]})
    assert unknown.status_code == 422
    assert [(d["field"], d["type"]) for d in unknown.json()["error"]["details"]] == [("body.shifts[1]", "unknown_shift")]
    agent_id = evening.json()["id"]
    changed = await client.patch(f"/v1/shops/{sid}/agents/{agent_id}", headers=admin_headers, json={"shifts": ["day"]})
    assert changed.status_code == 200 and changed.json()["shifts"] == ["day"]
    refused = await client.patch(f"/v1/shops/{sid}/agents/{agent_id}", headers=admin_headers,
                                 json={"capacity": 9, "shifts": ["lunch"]})
    assert refused.status_code == 422
    listed = (await client.get(f"/v1/shops/{sid}/agents", headers=admin_headers)).json()
    assert [(a["shifts"], a["capacity"]) for a in listed if a["id"] == agent_id] == [(["day"], 5)]
    cleared = await client.patch(f"/v1/shops/{sid}/agents/{agent_id}", headers=admin_headers, json={"shifts": None})
    assert cleared.status_code == 200 and cleared.json()["shifts"] is None
    untouched = await client.patch(f"/v1/shops/{sid}/agents/{agent_id}", headers=admin_headers, json={"capacity": 6})
    assert untouched.json()["shifts"] is None
