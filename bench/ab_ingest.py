"""The same-run A/B of webhook ingestion: this tree against an earlier revision, alternating, on one machine.

The issues' bars compare `bench/ingest.py`'s service figures with those of a revision (0ee7373 by default) measured
in the same run: this machine's speed drifts by 10-20 % within minutes, so only runs taken side by side compare.
The revision is checked out once as a git worktree under .bench/ with its own virtualenv (`make install`: the
first run takes a few minutes), and this tree's bench/ingest.py, common.py and replay.lua are copied into it, so
both sides run the same benchmark. Each round runs both, the revision first in odd rounds and this tree first in
even ones, each run after a checkpoint on PostgreSQL (the service alone, batch 1 and 20); the table gives each
round's messages/s, the ratio, and the CPU each message cost the service process and PostgreSQL's backends; then
the median ratio of the rounds. Needs wrk, and PostgreSQL for that backend (as bench/ingest.py).

    .venv/bin/python bench/ab_ingest.py [--against 0ee7373] [--rounds 3] [--seconds 10] [--backends postgres sqlite]
                                        [--rules-only]
"""

import argparse
import asyncio
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import asyncpg
from common import DEFAULT_POSTGRES, ROOT  # type: ignore[import-not-found]

from app.db.listen import asyncpg_dsn

COPIED = ("bench/ingest.py", "bench/common.py", "bench/replay.lua")


def checkout(revision: str) -> Path:
    """The revision's worktree with its virtualenv installed, made on first use; this tree's benchmark copied in."""
    commit = subprocess.run(["git", "rev-parse", "--short", f"{revision}^{{commit}}"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout.strip()
    tree = ROOT / ".bench" / f"ab-{commit}"
    if not (tree / ".venv" / ".installed").exists():
        if not tree.exists():
            subprocess.run(["git", "worktree", "add", "--detach", str(tree), commit], cwd=ROOT, check=True)
        subprocess.run(["make", "install", f"PYTHON={sys.executable}"], cwd=tree, check=True)
    for name in COPIED:
        shutil.copyfile(ROOT / name, tree / name)
    return tree


async def _checkpoint() -> None:
    connection = await asyncpg.connect(asyncpg_dsn(os.environ.get("TRIAGE_TEST_POSTGRES_URL", DEFAULT_POSTGRES)))
    try:
        await connection.execute("CHECKPOINT")
    finally:
        await connection.close()


def run(tree: Path, backend: str, seconds: int, *, rules_only: bool = False) -> dict[int, dict[str, float]]:
    """One service-only run of bench/ingest.py in `tree`: its figures by batch size (with `rules_only`, the bench
    shop triages with the shipped rules alone).

    On PostgreSQL each run starts after a checkpoint: a run writes a few hundred megabytes of WAL, and the next run
    otherwise meets the checkpoint that follows, always the same side's if the order never changed."""
    if backend == "postgres":
        asyncio.run(_checkpoint())
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "figures.json"
        subprocess.run([str(tree / ".venv" / "bin" / "python"), "bench/ingest.py", "--service-only", "--backends",
                        backend, "--seconds", str(seconds), "--json", str(out), *(["--rules-only"] if rules_only else [])],
                       cwd=tree, check=True, stdout=subprocess.DEVNULL)
        return {f["batch"]: f for f in json.loads(out.read_text())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", default="0ee7373", help="the revision to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--backends", nargs="+", default=["postgres", "sqlite"])
    parser.add_argument("--rules-only", action="store_true",
                        help="this tree's bench shop on its rules alone (`model: none`): what the rest of the tree costs "
                             "beside the learned model (docs/design.md, \"the model's own share\")")
    args = parser.parse_args()
    before = checkout(args.against)
    print(f"this tree{' on its rules alone' if args.rules_only else ''} against {args.against}, service only, "
          f"{args.seconds} s runs alternating; messages/s, and CPU per message in µs (the service process / "
          "PostgreSQL's backends)")
    print(f"{'database':9} {'round':>5} {'batch':>5} {'this tree':>10} {args.against:>10} {'ratio':>6} "
          f"{'cpu this':>13} {'cpu before':>13}")
    ratios: dict[tuple[str, int], list[float]] = {}
    cpu_ratios: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for backend in args.backends:
        for round_ in range(1, args.rounds + 1):
            # Which side goes first alternates: position alone moves a run (bench/queues.py found up to 10 %).
            if round_ % 2:
                old = run(before, backend, args.seconds)
                new = run(ROOT, backend, args.seconds, rules_only=args.rules_only)
            else:
                new = run(ROOT, backend, args.seconds, rules_only=args.rules_only)
                old = run(before, backend, args.seconds)
            for batch in sorted(new):
                a, b = new[batch], old[batch]

                def cpu(f: dict[str, float]) -> str:
                    return f"{f['cpu_us']:.0f}" + ("" if backend == "sqlite" else f" / {f['db_us']:.0f}")
                print(f"{backend:9} {round_:5} {batch:5} {a['msg_s']:10.0f} {b['msg_s']:10.0f} "
                      f"{a['msg_s'] / b['msg_s']:6.2f} {cpu(a):>13} {cpu(b):>13}", flush=True)
                ratios.setdefault((backend, batch), []).append(a["msg_s"] / b["msg_s"])
                cpu_ratios.setdefault((backend, batch), []).append(
                    (b["cpu_us"] / a["cpu_us"], _cpu_total(b) / _cpu_total(a)))
    # A round the machine disturbed moves one ratio a long way; the median of the rounds is the figure to quote.
    for (backend, batch), values in ratios.items():
        print(f"{backend}, batch {batch}: median ratio {statistics.median(values):.2f} over {len(values)} rounds "
              f"({', '.join(f'{v:.2f}' for v in values)}); CPU a message, {args.against}'s over this tree's, median: "
              f"the service {statistics.median(c[0] for c in cpu_ratios[backend, batch]):.2f}"
              + ("" if backend == "sqlite" else
                 f", with PostgreSQL's {statistics.median(c[1] for c in cpu_ratios[backend, batch]):.2f}"))
    print("(The CPU a message moves less between rounds than the rates: it says which side's work grew, not the "
          "throughput; docs/design.md, \"What each side's work is made of\".)")


def _cpu_total(figures: dict[str, float]) -> float:
    """The CPU a message cost the server and, on PostgreSQL, the database's backends (NaN on SQLite: in-process)."""
    database = figures["db_us"]
    return figures["cpu_us"] + (0.0 if math.isnan(database) else database)


if __name__ == "__main__":
    main()
