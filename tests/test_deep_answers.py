"""A deeply nested answer is refused before it is decoded, not by running the JSON decoder into
the interpreter's recursion limit: there, whatever else runs (a finalizer the garbage collector
calls, for one) fails for want of stack, in the application's code. A full test run showed it:
an object's finalizer, run by a collection inside the decoder's recursion, failed and pytest
reported it as an unraisable exception in ``test_strict_answers``."""

from __future__ import annotations

import json

import pytest

from session_fsm.models import MAX_DEPTH, Undecodable, decode_answer, too_deep


def nested(n: int) -> bytes:
    return b"[" * n + b"]" * n


@pytest.mark.parametrize("n", [MAX_DEPTH + 1, 5_000, 200_000])
def test_a_deep_answer_is_refused_without_recursing(
    stack_at_collections: list[str], n: int
) -> None:
    got = decode_answer(b'{"Success": %s}' % nested(n))
    assert got == Undecodable("is nested too deeply")
    assert stack_at_collections == []


def test_an_answer_as_deep_as_allowed_is_decoded() -> None:
    body = b'{"Success": %s}' % nested(MAX_DEPTH - 1)
    assert json.dumps(decode_answer(body)).encode().replace(b" ", b"") == body.replace(b" ", b"")


@pytest.mark.parametrize(
    "body",
    [
        b'{"message": "' + b"[{" * 5_000 + b'"}',  # brackets inside a string do not nest
        b'{"a": "\\"' + b"[" * 100 + b'"}',  # an escaped quote does not end the string
        b"[" + b"{}," * 10_000 + b"{}]",  # many objects side by side: one level
    ],
    ids=["in-a-string", "escaped-quote", "wide"],
)
def test_brackets_that_do_not_nest_are_not_counted(body: bytes) -> None:
    assert not too_deep(body)
    assert decode_answer(body) == json.loads(body)
