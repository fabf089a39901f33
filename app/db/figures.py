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


# Values sorted within each slot of a dimension, and where each slot starts (slot i: ordered[starts[i]:starts[i + 1]]).
Grouped = tuple[np.ndarray, np.ndarray]


class _Dimension:
    """One dimension's grouping of the rows: slot 0 holds rows with no key (none counts for agents), slot i the i-th
    name; `_keyed` groups overall, per queue, per tier and per agent."""

    def __init__(self, name: str, codes: np.ndarray, keys: Sequence[str]) -> None:
        self.name = name
        self.slots = codes.astype(np.intp) + 1
        self.small = self.slots.astype(np.int16)  # sorts by radix
        self.size = 1 + len(keys)
        # Every row in slot 1: the overall figures, which need no grouping.
        self.whole = name == "overall"

    def sums(self, weights: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(self.slots, weights=weights, minlength=self.size)


def _dimensions(rows: np.ndarray, names: dict[str, list[str]]) -> list[_Dimension]:
    overall = _Dimension("overall", np.zeros(len(rows), dtype=np.int16), [""])
    return [overall, *(_Dimension(d, rows[d], names[d]) for d in DIMENSIONS)]


def _sorted_groups(values: np.ndarray, dimensions: Sequence[_Dimension]) -> list[Grouped]:
    """Per dimension, the present values sorted within each slot, and where each slot starts: one sort of the values,
    then a stable sort by slot (a radix sort of small integers); the overall dimension needs none."""
    present = ~np.isnan(values)
    kept = values[present]
    by_value = np.argsort(kept)
    ordered = kept[by_value]
    grouped = []
    for dimension in dimensions:
        if dimension.whole:
            grouped.append((ordered, np.array([0, 0, len(ordered)])))
            continue
        slots = dimension.small[present][by_value]
        by_slot = np.argsort(slots, kind="stable")
        grouped.append((ordered[by_slot], np.searchsorted(slots[by_slot], np.arange(dimension.size + 1))))
    return grouped


def _distinct(customers: np.ndarray, dimensions: Sequence[_Dimension], chosen: np.ndarray,
              by_customer: np.ndarray) -> list[Grouped]:
    """Per dimension, the distinct known customers of each slot among the `chosen` rows (count(DISTINCT) skips
    NULL), sorted within each slot, and where each slot starts: the customers sorted once (`by_customer`, the order
    of all rows), then stably by slot, and each first (slot, customer) kept."""
    keep = (chosen & (customers != NO_CUSTOMER))[by_customer]
    rows = by_customer[keep]  # the kept rows, by customer
    ordered = customers[rows]
    found = []
    for dimension in dimensions:
        if dimension.whole:
            first = np.ones(len(ordered), dtype=bool)
            first[1:] = ordered[1:] != ordered[:-1]
            found.append((ordered[first], np.array([0, 0, int(first.sum())])))
            continue
        slots = dimension.small[rows]
        by_slot = np.argsort(slots, kind="stable")
        slot, customer = slots[by_slot], ordered[by_slot]
        first = np.ones(len(slot), dtype=bool)
        first[1:] = (slot[1:] != slot[:-1]) | (customer[1:] != customer[:-1])
        found.append((customer[first], np.searchsorted(slot[first], np.arange(dimension.size + 1))))
    return found


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


def _durations(grouped: Grouped, slot: int, prefix: str, *, postgres: bool) -> dict[str, Any]:
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


EPISODE_SUMS = {"received": None, "replied": "replied", "breached": "breached", "auto_closed": "auto_closed",
                "answered": "first_response", "resolved": "resolution"}
ROUND_SUMS = {"present": None, "rounds": "round_response", "unanswered": "unanswered"}
EPISODE_MEASURES = ("first_response", "resolution")
ROUND_MEASURES = ("round_response",)


@dataclass(frozen=True, slots=True)
class Aggregate:
    """Rows of one kind aggregated per dimension (overall, queue, tier, agent) and slot, in a form two aggregates merge
    in exactly: each counted column's sums, each measure's values sorted per slot, and the distinct customers per slot
    (episodes: of every episode and of the replied ones). Slot 0 holds rows without a key; slot i the i-th name."""

    rounds: bool
    names: dict[str, list[str]]
    sums: list[dict[str, np.ndarray]]
    measures: dict[str, list[Grouped]]
    customers: dict[str, list[Grouped]]


def aggregate(parts: Sequence[Packed], *, rounds: bool = False) -> Aggregate:
    rows, names = _joined(parts, ROUND if rounds else EPISODE)
    dimensions = _dimensions(rows, names)
    sums = []
    for dimension in dimensions:
        counted = {}
        for name, column in (ROUND_SUMS if rounds else EPISODE_SUMS).items():
            if column is None:
                counted[name] = dimension.sums()
            elif rows.dtype[column].kind == "f":
                counted[name] = dimension.sums(~np.isnan(rows[column]))
            else:
                counted[name] = dimension.sums(rows[column].astype(np.float64))
        sums.append(counted)
    measures = {m: _sorted_groups(rows[m], dimensions) for m in (ROUND_MEASURES if rounds else EPISODE_MEASURES)}
    customers = {}
    if not rounds:
        by_customer = np.argsort(rows["customer_id"], kind="stable")
        customers = {"buyers": _distinct(rows["customer_id"], dimensions, np.ones(len(rows), dtype=bool), by_customer),
                     "buyers_replied": _distinct(rows["customer_id"], dimensions, rows["replied"] == 1, by_customer)}
    return Aggregate(rounds, names, sums, measures, customers)


def _slots(names: dict[str, list[str]]) -> list[int]:
    return [2, *(1 + len(names[d]) for d in DIMENSIONS)]


def _merged_groups(a: Grouped, b: Grouped, b_slots: np.ndarray, size: int, *, distinct: bool) -> Grouped:
    """One dimension's per-slot sorted values of both (b's slot i is slot b_slots[i] of the merge); `distinct`: a
    value in both slots of a slot counts once."""
    (a_values, a_starts), (b_values, b_starts) = a, b
    pieces, starts = [], [0]
    b_of = {int(u): i for i, u in enumerate(b_slots)}
    for slot in range(size):
        left = a_values[a_starts[slot]:a_starts[slot + 1]] if slot + 1 < len(a_starts) else a_values[:0]
        i = b_of.get(slot)
        right = b_values[b_starts[i]:b_starts[i + 1]] if i is not None else b_values[:0]
        if len(right):
            at = np.searchsorted(left, right)
            if distinct:
                found = at < len(left)
                found[found] = left[at[found]] == right[found]
                right, at = right[~found], at[~found]
            left = np.insert(left, at, right)
        pieces.append(left)
        starts.append(starts[-1] + len(left))
    return (np.concatenate(pieces) if pieces else a_values[:0]), np.array(starts)


def merge(a: Aggregate, b: Aggregate) -> Aggregate:
    """The aggregate of a's rows and b's together (rows are never in both): a's names first, then b's new ones."""
    names = {d: list(a.names[d]) for d in DIMENSIONS}
    b_slots = [np.array([0, 1])]
    for d in DIMENSIONS:
        index = {key: i for i, key in enumerate(names[d])}
        b_slots.append(np.array([0, *(1 + index.setdefault(key, len(index)) for key in b.names[d])]))
        names[d] = list(index)
    sizes = _slots(names)
    sums = []
    for k, size in enumerate(sizes):
        counted = {}
        for name, values in a.sums[k].items():
            total = np.zeros(size)
            total[:len(values)] += values
            total[b_slots[k]] += b.sums[k][name]
            counted[name] = total
        sums.append(counted)
    measures = {m: [_merged_groups(a.measures[m][k], b.measures[m][k], b_slots[k], size, distinct=False)
                    for k, size in enumerate(sizes)] for m in a.measures}
    customers = {c: [_merged_groups(a.customers[c][k], b.customers[c][k], b_slots[k], size, distinct=True)
                     for k, size in enumerate(sizes)] for c in a.customers}
    return Aggregate(a.rounds, names, sums, measures, customers)


def _keyed(names: dict[str, list[str]]) -> list[tuple[str, list[str | None]]]:
    return [("overall", [None, ""]), *((d, [None, *names[d]]) for d in DIMENSIONS)]


def _present(dimension: str, counts: np.ndarray) -> list[int]:
    return [slot for slot in range(len(counts)) if counts[slot] and not (slot == 0 and dimension == "agent")]


def levels(total: Aggregate, *, postgres: bool) -> list[Any]:
    """The aggregate's rows as the statements name them: `Levels` of episodes, `RoundLevels` of rounds."""
    found: list[Any] = []
    for k, (dimension, keys) in enumerate(_keyed(total.names)):
        sums = total.sums[k]
        if total.rounds:
            for slot in _present(dimension, sums["present"]):
                found.append(RoundLevels(dimension=dimension, key=keys[slot], rounds=int(sums["rounds"][slot]),
                                         unanswered=int(sums["unanswered"][slot]),
                                         **_durations(total.measures["round_response"][k], slot, "round_response",
                                                      postgres=postgres)))
            continue
        for slot in _present(dimension, sums["received"]):
            found.append(Levels(
                dimension=dimension, key=keys[slot],
                **{name: int(values[slot]) for name, values in sums.items()},
                **{name: int(grouped[k][1][slot + 1] - grouped[k][1][slot]) for name, grouped in total.customers.items()},
                **_durations(total.measures["first_response"][k], slot, "first_response", postgres=postgres),
                **_durations(total.measures["resolution"][k], slot, "resolution", postgres=postgres)))
    return found


def episode_levels(parts: Sequence[Packed], *, postgres: bool) -> list[Levels]:
    return levels(aggregate(parts), postgres=postgres)


def round_levels(parts: Sequence[Packed], *, postgres: bool) -> list[RoundLevels]:
    return levels(aggregate(parts, rounds=True), postgres=postgres)
