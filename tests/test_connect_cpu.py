"""The per-call shortcuts of the session calls' path give what the long way gives.

Reading an answer skips ``json.detect_encoding`` for a body that starts with ``{`` or ``[``
and a byte that is not NUL, and a call's body is written by a C encoder made once instead of
``json.dumps``: these tests hold both to the standard library's own results.
"""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from session_fsm.answers import CallAuth, _dumps
from session_fsm.core.calls import Identity
from session_fsm.models import Undecodable, decode_answer
from session_fsm.secret import Secret

_JSON_TEXT = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@given(_JSON_TEXT)
def test_a_body_is_written_as_json_dumps_writes_it(value: object) -> None:
    assert _dumps(value) == json.dumps(value)


def test_a_calls_body_is_the_json_dumps_of_its_revealed_fields() -> None:
    who = Identity("u", "ck", "127.0.0.1", "app", Secret("bearer-token"))
    fields: dict[str, str | Secret] = {
        "userid": "\u00e9l\u00e8ve \"q\" \\", "password": Secret("p\u00e4ss\n\u2028")
    }
    headers, body = CallAuth(who, None, fields).reveal()
    assert body == json.dumps(
        {"userid": "\u00e9l\u00e8ve \"q\" \\", "password": "p\u00e4ss\n\u2028"}
    ).encode()
    assert headers["Content-Type"] == "application/json"


def _long_way(raw: bytes) -> object:
    """What decode_answer gave before its shortcut: json.loads' own encoding detection."""
    try:
        return json.loads(raw.decode(json.detect_encoding(raw), "surrogatepass"))
    except (ValueError, RecursionError):
        return "undecodable"


@given(st.sampled_from([b"{", b"["]), st.binary(max_size=12))
def test_an_answer_starting_with_a_bracket_decodes_as_json_detects_it(
    first: bytes, rest: bytes
) -> None:
    raw = first + rest
    got = decode_answer(raw)
    expected = _long_way(raw)
    if isinstance(got, Undecodable):
        assert expected == "undecodable"
    else:
        assert repr(got) == repr(expected)  # (repr: a NaN in it equals itself)


@given(st.sampled_from(["utf-8", "utf-16-le", "utf-16-be", "utf-32-le", "utf-8-sig"]),
       _JSON_TEXT)  # fmt: skip
def test_answers_in_every_encoding_json_detects_still_decode(encoding: str, value: object) -> None:
    text = json.dumps({"Success": {"v": value}})
    got = decode_answer(text.encode(encoding))
    assert not isinstance(got, Undecodable)
    assert json.dumps(got) == json.dumps(json.loads(text))
