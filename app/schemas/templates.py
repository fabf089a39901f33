"""Reply templates and the suggestions made from them (SPEC 11)."""

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StrictBool

from app.schemas import examples as ex
from app.schemas.base import Schema, StorableStr

IntentName = Literal["any", "rights_protection", "complaint", "bad_review_threat", "quality_issue",
                     "false_advertising", "return_refund", "price_protection", "logistics", "payment_order",
                     "presale", "other"]
EmotionName = Literal["any", "angry", "negative", "neutral", "positive"]
TemplateText = Annotated[StorableStr, Field(min_length=1, max_length=2000)]

_TEXT_DOC = ("Per language (`zh`, `en`; at least one). Variables: {buyer_nick}, {order_id}, {shop_name}, "
             "{agent_name}; `{{` and `}}` for a brace. Wording that asks the buyer to delete or change a review in "
             "exchange for money, a refund or a coupon is refused (`422 invalid_template`).")

EXAMPLE_TEMPLATE = {"id": "logistics.tracking", "intent": "logistics", "emotion": "any", "apology": False,
                    "text": {"zh": "{buyer_nick}您好，我这就帮您查订单{order_id}的物流。",
                             "en": "Hello {buyer_nick}, I am checking the tracking of order {order_id} now."}}


class TemplateTexts(Schema):
    zh: TemplateText | None = None
    en: TemplateText | None = None


class TemplateWrite(Schema):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$", examples=["logistics.tracking"])
    intent: IntentName = Field("any", description="The primary intent it answers, or `any`")
    emotion: EmotionName = Field("any", description="The buyer's emotion it fits, or `any`")
    apology: StrictBool = Field(False, description="Offered first to an angry or upset buyer")
    text: TemplateTexts = Field(description=_TEXT_DOC)


class TemplatesPut(Schema):
    templates: list[TemplateWrite] = Field(max_length=500, description="The shop's whole set, in the order ties "
                                                                       "are offered; ids unique")

    model_config = Schema.model_config | ex.examples({"templates": [EXAMPLE_TEMPLATE]})


class TemplateRead(BaseModel):
    id: str
    intent: str
    emotion: str
    apology: bool
    text: dict[str, str]


class TemplatesRead(BaseModel):
    shop_id: str
    source: Literal["shop", "shipped"] = Field(description="`shipped`: the service's defaults, until the shop "
                                                           "stores its own")
    version: int = Field(description="Writes of the shop's set so far (0 while it uses the shipped one)")
    updated_at: datetime | None
    variables: list[str] = Field(description="The variables a text may use")
    templates: list[TemplateRead]

    model_config = ex.examples({
        "shop_id": "demo", "source": "shop", "version": 3, "updated_at": "2026-11-25T08:00:00Z",
        "variables": ["buyer_nick", "order_id", "shop_name", "agent_name"], "templates": [EXAMPLE_TEMPLATE]})


class SuggestionRead(BaseModel):
    template_id: str
    intent: str
    emotion: str
    apology: bool
    language: str = Field(description="`zh`, `zh-Hant` (the Chinese text in Traditional characters) or `en`")
    text: str = Field(description="Filled in; a variable without a value stays as `{name}`")
    missing: list[str] = Field(description="Variables left for the agent to fill in")


class SuggestionList(BaseModel):
    ticket_id: str
    primary: str
    emotion: str = Field(description="The buyer's: the most upset of the messages since the last reply")
    language: str = Field(description="The latest buyer message's language")
    suggestions: list[SuggestionRead] = Field(description="Best first")

    model_config = ex.examples({
        "ticket_id": ex.TICKET_ID, "primary": "logistics", "emotion": "angry", "language": "zh-Hans", "suggestions": [
            {"template_id": "apology.angry", "intent": "any", "emotion": "angry", "apology": True, "language": "zh",
             "text": "小王，非常抱歉让您这么生气。", "missing": []}]})
