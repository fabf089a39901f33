"""Reply templates: which fit a ticket, best first, filled in; and which wording a shop may not save.

Pure: the service layer reads the shop's templates and the ticket, this module decides. A template is for an
intent (or any) and an emotion (or any), carries a Chinese and/or English text with variables such as
{buyer_nick} and {order_id}, and may be an apology, which an angry or upset buyer is offered first (SPEC 11).
"""

import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import opencc
import yaml

from app.triage.model import EMOTIONS, INTENTS
from app.triage.normalize import normalise

ANY = "any"
LANGUAGES = ("zh", "en")
VARIABLES = ("buyer_nick", "order_id", "shop_name", "agent_name")
MAX_TEMPLATES = 500
MAX_TEXT_CHARS = 2000
_ID = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_DEFAULTS = Path(__file__).parent / "rules" / "replies.yaml"
# What a missing buyer nick reads as, so a greeting stays a sentence.
_NICK_FALLBACK = {"zh": "亲", "en": "there"}


@dataclass(frozen=True, slots=True)
class Template:
    id: str
    intent: str
    emotion: str
    texts: Mapping[str, str]
    apology: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "intent": self.intent, "emotion": self.emotion, "apology": self.apology,
                "text": dict(self.texts)}


@dataclass(frozen=True, slots=True)
class Suggestion:
    template: Template
    language: str
    text: str
    missing: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {"template_id": self.template.id, "intent": self.template.intent, "emotion": self.template.emotion,
                "apology": self.template.apology, "language": self.language, "text": self.text,
                "missing": list(self.missing)}


class TemplateError(ValueError):
    """A template that cannot be saved; `path` names the entry (`templates[2].text.zh`)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


# Asking a buyer to take down or change a review, and paying for it, are each fine alone ("we refund you";
# "you may update your review any time" is the buyer's right); together they are review manipulation, which the
# platforms penalise. Matched on the normalised text (lower case, half-width, Simplified), so 刪除差評 and
# ＤＥＬＥＴＥ count too.
_REVIEW_CHANGE = re.compile(
    r"(删|撤|改|修改|更改|追评|取消|去掉|拿掉|下掉|换成|改成|补个?)[^，,。！？!?；;\n]{0,6}(差评|中评|评价|评论|评分|好评|五星|5星)"
    r"|(差评|中评|评价|评论|评分|追评)[^，,。！？!?；;\n]{0,6}(删|撤|改|修改|取消|去掉)"
    r"|好评返|晒图返|五星返|5星返"
    r"|\b(delete|remove|take down|withdraw|retract|change|update|edit|revise|modify|upgrade|amend)\b"
    r"[^,;.!?\n]{0,25}\b(review|rating|feedback|stars?)\b"
    r"|\b(5|five)[- ]star (review|rating)\b|\bpositive (review|feedback|rating)\b")
_PAYMENT = re.compile(
    r"返现|现金|红包|退款|退钱|返钱|补偿|赔偿|优惠券|优惠卷|代金券|礼金|补贴|返利|打款|转账|好处|"
    r"[^\w]券|元|块钱|钱"
    r"|\b(refund\w*|cash\w*|money|coupons?|vouchers?|discounts?|gift ?cards?|compensat\w*|rebates?|"
    r"reimburs\w*|paypal|credit|payment|pay you|bonus)\b|[$¥€£]")
# "No need to change your review" is the honest thing to say; such a clause is not an ask.
_NOT_ASKING = re.compile(r"(不需要|无需|不用|不必|不会要求|不要求|不是要|无须)[^。！？!?\n]{0,6}$"
                         r"|\b(no need to|don't need to|do not need to|not asking you to|never ask you to|"
                         r"not required to|don't have to|do not have to)\b[^.!?\n]{0,12}$")


def asks_review_for_payment(text: str) -> bool:
    """True when the text asks the buyer to remove or change a review and offers money, a refund or a coupon."""
    normalised = normalise(text).text
    asks = any(not _NOT_ASKING.search(normalised[:hit.start()]) for hit in _REVIEW_CHANGE.finditer(normalised))
    return asks and _PAYMENT.search(normalised) is not None


def _variables(text: str) -> list[str]:
    try:
        return [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]
    except ValueError as exc:  # a lone "{" or "}"
        raise TemplateError("", f"braces must pair as {{variable}}; write {{{{ or }}}} for a brace itself ({exc})")


def _check_text(path: str, text: Any) -> str:
    if not isinstance(text, str) or not text.strip():
        raise TemplateError(path, "expected non-empty text")
    if len(text) > MAX_TEXT_CHARS:
        raise TemplateError(path, f"longer than {MAX_TEXT_CHARS} characters")
    try:
        names = _variables(text)
    except TemplateError as exc:
        raise TemplateError(path, exc.reason) from None
    unknown = sorted({name for name in names if name not in VARIABLES})
    if unknown:
        raise TemplateError(path, f"unknown variable {{{unknown[0]}}}; known: "
                                  + ", ".join(f"{{{name}}}" for name in VARIABLES))
    if asks_review_for_payment(text):
        raise TemplateError(path, "asks the buyer to delete or change a review in exchange for money, a refund or "
                                  "a coupon, which platforms penalise (要求买家删改评价以换取返现/退款/优惠券)")
    return text


def _choice(path: str, value: Any, allowed: Sequence[str]) -> str:
    if value is None:
        return ANY
    if value not in (ANY, *allowed):
        raise TemplateError(path, f"expected one of {ANY}, {', '.join(allowed)}")
    return str(value)


def template_from_mapping(data: Mapping[str, Any], path: str) -> Template:
    """One template from its JSON form, checked; errors name the entry under `path`."""
    template_id = data.get("id")
    if not isinstance(template_id, str) or not _ID.fullmatch(template_id):
        raise TemplateError(f"{path}.id", "expected 1-64 lower-case letters, digits, '.', '_' or '-'")
    texts = data.get("text")
    if not isinstance(texts, Mapping) or not texts:
        raise TemplateError(f"{path}.text", "expected a text per language: {\"zh\": ..., \"en\": ...}")
    for language in texts:
        if language not in LANGUAGES:
            raise TemplateError(f"{path}.text.{language}", f"expected a language of {', '.join(LANGUAGES)}")
    checked = {language: _check_text(f"{path}.text.{language}", texts[language]) for language in LANGUAGES
               if language in texts}
    return Template(id=template_id, intent=_choice(f"{path}.intent", data.get("intent"), INTENTS),
                    emotion=_choice(f"{path}.emotion", data.get("emotion"), EMOTIONS),
                    texts=checked, apology=bool(data.get("apology", False)))


def templates_from_list(items: Sequence[Mapping[str, Any]], path: str = "templates") -> tuple[Template, ...]:
    """A shop's whole set, checked: each template valid, ids unique."""
    if len(items) > MAX_TEMPLATES:
        raise TemplateError(path, f"more than {MAX_TEMPLATES} templates")
    seen: set[str] = set()
    templates = []
    for index, item in enumerate(items):
        template = template_from_mapping(item, f"{path}[{index}]")
        if template.id in seen:
            raise TemplateError(f"{path}[{index}].id", f"id '{template.id}' is used twice")
        seen.add(template.id)
        templates.append(template)
    return tuple(templates)


@cache
def default_templates() -> tuple[Template, ...]:
    """The templates that ship with the service, for shops that stored none."""
    with _DEFAULTS.open(encoding="utf-8") as handle:
        return templates_from_list(yaml.safe_load(handle)["templates"])


def reply_language(language: str | None) -> str:
    """The template language for a buyer's detected language (zh-Hans and zh-Hant read Chinese)."""
    return "en" if language == "en" else "zh"


@cache
def _to_traditional() -> opencc.OpenCC:
    return opencc.OpenCC("s2t")


_UPSET = ("angry", "negative")


def _rank(template: Template, *, intent: str, emotion: str) -> tuple[int, ...] | None:
    """Sort key of a fitting template (smaller first), or None when it does not fit."""
    if template.intent not in (intent, ANY) or template.emotion not in (emotion, ANY):
        return None
    apology_first = 0 if (template.apology and emotion in _UPSET) else 1
    return (apology_first, template.intent != intent, template.emotion != emotion)


def _render(text: str, values: Mapping[str, str | None], language: str) -> tuple[str, tuple[str, ...]]:
    # A variable with no value stays as written and is reported, so the agent sees what to fill in.
    filled = {name: values.get(name) for name in VARIABLES}
    if not filled.get("buyer_nick"):
        filled["buyer_nick"] = _NICK_FALLBACK[language]
    missing = tuple(name for name in dict.fromkeys(_variables(text)) if not filled.get(name))
    rendered = text.format_map({name: value if value else f"{{{name}}}" for name, value in filled.items()})
    return rendered, missing


def suggest(templates: Iterable[Template], *, intent: str, emotion: str, language: str,
            values: Mapping[str, str | None], limit: int = 5) -> list[Suggestion]:
    """The templates fitting the intent and emotion, best first, rendered in the buyer's language.

    Best: an apology first for an angry or upset buyer, then the intent's own before generic ones, then the
    emotion's own; ties keep the shop's order. A template without the buyer's language is offered in the other.
    """
    wanted = reply_language(language)
    ranked = []
    for position, template in enumerate(templates):
        key = _rank(template, intent=intent, emotion=emotion)
        if key is not None:
            ranked.append((key, position, template))
    ranked.sort(key=lambda item: (item[0], item[1]))
    suggestions = []
    for _, _, template in ranked[:limit]:
        chosen = wanted if wanted in template.texts else next(iter(template.texts))
        written = template.texts[chosen]
        label = chosen
        if chosen == "zh" and language == "zh-Hant":  # a Traditional-script buyer reads Traditional characters
            written, label = _to_traditional().convert(written), "zh-Hant"
        text, missing = _render(written, values, chosen)
        suggestions.append(Suggestion(template=template, language=label, text=text, missing=missing))
    return suggestions
