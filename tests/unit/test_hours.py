"""Shop hours (app/hours.py): open instants, due times in open seconds, holidays, adjusted working days, time zones."""

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from app import hours
from app.hours import DEFAULT_SHIFTS, DayKind, HolidayCalendar, Shift, ShopHours, parse_clock, shift_problems, zone

SHANGHAI = zone("Asia/Shanghai")
WEEKDAYS_ONLY = frozenset(range(5))


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def shanghai(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=SHANGHAI).astimezone(UTC)  # type: ignore[misc]


def default_hours(**changes: object) -> ShopHours:
    settings = {"tz": SHANGHAI, "shifts": DEFAULT_SHIFTS, "holidays": hours.china_holidays(), **changes}
    return ShopHours(**settings)  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "end", "minutes"), [
    ("00:00", False, 0),
    ("09:30", False, 570),
    ("23:59", False, 1439),
    ("24:00", True, 1440),     # midnight, as an end
])
def test_clock_times(text: str, end: bool, minutes: int) -> None:
    assert parse_clock(text, end=end) == minutes
    assert hours.format_clock(minutes) == text


@pytest.mark.parametrize(("text", "end"), [
    ("24:00", False),   # midnight starts a day as 00:00
    ("24:01", True),    # past the end of the day
    ("12:60", False),   # no such minute
    ("9:00", False),    # two digits each
    ("09-00", False),
    ("", False),
])
def test_bad_clock_times_are_refused(text: str, end: bool) -> None:
    with pytest.raises(ValueError):
        parse_clock(text, end=end)


@pytest.mark.parametrize("name", ["Mars/Olympus", "../etc/passwd", "/usr/share/zoneinfo/UTC", "asia/shanghai", ""])
def test_unknown_time_zones_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        zone(name)


@pytest.mark.parametrize(("shifts", "problems"), [
    (DEFAULT_SHIFTS, []),                                                 # overlapping for the handover: fine
    ((Shift("a", 600, 600),), [(0, "start and end are the same time")]),
    ((Shift("a", 540, 1080), Shift("a", 900, 1440)), [(1, "another shift has this name")]),
    ((Shift("a", 540, 1080), Shift("b", 540, 1080)), [(1, "the same hours and days as another shift")]),
    ((Shift("a", 540, 1080), Shift("b", 540, 1080, WEEKDAYS_ONLY)), []),  # same hours, other days
    ((Shift("night", 1320, 120),), []),                                   # overnight
    ((Shift("a", 0, 1440), Shift("b", 0, 1440, frozenset())), [(1, "runs on no day")]),
])
def test_shift_problems(shifts: tuple[Shift, ...], problems: list[tuple[int, str]]) -> None:
    assert shift_problems(shifts) == problems


@pytest.mark.parametrize(("at", "is_open", "due_in_20"), [
    # 02:00 Shanghai on a Thursday: closed; a 20 s target is due at 09:00:20.
    (shanghai(2026, 11, 19, 2, 0), False, shanghai(2026, 11, 19, 9, 0, 20)),
    (shanghai(2026, 11, 19, 9, 0), True, shanghai(2026, 11, 19, 9, 0, 20)),        # opening minute
    (shanghai(2026, 11, 19, 17, 0), True, shanghai(2026, 11, 19, 17, 0, 20)),      # day and evening overlap
    (shanghai(2026, 11, 19, 23, 59, 50), True, shanghai(2026, 11, 20, 9, 0, 10)),  # 10 s tonight, 10 s tomorrow
    (shanghai(2026, 11, 20, 0, 0), False, shanghai(2026, 11, 20, 9, 0, 20)),       # 24:00 closes
    # National Day holidays (1-7 October 2026): closed all day, so due on the 8th.
    (shanghai(2026, 10, 1, 12, 0), False, shanghai(2026, 10, 8, 9, 0, 20)),
    (shanghai(2026, 10, 7, 23, 0), False, shanghai(2026, 10, 8, 9, 0, 20)),
])
def test_default_hours(at: datetime, is_open: bool, due_in_20: datetime) -> None:
    shop = default_hours()
    assert shop.is_open(at) is is_open
    assert shop.add_open_seconds(at, 20) == due_in_20
    assert shop.open_seconds(at, due_in_20) == 20


@pytest.mark.parametrize(("day", "kind", "open_at_noon"), [
    (date(2026, 10, 1), DayKind.HOLIDAY, False),            # National Day, a Thursday
    (date(2026, 10, 3), DayKind.HOLIDAY, False),            # a Saturday inside the holiday
    (date(2026, 10, 10), DayKind.ADJUSTED_WORKDAY, True),   # Saturday worked for the holiday: weekday shifts run
    (date(2026, 10, 17), DayKind.ORDINARY, False),          # an ordinary Saturday: no weekday shift
    (date(2026, 10, 16), DayKind.ORDINARY, True),           # an ordinary Friday
])
def test_holidays_and_adjusted_working_days_with_weekday_shifts(day: date, kind: DayKind, open_at_noon: bool) -> None:
    shop = default_hours(shifts=(Shift("office", 9 * 60, 18 * 60, WEEKDAYS_ONLY),))
    assert shop.day_kind(day) is kind
    assert shop.is_open(shanghai(day.year, day.month, day.day, 12, 0)) is open_at_noon


def test_no_holiday_calendar_opens_on_holidays_and_closed_dates_close() -> None:
    shop = default_hours(holidays=None, closed=[date(2026, 11, 20)])
    assert shop.is_open(shanghai(2026, 10, 1, 12, 0))
    assert not shop.is_open(shanghai(2026, 11, 20, 12, 0))
    assert shop.day_kind(date(2026, 11, 20)) is DayKind.CLOSED
    assert shop.next_opening(shanghai(2026, 11, 20, 12, 0)) == shanghai(2026, 11, 21, 9, 0)


def test_an_overnight_shift_belongs_to_the_day_it_starts() -> None:
    # 22:00-02:00 from 30 September runs into the holiday of 1 October; none starts on the 1st.
    shop = default_hours(shifts=(Shift("night", 22 * 60, 2 * 60),))
    assert shop.is_open(shanghai(2026, 10, 1, 1, 0))
    assert not shop.is_open(shanghai(2026, 10, 1, 23, 0))
    # 30 September: the 29th's shift until 02:00, its own from 22:00; 1 October: the 30th's until 02:00 only.
    assert shop.open_seconds(shanghai(2026, 9, 30, 0, 0), shanghai(2026, 10, 2, 0, 0)) == 6 * 3600


def test_dates_beyond_the_holiday_data_are_ordinary_days_said_once(caplog: pytest.LogCaptureFixture) -> None:
    calendar = hours.china_holidays()
    assert calendar.last >= date(2026, 12, 31)
    beyond = date(calendar.last.year + 1, 1, 1)
    shop = default_hours(shifts=(Shift("office", 9 * 60, 18 * 60, WEEKDAYS_ONLY),))
    hours._beyond.cache_clear()
    with caplog.at_level("WARNING", logger="app.hours"):
        kinds = [shop.day_kind(beyond + timedelta(days=n)) for n in range(3)]
    assert kinds == [DayKind.ORDINARY] * 3   # New Year's Day too: no data, no holiday
    assert len([r for r in caplog.records if "no CN holiday data" in r.message]) == 1
    monday = beyond + timedelta(days=(7 - beyond.weekday()) % 7)
    assert shop.is_open(datetime(monday.year, monday.month, monday.day, 10, tzinfo=SHANGHAI))
    saturday = monday + timedelta(days=5)
    assert not shop.is_open(datetime(saturday.year, saturday.month, saturday.day, 10, tzinfo=SHANGHAI))


def test_daylight_saving_moves_shifts_with_the_clocks() -> None:
    new_york = zone("America/New_York")
    shop = ShopHours(tz=new_york, shifts=(Shift("early", 60, 4 * 60),), holidays=None)
    # 8 March 2026: 02:00 does not exist, so 01:00-04:00 lasts two hours; 1 November: 01:00 twice, four hours.
    assert shop.open_seconds(utc(2026, 3, 8), utc(2026, 3, 9)) == 2 * 3600
    assert shop.open_seconds(utc(2026, 11, 1), utc(2026, 11, 2)) == 4 * 3600
    assert shop.next_opening(utc(2026, 7, 1, 12)) == utc(2026, 7, 2, 5)  # 01:00 EDT


def test_always_open_counts_wall_clock_time() -> None:
    shop = ShopHours.always_open()
    at = utc(2026, 11, 19, 18, 0)
    assert shop.add_open_seconds(at, 86_400 * 3 + 0.5) == at + timedelta(days=3, seconds=0.5)
    assert shop.open_seconds(at, at + timedelta(hours=5)) == 5 * 3600


def test_open_spans_join_midnight_and_cut_to_the_range() -> None:
    shop = default_hours(holidays=None)
    spans = shop.open_spans(shanghai(2026, 11, 19, 10, 0), shanghai(2026, 11, 20, 10, 0))
    assert spans == [(shanghai(2026, 11, 19, 10, 0), shanghai(2026, 11, 20, 0, 0)),
                     (shanghai(2026, 11, 20, 9, 0), shanghai(2026, 11, 20, 10, 0))]


# Properties, over generated shops: any zone of a few with daylight saving or odd offsets, any shifts, closed dates.
ZONES = ["Asia/Shanghai", "America/New_York", "Europe/London", "Australia/Lord_Howe", "Asia/Kathmandu", "UTC"]
START = datetime(2026, 1, 1, tzinfo=UTC)


@st.composite
def shops(draw: st.DrawFn) -> ShopHours:
    count = draw(st.integers(1, 4))
    shifts = []
    for i in range(count):
        # At least half an hour: a one-minute weekly shift would not add up to a day's target within the horizon.
        start = draw(st.integers(0, 1439))
        length = draw(st.integers(30, 1439))
        end = (start + length) % 1440 or 1440
        days = draw(st.frozensets(st.integers(0, 6), min_size=1))
        shifts.append(Shift(f"s{i}", start, end, days))
    closed = draw(st.lists(st.dates(date(2025, 12, 25), date(2027, 2, 1)), max_size=20))
    holidays = draw(st.sampled_from([None, hours.china_holidays()]))
    return ShopHours(tz=zone(draw(st.sampled_from(ZONES))), shifts=shifts, holidays=holidays, closed=closed)


instants = st.integers(0, 400 * 86_400_000).map(lambda ms: START + timedelta(milliseconds=ms))
# Up to a day: the longest first-response target a shop may set.
amounts = st.integers(0, 86_400_000).map(lambda ms: ms / 1000)


@settings(max_examples=150, deadline=None)
@given(shops(), instants, amounts)
def test_adding_open_seconds_is_undone_by_counting_them(shop: ShopHours, at: datetime, seconds: float) -> None:
    due = shop.add_open_seconds(at, seconds)
    assert due is not None          # every generated shop opens within the horizon
    assert due >= at
    assert shop.open_seconds(at, due) == pytest.approx(seconds, abs=1e-6)
    if seconds > 0:
        # The due time is inside open time: the moment before it was open.
        assert shop.is_open(due - timedelta(microseconds=1))


@settings(max_examples=150, deadline=None)
@given(shops(), instants, st.integers(0, 5 * 86_400), st.integers(0, 5 * 86_400))
def test_open_seconds_add_up_and_never_exceed_the_wall_clock(shop: ShopHours, at: datetime, first: int,
                                                             second: int) -> None:
    middle, end = at + timedelta(seconds=first), at + timedelta(seconds=first + second)
    whole = shop.open_seconds(at, end)
    assert whole == pytest.approx(shop.open_seconds(at, middle) + shop.open_seconds(middle, end), abs=1e-6)
    assert 0 <= whole <= first + second
    assert shop.open_seconds(end, at) == 0


@settings(max_examples=150, deadline=None)
@given(shops(), instants)
def test_open_now_is_an_opening_now_and_one_open_second(shop: ShopHours, at: datetime) -> None:
    opening = shop.next_opening(at)
    assert opening is not None and opening >= at
    assert (opening == at) is shop.is_open(at)
    assert shop.is_open(opening)
    assert shop.open_seconds(at, opening) == 0


@settings(max_examples=100, deadline=None)
@given(shops(), instants, amounts, amounts)
def test_due_times_move_forward_with_more_seconds(shop: ShopHours, at: datetime, a: float, b: float) -> None:
    assume(a != b)
    low, high = sorted((a, b))
    first, second = shop.add_open_seconds(at, low), shop.add_open_seconds(at, high)
    assert first is not None and second is not None and first < second


def test_a_shop_that_does_not_open_enough_within_the_horizon_has_no_due_time() -> None:
    shop = ShopHours(tz=SHANGHAI, shifts=(Shift("brief", 600, 601, frozenset({0})),), holidays=None)
    assert shop.add_open_seconds(utc(2026, 1, 1), 60 * 60) is None   # a minute a week: an hour takes 60 weeks
    assert shop.add_open_seconds(utc(2026, 1, 1), 60 * 50) is not None


def test_a_calendar_says_what_each_date_is() -> None:
    calendar = HolidayCalendar("XX", frozenset({date(2026, 5, 1)}), frozenset({date(2026, 5, 9)}),
                               date(2026, 1, 1), date(2026, 12, 31))
    assert calendar.kind(date(2026, 5, 1)) is DayKind.HOLIDAY
    assert calendar.kind(date(2026, 5, 9)) is DayKind.ADJUSTED_WORKDAY
    assert calendar.kind(date(2026, 5, 10)) is DayKind.ORDINARY
