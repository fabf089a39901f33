"""`triage demo` posts signed buyer traffic to a running service (issue 17): what it sends and that it lands."""

import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from app.db.migrate import upgrade_async
from app.demo import CONVERSATIONS, Conversation, webhook_body
from app.schemas.webhooks import WebhookBatch
from app.triage import INTENTS, classify
from app.triage.normalize import detect_language, normalise
from tests.support import ADMIN_TOKEN, BACKENDS, fresh_database
from tests.support.serving import ServiceProcess


def test_the_demo_speaks_every_intent_in_both_scripts_and_english() -> None:
    texts = [turn for _, _, turns in CONVERSATIONS for turn in turns if isinstance(turn, str)]
    assert {classify(text).primary for text in texts} == set(INTENTS)
    assert {detect_language(normalise(text)) for text in texts} == {"zh-Hans", "zh-Hant", "en"}


def test_some_demo_conversations_escalate() -> None:
    rises = [nick for _, nick, turns in CONVERSATIONS
             if len({classify(t).tier for t in turns if isinstance(t, str)}) > 1
             and isinstance(turns[-1], str) and classify(turns[-1]).tier == "P1"]
    assert len(rises) >= 3, rises


def test_the_demo_sends_messages_beyond_text_that_the_webhook_schema_takes() -> None:
    conversation = Conversation("taobao", "demo", [])
    now = datetime.now(UTC)
    turns = [turn for _, _, turns in CONVERSATIONS for turn in turns if not isinstance(turn, str)]
    assert {turn["kind"] for turn in turns} == {"image", "product", "order", "system"}
    assert {turn.get("event") for turn in turns} >= {"refund_requested", "review_posted"}
    for turn in turns:
        batch = WebhookBatch.model_validate_json(webhook_body(conversation, turn, now))
        assert batch.messages[0].kind == turn["kind"]
        if turn["kind"] == "order":
            assert batch.messages[0].order is not None and batch.messages[0].order.id == conversation.order_id


@pytest.mark.asyncio
@pytest.mark.parametrize("backend", BACKENDS)
async def test_triage_demo_posts_to_a_running_service(backend: str, tmp_path: Path) -> None:
    async with fresh_database(backend, tmp_path) as url:
        await upgrade_async(url)
        server = ServiceProcess(url, ADMIN_TOKEN)
        try:
            await server.ready()
            admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            shop_id = f"demo-{uuid.uuid4().hex[:6]}"
            async with httpx.AsyncClient(base_url=server.base_url, headers=admin, timeout=30) as http:
                assert (await http.post("/v1/shops", json={"id": shop_id, "name": "Demo"})).status_code == 201
            env = {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_")}
            env["TRIAGE_ADMIN_TOKEN"] = ADMIN_TOKEN
            run = subprocess.run([sys.executable, "-m", "app.cli", "demo", "--url", server.base_url, "--shop", shop_id,
                                  "--count", "12", "--rate", "100", "--seed", "7"],
                                 cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
            assert run.returncode == 0, run.stderr
            lines = run.stdout.strip().splitlines()
            assert len(lines) == 12 and all("->" in line for line in lines)
            # This seed's twelve include a product card and the platform's refund request: accepted like the texts.
            shown = {line.split(": ", 1)[1].split("  ->")[0] for line in lines}
            assert {"[product]", "[system: refund_requested]"} <= shown, shown
            async with httpx.AsyncClient(base_url=server.base_url, headers=admin, timeout=30) as http:
                stats = (await http.get(f"/v1/shops/{shop_id}/stats")).json()
                queued = (await http.get(f"/v1/queues?shop_id={shop_id}")).json()
            assert stats["overall"]["conversations_received"] >= 4
            assert sum(q["total"] for q in queued["queues"]) == stats["overall"]["conversations_received"]
            # Without a secret or an admin token it says what it needs.
            env.pop("TRIAGE_ADMIN_TOKEN")
            refused = subprocess.run([sys.executable, "-m", "app.cli", "demo", "--url", server.base_url, "--count", "1"],
                                     cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
            assert refused.returncode == 2 and "--secret" in refused.stderr
        finally:
            server.stop()
