"""docs/sandbox.md is correct: its Python blocks run, and it documents every control-plane
operation (verb, path, body fields), every fault group, every setting and every CLI option."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from session_fsm.cli import _parser
from session_fsm.sandbox.config import Settings
from session_fsm.sandbox.plane import OPERATIONS
from session_fsm.sandbox.routes import GROUPS

DOC = Path(__file__).resolve().parent.parent / "docs" / "sandbox.md"
TEXT = DOC.read_text(encoding="utf-8")
PYTHON = [m.group(1) for m in re.finditer(r"^```python\n(.*?)^```$", TEXT, re.S | re.M)]


@pytest.mark.parametrize("code", PYTHON, ids=[f"block{i}" for i in range(len(PYTHON))])
def test_python_blocks_run(code: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KS_")}
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=60, check=False)  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]


def test_every_operation_group_setting_and_option_is_documented() -> None:
    assert len(PYTHON) >= 2
    for op in OPERATIONS:
        assert f"`{op.method} /_sandbox/{op.name}" in TEXT, (op.method, op.name)
        row = next(line for line in TEXT.splitlines()
                   if line.startswith(f"| `{op.method} /_sandbox/{op.name}"))  # fmt: skip
        for field in op.body:
            assert f"`{field}`" in row, (op.name, field)
    for group in GROUPS:
        assert f"`{group}`" in TEXT, group
    for setting in Settings.__dataclass_fields__:
        assert f"`{setting}`" in TEXT, setting
    sandbox_cli = _parser()._subparsers._group_actions[0].choices["sandbox"]  # type: ignore[union-attr]
    for action in sandbox_cli._actions:
        for flag in action.option_strings:
            if flag.startswith("--") and flag not in ("--help", "--debug"):
                assert f"`{flag}" in TEXT, flag


def test_readme_links_the_sandbox_doc() -> None:
    readme = (DOC.parent.parent / "README.md").read_text(encoding="utf-8")
    assert "(docs/sandbox.md)" in readme
