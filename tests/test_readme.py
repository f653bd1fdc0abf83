"""The README's reference tables name what the code has: every ``nvcf-emulate`` flag, every
setting, every admin route and every module. (Its Python samples run in
``test_review_api.py::test_readme_python_sample_runs_as_written``.)"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from nvcf_emulator import EmulatorConfig
from nvcf_emulator.cli import build_parser
from nvcf_emulator.http import admin, pexec

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _table(header: str) -> str:
    """The Markdown table that starts with ``header``, up to the blank line after it."""
    start = README.index(header)
    return README[start : README.index("\n\n", start)]


def _first_cells(table: str) -> str:
    rows = table.splitlines()[2:]
    return "\n".join(row.split("|")[1] for row in rows)


def test_every_cli_flag_is_in_the_flags_table_and_the_readme_names_no_other() -> None:
    flags = {
        option
        for action in build_parser()._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }
    in_table = set(re.findall(r"--[a-z][a-z0-9-]*", _first_cells(_table("| flag | default |"))))
    named = set(re.findall(r"`(--[a-z][a-z0-9-]*)", README))
    assert flags - in_table == set(), "flags missing from the README's flags table"
    assert named - flags == set(), "the README names flags nvcf-emulate does not have"


def test_every_setting_is_in_the_settings_table_and_it_names_no_other() -> None:
    fields = {f.name for f in dataclasses.fields(EmulatorConfig)}
    table = _first_cells(_table("| setting | default | meaning |"))
    in_table = set(re.findall(r"`([a-z0-9_]+)`", table))
    assert fields - in_table == set(), "settings missing from the README's settings table"
    assert in_table - fields == set(), "the README's settings table names no such setting"


def test_the_admin_api_table_lists_the_admin_routes() -> None:
    routes = {
        f"{method} {path}"
        for path, methods, _ in [*admin.ROUTES, *pexec.ROUTES]
        if path.startswith("/_emulator/") and path != "/_emulator/ui"
        for method in methods
    }
    table = _first_cells(_table("| call | what it does |"))
    listed = set()
    for cell in table.splitlines():
        methods = re.findall(r"\b(GET|POST|PUT|DELETE)\b", cell)
        path = re.search(r"(/_emulator/[^` ]*)", cell)
        assert path, cell
        listed |= {f"{m} {path.group(1)}" for m in methods}
    assert routes == listed


@pytest.mark.parametrize(
    "module",
    sorted(
        p.relative_to(ROOT / "nvcf_emulator").parts[0]
        for p in (ROOT / "nvcf_emulator").iterdir()
        if (p.suffix == ".py" and p.name != "__init__.py")
        or (p.is_dir() and (p / "__init__.py").exists())
    ),
)
def test_the_layout_section_names_every_module(module: str) -> None:
    start = README.index("## Layout")
    layout = README[start : README.index("## ", start + 3)]
    name = module if module.endswith(".py") else f"{module}/"
    assert re.search(rf"(^|[\s,]){re.escape(name)}", layout), f"{name} is not in ## Layout"
