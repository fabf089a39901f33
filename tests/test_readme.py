"""The README's configuration table covers every setting."""

import re
from pathlib import Path

from app.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def configuration_table() -> str:
    section = (ROOT / "README.md").read_text().split("\n## Configuration\n")[1].split("\n## ")[0]
    return "\n".join(line for line in section.splitlines() if line.startswith("| `TRIAGE_"))


def test_every_setting_is_documented() -> None:
    table = configuration_table()
    for name in Settings.model_fields:
        assert f"`TRIAGE_{name.upper()}`" in table, name


def test_every_variable_the_code_reads_is_in_the_table() -> None:
    # Test and CI variables too: whoever runs the suite needs them as much as whoever runs the service.
    files = [ROOT / "Makefile", *(path for folder in ("app", "tests", ".ci") for path in (ROOT / folder).rglob("*")
                                 if path.is_file() and "__pycache__" not in path.parts)]
    names = {name for path in files for name in re.findall(r"TRIAGE_[A-Z_]+", path.read_text(errors="ignore"))}
    assert {"TRIAGE_DATABASE_URL", "TRIAGE_TEST_POSTGRES_URL", "TRIAGE_TEST_REQUIRE_POSTGRES"} <= names
    table = configuration_table()
    assert sorted(name for name in names if f"`{name}`" not in table) == []


def test_quick_start_is_two_make_commands() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("## Quick start")[1].split("```sh")[1].split("```")[0]
    assert [line.split()[0:2] for line in block.strip().splitlines()] == [["make", "run"], ["make", "test"]]
