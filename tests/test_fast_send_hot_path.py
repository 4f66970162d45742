"""The sync hot path's per-call cuts (issue 15's GET target) keep what they replace: the route's
allow-list verdict is kept only for the WireConfig it was given under and never for a refusal;
the answer's headers are the ones requests' own adapter builds (repeated ones joined); the
session's template is the one of the snapshot's host, session token and identity. Against the
sandbox over loopback HTTP, plus a narrow check of ``build_response`` on a urllib3 answer."""

from __future__ import annotations

import dataclasses
import io
import time
from collections.abc import Callable

import pytest
import requests
import urllib3
from requests.adapters import HTTPAdapter

from session_fsm import KSSession, RetryPolicy, Secret, UnsafeRedirect, Wire, WireConfig, contract
from session_fsm.fast_response import build_response
from session_fsm.fast_send import RequestTemplate
from session_fsm.sandbox import Sandbox
from tests.loopback_listeners import listening

ORDERS = contract.ORDERS_REPORT[1]


def test_a_refusal_is_not_kept_and_stands_on_every_send() -> None:
    wire = Wire(WireConfig(retry=RetryPolicy(total=0)))
    with listening() as attacker:  # 127.0.0.2: loopback, but not an allowed host
        t = RequestTemplate(wire, f"http://127.0.0.2:{attacker.port}/apim", {"Accept": "x"},
                            {"sessionToken": Secret("tok")})  # fmt: skip
        for _ in range(3):
            with pytest.raises(UnsafeRedirect, match=r"127\.0\.0\.2"):
                t.send("GET", ORDERS)
        time.sleep(0.1)  # a connection, had one been made, is counted by now
        assert attacker.connections == 0
    wire.close()


def test_the_verdict_is_asked_again_under_another_wire_config(sb: Sandbox) -> None:
    wire = Wire(WireConfig(retry=RetryPolicy(total=0)))
    t = RequestTemplate(wire, sb.url, {"Accept": "application/json"}, {})
    assert t.send("GET", contract.SESSION_INIT[1]).status_code < 500  # loopback allowed
    assert t._route is not None and t._route.allowed is wire.config
    wire.config = dataclasses.replace(wire.config, allow_loopback=False)
    with pytest.raises(UnsafeRedirect, match="loopback"):
        t.send("GET", contract.SESSION_INIT[1])
    wire.close()


def _raw(headers: list[tuple[str, str]]) -> urllib3.HTTPResponse:
    return urllib3.HTTPResponse(
        body=io.BytesIO(b"{}"),
        headers=urllib3.HTTPHeaderDict(headers),
        status=200,
        reason="OK",
        preload_content=False,
    )


def test_answer_headers_are_the_ones_requests_builds() -> None:
    headers = [("Content-Type", "application/json; charset=utf-8"), ("X-Thing", "a"),
               ("x-thing", "b"), ("Retry-After", "3"), ("X-THING", "c")]  # fmt: skip
    prep = requests.Request("GET", "http://127.0.0.1:9/apim/x").prepare()
    adapter = HTTPAdapter()
    ours = build_response(prep, _raw(headers), b"{}", adapter, 0.001, requests.Session().cookies)  # type: ignore[arg-type]
    theirs = adapter.build_response(prep, _raw(headers))
    assert list(ours.headers.items()) == list(theirs.headers.items())
    assert ours.headers["x-thing"] == "a, b, c" and ours.encoding == theirs.encoding == "utf-8"


def test_the_session_keeps_one_template_per_generation(
    new_session: Callable[..., KSSession], sb: Sandbox
) -> None:
    s = new_session()
    s.connect()
    s.get(ORDERS)
    held = s._driver._template
    assert held is not None
    s.get(ORDERS)
    assert s._driver._template is held  # the same key: the same template
    sb.control.expire()
    assert s.get(ORDERS).status_code == 200 and s.generation == 2
    again = s._driver._template
    assert again is not None and again[1] is not held[1]
    assert again[0][1] is s.snapshot().session_token
