"""Table tests of classify(): intents, precedence, scope, forms, language, emotion and urgency."""

from __future__ import annotations

import json

import pytest

from app.triage import INTENTS, TIERS, PriorityContext, Triage, classify, default_ruleset
from app.triage.ruleset import default_rules_only


@pytest.mark.parametrize(("text", "primary"), [
    ("放心，不会给差评的", "other"),                                  # reassurance is not a threat
    ("没有要投诉的意思，就是问问什么时候发货", "logistics"),              # negated complaint leaves the question
    ("I'm not leaving a bad review, just asking", "other"),          # English negation
    ("not going to leave a bad review, don't worry", "other"),       # negation with a window
    ("差评是不会给的，放心吧", "other"),                                # reassurance after the threat word
    ("明天再不到就给差评", "bad_review_threat"),                       # conditional threat
    ("再不发货就差评", "bad_review_threat"),                           # conditional threat, no 给
    ("if it isn't here by Friday I'll leave 1 star", "bad_review_threat"),  # English conditional
    ("物流太慢了，再不到就差评", "bad_review_threat"),                   # outranks logistics
    ("怎么申请退款", "return_refund"),                                 # a process question is an intent
    ("refund什么时候到账", "return_refund"),                           # English word touching Chinese
    ("我要打１２３１５投诉你们", "rights_protection"),                  # full-width digits; rights over complaint
    ("再不处理我就申请小二介入", "complaint"),                          # platform intervention
    ("cha评警告", "bad_review_threat"),                               # pinyin shorthand
    ("差p", "bad_review_threat"),                                    # letter shorthand
    ("给你1⭐", "bad_review_threat"),                                  # star emoji rating
    ("★☆☆☆☆", "bad_review_threat"),                                  # star bar
    ("東西收到了，但是壞了", "quality_issue"),                           # Traditional script
    ("唔該，幾時發貨？", "logistics"),                                  # Cantonese: 幾時 = when
    ("我仲未收到貨，等咗好耐", "logistics"),                            # Cantonese: 仲未, 咗
    ("再唔發貨就俾差評", "bad_review_threat"),                          # Cantonese threat with 俾
    ("可唔可以退貨", "return_refund"),                                  # Cantonese process question
    ("同描述唔一樣", "false_advertising"),                              # Cantonese mismatch
    ("There is an issue, I need to change my address", "payment_order"),  # "sue" not inside "issue"
    ("刚买就降价了，能补差价吗", "price_protection"),                    # price protection
    ("付款失败了怎么办", "payment_order"),                              # payment
    ("请问这款有现货吗？", "presale"),                                   # presale stock question
    ("你好，在吗", "other"),                                            # greeting
    ("谢谢亲，收到了，很喜欢", "other"),                                 # thanks
    ("看到好多差评，质量怎么样", "presale"),                            # quoting others' reviews is not a threat
    ("我等了一星期了还没发货", "logistics"),                             # 一星期 is a week, not one star
    ("與描述不符，圖片與實物不符", "false_advertising"),                   # Traditional false advertising
    ("黑猫投诉见", "rights_protection"),                                 # longer phrase wins over 投诉
    ("以为是正品结果是假货", "quality_issue"),                            # 结果 ends the scope of 以为
    ("再不回覆就給一星", "bad_review_threat"),                            # conditional 不回复 is not a complaint
    ("你們客服態度真的很差", "complaint"),                                # attitude complaint, Traditional
    ("我已經跟信用卡公司申請爭議款了", "rights_protection"),               # card dispute is a chargeback
    ("件衫洗一次就縮晒水", "quality_issue"),                              # Cantonese 縮晒水
    ("唔該你哋快啲寄，我下星期要用", "logistics"),                        # Cantonese 快啲寄
    # How long delivery takes is a logistics question, before the order as after it (docs/triage.md, "Labels").
    ("下单后多久发货", "logistics"),
    ("衣服质量没问题，就是尺码偏小，能换吗", "return_refund"),            # 质量没问题 is not a defect
    ("面膜开封有一股怪味，是不是变质了", "quality_issue"),                # 是不是 is a question, not a negation
    ("Can I still cancel? I ordered the wrong colour by mistake.", "payment_order"),  # buyer's mistake, not a wrong item
    ("The bottle arrived half empty, the cap had come off.", "quality_issue"),        # defect outranks "arrived"
    ("Why is the price now $20 less than what I paid yesterday?", "price_protection"),  # price drop question
    ("I'm honestly not one to complain, but if nobody sorts out my refund I'm taking it up with my bank.",
     "rights_protection"),                                               # bank escalation, negated complaint
    ("My sister Sue says hi, she loves your shop too.", "other"),         # a name, not a lawsuit
    ("Is the lawyer-style briefcase real leather?", "presale"),           # a lawyer noun is no legal threat
    ("I almost left a bad review but you sorted it, cheers.", "other"),   # a near miss is not a threat
    ("看了评价有人给一星说有异味，现在还有吗", "presale"),               # someone else's rating is no threat
    ("I'm a journalist and need a sturdy notebook bag, any suggestions?", "presale"),  # a job, not the media
    ("这款报警器声音大吗", "presale"),                                    # 报警器 is an alarm, not the police
    ("不解决我就一直追评", "bad_review_threat"),                          # conditional follow-up review
    ("I've filed a dispute with PayPal.", "rights_protection"),          # payment dispute is a chargeback
    ("I'm calling the police, this is theft.", "rights_protection"),     # police
    ("我要投诉快递员，不是投诉你们哈，快递员态度太差了", "complaint"),     # one negated, one real complaint
    ("店长推荐款还有货吗", "presale"),                                    # 店长推荐 is a product label
    ("我下班了再收快递", "logistics"),                                     # the buyer's 下班, not the agents'
    ("phone case with a stand, in stock?", "presale"),                   # "case with" is no platform case
    ("I am missing my parcel", "logistics"),                             # a missing parcel is not a missing part
])
def test_primary_intent(text: str, primary: str) -> None:
    assert classify(text).primary == primary


@pytest.mark.parametrize(("text", "intents"), [
    ("物流太慢了，再不到就差评", ["bad_review_threat", "logistics"]),         # threat first, logistics second
    ("东西坏了，我要退款", ["quality_issue", "return_refund"]),              # defect then refund
    ("Where is my parcel? If it doesn't arrive I'll sue", ["rights_protection", "logistics"]),  # English mix
])
def test_intents_in_precedence_order(text: str, intents: list[str]) -> None:
    assert [hit.intent for hit in classify(text).intents] == intents


def test_long_rambling_message_keeps_final_threat() -> None:
    filler = "我上个月在你们家买了一件外套，本来挺喜欢的，朋友也说好看，" * 40
    assert classify(filler + "这次再不给我处理就差评").primary == "bad_review_threat"


@pytest.mark.parametrize(("text", "rule", "matched"), [
    ("refund什么时候到账", "en.return.refund", "refund"),      # no \b needed next to Chinese
    ("我要打１２３１５", "zh.rights.regulator", "１２３１５"),     # evidence is the original full-width text
    ("給差評", "zh.bad_review.threat", "給差評"),               # Traditional original, not the converted form
    ("ＲＥＦＵＮＤ please", "en.return.refund", "ＲＥＦＵＮＤ"),  # full-width letters
])
def test_evidence_points_into_original_text(text: str, rule: str, matched: str) -> None:
    evidence = [item for hit in classify(text).intents for item in hit.evidence]
    assert any(item.rule == rule and item.text == matched for item in evidence)
    for item in evidence:
        assert text[item.start:item.end] == item.text


def test_evidence_after_length_changing_normalisation() -> None:
    text = "ﬁ ½ ㈱ 我要投诉"  # each of the first three expands under NFKC
    hit = classify(text).intents[0]
    assert hit.intent == "complaint"
    assert all(text[item.start:item.end] == item.text for item in hit.evidence)
    assert hit.evidence[0].text in ("投诉", "我要投诉")


@pytest.mark.parametrize(("text", "primary"), [
    ("there is an issue", "other"),                 # "sue" is a whole word only
    ("I want to sue you", "rights_protection"),     # and matches as one
    ("我要sue你", "rights_protection"),              # bare "sue" with Chinese on both sides
    ("sue你们", "rights_protection"),                # Chinese touching only its end
    ("I will definitely sue.", "rights_protection"),  # bare "sue" with no fixed phrase around it
    ("这个issue你们处理一下", "other"),               # "issue" touching Chinese is still not "sue"
    ("suede jacket in stock?", "presale"),          # nor is "suede"
    ("This is Sue, is my order shipped?", "logistics"),  # the name, masked
    ("Sue from your team promised a refund", "return_refund"),  # the name at the start, masked
    ("I will sue at once", "rights_protection"),    # no name mask swallows the verb
])
def test_english_word_boundaries(text: str, primary: str) -> None:
    assert classify(text).primary == primary


@pytest.mark.parametrize(("text", "primary"), [
    ("店铺评分4.1星，靠谱吗", "presale"),                     # 4.1星 is a shop rating, not 1星
    ("rating 4.1 stars?", "other"),                           # nor is 4.1 stars "1 stars"
    ("The shop is rated 4.2 stars, does the jacket run small?", "presale"),  # a decimal before "2 stars"
    ("4.1/5 stars, is it true to size?", "presale"),          # a decimal before "1/5"
    ("给一星期的时间处理", "other"),                            # 给一星 overlaps the week word 一星期
    ("一星期了还不发货，给一星", "bad_review_threat"),            # the week and a real one-star threat
    ("给1星", "bad_review_threat"),                             # a bare digit rating still counts
    ("I would give it 1 star.", "bad_review_threat"),          # in English too
    ("我会给差评说到做到", "bad_review_threat"),                 # a threat phrase holding the mask 差评说 wins
    ("申请退款成功了吗", "return_refund"),                       # a refund question holding the mask 退款成功
    ("五星好评没了", "bad_review_threat"),                       # shares only 好评 with the mask 五星好评: stays
    ("态度不好评价里写清楚", "complaint"),                       # 好评 straddles two hits sharing no phrase with it
])
def test_numbers_and_time_words_are_no_rating(text: str, primary: str) -> None:
    assert classify(text).primary == primary


# Messages where the rules' reading is what the case pins down (a word inside another, a rating word read as a
# minute or as other buyers' reviews) and the rest is left to the model, whose reading of it is its own: the rules
# read the expected intent, and the decision never holds the intent the misread word would have made, nor a P1.
@pytest.mark.parametrize(("text", "rules_primary", "misread"), [
    ("pursue the matter", "other", "rights_protection"),                 # "sue" not at the end of another word
    ("等我1分钟，我找一下订单号", "payment_order", "bad_review_threat"),   # 1分 inside 1分钟 is a minute
    ("你们家的差评我都看了，还是决定买", "other", "bad_review_threat"),     # reading reviews is no threat
])
def test_a_misread_word_decides_nothing(text: str, rules_primary: str, misread: str) -> None:
    assert classify(text, default_rules_only()).primary == rules_primary
    triage = classify(text)
    assert misread not in {hit.intent for hit in triage.intents}
    assert triage.tier != "P1"


@pytest.mark.parametrize(("text", "language"), [
    ("请问什么时候发货", "zh-Hans"),        # Simplified
    ("請問什麼時候發貨", "zh-Hant"),        # Traditional
    ("唔該幾時寄", "zh-Hant"),             # Cantonese markers
    ("Where is my parcel?", "en"),         # English
    ("refund什么时候到账", "zh-Hans"),      # mixed, Chinese dominant
    ("I want a refund for this order 谢谢", "en"),  # mixed, English dominant
])
def test_language(text: str, language: str) -> None:
    assert classify(text).language == language


@pytest.mark.parametrize(("text", "emotion"), [
    ("垃圾店，骗子！😡", "angry"),          # insults and angry emoji
    ("好失望啊", "negative"),               # disappointment
    ("谢谢亲，很满意", "positive"),          # thanks
    ("请问有现货吗", "neutral"),             # plain question
    ("不满意", "negative"),                  # 不满意 is not 满意
    ("麻烦发一下货", "neutral"),             # 麻烦 is politeness, not annoyance
    ("收到了，很喜欢！！！", "positive"),                       # exclamation marks intensify delight
    ("Thank you so much, love it, great!!!!!!", "positive"),  # a long run counts once, not four times
    ("This is ridiculous!!!", "angry"),                       # and intensify anger where the words are angry
    ("Terrible!!! 😡😡", "angry"),                            # angry emoji with a run
    ("谢谢！！！但是太离谱了", "angry"),                        # thanks and anger tie: the run sides with anger
    ("好失望！！！", "angry"),                                 # shouted disappointment
])
def test_emotion(text: str, emotion: str) -> None:
    assert classify(text).emotion == emotion


@pytest.mark.parametrize(("text", "urgent"), [
    ("急用，今天必须发", True),            # explicit urgency
    ("等着用呢，麻烦快点", True),           # waiting to use it
    ("I need it by Friday, ASAP", True),   # English urgency
    ("不急，慢慢来", False),               # 不急 is calm
    ("请问有现货吗", False),               # no time pressure
    ("收到了，很喜欢！！！", False),          # enthusiasm is no time pressure
    ("Thank you so much, love it, great!!!!!!", False),  # however long the run
    ("谢谢，急用！！！", True),              # a word of urgency still counts next to thanks
    ("where is my parcel!!!", True),       # with no kind words, a run still presses
])
def test_urgency(text: str, urgent: bool) -> None:
    assert classify(text).urgent is urgent


def test_nothing_matched_is_other() -> None:
    triage = classify("")
    assert (triage.primary, triage.tier, triage.queue) == ("other", "P4", "presale")
    assert triage.intents[0].intent == "other" and triage.intents[0].evidence == ()


def test_triage_shape_and_json() -> None:
    triage = classify("亲，快递三天没动了，再不到就给差评")
    assert isinstance(triage, Triage)
    assert triage.primary == "bad_review_threat" and triage.tier == "P1"
    assert 700 <= triage.priority <= 999
    assert triage.queue == "complaints" and triage.ruleset == default_ruleset().id
    data = json.loads(json.dumps(triage.to_dict(), ensure_ascii=False))
    assert data["primary"] == "bad_review_threat"
    assert data["intents"][0]["evidence"][0]["rule"] == "zh.bad_review.threat"
    assert set(data) == {"primary", "tier", "priority", "intents", "emotion", "urgent", "language", "queue", "ruleset",
                         "model"}


def test_routes_follow_spec() -> None:
    routes = default_ruleset().routes
    assert {intent for intent in INTENTS if routes[intent] == "complaints"} == {
        "bad_review_threat", "complaint", "rights_protection"}
    assert {intent for intent in INTENTS if routes[intent] == "presale"} == {"presale", "payment_order", "other"}
    assert all(TIERS[intent] in ("P2", "P3") for intent in INTENTS if routes[intent] == "aftersale")


def test_context_raises_priority_within_band() -> None:
    calm = classify("快递到哪了")
    pressed = classify("快递到哪了", priority_context=PriorityContext(vip_level=5, prior_contacts=3,
                                                                    waiting_seconds=3600))
    assert calm.tier == pressed.tier == "P3"
    assert calm.priority < pressed.priority <= 499


def test_rejects_non_text() -> None:
    with pytest.raises(TypeError):
        classify(b"bytes")  # type: ignore[arg-type]
