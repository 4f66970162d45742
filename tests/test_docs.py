"""The documentation is complete: the API reference names every public name, the README
documents the exception hierarchy, the licence matches pyproject, and there is a changelog.

(The reference site itself is built by ``.ci/run`` with ``mkdocs build --strict``; building it
here would need the ``docs`` extra, which the test install does not have.)
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import session_fsm
from session_fsm import errors

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "reference"
README = (ROOT / "README.md").read_text(encoding="utf-8")
DIRECTIVE = re.compile(r"^::: (session_fsm[\w.]*)\n((?:    .*\n|\n)*)", re.M)


def _documented() -> tuple[set[str], set[str]]:
    """(names documented one by one, modules documented whole) in docs/reference."""
    names: set[str] = set()
    modules: set[str] = set()
    for page in REFERENCE.glob("*.md"):
        for target, options in DIRECTIVE.findall(page.read_text(encoding="utf-8")):
            members = re.findall(r"^ {8}- (\w+)$", options, re.M)
            names.update(members)
            names.add(target.rsplit(".", 1)[-1])
            if not members:
                modules.add(target)
    return names, modules


def test_every_public_name_is_in_the_api_reference() -> None:
    names, modules = _documented()
    missing = []
    for name in session_fsm.__all__:
        if name.startswith("__"):
            continue
        obj = getattr(session_fsm, name)
        home = getattr(obj, "__module__", "")
        if name not in names and home not in modules:
            missing.append(name)
    assert not missing, f"public names missing from docs/reference: {missing}"


def test_every_reference_target_exists() -> None:
    for page in REFERENCE.glob("*.md"):
        for target, options in DIRECTIVE.findall(page.read_text(encoding="utf-8")):
            module, _, attr = target.rpartition(".")
            try:
                obj = importlib.import_module(target)
            except ImportError:
                obj = getattr(importlib.import_module(module), attr)
            for member in re.findall(r"^ {8}- (\w+)$", options, re.M):
                assert hasattr(obj, member), f"{page.name}: {target}.{member} does not exist"


def test_the_readme_documents_every_error_class() -> None:
    section = README[README.index("\n## Errors\n") :]
    section = section[: section.find("\n## ", 1)]
    classes = [
        name for name, obj in vars(errors).items()
        if isinstance(obj, type) and issubclass(obj, errors.KSError)
    ]  # fmt: skip
    classes.append("StoreError")
    missing = [c for c in classes if not re.search(rf"\b{c}\b", section)]
    assert not missing, f"error classes missing from the README's Errors section: {missing}"
    assert "`.response`" in section and "retried" in section


def test_licence_and_changelog() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert 'license = { text = "MIT" }' in pyproject
    licence = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert licence.startswith("MIT License") and "WITHOUT WARRANTY OF ANY KIND" in licence
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert f"## [{session_fsm.__version__}]" in changelog or "## [Unreleased]" in changelog
