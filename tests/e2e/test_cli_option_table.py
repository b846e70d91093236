"""docs/cli.md's option tables against the Typer app: every command has a table, every option (short and long
names, in ``-h`` order) and default is the real one, and the shared-options table names the right commands.

To regenerate a command's table after changing its options (then edit the meanings if they need more than the
help text)::

    python tests/e2e/test_cli_option_table.py predict
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer

from reclmis_cli.main import app

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


@dataclass(frozen=True)
class Row:
    short: tuple[str, ...]  # ("-o",) or ()
    long: tuple[str, ...]  # ("--json", "--out"), ("--keep-empty", "--no-..."), or ("SRC",) for an argument
    default: str  # as the table shows it: "" (none/required), "off"/"on" for flags, the value otherwise


def _click_app() -> Any:
    return typer.main.get_command(app)


def _default_cell(param: Any) -> str:
    if param.param_type_name == "argument":
        return ""
    value = param.default
    if getattr(param, "is_flag", False):
        return "" if value is None else ("on" if value else "off")
    if value is None or value == [] or value is Ellipsis or callable(value):
        return ""
    return str(value)


def cli_rows(command: Any) -> list[Row]:
    """The documented rows of one Click command: its visible parameters, in ``-h`` order."""
    rows = []
    for p in command.params:
        if getattr(p, "hidden", False):
            continue
        if p.param_type_name == "argument":
            rows.append(Row((), (p.name.upper(),), ""))
            continue
        names = [*p.opts, *p.secondary_opts]
        rows.append(Row(tuple(o for o in names if not o.startswith("--")),
                        tuple(o for o in names if o.startswith("--")), _default_cell(p)))
    return rows


def _cells(line: str) -> list[str]:
    # split on | not escaped as \|
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def _ticked(cell: str) -> tuple[str, ...]:
    return tuple(re.findall(r"`([^`]+)`", cell))


def _table_after(lines: list[str], start: int) -> list[list[str]]:
    """The rows (cells) of the first table at or after ``start``, header and separator left out."""
    i = start
    while i < len(lines) and not lines[i].startswith("|"):
        i += 1
    rows = []
    for line in lines[i + 2:]:
        if not line.startswith("|"):
            break
        rows.append(_cells(line))
    return rows


def doc_command_tables(text: str) -> dict[str, list[Row]]:
    """``### reclmis CMD`` sections of docs/cli.md -> their option rows."""
    lines = text.splitlines()
    tables: dict[str, list[Row]] = {}
    for i, line in enumerate(lines):
        m = re.fullmatch(r"### reclmis (\S+)", line.strip())
        if not m:
            continue
        rows = []
        for short, long, default, _meaning in _table_after(lines, i + 1):
            rows.append(Row(_ticked(short), _ticked(long), (_ticked(default) or (default,))[0]))
        tables[m.group(1)] = rows
    return tables


def _section_start(lines: list[str], title: str) -> int:
    return next(i for i, line in enumerate(lines) if line.strip() == title)


def render_table(command: Any) -> str:
    """A command's table as docs/cli.md writes it, the help text as the meaning."""
    out = ["| short | long | default | meaning |", "|---|---|---|---|"]
    for p, row in zip([p for p in command.params if not getattr(p, "hidden", False)], cli_rows(command)):
        short = " / ".join(f"`{s}`" for s in row.short)
        if p.param_type_name == "argument":
            long = f"`{row.long[0]}` (argument)"
        else:
            long = " / ".join(f"`{n}`" for n in row.long)
        default = f"`{row.default}`" if row.default not in ("", "on", "off") else row.default
        meaning = " ".join((getattr(p, "help", None) or "").split()).replace("|", "\\|")
        out.append(f"| {short} | {long} | {default} | {meaning} |")
    return "\n".join(out)


# -- tests ------------------------------------------------------------------------------------------------


def test_every_command_has_a_table_and_no_table_is_stale():
    commands = {name for name, c in _click_app().commands.items() if not c.hidden}
    assert set(doc_command_tables(DOC.read_text(encoding="utf-8"))) == commands


@pytest.mark.parametrize("name", sorted(_click_app().commands))
def test_option_table_matches_the_cli(name):
    command = _click_app().commands[name]
    documented = doc_command_tables(DOC.read_text(encoding="utf-8"))[name]
    expected = cli_rows(command)
    assert documented == expected, (
        f"docs/cli.md 'reclmis {name}' differs from the CLI; its table from the CLI:\n{render_table(command)}")


def test_global_options_table_matches_the_app():
    lines = DOC.read_text(encoding="utf-8").splitlines()
    rows = _table_after(lines, _section_start(lines, "## Global options"))
    documented = [(_ticked(short), _ticked(long)) for short, long, _meaning in rows]
    expected = [(r.short, r.long) for r in cli_rows(_click_app())] + [(("-h",), ("--help",))]
    assert documented == expected


def test_shared_options_table_names_the_commands_that_have_them():
    lines = DOC.read_text(encoding="utf-8").splitlines()
    rows = _table_after(lines, _section_start(lines, "## Options every command spells the same way"))
    commands = {name: c for name, c in _click_app().commands.items() if not c.hidden}
    for short, long, where, _meaning in rows:
        option = _ticked(long)[0].split()[0]  # "--config FILE.yaml" -> "--config"
        if option == "--help":
            continue  # every command, from the context settings (not a parameter)
        having = {name for name, c in commands.items() if any(option in (*p.opts, *p.secondary_opts)
                                                               for p in c.params if not getattr(p, "hidden", False))}
        listed = set(commands) if where == "all" else {w.strip() for w in where.split(",")}
        assert listed == having, f"{option}: docs say {sorted(listed)}, the CLI has it on {sorted(having)}"
        for name in having:  # the short name is the same everywhere the option exists
            opts = next(p for p in commands[name].params if option in p.opts).opts
            assert set(_ticked(short)) == {o for o in opts if not o.startswith("--")}, (option, name)


if __name__ == "__main__":
    names = sys.argv[1:] or sorted(_click_app().commands)
    for name in names:
        print(f"### reclmis {name}\n\n{render_table(_click_app().commands[name])}\n")
