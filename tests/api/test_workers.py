"""Background workers as ops see them: in /readyz, on both databases."""

import httpx


async def test_readyz_shows_the_background_workers(client: httpx.AsyncClient) -> None:
    ready = (await client.get("/readyz")).json()
    assert ready["workers"]["lease-reaper"]["state"] == "running"
    assert ready["workers"]["ingest-writer-0"] == {"state": "running", "restarts": 0, "last_error": None}
