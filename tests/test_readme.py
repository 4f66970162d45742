"""README.md is correct: its Python blocks run, its diagram and settings match the code.

Every ```python block is a complete program: it runs in its own process, in a temp folder with
its own HOME and no ``KS_*`` variables, so the examples take their embedded-sandbox branch.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from session_fsm import Credentials, KSSession, RetryPolicy, SessionConfig
from session_fsm.cli import _COMMANDS as COMMANDS
from session_fsm.diagrams import render

README = Path(__file__).resolve().parent.parent / "README.md"
TEXT = README.read_text(encoding="utf-8")
QUICK_START = (
    "python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]' && .venv/bin/session-fsm demo\n"
    ".venv/bin/python -m pytest -q -p no:cacheprovider\n"
)
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.S | re.M)


def blocks(language: str) -> list[tuple[int, str]]:
    """(line number, code) of every fenced block in ``language``."""
    return [
        (TEXT.count("\n", 0, m.start()) + 1, m.group(2))
        for m in FENCE.finditer(TEXT)
        if m.group(1) == language
    ]


def section(title: str) -> str:
    """The text of the ``## title`` section, up to the next ``## ``."""
    start = TEXT.index(f"\n## {title}\n")
    end = TEXT.find("\n## ", start + 1)
    return TEXT[start : end if end != -1 else None]


PYTHON = blocks("python")


def test_starts_with_what_and_why_then_the_quick_start() -> None:
    head, _, _ = TEXT.partition("\n## ")
    assert head.startswith("# session_fsm\n")
    assert len(head.split()) > 40  # a few lines of what and why, not just a title
    assert TEXT.index("\n## Quick start\n") == TEXT.index("\n## ")


def test_quick_start_holds_exactly_the_two_lines() -> None:
    first = FENCE.search(section("Quick start"))
    assert first is not None and first.group(1) == "sh"
    assert first.group(2) == QUICK_START


def test_mentions_the_thorough_hypothesis_profile() -> None:
    assert "HYPOTHESIS_PROFILE=thorough .venv/bin/python -m pytest tests/test_properties.py" in TEXT


def test_state_diagram_is_the_output_of_session_fsm_diagram() -> None:
    found = FENCE.search(section("The state machine"))
    assert found is not None and found.group(1) == "mermaid"
    assert found.group(2) == render("mermaid").decode(), (
        "README's state diagram is stale: paste the output of `session-fsm diagram`"
    )


def test_no_placeholder_is_left() -> None:
    assert "<!-- " not in TEXT


def test_every_setting_is_in_the_tables() -> None:
    tables = section("Use in a bot")
    names = [f.name for f in dataclasses.fields(SessionConfig)]
    names += [f.name for f in dataclasses.fields(RetryPolicy)]
    names += [f.name for f in dataclasses.fields(Credentials)]
    own = inspect.signature(KSSession.__init__).parameters
    names += [n for n, p in own.items() if p.kind is p.KEYWORD_ONLY or n == "host"]
    assert {"wire", "store", "clock", "logger", "on_transition"} <= set(names)
    missing = [n for n in names if f"`{n}`" not in tables]
    assert not missing, f"settings missing from the README tables: {missing}"


def test_every_command_named_exists_and_every_command_is_named() -> None:
    named = set(re.findall(r"session-fsm (\w+)", TEXT))
    assert named == set(COMMANDS), (named - set(COMMANDS), set(COMMANDS) - named)


def test_there_are_python_blocks() -> None:
    assert len(PYTHON) >= 4


@pytest.mark.parametrize("code", [c for _, c in PYTHON], ids=[f"line-{n}" for n, _ in PYTHON])
def test_python_block_runs(code: str, tmp_path: Path) -> None:
    script = tmp_path / "block.py"
    script.write_text(code, encoding="utf-8")
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KS_")}
    env["HOME"] = str(home)
    p = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    for secret in ("demo-password", "demo-access-token", "hunter2"):
        assert secret not in p.stdout + p.stderr
    # An example leaves nothing behind in the user's home folder (no stale records, no locks).
    left = sorted(str(f.relative_to(home)) for f in home.rglob("*"))
    assert not left, f"the example left files in the home folder: {left}"
