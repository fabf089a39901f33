"""Triage of what is not (only) text (SPEC 9.2): a platform's system events and media, with their own evidence.

Pure like the rest of the core: the event and its facts in, a Triage out. A system event decides by what it is
(a refund requested is a return_refund; a dispute opened is a platform complaint; a review posted with 1 or 2
stars is a bad review already written), never by a text made up for it. A caption beside it is read too, and the
more urgent reading leads. Evidence names the event: rule "event.review_posted", text "rating=1".
"""

from collections.abc import Sequence

from app.triage.engine import classify, priority_for
from app.triage.model import INTENTS, TIERS, Evidence, IntentHit, PriorityContext, Triage
from app.triage.ruleset import Ruleset, default_ruleset

# Events and the intent each shows. Events not named here (order_paid, order_shipped, ...) are news, not a
# request: "other". review_posted is decided by its rating.
EVENT_INTENTS: dict[str, str] = {
    "refund_requested": "return_refund",
    "return_shipped": "return_refund",  # a refund to be made once the parcel is back
    "dispute_opened": "complaint",  # the buyer asked the platform to step in (小二介入)
    "order_cancelled": "payment_order",
}
BAD_REVIEW_RATING = 2  # ratings at or below this are a bad review (SPEC 9.2)
_EMOTION = {"complaint": "negative", "bad_review_threat": "angry"}
# Without a caption there are no words to tell the language by; the platforms this serves write Chinese.
DEFAULT_LANGUAGE = "zh-Hans"


def event_intent(event: str, *, rating: int | None) -> tuple[str, str]:
    """The intent a system event shows, and the evidence text that says why ("rating=1", or the event's name)."""
    if event == "review_posted":
        if rating is not None and rating <= BAD_REVIEW_RATING:
            return "bad_review_threat", f"rating={rating}"
        return "other", "rating=" + ("none" if rating is None else str(rating))
    return EVENT_INTENTS.get(event, "other"), event


def _ranked(hits: Sequence[IntentHit]) -> tuple[IntentHit, ...]:
    """One hit per intent (the first found), in SPEC precedence: tier, then the intents table."""
    kept: dict[str, IntentHit] = {}
    for hit in hits:
        kept.setdefault(hit.intent, hit)
    return tuple(sorted(kept.values(), key=lambda h: INTENTS.index(h.intent)))


def _decided(hits: tuple[IntentHit, ...], *, caption: Triage | None, ruleset: Ruleset) -> Triage:
    primary = hits[0].intent
    emotion = caption.emotion if caption is not None and caption.primary == primary else _EMOTION.get(
        primary, ruleset.emotion_baseline.get(primary, "neutral"))
    urgent = caption.urgent if caption is not None else False
    priority = priority_for(primary, emotion=emotion, urgent=urgent, context=PriorityContext(), ruleset=ruleset)
    return Triage(primary, TIERS[primary], priority, hits, emotion, urgent,
                  caption.language if caption is not None else DEFAULT_LANGUAGE, ruleset.routes[primary], ruleset.id,
                  caption.model if caption is not None else None)


def classify_event(event: str, *, rating: int | None = None, caption: str | None = None,
                   ruleset: Ruleset | None = None, context: Sequence[str] = ()) -> Triage:
    """Triage a system event (with its rating, for review_posted), and its caption when it has one."""
    rs = ruleset or default_ruleset()
    intent, matched = event_intent(event, rating=rating)
    hits = [IntentHit(intent, TIERS[intent], 1.0, (Evidence(f"event.{event}", 0, 0, matched),))]
    read = classify(caption, rs, context=context) if caption else None
    if read is not None:
        hits += [hit for hit in read.intents if hit.evidence]
    return _decided(_ranked(hits), caption=read, ruleset=rs)


def classify_media(kind: str, *, ruleset: Ruleset | None = None) -> Triage:
    """Triage a message that is only media (an image, a sticker, a product card...): "other", named by its kind.
    It joins its ticket without lowering anything (a ticket's priority never drops while open)."""
    rs = ruleset or default_ruleset()
    hit = IntentHit("other", TIERS["other"], 0.0, (Evidence(f"media.{kind}", 0, 0, kind),))
    return _decided((hit,), caption=None, ruleset=rs)
