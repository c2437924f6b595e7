"""Docs stay true: every command has help, a commands.md section, and every flag is documented there."""

from __future__ import annotations

import re

import typer
from helpers import ROOT

from rectool.cli import app


def _commands():
    """(path, command) for every leaf command of the app, e.g. ("tree init", cmd)."""
    root = typer.main.get_command(app)
    out = []

    def walk(group, prefix):
        for name, cmd in group.commands.items():
            path = f"{prefix} {name}".strip()
            if hasattr(cmd, "commands"):
                walk(cmd, path)
            else:
                out.append((path, cmd))

    walk(root, "")
    return out


def _sections():
    text = (ROOT / "commands.md").read_text()
    parts = re.split(r"^## `rectool ([^`]+)`", text, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


def test_every_command_has_help(cli):
    for path, cmd in _commands():
        assert (cmd.help or "").strip(), f"{path} has no help text"
        res = cli(*path.split(), "--help")
        assert "Usage" in res.stdout


def test_every_command_and_flag_is_in_commands_md():
    sections = _sections()
    for path, cmd in _commands():
        assert path in sections, f"commands.md has no section '## `rectool {path}`'"
        body = sections[path]
        for param in cmd.params:
            for opt in getattr(param, "opts", []):
                if opt.startswith("--") and opt != "--help":
                    assert opt in body, f"commands.md section for {path} does not mention {opt}"
        for heading in ("Inputs", "Outputs", "Example"):
            assert f"**{heading}**" in body, f"commands.md section for {path} lacks **{heading}**"


def test_commands_md_lists_no_ghost_commands():
    known = {path for path, _ in _commands()}
    ghosts = set(_sections()) - known
    assert not ghosts, f"commands.md documents commands that do not exist: {ghosts}"


def test_version_and_root_help(cli):
    from rectool import __version__

    assert cli("--version").stdout.strip() == f"rectool {__version__}"
    res = cli("--help")
    for path, _ in _commands():
        assert path.split()[0] in res.stdout
