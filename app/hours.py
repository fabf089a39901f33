"""Shop hours (README, "Service hours"): when a shop is open, and time counted in open seconds only.

Pure: standard library and the holiday data of `chinese_calendar`; no web or database code. Every instant in and out
is an aware UTC datetime; a shop's shifts are wall-clock times in its own time zone, so daylight saving (where the
zone has it) moves them as it moves the shop's clocks.

A shift belongs to the day it starts: one that ends past midnight ("22:00"-"02:00") runs into the next day even
when that day is a holiday or a closed date. On a public holiday (holidays "CN") or a closed date the shop runs no
shift; on an adjusted working day (调休, a weekend day worked in exchange for a holiday) it runs the shifts of a
working day: those whose days include any of Monday to Friday.
"""

import functools
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

log = logging.getLogger("app.hours")

WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WORKING_WEEKDAYS = frozenset(range(5))
MINUTES_PER_DAY = 24 * 60
DEFAULT_TIMEZONE = "Asia/Shanghai"
CN = "CN"
# Bounds that keep every search finite: with at most MAX_CLOSED_DATES closed dates, holidays of at most a few weeks
# and at least one shift a week, a shop always opens within HORIZON_DAYS.
MAX_CLOSED_DATES = 366
HORIZON_DAYS = 400


class DayKind(StrEnum):
    """What a date is for a shop's hours."""

    ORDINARY = "ordinary"
    HOLIDAY = "holiday"
    ADJUSTED_WORKDAY = "adjusted_workday"
    CLOSED = "closed"


def parse_clock(text: str, *, end: bool = False) -> int:
    """"09:30" -> 570 minutes after midnight; "24:00" only as a shift's end. ValueError otherwise."""
    hours, sep, minutes = text.partition(":")
    if not sep or len(hours) != 2 or len(minutes) != 2 or not (hours + minutes).isdigit():
        raise ValueError("must be a time of day as HH:MM")
    value = int(hours) * 60 + int(minutes)
    if int(minutes) > 59 or value > MINUTES_PER_DAY or (value == MINUTES_PER_DAY and not end):
        raise ValueError("must be between 00:00 and 23:59 (24:00 only as an end)")
    return value


def format_clock(minutes: int) -> str:
    """570 -> "09:30"."""
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


@functools.cache
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones())


def zone(name: str) -> ZoneInfo:
    """The IANA time zone of that name; ValueError for a name the zone database does not have."""
    if name not in _zone_names():
        raise ValueError("must be an IANA time zone name, e.g. Asia/Shanghai")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("must be an IANA time zone name, e.g. Asia/Shanghai") from None


@dataclass(frozen=True, slots=True)
class Shift:
    """A named stretch of the day, on some weekdays (0 Monday .. 6 Sunday); an end at or before the start is on the
    next day."""

    name: str
    start: int
    end: int
    days: frozenset[int] = frozenset(range(7))

    @property
    def overnight(self) -> bool:
        return self.end <= self.start

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "start": format_clock(self.start), "end": format_clock(self.end),
                "days": [WEEKDAYS[d] for d in sorted(self.days)]}

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> "Shift":
        """A shift as stored (`as_dict`'s shape); days left out are every day."""
        days = value.get("days")
        return cls(name=str(value["name"]), start=parse_clock(str(value["start"])),
                   end=parse_clock(str(value["end"]), end=True),
                   days=frozenset(range(7)) if days is None else frozenset(WEEKDAYS.index(str(d)) for d in days))


# The usual 白班 and 晚班 of a shop's customer service, every day; they overlap for the handover.
DEFAULT_SHIFTS: tuple[Shift, ...] = (Shift("day", 9 * 60, 18 * 60), Shift("evening", 15 * 60, MINUTES_PER_DAY))


def shift_problems(shifts: Sequence[Shift]) -> list[tuple[int, str]]:
    """What is wrong with a list of shifts, as (index, reason): an empty shift, a name or a shift given twice.
    Shifts may overlap (a handover, a peak shift inside a longer one), so overlap alone is no problem."""
    problems: list[tuple[int, str]] = []
    names: set[str] = set()
    seen: set[tuple[int, int, frozenset[int]]] = set()
    for i, shift in enumerate(shifts):
        if shift.start == shift.end:
            problems.append((i, "start and end are the same time"))
        if not shift.days:
            problems.append((i, "runs on no day"))
        if shift.name in names:
            problems.append((i, "another shift has this name"))
        key = (shift.start, shift.end % MINUTES_PER_DAY, shift.days)
        if key in seen:
            problems.append((i, "the same hours and days as another shift"))
        names.add(shift.name)
        seen.add(key)
    return problems


@dataclass(frozen=True, slots=True)
class HolidayCalendar:
    """Public holidays and adjusted working days of a country, known from `first` to `last` inclusive."""

    name: str
    holidays: frozenset[date]
    workdays: frozenset[date]
    first: date
    last: date

    def kind(self, day: date) -> DayKind:
        if day in self.holidays:
            return DayKind.HOLIDAY
        if day in self.workdays:
            return DayKind.ADJUSTED_WORKDAY
        if not self.first <= day <= self.last:
            _beyond(self.name, day.year, self.last)
        return DayKind.ORDINARY


@functools.cache
def _beyond(name: str, year: int, last: date) -> None:
    """Said once per process and year: the data ends, so days of that year count as ordinary weekdays and weekends."""
    log.warning("no %s holiday data for %d (it ends on %s): its days are counted as ordinary days, without public "
                "holidays or adjusted working days, until the holiday data is updated", name, year, last.isoformat())


@functools.cache
def china_holidays() -> HolidayCalendar:
    """Mainland China's public holidays and adjusted working days, from the `chinese_calendar` package."""
    import chinese_calendar

    holidays = frozenset(chinese_calendar.holidays)
    workdays = frozenset(chinese_calendar.workdays)
    years = [d.year for d in holidays | workdays]
    return HolidayCalendar(CN, holidays, workdays, date(min(years), 1, 1), date(max(years), 12, 31))


def holiday_calendar(name: str | None) -> HolidayCalendar | None:
    """The calendar a shop's `holidays` setting names: "CN", or None for none."""
    if name is None:
        return None
    if name == CN:
        return china_holidays()
    raise ValueError(f"unknown holiday calendar {name!r}")


Span = tuple[datetime, datetime]


class ShopHours:
    """A shop's opening hours: which instants are open, and arithmetic in open seconds.

    Each local day's open spans are computed once and kept (a few hundred days at most), so a shop's hours answer
    "is it open now" and "when is this due" without any I/O; the object is per shop and per setting, and cheap to
    keep for as long as the settings hold.
    """

    __slots__ = ("tz", "shifts", "holidays", "closed", "_days", "_last")

    def __init__(self, *, tz: ZoneInfo, shifts: Sequence[Shift], holidays: HolidayCalendar | None,
                 closed: Iterable[date] = ()) -> None:
        self.tz = tz
        self.shifts = tuple(shifts)
        self.holidays = holidays
        self.closed = frozenset(closed)
        self._days: dict[date, tuple[Span, ...]] = {}
        # The open span last found: webhooks arrive in time order, so the next one most often falls in it too.
        self._last: Span = (datetime.max.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC))

    @classmethod
    def always_open(cls) -> "ShopHours":
        """Open every minute of every day (what a shop without hours was before hours existed)."""
        return cls(tz=ZoneInfo("UTC"), shifts=(Shift("all", 0, MINUTES_PER_DAY),), holidays=None)

    def day_kind(self, day: date) -> DayKind:
        """What `day` (a local date) is: a closed date first, then what the holiday calendar says."""
        if day in self.closed:
            return DayKind.CLOSED
        if self.holidays is None:
            return DayKind.ORDINARY
        return self.holidays.kind(day)

    def shifts_on(self, day: date) -> tuple[Shift, ...]:
        """The shifts that start on `day` (a local date)."""
        kind = self.day_kind(day)
        if kind in (DayKind.CLOSED, DayKind.HOLIDAY):
            return ()
        if kind is DayKind.ADJUSTED_WORKDAY:
            return tuple(s for s in self.shifts if s.days & WORKING_WEEKDAYS)
        weekday = day.weekday()
        return tuple(s for s in self.shifts if weekday in s.days)

    def shift_span(self, shift: Shift, day: date) -> Span:
        """When `shift`, started on `day`, runs, in UTC."""
        end = shift.end + (MINUTES_PER_DAY if shift.overnight else 0)
        return self._utc(day, shift.start), self._utc(day, end)

    def _utc(self, day: date, minutes: int) -> datetime:
        # Aware arithmetic in one zone is wall-clock arithmetic: 24:00 is the next day's midnight, as the zone has it.
        local = datetime(day.year, day.month, day.day, tzinfo=self.tz) + timedelta(minutes=minutes)
        return local.astimezone(UTC)

    def day_spans(self, day: date) -> tuple[Span, ...]:
        """The open spans within the local day `day`, disjoint and in order: its own shifts, and the part after
        midnight of the previous day's overnight shifts."""
        spans = self._days.get(day)
        if spans is None:
            minutes: list[tuple[int, int]] = []
            for shift in self.shifts_on(day):
                minutes.append((shift.start, MINUTES_PER_DAY if shift.overnight else shift.end))
            for shift in self.shifts_on(day - timedelta(days=1)):
                if shift.overnight and shift.end > 0:
                    minutes.append((0, shift.end))
            merged: list[list[int]] = []
            for start, end in sorted(minutes):
                if merged and start <= merged[-1][1]:
                    merged[-1][1] = max(merged[-1][1], end)
                else:
                    merged.append([start, end])
            converted = ((self._utc(day, start), self._utc(day, end)) for start, end in merged)
            spans = tuple((s, e) for s, e in converted if s < e)  # a span lost in a daylight-saving gap
            if len(self._days) > 2048:
                self._days.clear()
            self._days[day] = spans
        return spans

    def local_date(self, instant: datetime) -> date:
        return instant.astimezone(self.tz).date()

    def spans_from(self, instant: datetime) -> Iterator[Span]:
        """Open spans ending after `instant`, in order, the first one cut to start no earlier than it; they stop
        after HORIZON_DAYS. Spans of consecutive days may touch at midnight."""
        day = self.local_date(instant)
        for offset in range(HORIZON_DAYS):
            for start, end in self.day_spans(day + timedelta(days=offset)):
                if end > instant:
                    yield max(start, instant), end

    def is_open(self, instant: datetime) -> bool:
        """Whether the shop is open at `instant`."""
        if self._last[0] <= instant < self._last[1]:
            return True
        for span in self.day_spans(self.local_date(instant)):
            if span[0] <= instant < span[1]:
                self._last = span
                return True
        return False

    def next_opening(self, instant: datetime) -> datetime | None:
        """`instant` when open, else the next time the shop opens; None when it does not within HORIZON_DAYS."""
        return next((start for start, _ in self.spans_from(instant)), None)

    def add_open_seconds(self, instant: datetime, seconds: float) -> datetime | None:
        """The instant by which `seconds` of open time have passed since `instant` (a time outside hours starts
        counting at the next opening); None when the shop does not open enough within HORIZON_DAYS."""
        left = timedelta(seconds=seconds)
        if self.is_open(instant) and instant + left <= self._last[1]:
            return instant + left
        for start, end in self.spans_from(instant):
            if left <= end - start:
                return start + left
            left -= end - start
        return None

    def open_seconds(self, start: datetime, end: datetime) -> float:
        """Open seconds in [start, end); 0 when end is not after start."""
        total = timedelta()
        for span_start, span_end in self.spans_from(start):
            if span_start >= end:
                break
            total += min(span_end, end) - span_start
        return total.total_seconds()

    def open_spans(self, start: datetime, end: datetime) -> list[Span]:
        """The open spans within [start, end), each cut to it, touching ones joined."""
        spans: list[Span] = []
        for span_start, span_end in self.spans_from(start):
            if span_start >= end:
                break
            span_end = min(span_end, end)
            if spans and spans[-1][1] == span_start:
                spans[-1] = (spans[-1][0], span_end)
            else:
                spans.append((span_start, span_end))
        return spans
