"""The statistics' aggregates over rows held in memory: what app/db/stats.py computes in SQL (`_aggregates`,
`_round_aggregates`, `_grouped`), for the windows that read the daily rollup (app/db/rollups.py).

A rolled day is one row of packed columns: each episode's measures and each round's, with its queue, tier and agent
as codes into the day's names. A window concatenates its days' columns and the rows of its other days read from the
summaries, and aggregates them here: no per-episode work in the database, and the same figures to the last bit
(counts and sums are integers; means from the exact sum of milliseconds; percentiles interpolated as each database's
statement does it; distinct buyers exact).
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

NO_CUSTOMER = np.iinfo(np.int64).min
EPISODE = np.dtype([("first_response", "<f8"), ("resolution", "<f8"), ("customer_id", "<i8"), ("replied", "i1"),
                    ("breached", "i1"), ("auto_closed", "i1"), ("queue", "<i2"), ("tier", "<i2"), ("agent", "<i2")])
ROUND = np.dtype([("round_response", "<f8"), ("unanswered", "i1"), ("queue", "<i2"), ("tier", "<i2"),
                  ("agent", "<i2")])
DIMENSIONS = ("queue", "tier", "agent")
PERCENTILES = {"p50": 0.5, "p90": 0.9}


@dataclass(frozen=True, slots=True)
class Packed:
    """Rows of one kind with their dimension names: `names[dimension][code]` (code -1: none)."""

    rows: np.ndarray
    names: dict[str, list[str]]


def packed(rows: Sequence[Sequence[Any]], dtype: np.dtype, columns: Sequence[str]) -> Packed:
    """Rows of (queue, tier, agent_id, *columns), packed with their dimensions' names."""
    packed_rows = np.zeros(len(rows), dtype=dtype)
    names: dict[str, list[str]] = {d: [] for d in DIMENSIONS}
    if not rows:
        return Packed(packed_rows, names)
    values = list(zip(*rows))
    for dimension, column in zip(DIMENSIONS, values):
        index: dict[str, int] = {}
        packed_rows[dimension] = [-1 if v is None else index.setdefault(str(v), len(index)) for v in column]
        names[dimension] = list(index)
    for name, column in zip(columns, values[len(DIMENSIONS):]):
        if dtype[name].kind == "f":
            packed_rows[name] = np.array(column, dtype=np.float64)  # None is NaN
        elif name == "customer_id":
            packed_rows[name] = [NO_CUSTOMER if v is None else v for v in column]
        else:
            packed_rows[name] = [v or 0 for v in column]
    return Packed(packed_rows, names)


def unpack(data: bytes, names: dict[str, list[str]], dtype: np.dtype) -> Packed:
    return Packed(np.frombuffer(data, dtype=dtype), names)


EPISODE_COLUMNS = ("first_response", "resolution", "customer_id", "replied", "breached", "auto_closed")
ROUND_COLUMNS = ("round_response", "unanswered")


def _joined(parts: Sequence[Packed], dtype: np.dtype) -> tuple[np.ndarray, dict[str, list[str]]]:
    """One array of all parts, their codes renumbered into shared names: the parts are concatenated once, and each
    dimension's codes go through one table of every part's renumbering (a copy and a remap per part cost more)."""
    names: dict[str, list[str]] = {d: [] for d in DIMENSIONS}
    kept = [part for part in parts if len(part.rows)]
    if not kept:
        return np.empty(0, dtype=dtype), names
    rows = np.concatenate([part.rows for part in kept])
    lengths = np.array([len(part.rows) for part in kept])
    for dimension in DIMENSIONS:
        index: dict[str, int] = {}
        table: list[int] = []
        offsets = []
        for part in kept:
            offsets.append(len(table))
            table.extend(index.setdefault(key, len(index)) for key in part.names[dimension])
            table.append(-1)  # a part's code -1 reads the slot after its names
        names[dimension] = list(index)
        codes = rows[dimension].astype(np.intp)
        sizes = np.array([len(part.names[dimension]) for part in kept])
        codes[codes < 0] = np.repeat(sizes, lengths)[codes < 0]
        rows[dimension] = np.array(table, dtype=np.int16)[codes + np.repeat(np.array(offsets), lengths)]
    return rows, names


class _Dimension:
    """One dimension's grouping of the rows: slot 0 holds rows with no key (none counts for agents), slot i the i-th
    name; `_keyed` groups overall, per queue, per tier and per agent."""

    def __init__(self, name: str, codes: np.ndarray, keys: Sequence[str]) -> None:
        self.name = name
        self.slots = codes.astype(np.intp) + 1
        self.small = self.slots.astype(np.int16)  # sorts by radix
        self.keys: list[str | None] = [None, *keys]
        self.size = len(self.keys)
        # Every row in slot 1: the overall figures, which need no grouping.
        self.whole = name == "overall"

    def sums(self, weights: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(self.slots, weights=weights, minlength=self.size)

    def present(self, counts: np.ndarray) -> list[int]:
        return [slot for slot in range(self.size) if counts[slot] and not (slot == 0 and self.name == "agent")]


def _dimensions(rows: np.ndarray, names: dict[str, list[str]]) -> list[_Dimension]:
    overall = _Dimension("overall", np.zeros(len(rows), dtype=np.int16), [""])
    return [overall, *(_Dimension(d, rows[d], names[d]) for d in DIMENSIONS)]


def _sorted_groups(values: np.ndarray, dimensions: Sequence[_Dimension]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per dimension, the present values sorted within each slot, and where each slot starts: one sort of the values,
    then a stable sort by slot (a radix sort of small integers); the overall dimension needs none."""
    present = ~np.isnan(values)
    kept = values[present]
    ordered = np.sort(kept)
    by_value = None
    grouped = []
    for dimension in dimensions:
        if dimension.whole:
            grouped.append((ordered, np.array([0, 0, len(ordered)])))
            continue
        if by_value is None:
            by_value = np.argsort(kept)
        slots = dimension.small[present][by_value]
        by_slot = np.argsort(slots, kind="stable")
        grouped.append((ordered[by_slot], np.searchsorted(slots[by_slot], np.arange(dimension.size + 1))))
    return grouped


def _distinct(customers: np.ndarray, dimensions: Sequence[_Dimension], chosen: np.ndarray,
              by_customer: np.ndarray | None = None) -> list[np.ndarray]:
    """Per dimension, the distinct known customers of each slot among the `chosen` rows (count(DISTINCT) skips
    NULL): the customers sorted once (`by_customer`, the order of all rows, may be given), then stably by slot, and
    each change of (slot, customer) counted."""
    if by_customer is None:
        by_customer = np.argsort(customers, kind="stable")
    keep = (chosen & (customers != NO_CUSTOMER))[by_customer]
    rows = by_customer[keep]  # the kept rows, by customer
    ordered = customers[rows]
    counts = []
    for dimension in dimensions:
        if dimension.whole:
            changes = int(len(ordered) > 0) + int(np.count_nonzero(ordered[1:] != ordered[:-1]))
            counts.append(np.array([0, changes]))
            continue
        slots = dimension.small[rows]
        by_slot = np.argsort(slots, kind="stable")
        slot, customer = slots[by_slot], ordered[by_slot]
        first = np.ones(len(slot), dtype=bool)
        first[1:] = (slot[1:] != slot[:-1]) | (customer[1:] != customer[:-1])
        counts.append(np.bincount(slot[first], minlength=dimension.size))
    return counts


def _mean(values: np.ndarray) -> float | None:
    """As `_mean` in SQL: the exact sum of milliseconds over the count, divided by 1000."""
    if not len(values):
        return None
    return float(np.rint(values * 1000.0).sum()) / len(values) / 1000.0


def _percentile(ordered: np.ndarray, fraction: float, *, postgres: bool) -> float | None:
    """percentile_cont of sorted values: PostgreSQL's interpolation, or SQLite's statement's (`_sqlite_percentile`)."""
    n = len(ordered)
    if not n:
        return None
    position = fraction * (n - 1) if postgres else (n - 1) * fraction
    lower = int(position)
    weight = position - lower
    low = float(ordered[lower])
    if postgres:
        # PostgreSQL: first_row == second_row gives the value itself, else lo + pct * (hi - lo).
        return low if lower + 1 >= n or weight == 0 else low + weight * (float(ordered[lower + 1]) - low)
    high = low * (1 - weight)
    return high if lower + 1 >= n else high + float(ordered[lower + 1]) * weight


def _durations(grouped: tuple[np.ndarray, np.ndarray], slot: int, prefix: str, *, postgres: bool) -> dict[str, Any]:
    ordered, starts = grouped
    values = ordered[starts[slot]:starts[slot + 1]]
    return {f"{prefix}_mean": _mean(values),
            **{f"{prefix}_{name}": _percentile(values, fraction, postgres=postgres)
               for name, fraction in PERCENTILES.items()}}


@dataclass(frozen=True, slots=True)
class Levels:
    """The episodes' aggregates of one (dimension, key), as `_aggregates` and `_grouped` name them."""

    dimension: str
    key: str | None
    received: int
    replied: int
    breached: int
    answered: int
    first_response_mean: float | None
    first_response_p50: float | None
    first_response_p90: float | None
    resolved: int
    resolution_mean: float | None
    resolution_p50: float | None
    resolution_p90: float | None
    auto_closed: int
    buyers: int
    buyers_replied: int


@dataclass(frozen=True, slots=True)
class RoundLevels:
    """The rounds' aggregates of one (dimension, key), as `_round_aggregates` and `_grouped` name them."""

    dimension: str
    key: str | None
    rounds: int
    round_response_mean: float | None
    round_response_p50: float | None
    round_response_p90: float | None
    unanswered: int


def episode_levels(parts: Sequence[Packed], *, postgres: bool) -> list[Levels]:
    rows, names = _joined(parts, EPISODE)
    dimensions = _dimensions(rows, names)
    first_response, resolution = rows["first_response"], rows["resolution"]
    replied = rows["replied"].astype(np.float64)
    every = np.ones(len(rows), dtype=bool)
    by_customer = np.argsort(rows["customer_id"], kind="stable")
    buyers = _distinct(rows["customer_id"], dimensions, every, by_customer)
    buyers_replied = _distinct(rows["customer_id"], dimensions, replied == 1, by_customer)
    first_responses = _sorted_groups(first_response, dimensions)
    resolutions = _sorted_groups(resolution, dimensions)
    found = []
    for d, dimension in enumerate(dimensions):
        received = dimension.sums()
        sums = {"replied": dimension.sums(replied), "breached": dimension.sums(rows["breached"].astype(np.float64)),
                "auto_closed": dimension.sums(rows["auto_closed"].astype(np.float64)),
                "answered": dimension.sums(~np.isnan(first_response)), "resolved": dimension.sums(~np.isnan(resolution))}
        for slot in dimension.present(received):
            found.append(Levels(
                dimension=dimension.name, key=dimension.keys[slot], received=int(received[slot]),
                **{name: int(values[slot]) for name, values in sums.items()},
                buyers=int(buyers[d][slot]), buyers_replied=int(buyers_replied[d][slot]),
                **_durations(first_responses[d], slot, "first_response", postgres=postgres),
                **_durations(resolutions[d], slot, "resolution", postgres=postgres)))
    return found


def round_levels(parts: Sequence[Packed], *, postgres: bool) -> list[RoundLevels]:
    rows, names = _joined(parts, ROUND)
    dimensions = _dimensions(rows, names)
    response = rows["round_response"]
    responses = _sorted_groups(response, dimensions)
    found = []
    for d, dimension in enumerate(dimensions):
        present = dimension.sums()
        counted = dimension.sums(~np.isnan(response))
        unanswered = dimension.sums(rows["unanswered"].astype(np.float64))
        for slot in dimension.present(present):
            found.append(RoundLevels(dimension=dimension.name, key=dimension.keys[slot], rounds=int(counted[slot]),
                                     unanswered=int(unanswered[slot]),
                                     **_durations(responses[d], slot, "round_response", postgres=postgres)))
    return found
