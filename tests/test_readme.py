"""The README's configuration table covers every setting."""

from pathlib import Path

from app.settings import Settings


def test_every_setting_is_documented() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for name in Settings.model_fields:
        assert f"`TRIAGE_{name.upper()}`" in readme, name


def test_quick_start_is_two_make_commands() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("## Quick start")[1].split("```sh")[1].split("```")[0]
    assert [line.split()[0:2] for line in block.strip().splitlines()] == [["make", "run"], ["make", "test"]]
