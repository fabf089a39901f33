"""app/db/figures.py, the statistics' aggregates over rows in memory: the same definitions as the SQL's (tests/api/
test_rollups.py compares them with the trail's on both databases; these are the edge cases by hand)."""

import random

import numpy as np
import pytest

from app.db import figures

ROW = ("presale", "P2", "a1")


def episodes(*rows: tuple) -> figures.Packed:
    return figures.packed(list(rows), figures.EPISODE, figures.EPISODE_COLUMNS)


def levels(parts: list[figures.Packed], *, postgres: bool = True) -> dict[tuple[str, str | None], figures.Levels]:
    return {(row.dimension, row.key): row for row in figures.episode_levels(parts, postgres=postgres)}


@pytest.mark.parametrize(("values", "fraction", "postgres", "expected"), [
    ([1.0], 0.9, True, 1.0),                        # one value is every percentile
    ([1.0, 2.0], 0.5, True, 1.5),                   # halfway between the two
    ([1.0, 2.0, 4.0], 0.9, True, 2.0 + (0.9 * 2 - 1) * 2.0),  # position 1.8: lo + f * (hi - lo)
    ([1.0, 2.0, 4.0], 0.9, False, 2.0 * (1 - (2 * 0.9 - 1)) + 4.0 * (2 * 0.9 - 1)),  # SQLite's: lo * (1 - f) + hi * f
    ([1.0, 3.0, 5.0], 0.5, False, 3.0),             # an exact rank needs no interpolation
    ([], 0.5, True, None),                          # nothing answered: no percentile
])
def test_percentiles_interpolate_as_each_database(values: list[float], fraction: float, postgres: bool,
                                                  expected: float | None) -> None:
    assert figures._percentile(np.array(values), fraction, postgres=postgres) == expected


def test_a_mean_comes_from_the_exact_sum_of_milliseconds() -> None:
    # 0.1 + 0.2 + 0.3 in floats is 0.6000000000000001: the mean is 0.2 exactly, whatever the order.
    one = episodes((*ROW, 0.1, None, 1, 1, 0, 0), (*ROW, 0.2, None, 2, 1, 0, 0))
    two = episodes((*ROW, 0.3, None, 3, 1, 0, 0))
    assert levels([one, two])[("overall", "")].first_response_mean == 0.2
    assert levels([two, one])[("overall", "")] == levels([one, two])[("overall", "")]


def test_groups_counts_and_distinct_buyers_across_parts() -> None:
    day_one = episodes(("presale", "P2", "a1", 10.0, 100.0, 7, 1, 0, 0),
                       ("presale", "P1", None, None, 50.0, 8, 0, 1, 1))       # unanswered, auto-closed, no agent
    day_two = episodes(("aftersale", "P2", "a1", 20.0, None, 7, 1, 1, 0),      # buyer 7 again, answered late
                       ("presale", "P2", "a2", 30.0, None, None, 1, 0, 0))     # no customer: no buyer
    found = levels([day_one, day_two])
    overall = found[("overall", "")]
    assert (overall.received, overall.replied, overall.breached, overall.answered, overall.resolved,
            overall.auto_closed, overall.buyers, overall.buyers_replied) == (4, 3, 2, 3, 2, 1, 2, 1)
    assert found[("queue", "presale")].received == 3 and found[("queue", "aftersale")].buyers == 1
    assert found[("agent", "a1")].first_response_p50 == 15.0 and found[("agent", "a1")].buyers == 1
    assert ("agent", None) not in found                                         # nobody's episode is no agent's
    assert found[("tier", "P1")].first_response_mean is None


def test_rounds_are_counted_apart_from_those_still_waiting() -> None:
    rounds = figures.packed([("presale", "P2", "a1", 600.0, 1), ("presale", "P2", "a1", 12.0, 0),
                             ("presale", "P2", None, None, 0)], figures.ROUND, figures.ROUND_COLUMNS)
    found = {(r.dimension, r.key): r for r in figures.round_levels([rounds], postgres=True)}
    assert (found[("overall", "")].rounds, found[("overall", "")].unanswered) == (2, 1)
    assert found[("overall", "")].round_response_p50 == 306.0 and found[("agent", "a1")].rounds == 2


def test_nothing_packed_gives_no_rows() -> None:
    assert figures.episode_levels([episodes()], postgres=True) == []


def random_episodes(rng: random.Random, count: int, agents: list[str]) -> figures.Packed:
    rows = [(rng.choice(["presale", "aftersale", "complaints"]), rng.choice(["P1", "P2", "P4"]),
             rng.choice([*agents, None]), rng.choice([None, round(rng.random() * 500, 3), 5.0]),
             rng.choice([None, round(rng.random() * 9000, 3)]), rng.choice([None, *range(20)]),
             rng.randint(0, 1), rng.randint(0, 1), rng.randint(0, 1)) for _ in range(count)]
    return figures.packed(rows, figures.EPISODE, figures.EPISODE_COLUMNS)


def random_rounds(rng: random.Random, count: int, agents: list[str]) -> figures.Packed:
    rows = [(rng.choice(["presale", "aftersale"]), rng.choice(["P1", "P4"]), rng.choice([*agents, None]),
             rng.choice([None, rng.random() * 100, 3.0]), rng.randint(0, 1)) for _ in range(count)]
    return figures.packed(rows, figures.ROUND, figures.ROUND_COLUMNS)


@pytest.mark.parametrize("seed", range(60))
def test_a_merge_of_two_aggregates_equals_the_aggregate_of_all_rows(seed: int) -> None:
    """The statistics keep the rolled days aggregated and merge the other episodes in (app/db/stats.py, `_rolled`):
    the figures must be those of one aggregate of everything, whatever names each side has."""
    rng = random.Random(seed)
    agents = [[f"agent-{n}" for n in rng.sample(range(12), rng.randint(0, 4))] for _ in range(rng.randint(1, 6))]
    episodes = [random_episodes(rng, rng.randint(0, 25), names) for names in agents]
    rounds = [random_rounds(rng, rng.randint(0, 25), names) for names in agents]
    cut = rng.randint(0, len(agents))
    for postgres in (True, False):
        for parts, kind in ((episodes, False), (rounds, True)):
            whole = figures.levels(figures.aggregate(parts, rounds=kind), postgres=postgres)
            merged = figures.levels(figures.merge(figures.aggregate(parts[cut:], rounds=kind),
                                                  figures.aggregate(parts[:cut], rounds=kind)), postgres=postgres)
            assert sorted(map(repr, merged)) == sorted(map(repr, whole))
