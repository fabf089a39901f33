"""Reply suggestions and template checks of the triage core (app/triage/replies.py), as tables."""

import pytest

from app.triage import INTENTS
from app.triage.replies import (TemplateError, asks_review_for_payment, default_templates, suggest,
                                templates_from_list)

VALUES = {"buyer_nick": "小王", "order_id": "o-9", "shop_name": "Demo shop", "agent_name": "阿明"}

# (intent, emotion, the shipped template offered first). Angry and upset buyers get the apology first;
# calm ones the intent's own template; a bad-review threat gets the complaint-handling one.
FIRST_SUGGESTION = [
    *[(intent, "angry", "apology.angry") for intent in INTENTS],      # an angry buyer: apology first, any intent
    *[(intent, "negative", "apology.upset") for intent in INTENTS],   # an upset buyer: the softer apology first
    ("rights_protection", "neutral", "rights.escalate"),
    ("complaint", "neutral", "complaint.listen"),
    ("bad_review_threat", "neutral", "review.complaint-handling"),    # complaint handling, never a bargain
    ("quality_issue", "neutral", "quality.photos"),
    ("false_advertising", "neutral", "advertising.check"),
    ("return_refund", "neutral", "refund.status"),
    ("price_protection", "neutral", "price.difference"),
    ("logistics", "neutral", "logistics.tracking"),
    ("payment_order", "neutral", "payment.order"),
    ("presale", "neutral", "presale.answer"),
    ("other", "neutral", "other.greeting"),
    ("other", "positive", "other.thanks"),                            # the emotion's own beats the generic one
    ("presale", "positive", "presale.answer"),                        # no positive presale template: the generic
    ("logistics", "positive", "logistics.tracking"),
]


@pytest.mark.parametrize(("intent", "emotion", "first"), FIRST_SUGGESTION)
def test_the_best_suggestion_per_intent_and_emotion(intent: str, emotion: str, first: str) -> None:
    found = suggest(default_templates(), intent=intent, emotion=emotion, language="zh-Hans", values=VALUES)
    assert found[0].template.id == first
    # Every suggestion fits: the intent's own or generic, the emotion's own or any.
    assert all(s.template.intent in (intent, "any") and s.template.emotion in (emotion, "any") for s in found)


@pytest.mark.parametrize(("intent", "emotion", "second"), [
    ("bad_review_threat", "angry", "review.complaint-handling.angry"),  # after the apology, complaint handling
    ("logistics", "angry", "logistics.delay"),
    ("return_refund", "angry", "refund.angry"),
    ("bad_review_threat", "negative", "review.complaint-handling"),  # no negative one: the intent's generic
])
def test_after_the_apology_comes_the_intents_own(intent: str, emotion: str, second: str) -> None:
    found = suggest(default_templates(), intent=intent, emotion=emotion, language="en", values=VALUES)
    assert [s.template.id for s in found][1] == second


@pytest.mark.parametrize("intent", INTENTS)
def test_every_intent_has_its_own_shipped_template_in_both_languages(intent: str) -> None:
    own = [t for t in default_templates() if t.intent == intent]
    assert own and all(set(t.texts) == {"zh", "en"} for t in own)


@pytest.mark.parametrize(("language", "wanted", "snippet"), [
    ("zh-Hans", "zh", "小王您好，我这就帮您查订单o-9"),   # Simplified buyer, Chinese text
    ("zh-Hant", "zh-Hant", "小王您好，我這就幫您查訂單o-9"),  # Traditional buyer: the same text in Traditional
    ("en", "en", "Hello 小王, I am checking the tracking for order o-9"),
])
def test_suggestions_speak_the_buyers_language(language: str, wanted: str, snippet: str) -> None:
    [first, *_] = suggest(default_templates(), intent="logistics", emotion="neutral", language=language,
                          values=VALUES)
    assert (first.language, first.text.startswith(snippet)) == (wanted, True)


def test_missing_values_stay_visible_and_a_missing_nick_still_greets() -> None:
    [first, *_] = suggest(default_templates(), intent="logistics", emotion="neutral", language="zh-Hans",
                          values={"buyer_nick": None, "order_id": None})
    assert first.text.startswith("亲您好") and "{order_id}" in first.text and first.missing == ("order_id",)


def test_a_template_without_the_buyers_language_is_offered_in_the_other() -> None:
    only_en = templates_from_list([{"id": "x", "intent": "presale", "text": {"en": "Hi {buyer_nick}"}}])
    [found] = suggest(only_en, intent="presale", emotion="neutral", language="zh-Hans", values=VALUES)
    assert (found.language, found.text) == ("en", "Hi 小王")


@pytest.mark.parametrize("text", [
    "亲，删除差评后给您返现20元",            # delete the bad review for cash
    "好评返现，晒图再送红包",                 # cash for a good review
    "麻烦把评价改成五星好评，送您一张优惠券",   # change the rating for a coupon
    "追评改一下的话，我们马上给您退款",        # amend the review, then the refund
    "刪除差評後退款給你",                     # Traditional script
    "ＤＥＬＥＴＥ your review and we will refund you",  # full-width letters
    "If you remove the 1-star review we will send a $10 voucher",
    "Please update your rating to five stars and we will refund the shipping",
    "Change it to a positive review for a gift card",
])
def test_review_for_payment_wording_is_caught(text: str) -> None:
    assert asks_review_for_payment(text)


@pytest.mark.parametrize("text", [
    "我们会给您全额退款，不需要您修改评价",      # says the opposite
    "我们会改进服务，感谢您的评价，退款已到账",  # praise of feedback and a refund, no ask
    "We have refunded you; there is no need to change your review.",
    "Thank you for your review! Your refund has been issued.",
    "您的评价对我们很重要，我们一定改进",      # no payment offered
])
def test_honest_wording_passes(text: str) -> None:
    assert not asks_review_for_payment(text)


@pytest.mark.parametrize(("items", "path"), [
    ([{"id": "a", "text": {"zh": "删差评返现"}}], "templates[0].text.zh"),
    ([{"id": "a", "text": {"en": "Fine"}}, {"id": "b", "text": {"en": "Edit your review for a coupon"}}],
     "templates[1].text.en"),
    ([{"id": "a", "text": {"zh": "您好{buyer}"}}], "templates[0].text.zh"),       # unknown variable
    ([{"id": "a", "text": {"zh": "您好{"}}], "templates[0].text.zh"),             # a lone brace
    ([{"id": "a", "text": {"fr": "Bonjour"}}], "templates[0].text.fr"),          # unknown language
    ([{"id": "a", "text": {"en": "x"}}, {"id": "a", "text": {"en": "y"}}], "templates[1].id"),  # id twice
    ([{"id": "a", "intent": "refunds", "text": {"en": "x"}}], "templates[0].intent"),
    ([{"id": "a", "emotion": "sad", "text": {"en": "x"}}], "templates[0].emotion"),
])
def test_invalid_templates_name_their_entry(items: list[dict[str, object]], path: str) -> None:
    with pytest.raises(TemplateError) as caught:
        templates_from_list(items)
    assert caught.value.path == path
