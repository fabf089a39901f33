"""How the rules and the learned model decide together, and which parts of a message are not the buyer's words.

The rules read the message first: their intent hits (with evidence spans), the intents they found negated and the
emotion and urgency cues. The model reads the message's n-grams *and* that reading (`rule_signals`: "R:complaint",
"N:bad_review_threat", "C:angry"), so it has learned from the corpus how far each rule finding can be trusted.
`decide` then picks the primary intent under these guards (docs/triage.md shows how each was chosen):

- a P1 the rules found stands unless the model gives it less than P1_KEEP (a trigger word in a product name);
- the tier comes first: P1 when the model's P1 intents together reach P1_STRONG, else the best intent below P1;
- an intent the rules found negated ("不会给差评") is never chosen;
- an intent no rule found needs MODEL_FLOOR, or NO_RULE_FLOOR where no rule fired at all.

The rules' hits ranking below the chosen intent stay as secondary intents. An intent the model chose is explained
by the n-grams that pushed it most, as spans of the original text.
"""

from __future__ import annotations

import re
from operator import attrgetter

from app.triage.learned import Prediction, TextModel
from app.triage.model import EMOTIONS, INTENTS, TIERS, Evidence, IntentHit

P1_STRONG = 0.5
CONTEXT_ADD = 0.6
EMOTION_SURE = 0.5
P1_KEEP = 0.01
# A glad message (the model's positive emotion at GLAD or more) needs more to stay P1: jokes and praise.
GLAD = 0.6
P1_KEEP_GLAD = 0.3
MODEL_FLOOR = 0.4
P1_STRONG_MASKED = 0.97
OTHER_OVER_RULES = 0.6
PRESENT = 0.1
# Where no rule fired at all the model decides alone, so it must be surer ("My sister Sue says hi").
NO_RULE_FLOOR = 0.45
URGENT_PROBABILITY = 0.6
# Earlier messages read with a fragment: the latest few say what the conversation is about now.
CONTEXT_MESSAGES = 3

P1_INTENTS = frozenset(intent for intent in INTENTS if TIERS[intent] == "P1")
NON_P1_INTENTS = frozenset(INTENTS) - P1_INTENTS
_P1_INDEXES = tuple(index for index, intent in enumerate(INTENTS) if intent in P1_INTENTS)
_NON_P1_INDEXES = tuple(index for index, intent in enumerate(INTENTS) if intent not in P1_INTENTS)
# Per intent, the intents of its tier that rank above it (SPEC's precedence), highest first.
_ABOVE_IN_TIER = {intent: tuple(other for other in INTENTS[:index] if TIERS[other] == TIERS[intent])
                  for index, intent in enumerate(INTENTS)}
_POSITIVE = EMOTIONS.index("positive")
_FOUND = {intent: f"R:{intent}" for intent in INTENTS}
_NEGATED = {intent: f"N:{intent}" for intent in INTENTS}
_CUES = tuple(f"C:{kind}" for kind in ("angry", "negative", "positive", "urgent"))
_PRECEDENCE = {intent: index for index, intent in enumerate(INTENTS)}
_START = attrgetter("start")

# A pasted platform notice: 【淘宝】, 【京东】... up to the end of its sentence. Its boilerplate (退款, 价格保护申请,
# 已发货) says what the platform did, not what the buyer wants, so no rule may fire inside it.
_NOTICE = re.compile(r"【[^】\n]{1,16}】[^\n。!?！？]*")
# Order, tracking and waybill fields with their numbers ("订单号：2024112512345", "tracking no. SF1234567890").
_FIELD = re.compile(
    r"(?:订单编号|订单号|运单号|快递单号|物流单号|单号|order\s*(?:number|no\.?|id|#)|tracking\s*(?:number|no\.?|id|#)"
    r"|waybill(?:\s*(?:number|no\.?))?)\s*[:：#]?\s*[a-z0-9][a-z0-9-]{5,}")


_DIGIT = re.compile("[0-9]")


# A rating with a decimal ("4.1星", "4.7 stars", "4.5/5") describes a shop or product; it is never a threat.
_DECIMAL_RATING = re.compile(r"[0-9]+\.[0-9]+\s*(?:颗|顆|粒)?(?:星|分|stars?\b|/\s*5)")


def has_decimal_rating(norm: str) -> bool:
    return "." in norm and _DECIMAL_RATING.search(norm) is not None


def notice_spans(norm: str) -> list[tuple[int, int]]:
    """Spans of the normalised text that are pasted notices or order fields, not the buyer's own words."""
    if "【" not in norm and _DIGIT.search(norm) is None:
        return []
    spans = [match.span() for match in _NOTICE.finditer(norm)]
    spans.extend(match.span() for match in _FIELD.finditer(norm))
    return spans


def _explained(model: TextModel, intent: str, text: str, origin: tuple[int, ...] | None,
               rule: str, prediction: Prediction) -> tuple[Evidence, ...]:
    evidence = []
    for start, end in model.strongest_spans(intent, prediction):
        if origin is not None:
            start, end = origin[start], origin[end - 1] + 1
        evidence.append(Evidence(rule, start, end, text[start:end]))
    evidence.sort(key=_START)
    return tuple(evidence)


def rule_signals(intents: list[str], negated: frozenset[str], cues: list[int], *, masked: bool = False) -> list[str]:
    """The rules' reading as model features: "R:<intent>" found, "N:<intent>" found negated, "C:<cue kind>", and
    "M:mask" when a mask covered words of the message."""
    signals = [_FOUND[intent] for intent in intents]
    if masked:
        signals.append("M:mask")
    if negated:
        signals.extend(_NEGATED[intent] for intent in negated)
    signals.extend(cue for cue, count in zip(_CUES, cues) if count)
    return signals


def decide(hits: list[IntentHit], prediction: Prediction, model: TextModel, text: str,
           origin: tuple[int, ...] | None, refused: frozenset[str] = frozenset(), *,
           masked: bool = False) -> list[IntentHit]:
    """The model, which has read the rules' findings as features, picks the tier and the intent; the rules' hits
    below it stay as secondary intents with their evidence, those above it are dropped (see the module's notes).

    `refused` are intents the rules found negated; `masked` says a mask or a decimal rating covered words here.
    """
    found = {hit.intent: hit for hit in hits}
    glad = prediction.emotions[_POSITIVE] >= GLAD
    if _rule_p1_stands(hits, prediction, glad):
        return hits
    intent = _tier_and_intent(hits, prediction, refused, masked=masked, glad=glad)
    intent = _by_precedence(intent, found, prediction)
    probability = prediction.intent_probability(intent)
    chosen = found.get(intent)
    if chosen is None and probability < (MODEL_FLOOR if hits or refused else NO_RULE_FLOOR):
        # Nothing the model is even moderately sure of once the refused intents are gone ("I'm not leaving a bad
        # review, just asking"): the rules' own finding, or nothing.
        return [hit for hit in hits if hit.intent not in refused]
    if chosen is None:
        evidence = _explained(model, intent, text, origin, f"model.{intent}", prediction)
        if not evidence and intent == "other":
            return []
        chosen = IntentHit(intent, TIERS[intent], round(probability, 3), evidence)
    rank = _PRECEDENCE[intent]
    return [chosen, *(hit for hit in hits if _PRECEDENCE[hit.intent] > rank)]


def _rule_p1_stands(hits: list[IntentHit], prediction: Prediction, glad: bool) -> bool:
    """A P1 the rules found stands unless the model all but rules it out (a trigger word in a product name)."""
    keep = P1_KEEP_GLAD if glad else P1_KEEP
    return any(hit.tier == "P1" and prediction.intent_probability(hit.intent) >= keep for hit in hits)


def _tier_and_intent(hits: list[IntentHit], prediction: Prediction, refused: frozenset[str], *, masked: bool,
                     glad: bool) -> str:
    """Tier first: P1 when the model's probabilities of the P1 intents together reach P1_STRONG (a message torn
    between complaint and rights_protection is still surely P1), then the best intent of the chosen side. Praise
    of the service ("客服回复好快") shares its words with complaints, and a threat is never glad; words a mask took
    away ("给一星期", "4.1星") are not a threat unless the model is all but certain."""
    strong = P1_STRONG_MASKED if masked else P1_STRONG
    if refused:
        p1_mass = sum(prediction.intent_probability(intent) for intent in P1_INTENTS if intent not in refused)
        side = NON_P1_INTENTS if p1_mass >= strong and not glad else P1_INTENTS
        intent, probability = prediction.best_intent(exclude=refused | side)
    else:
        # The same without exclusions to honour, by index: every message that no rule's P1 settles comes here.
        intents = prediction.intents
        p1 = sum(intents[index] for index in _P1_INDEXES) >= strong and not glad
        intent, probability = prediction.best_of(_P1_INDEXES if p1 else _NON_P1_INDEXES)
    if intent == "other" and hits and probability < OTHER_OVER_RULES:
        # The rules named something and the model only leans towards "nothing": the rules' reading stands.
        return hits[0].intent
    return intent


def _by_precedence(intent: str, found: dict[str, IntentHit], prediction: Prediction) -> str:
    """SPEC's precedence inside a tier: a rule-found intent of the same tier that ranks higher and that the model
    finds plausible (PRESENT) is the primary one ("东西坏了，我要退款" is a quality issue first)."""
    for candidate in _ABOVE_IN_TIER[intent]:
        if candidate in found and prediction.intent_probability(candidate) >= PRESENT:
            return candidate
    return intent


def in_context(alone: list[IntentHit], prediction: Prediction, text: str) -> list[IntentHit]:
    """A fragment read in its conversation: the conversation's reading replaces the message's own when the model is
    sure of it (CONTEXT_ADD) and surer than of the message alone; never a P1, which needs the message's own words."""
    intent, probability = prediction.best_intent(exclude=P1_INTENTS)
    if intent == "other" or probability < CONTEXT_ADD:
        return alone
    if alone and (alone[0].intent == intent or alone[0].score >= probability or alone[0].tier == "P1"):
        return alone
    # The evidence is the fragment itself: the words that decided are in the earlier messages.
    return [IntentHit(intent, TIERS[intent], round(probability, 3), (Evidence(f"context.{intent}", 0, len(text), text),))]


def blend_emotion(rules_emotion: str, angry_cues: int, prediction: Prediction) -> str:
    """The model's emotion when it is sure of it; an angry word or emoji the rules found keeps the message angry."""
    if angry_cues and rules_emotion == "angry":
        return "angry"
    emotion, probability = prediction.best_emotion()
    return emotion if probability >= EMOTION_SURE else rules_emotion
