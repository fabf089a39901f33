"""Shops, webhook secrets, queues and agents, as ops create and read them."""

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_core import PydanticCustomError

from app import hours
from app.domain import DEFAULT_STICKY_HOURS, MAX_STICKY_HOURS
from app.schemas import examples as ex
from app.schemas.base import IsoDate, QueueName, ReadSchema, Schema, SlaTargets, Slug, StorableStr, whole_number

Level = Literal["junior", "mid", "senior"]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
ShiftName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$", examples=["day"])]
ClockTime = Annotated[str, Field(pattern=r"^[0-9]{2}:[0-9]{2}$", examples=["09:00"])]
# What a refusal of the shop's hours is called: well-formed values the schema cannot rule out (25:00, an unknown
# zone, two shifts of one name).
HOURS_ERROR = "shop_hours"

AUTO_CLOSE = ("Hours a queued ticket's conversation may stay silent (no buyer message, nor a seller message on the "
              "platform) before the service resolves it, with a `resolved` event by `system`; 0 never (default 72)")
AutoCloseHours = whole_number(0, 8760)
STICKY = ("Hours after an agent's last reply to a buyer in which the buyer's new conversation or reopened ticket is "
          "offered first to that agent: only it may claim it for TRIAGE_STICKY_HOLD_SECONDS (60) while it is online, "
          f"then anyone serving the queue; 0 never (default {DEFAULT_STICKY_HOURS}, at most {MAX_STICKY_HOURS})")
StickyHours = whole_number(0, MAX_STICKY_HOURS)


def _hours_error(reason: str) -> PydanticCustomError:
    return PydanticCustomError(HOURS_ERROR, reason)


class Shift(Schema):
    name: ShiftName
    start: ClockTime = Field(description="Local time the shift starts, HH:MM (00:00-23:59)")
    end: ClockTime = Field(description="Local time it ends, HH:MM; 24:00 is midnight; an end at or before the start "
                                       "is on the next day (an overnight shift belongs to the day it starts)")
    days: list[Weekday] | None = Field(None, min_length=1, max_length=7,
                                       description="Weekdays it runs; every day when left out")

    @field_validator("start")
    @classmethod
    def _start(cls, value: str) -> str:
        try:
            hours.parse_clock(value)
        except ValueError as exc:
            raise _hours_error(str(exc)) from None
        return value

    @field_validator("end")
    @classmethod
    def _end(cls, value: str) -> str:
        try:
            hours.parse_clock(value, end=True)
        except ValueError as exc:
            raise _hours_error(str(exc)) from None
        return value

    @field_validator("days")
    @classmethod
    def _days(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise _hours_error("a weekday is given twice")
        return value

    def to_shift(self) -> hours.Shift:
        return hours.Shift.from_dict(self.model_dump())


class ShopHoursFields(Schema):
    """The shop's service hours (README, "Service hours"). A field left out keeps its value (a new shop: the
    default)."""

    timezone: str = Field(None, min_length=1, max_length=64, examples=["Asia/Shanghai"],  # type: ignore[assignment]
                          description="IANA time zone the shifts are in (default Asia/Shanghai)")
    shifts: list[Shift] = Field(None, min_length=1, max_length=8,  # type: ignore[assignment]
                                description="When agents work (default day 09:00-18:00 and evening 15:00-24:00, "
                                            "every day). Shifts may overlap; names and hours must not repeat")
    holidays: Literal["CN"] | None = Field(
        "CN", description="`CN`: closed on mainland public holidays, open on adjusted working days (调休) with the "
                          "shifts of a working day; null: no holiday calendar")
    closed_dates: list[IsoDate] = Field(None, max_length=hours.MAX_CLOSED_DATES,  # type: ignore[assignment]
                                     description="Local dates the shop is closed, besides holidays")
    off_hours_reply: StorableStr | None = Field(
        None, min_length=1, max_length=500, examples=[ex.OFF_HOURS_REPLY],
        description="Sent to the buyer when an episode's first message arrives while the shop is closed, through "
                    "`reply.created`; null: none")

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            hours.zone(value)
        except ValueError as exc:
            raise _hours_error(str(exc)) from None
        return value

    @field_validator("closed_dates")
    @classmethod
    def _closed_dates(cls, value: list[date]) -> list[date]:
        if len(set(value)) != len(value):
            raise _hours_error("a date is given twice")
        return sorted(value)

    @field_validator("shifts")
    @classmethod
    def _shifts(cls, value: list[Shift]) -> list[Shift]:
        for index, reason in hours.shift_problems([s.to_shift() for s in value]):
            raise PydanticCustomError(HOURS_ERROR, "shift {index}: {reason}", {"index": index, "reason": reason})
        return value

    def hours_values(self) -> dict[str, Any]:
        """The hours fields given, as stored."""
        values: dict[str, Any] = {}
        given = self.model_fields_set
        if "timezone" in given:
            values["timezone"] = self.timezone
        if "shifts" in given:
            values["shifts"] = [s.to_shift().as_dict() for s in self.shifts]
        if "holidays" in given:
            values["holidays"] = self.holidays
        if "closed_dates" in given:
            values["closed_dates"] = [d.isoformat() for d in self.closed_dates]
        if "off_hours_reply" in given:
            values["off_hours_reply"] = self.off_hours_reply
        return values


class ShopCreate(ShopHoursFields):
    id: Slug
    name: StorableStr = Field(min_length=1, max_length=200, examples=["Demo shop"])
    sla_targets: SlaTargets | None = None
    auto_close_after_hours: AutoCloseHours | None = Field(None, description=AUTO_CLOSE)  # type: ignore[valid-type]
    sticky_hours: StickyHours | None = Field(None, description=STICKY)  # type: ignore[valid-type]

    model_config = Schema.model_config | ex.examples({"id": ex.SHOP_ID, "name": "Demo shop",
                                                      "sla_targets": ex.SLA_TARGETS})


class ShopUpdate(ShopHoursFields):
    name: StorableStr | None = Field(None, min_length=1, max_length=200)
    sla_targets: SlaTargets | None = None
    auto_close_after_hours: AutoCloseHours | None = Field(None, description=AUTO_CLOSE)  # type: ignore[valid-type]
    sticky_hours: StickyHours | None = Field(None, description=STICKY)  # type: ignore[valid-type]

    model_config = Schema.model_config | ex.examples(
        {"sla_targets": {"P1": 15, "P2": 30, "P3": 40, "P4": 60}},
        {"timezone": "Asia/Shanghai", "shifts": [{"name": "day", "start": "09:00", "end": "18:00"},
                                                 {"name": "evening", "start": "15:00", "end": "24:00"}],
         "holidays": "CN", "closed_dates": ["2026-12-31"], "off_hours_reply": ex.OFF_HOURS_REPLY},
        {"auto_close_after_hours": 48}, {"sticky_hours": 48})


class ShopCreated(Schema):
    id: str = Field(examples=["demo"])
    name: str = Field(examples=["Demo shop"])
    webhook_secret: str = Field(examples=["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"])

    model_config = Schema.model_config | ex.examples({"id": ex.SHOP_ID, "name": "Demo shop",
                                                      "webhook_secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"})


class ShiftRead(Schema):
    name: str
    start: str = Field(examples=["09:00"])
    end: str = Field(examples=["18:00"])
    days: list[Weekday]


class ShopRead(ReadSchema):
    id: str
    name: str
    sla_targets: SlaTargets
    active_ruleset_version: int | None
    timezone: str = Field(examples=["Asia/Shanghai"])
    shifts: list[ShiftRead]
    holidays: Literal["CN"] | None
    holiday_data_until: date | None = Field(
        description="The last date the holiday calendar knows; later dates count as ordinary days (no holidays, no "
                    "adjusted working days) until the service's holiday data is updated. Null without holidays")
    closed_dates: list[date]
    off_hours_reply: str | None
    auto_close_after_hours: int = Field(description=AUTO_CLOSE, examples=[72])
    sticky_hours: int = Field(description=STICKY, examples=[72])
    created_at: datetime

    model_config = ReadSchema.model_config | ex.examples(ex.SHOP)


class SecretRotate(Schema):
    previous_valid_seconds: whole_number(0, 30 * 86_400) | None = Field(  # type: ignore[valid-type]
        None, description="How long the secrets in use keep verifying; 0 revokes them now (a leaked secret). "
                          "Default: TRIAGE_SECRET_OVERLAP_HOURS.")

    model_config = Schema.model_config | ex.examples({"previous_valid_seconds": 0}, {"previous_valid_seconds": 3600})


class SecretRotated(Schema):
    webhook_secret: str = Field(examples=["whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"])
    previous_valid_until: datetime | None = Field(
        None, description="Until when the secrets in use before this rotation keep verifying")

    model_config = Schema.model_config | ex.examples({"webhook_secret": "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
                                                      "previous_valid_until": "2026-11-26T08:00:00Z"})


class QueueCreate(Schema):
    name: QueueName
    description: StorableStr = Field("", max_length=500)
    sla_targets: SlaTargets | None = Field(None, description="Overrides the shop's targets for this queue")

    model_config = Schema.model_config | ex.examples({"name": "vip", "description": "VIP buyers",
                                                      "sla_targets": {"P1": 10, "P2": 20, "P3": 30, "P4": 45}})


class QueueUpdate(Schema):
    description: StorableStr | None = Field(None, max_length=500)
    sla_targets: SlaTargets | None = None

    model_config = Schema.model_config | ex.examples({"sla_targets": {"P1": 15, "P2": 25, "P3": 40, "P4": 60}})


class QueueRead(ReadSchema):
    name: str
    description: str
    sla_targets: SlaTargets = Field(description="Targets in force for this queue (its own or the shop's)")
    sla_override: bool
    created_at: datetime

    model_config = ReadSchema.model_config | ex.examples(ex.QUEUE)


AGENT_SHIFTS = "Names of the shop's shifts the agent works (coverage); null: every shift"


class AgentCreate(Schema):
    name: StorableStr = Field(min_length=1, max_length=200, examples=["Lin"])
    queues: list[QueueName] = Field(min_length=1, max_length=64, examples=[["presale", "aftersale"]])
    level: Level = "junior"
    capacity: whole_number(1, 50) | None = Field(None, description="Open tickets at once; the service default when omitted")
    shifts: list[ShiftName] | None = Field(None, min_length=1, max_length=8, description=AGENT_SHIFTS)

    model_config = Schema.model_config | ex.examples({"name": "Lin", "queues": ["presale", "aftersale", "complaints"],
                                                      "level": "senior", "capacity": 5})


class AgentUpdate(Schema):
    name: StorableStr | None = Field(None, min_length=1, max_length=200)
    queues: list[QueueName] | None = Field(None, min_length=1, max_length=64)
    level: Level | None = None
    capacity: whole_number(1, 50) | None = None  # type: ignore[valid-type]
    active: bool | None = None
    shifts: list[ShiftName] | None = Field(None, min_length=1, max_length=8,
                                           description=AGENT_SHIFTS + " (null sets every shift)")

    model_config = Schema.model_config | ex.examples({"capacity": 8}, {"active": False})


class AgentRead(ReadSchema):
    id: str
    shop_id: str
    name: str
    queues: list[str]
    level: Level
    capacity: int
    active: bool
    shifts: list[str] | None = Field(description=AGENT_SHIFTS)
    created_at: datetime
    presence: Literal["online", "away", "offline"] = Field(
        description="Now: what the agent set (or online from a claim), offline once silent for "
                    "TRIAGE_PRESENCE_TIMEOUT_SECONDS")
    seen_at: datetime | None = Field(description="Its last claim, ticket heartbeat or presence call")

    model_config = ReadSchema.model_config | ex.examples(ex.AGENT)


class AgentCreated(AgentRead):
    token: str = Field(description="Shown this once; only its hash is stored", examples=["agt_3q2n..."])

    model_config = ReadSchema.model_config | ex.examples({**ex.AGENT, "presence": "offline", "seen_at": None,
                                                          "token": "agt_ZyGWMrhF2mpmYsSA2sNfVP1ZwzXAXWr2dcl5pivM2kA"})


class AgentBrief(BaseModel):
    id: str
    name: str


class QueueCoverage(BaseModel):
    queue: str = Field(examples=["aftersale"])
    agents: list[AgentBrief] = Field(description="Active agents serving the queue who work this shift")


class ShiftCoverage(BaseModel):
    name: str = Field(examples=["evening"])
    start: str = Field(examples=["15:00"])
    end: str = Field(examples=["24:00"])
    runs: bool = Field(description="Whether the shift runs on this date (not on a holiday, a closed date, or a weekday "
                                   "it leaves out)")
    opens_at: datetime | None = Field(description="When it starts on this date, in UTC; null when it does not run")
    closes_at: datetime | None
    covered: list[QueueCoverage] = Field(description="Queues with at least one active agent on this shift")
    gaps: list[str] = Field(description="The shop's queues nobody covers on this shift (empty when it does not run)")


class CoverageRead(BaseModel):
    shop_id: str
    date: date
    timezone: str
    day: Literal["ordinary", "holiday", "adjusted_workday", "closed"] = Field(
        description="What the date is for the shop: a public holiday (no shift runs), an adjusted working day (the "
                    "working days' shifts run), a closed date, or an ordinary day (each shift on its weekdays)")
    holiday_data: bool | None = Field(description="Whether the holiday calendar has data for this date; null without "
                                                  "a calendar")
    shifts: list[ShiftCoverage]

    model_config = ex.examples(ex.COVERAGE)
