"""The README and every page in docs/ show only `layerboot` commands and options that exist: each
`layerboot ...` in a code span or block names a command of `layerboot --help` (and a subcommand of
a group's `--help`), and each `--option` after it is in that command's `--help`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from flows.cli import app

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CODE = re.compile(r"```[^\n]*\n(.*?)```|`([^`\n]+)`", re.S)
# a command line: `layerboot` first on the line or in the span (prose inside code blocks does not count)
CALL = re.compile(r"^[ \t]*(?:\$[ \t]+)?layerboot((?:[ \t]+(?:\\\n)?[ \t]*[^\s`|;&#]+)*)", re.M)


def calls(text: str) -> list[list[str]]:
    """The words after each `layerboot` in the page's code, brackets of usage lines dropped."""
    out = []
    for block, span in CODE.findall(text):
        for m in CALL.finditer(block or span):
            words = [w.strip("[]") for w in m.group(1).replace("\\\n", " ").split()]
            out.append([w.split("=", 1)[0] for w in words if w.strip("[]")])
    return out


def command_and_options(words: list[str]) -> tuple[list[str], list[str]]:
    """(command names: `run`, or a group and its subcommand: `judge calibrate`; the --options given)."""
    names, command = [], typer.main.get_command(app)
    for w in (w for w in words if not w.startswith("-") and w != "..."):
        if not hasattr(command, "commands"):  # a group has subcommands; a command is found
            break
        names.append(w)
        command = command.commands.get(w)
        if command is None:
            break
    return names, [w for w in words if w.startswith("--")]


def problems(text: str) -> list[str]:
    """The commands and options `text` shows that `--help` does not."""
    runner, helps, missing = CliRunner(), {}, []

    def help_of(names: tuple[str, ...]) -> str | None:
        if names not in helps:
            result = runner.invoke(app, [*names, "--help"], terminal_width=200)
            helps[names] = result.output if result.exit_code == 0 else None
        return helps[names]

    for words in calls(text):
        names, options = command_and_options(words)
        listed = help_of(tuple(names[:-1])) or ""
        if names and not (help_of(tuple(names)) and re.search(rf"(?<![\w-]){re.escape(names[-1])}(?![\w-])", listed)):
            missing.append(f"layerboot {' '.join(names)}")
            continue
        missing += [f"layerboot {' '.join(names)} {o}".replace("  ", " ") for o in options
                    if not re.search(rf"{re.escape(o)}(?![\w-])", help_of(tuple(names)) or "")]
    return missing


def test_the_pages_show_commands():
    shown = [command_and_options(words)[0] for page in PAGES for words in calls(page.read_text())]
    assert len(shown) > 50 and {"run", "status", "fsck", "export"} <= {names[0] for names in shown if names}


def test_the_check_finds_what_is_not_there():
    text = "`layerboot run --rounds 2 --no-such-option`, `layerboot judge calibrate --json`\n```\nlayerboot frobnicate --x\n```"
    assert problems(text) == ["layerboot run --no-such-option", "layerboot frobnicate"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_command_a_page_shows_exists_in_help(page):
    assert not problems(page.read_text())
