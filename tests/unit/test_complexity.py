"""No function or method of app/ is as branchy as radon's rank D (cyclomatic complexity 21 or more): the house's
limit (issue 14), kept by the suite rather than by whoever remembers to run `radon cc -n D app`."""

from pathlib import Path

from radon.complexity import cc_rank, cc_visit

APP = Path(__file__).resolve().parents[2] / "app"


def test_no_block_of_app_ranks_d_or_worse() -> None:
    blocks = [(path.relative_to(APP.parent), block) for path in sorted(APP.rglob("*.py"))
              for block in cc_visit(path.read_text(encoding="utf-8"))]
    assert len(blocks) > 500  # the whole package was read
    too_branchy = [f"{path}:{block.lineno} {block.fullname} {cc_rank(block.complexity)} ({block.complexity})"
                   for path, block in blocks if cc_rank(block.complexity) >= "D"]
    assert not too_branchy, "\n".join(too_branchy)
