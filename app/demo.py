"""`triage demo`: realistic buyer traffic, signed like a shop platform's, posted to a running service.

Conversations in Simplified and Traditional Chinese and English cover every intent; some escalate turn by turn
(a late parcel that becomes a bad-review threat, then a 12315 complaint), so a newcomer watching /console sees
tickets arrive, re-rank and get flagged. A few turns are not text (SPEC 9.2): a photo, a product card, an order
card, the platform's refund request and a one-star review posted. The texts were written for this demo.
"""

import json
import random
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from app.services.signing import sign

# A turn is a buyer's text, or the fields of a message of another kind (an order card gets the conversation's order).
Turn = str | dict[str, Any]

# (platform, buyer nick, turns). Each turn is one buyer message; the conversation's turns arrive in order.
CONVERSATIONS: list[tuple[str, str, list[Turn]]] = [
    ("taobao", "小王", ["在吗？我的快递三天没更新了", "到底什么时候能到啊，我等着用",
                       "再不到我就给差评了，说到做到", "你们再拖我就打12315投诉"]),
    ("taobao", "糖糖", [{"kind": "product", "product": {"id": "p-20931", "title": "碎花雪纺连衣裙 夏季新款"}},
                       "请问这款连衣裙有S码吗？", "165cm 50kg 穿哪个码合适", "好的谢谢，那我拍了"]),
    ("jd", "老张", ["刚收到的电饭煲内胆有划痕，还掉漆", "这种质量也太差了吧，要求换新"]),
    ("jd", "Lily_chen", ["买了三天就降价了50块，能补差价吗", "价保申请一直没反应"]),
    ("pinduoduo", "阿强", ["我要退货退款，尺码完全不对", {"kind": "system", "event": "refund_requested"},
                         "退货地址发我一下", "退款怎么还没到账？都一周了"]),
    ("douyin", "小鹿", ["直播间说是纯棉的，收到一看是化纤，这不是虚假宣传吗", "主播说的和实物完全不一样"]),
    ("taobao", "陈先生", [{"kind": "order", "order": {"status": "paid"}}, "付款的时候扣了两次钱", "订单只有一个，多扣的什么时候退"]),
    ("taobao", "Amy", ["你们客服态度太差了，问了三遍都不回", "我要投诉，申请小二介入"]),
    ("tmall", "黄小姐", ["地址填错了，能帮我改一下收货地址吗", "改成朝阳区建国路88号"]),
    ("jd", "周律师", ["产品说明写的是防水，进水就坏了", "如果今天不给处理方案，我会联系律师起诉"]),
    ("taobao", "阿美", ["親，請問這款有現貨嗎？", "可以寄到香港嗎"]),
    ("taobao", "志明", ["收到的杯子破了一個角",
                       {"kind": "image", "attachments": [{"url": "https://img.example.com/demo/cup-chip.jpg",
                                                          "mime": "image/jpeg", "name": "杯子.jpg"}]}, "退貨要怎麼申請", "再不處理我就給一星評價"]),
    ("pinduoduo", "春嬌", ["物流三天都沒動，是不是寄丟了", "快遞員說沒收到件"]),
    ("shopify", "Mark", ["Hi, does this jacket come in navy?", "What's the shipping time to Canada?"]),
    ("shopify", "Jenny R.", ["My order still hasn't shipped after 5 days", "This is ridiculous, I need it by Friday",
                             "If it's not here by Friday I'm leaving a 1-star review"]),
    ("shopify", "Tom", ["The blender arrived with a cracked jug", "I'd like a replacement or a refund please",
                        {"kind": "system", "event": "review_posted", "rating": 1,
                         "text": "Jug cracked on arrival and nobody answers."}]),
    ("shopify", "Priya", ["I was charged twice for the same order", "If this isn't fixed I'll file a chargeback"]),
    ("shopify", "Ken", ["thanks, got it, works great!"]),
    ("douyin", "小陈", ["谢谢客服，东西收到了很满意"]),
    ("jd", "刘女士", ["发票能开公司抬头吗", "税号发你了，麻烦开一下"]),
]

PLATFORMS_EN = {"shopify"}


@dataclass
class Conversation:
    platform: str
    nick: str
    turns: list[Turn]
    id: str = field(default_factory=lambda: f"demo-{uuid.uuid4().hex[:10]}")
    buyer: str = field(default_factory=lambda: f"buyer-{uuid.uuid4().hex[:8]}")
    order_id: str = field(default_factory=lambda: f"{random.randint(10**11, 10**12 - 1)}")
    vip_level: int = field(default_factory=lambda: random.choice([0, 0, 0, 1, 2, 3]))
    next_turn: int = 0


def messages(rng: random.Random) -> Iterator[tuple[Conversation, Turn]]:
    """An endless interleaving of conversations: a few open at once, each message the next turn of one."""
    open_now: list[Conversation] = []
    while True:
        while len(open_now) < 4:
            platform, nick, turns = rng.choice(CONVERSATIONS)
            open_now.append(Conversation(platform, nick, turns))
        conversation = rng.choice(open_now)
        yield conversation, conversation.turns[conversation.next_turn]
        conversation.next_turn += 1
        if conversation.next_turn == len(conversation.turns):
            open_now.remove(conversation)


def webhook_body(conversation: Conversation, turn: Turn, now: datetime) -> bytes:
    message: dict[str, Any] = {
        "message_id": f"m-{uuid.uuid4().hex[:16]}", "conversation_id": conversation.id,
        "sent_at": now.isoformat().replace("+00:00", "Z"), "order_id": conversation.order_id,
        "customer": {"id": conversation.buyer, "nick": conversation.nick, "vip_level": conversation.vip_level}}
    if isinstance(turn, str):
        message["text"] = turn
    else:
        message |= turn
        if "order" in turn:
            message["order"] = {"id": conversation.order_id, **turn["order"]}
    return json.dumps({"platform": conversation.platform, "messages": [message]}, ensure_ascii=False).encode()


def post(http: httpx.Client, *, shop_id: str, secret: str, body: bytes, now: datetime) -> httpx.Response:
    """One webhook request signed the Standard Webhooks way, as a platform sends it."""
    webhook_id = f"msg_{uuid.uuid4().hex}"
    timestamp = int(now.timestamp())
    headers = {"webhook-id": webhook_id, "webhook-timestamp": str(timestamp), "content-type": "application/json",
               "webhook-signature": sign(secret, msg_id=webhook_id, timestamp=timestamp, body=body)}
    return http.post(f"/v1/shops/{shop_id}/webhooks/messages", content=body, headers=headers)


def fresh_secret(http: httpx.Client, *, shop_id: str, admin_token: str) -> str:
    """A new webhook secret of the shop; the old one keeps verifying for its overlap window."""
    answer = http.post(f"/v1/shops/{shop_id}/webhook-secrets", headers={"Authorization": f"Bearer {admin_token}"})
    if answer.status_code != 201:
        raise RuntimeError(f"could not get a webhook secret for shop '{shop_id}' ({answer.status_code}): "
                           f"{answer.text[:200]}")
    return str(answer.json()["webhook_secret"])


def run(http: httpx.Client, *, shop_id: str, secret: str, rate: float, count: int, seed: int | None,
        say: Callable[[str], None], sleep: Callable[[float], None] = time.sleep) -> int:
    """Post `count` messages (0: until interrupted) at `rate` a second; returns how many were accepted."""
    rng = random.Random(seed)
    accepted = 0
    for sent, (conversation, turn) in enumerate(messages(rng), start=1):
        now = datetime.now(UTC)
        answer = post(http, shop_id=shop_id, secret=secret, body=webhook_body(conversation, turn, now), now=now)
        if answer.status_code != 202:
            raise RuntimeError(f"the service refused a message ({answer.status_code}): {answer.text[:300]}")
        result = answer.json()["results"][0]
        accepted += 1
        say(f"{conversation.platform:<9} {conversation.nick}: {shown(turn)}  ->  {result['tier']} {result['primary']} "
            f"({result['queue']})")
        if count and sent >= count:
            return accepted
        sleep(rng.expovariate(rate) if rate > 0 else 0)
    return accepted


def shown(turn: Turn) -> str:
    """A turn as the demo's output line shows it: the text, or the kind (and event) with its caption."""
    if isinstance(turn, str):
        return turn
    label = f"[{turn['kind']}{': ' + turn['event'] if 'event' in turn else ''}]"
    return f"{label} {turn['text']}" if "text" in turn else label
