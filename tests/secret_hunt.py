"""Tools to hunt for secrets in what an exception makes reachable, and in its renderings.

:func:`reachable_strings` walks the object graph of an exception the way a debugger, a pickler
or a locals-showing traceback renderer could: its attributes (``__dict__`` and slots), ``args``,
the ``__cause__``/``__context__`` chain, the ``__traceback__`` frames' ``f_locals``, recursively
into containers and objects. :class:`~session_fsm.secret.Secret` is a leaf: it is the one type
made to travel masked (its repr is a fingerprint). :func:`renderings` renders an exception with
the renderers that show frame locals: the stdlib's ``TracebackException(capture_locals=True)``,
structlog's ``dict_tracebacks`` and its ``ExceptionDictTransformer(show_locals=True)``, and
rich's ``Traceback(show_locals=True)`` when rich is installed.
"""

from __future__ import annotations

import base64
import json
import pickle
import re
import traceback
import types
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import structlog

from session_fsm.secret import Secret

TESTS_DIR = str(Path(__file__).resolve().parent)
#: Objects walked per exception at most (a session reaches its pools and stores: a few
#: thousand objects; this bound only stops a runaway walk, and is asserted not to be hit).
MAX_NODES = 200_000
_SKIP_TYPES = (type, types.ModuleType, types.CodeType, types.BuiltinFunctionType)
#: Packages whose objects the walk enters (attributes, closures): the library and the HTTP
#: stack under it. Not entered: logging and structlog (their stream leads to the test runner's
#: capture, and from there to the whole test session), sockets, locks, the tests' own objects.
ENTERED = frozenset({"session_fsm", "requests", "urllib3", "transitions", "http", "email"})


def _entered(obj: object) -> bool:
    module = getattr(type(obj), "__module__", "") or ""
    return module.split(".")[0] in ENTERED


def encodings(secret: str) -> set[str]:
    """``secret`` and its obvious encodings: base64 (standard and URL-safe, with and without
    padding), URL-encoding (quote, quote_plus), hex (lower and upper case)."""
    raw = secret.encode("utf-8", "surrogatepass")
    forms = {secret, quote(secret, safe=""), quote_plus(secret), raw.hex(), raw.hex().upper()}
    for b64 in (base64.b64encode(raw), base64.urlsafe_b64encode(raw)):
        forms.add(b64.decode())
        forms.add(b64.decode().rstrip("="))
    return forms


def reachable_strings(root: object) -> Iterator[tuple[str, str]]:
    """Yield (path, text) for every str/bytes reachable from ``root`` (bytes as latin-1).

    Frames of the tests themselves (the application's code) are not entered; frames of the
    library and of requests/urllib3/transitions are.
    """
    seen: set[int] = set()
    queue: deque[tuple[str, object]] = deque([("exc", root)])
    nodes = 0
    while queue:
        path, obj = queue.popleft()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        nodes += 1
        assert nodes < MAX_NODES, "the walk did not end: raise MAX_NODES or bound the graph"
        if isinstance(obj, str):
            yield path, obj
            continue
        if isinstance(obj, (bytes, bytearray, memoryview)):
            yield path, bytes(obj).decode("latin-1")
            continue
        if obj is None or isinstance(obj, (int, float, complex, Secret, *_SKIP_TYPES)):
            continue
        children: list[tuple[str, object]] = []
        if isinstance(obj, BaseException):
            children += [(".args", obj.args), (".__cause__", obj.__cause__)]
            children += [(".__context__", obj.__context__), (".__traceback__", obj.__traceback__)]
            children += [(".__notes__", getattr(obj, "__notes__", None))]
        if isinstance(obj, types.TracebackType):
            children += [(" ", obj.tb_frame), (".tb_next", obj.tb_next)]
        elif isinstance(obj, types.FrameType):
            if obj.f_code.co_filename.startswith(TESTS_DIR):
                continue
            children += [(f"<{obj.f_code.co_name}>.{k}", v) for k, v in obj.f_locals.items()]
        elif isinstance(obj, dict):
            children += [(f"[{k!r}]", v) for k, v in obj.items()]
            children += [("<key>", k) for k in obj]
        elif isinstance(obj, (list, tuple, set, frozenset, deque)):
            children += [(f"[{i}]", v) for i, v in enumerate(obj)]
        elif isinstance(obj, types.FunctionType):
            if (obj.__module__ or "").split(".")[0] not in ENTERED:
                continue
            cells = obj.__closure__ or ()
            children += [(f".<cell {i}>", c.cell_contents) for i, c in enumerate(cells) if _full(c)]
            children += [(".__defaults__", obj.__defaults__), (".__self__", None)]
        elif isinstance(obj, types.MethodType):
            children += [(".__self__", obj.__self__), (".__func__", obj.__func__)]
        elif not isinstance(obj, BaseException) and not _entered(obj):
            continue
        elif hasattr(obj, "__dict__") and isinstance(vars(obj), dict):
            children += [(f".{k}", v) for k, v in vars(obj).items()]
        if isinstance(obj, BaseException) and hasattr(obj, "__dict__"):
            children += [(f".{k}", v) for k, v in vars(obj).items()]
        if not isinstance(obj, (types.FrameType, types.TracebackType)):
            for cls in type(obj).__mro__:
                for name in getattr(cls, "__slots__", ()):
                    if isinstance(name, str) and hasattr(obj, name) and name != "__dict__":
                        children.append((f".{name}", getattr(obj, name)))
        for step, child in children:
            if child is not None and id(child) not in seen:
                queue.append((path + step, child))


def _full(cell: Any) -> bool:
    try:
        _ = cell.cell_contents
    except ValueError:
        return False
    return True


def renderings(exc: BaseException) -> dict[str, str]:
    """The exception rendered by each locals-showing renderer, plus str/repr and its pickle.

    The test's own frames (where the error was caught; pytest's assertion rewriting keeps the
    asserted expressions, secrets included, in their locals) are cut off the traceback first.
    """
    whole = exc.__traceback__
    tb = whole
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(TESTS_DIR):
        tb = tb.tb_next
    exc.with_traceback(tb)
    try:
        return _renderings(exc)
    finally:
        exc.with_traceback(whole)


def _renderings(exc: BaseException) -> dict[str, str]:
    out = {
        "str": f"{exc}\n{exc!r}\n{exc.args!r}",
        "stdlib capture_locals": "".join(
            traceback.TracebackException.from_exception(exc, capture_locals=True).format()
        ),
        "structlog dict_tracebacks": json.dumps(
            structlog.processors.dict_tracebacks(None, "error", {"event": "e", "exc_info": exc}),
            default=repr,
        ),
        "structlog ExceptionDictTransformer(show_locals, no truncation)": json.dumps(
            structlog.tracebacks.ExceptionDictTransformer(
                show_locals=True, locals_max_string=10**7, locals_max_length=10**7
            )((type(exc), exc, exc.__traceback__)),
            default=repr,
        ),
    }
    try:
        out["pickle"] = pickle.dumps(exc).decode("latin-1")
    except Exception as failed:  # an error holding a Secret refuses to pickle: that is a finding
        out["pickle"] = f"<not picklable: {type(failed).__name__}>"
    rich = rich_rendering(exc)
    if rich is not None:
        out["rich show_locals"] = rich
    return out


def rich_rendering(exc: BaseException) -> str | None:
    """What rich's ``Traceback(show_locals=True)`` shows of the frames' locals, without
    truncation, or None without rich. (rich's own extraction and pretty-printing of the locals,
    as its locals panel renders them; the source panels are left out: highlighting each file's
    code costs seconds per error and shows no value.)"""
    try:
        from rich.traceback import Traceback
    except ImportError:
        return None
    trace = Traceback.extract(
        type(exc),
        exc,
        exc.__traceback__,
        show_locals=True,
        locals_max_length=10**6,
        locals_max_string=10**7,
    )
    lines = []
    for stack in trace.stacks:
        lines.append(f"{stack.exc_type}: {stack.exc_value}")
        for frame in stack.frames:
            lines.append(f"  {frame.filename}:{frame.lineno} in {frame.name}")
            for name, node in (frame.locals or {}).items():
                lines.append(f"    {name} = {node.render(max_width=10**6)}")
    return "\n".join(lines)


def hunt(exc: BaseException, secrets: list[str]) -> list[str]:
    """Every place ``exc`` shows one of ``secrets`` (in any encoding): [] when clean."""
    needles = {form: s for s in secrets if s for form in encodings(s)}
    pattern = re.compile("|".join(map(re.escape, sorted(needles, key=len, reverse=True))))
    hits = []
    places = [(f"graph {p}", t) for p, t in reachable_strings(exc)]
    places += list(renderings(exc).items())
    for where, text in places:
        for m in pattern.finditer(text):
            hits.append(f"{where}: secret #{secrets.index(needles[m.group()])}")
    return hits
