"""The README's asyncio section (issue 16): it stands next to the threaded bot, and its example
is a complete asyncio program on AsyncKSSession that runs against the sandbox (every ```python
block of the README runs in test_readme.py; this checks the section's block is one of them and
that it says what it shows)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("aiohttp")

from tests.test_readme import FENCE, TEXT, section


def test_the_asyncio_section_follows_the_threaded_bot() -> None:
    titles = [line[3:] for line in TEXT.splitlines() if line.startswith("## ")]
    assert titles.index("Use in an asyncio bot") == titles.index("Use in a bot") + 1


def test_its_example_runs_and_renews_once_for_a_hundred_tasks(tmp_path: Path) -> None:
    (code,) = [m.group(2) for m in FENCE.finditer(section("Use in an asyncio bot"))
               if m.group(1) == "python"]  # fmt: skip
    assert "AsyncKSSession" in code and "asyncio.run(" in code
    script = tmp_path / "block.py"
    script.write_text(code, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KS_")}
    p = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    lines = p.stdout.splitlines()
    assert lines[1:] == ["100 2", "200"], p.stdout
    assert "demo-password" not in p.stdout + p.stderr
