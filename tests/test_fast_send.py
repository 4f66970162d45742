"""Issue 15 (performance): the fast send keeps every guarantee of ``Wire.send``.

:class:`~session_fsm.fast_send.RequestTemplate` sends straight into the Wire's guarded pool.
Against the sandbox over loopback, its answers equal ``Wire.send``'s (status, headers, body,
URL, the request's headers and body); the allow-list refuses before any byte leaves; the
deadline ends a dripping answer; a GET is retried on 503 and a POST is not; a transport
failure raises the same typed error with no token reachable from it; a forked child sends on
a pool of its own. Proxies, TLS and cookies: ``test_fast_send_transport``.
"""

from __future__ import annotations

import datetime
import multiprocessing
import os
import pickle
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from requests.cookies import RequestsCookieJar

from session_fsm import (
    KSSession,
    NetworkError,
    RequestTimeout,
    RetryPolicy,
    Secret,
    UnsafeRedirect,
    Wire,
    WireConfig,
    contract,
)
from session_fsm.fast_send import RequestTemplate, send_prepared
from session_fsm.sandbox import Account, Sandbox, SandboxConfig, run_sandbox
from session_fsm.sandbox.config import DEMO_ACCOUNT
from session_fsm.transport import GuardedAdapter
from session_fsm.wire import Identity
from tests.conftest import FAST_RETRY, SLEEPS, make_credentials
from tests.loopback_listeners import dripping, listening
from tests.secret_hunt import hunt

ORDERS = contract.ORDERS_REPORT[1]
ORDER = contract.ORDER_NORMAL[1]
BODY = {"instrumentToken": 11536, "transactionType": "BUY", "quantity": 1, "price": 0}
BEARER = "fast-bearer-0123456789abcdef"


@pytest.fixture
def session(new_session: Callable[..., KSSession]) -> KSSession:
    s = new_session()
    s.connect()
    return s


def template_of(s: KSSession) -> RequestTemplate:
    snap = s.snapshot()
    assert snap.session_token is not None
    return RequestTemplate.trading(s.wire, snap.host, s.identity(), snap.session_token)


def through_wire(s: KSSession, method: str, path: str, **kwargs: object) -> requests.Response:
    """Today's path below the session: ``Wire.trading_request`` (``Wire.send``)."""
    snap = s.snapshot()
    assert snap.session_token is not None
    return s.wire.trading_request(
        method, snap.host + path, s.identity(), snap.session_token, **kwargs
    )


def same_answer(fast: requests.Response, slow: requests.Response) -> None:
    assert type(fast) is requests.Response and fast.status_code == slow.status_code
    assert fast.url == slow.url and fast.reason == slow.reason
    assert fast.encoding == slow.encoding
    drop_date = {k: v for k, v in fast.headers.items() if k != "Date"}
    assert drop_date == {k: v for k, v in slow.headers.items() if k != "Date"}
    assert isinstance(fast.request, requests.PreparedRequest)
    assert fast.request.method == slow.request.method and fast.request.url == slow.request.url
    assert dict(fast.request.headers) == dict(slow.request.headers)
    assert fast.request.body == slow.request.body
    assert fast.connection is slow.connection  # the Wire's own GuardedAdapter
    assert isinstance(fast.connection, GuardedAdapter)
    assert isinstance(fast.elapsed, datetime.timedelta) and fast.elapsed.total_seconds() > 0
    assert isinstance(fast.cookies, RequestsCookieJar) and len(fast.cookies) == 0
    assert fast.history == [] and fast.next is None


def test_a_get_equals_wire_send(session: KSSession) -> None:
    fast = template_of(session).send("GET", ORDERS)
    slow = through_wire(session, "GET", ORDERS)
    same_answer(fast, slow)
    assert fast.content == slow.content and fast.json() == slow.json() == {"Success": []}
    assert fast.request.headers["sessionToken"] == slow.request.headers["sessionToken"]
    # the headers in the order session.get sends them today
    assert list(fast.request.headers) == list(session.get(ORDERS).request.headers)
    copy = pickle.loads(pickle.dumps(fast))  # as requests pickles its own answers
    assert copy.json() == fast.json() and copy.status_code == 200 and copy.url == fast.url
    assert b"".join(fast.iter_content(4)) == fast.content == slow.content
    fast.close()  # the connection went back to the pool already: closing again is harmless


def test_a_post_with_a_json_body_equals_wire_send(session: KSSession) -> None:
    fast = template_of(session).send("POST", ORDER, json=BODY)
    slow = through_wire(session, "POST", ORDER, json=BODY)
    same_answer(fast, slow)
    assert fast.status_code == 200 and fast.request.headers["Content-Type"] == "application/json"
    assert set(fast.json()["Success"]) == set(slow.json()["Success"])  # two orders, same shape


def test_params_headers_and_a_bodyless_delete_equal_wire_send(session: KSSession) -> None:
    t = template_of(session)
    fast = t.send("GET", ORDERS, params={"a": "1 2", "b": ["x", "y"]}, headers={"X-Extra": "1"})
    slow = through_wire(session, "GET", ORDERS, params={"a": "1 2", "b": ["x", "y"]},
                        headers={"X-Extra": "1"})  # fmt: skip
    same_answer(fast, slow)
    assert fast.url.endswith(ORDERS + "?a=1+2&b=x&b=y")
    fast = t.send("DELETE", "/orders/1.0/orders/42")
    slow = through_wire(session, "DELETE", "/orders/1.0/orders/42")
    same_answer(fast, slow)
    assert fast.request.headers["Content-Length"] == "0"
    assert fast.json() == slow.json()


def test_unusual_requests_go_through_wire_send(session: KSSession) -> None:
    t = template_of(session)
    r = t.send("GET", ORDERS, stream=True)  # Wire.send: the body is still unread
    assert r.raw is not None and r.json() == {"Success": []}
    r = t.send("GET", ORDERS, allow_redirects=True)
    assert r.status_code == 200 and r.request.headers["sessionToken"]


def test_a_template_outlives_wire_close(session: KSSession) -> None:
    t = template_of(session)
    assert t.send("GET", ORDERS).status_code == 200
    before = t._route
    session.wire.close()  # its pools are closed; the next call makes new ones
    assert t.send("GET", ORDERS).status_code == 200
    assert t._route is not before


def test_a_session_call_path_keeps_its_own_adapter_and_retries(sb: Sandbox) -> None:
    """The Wire mounts the session calls' adapter (login and 2FA POSTs retried on 503) on
    ``<host>/session/`` at its first session call: a path under it is then sent as Wire.send
    sends it, also by a template that was used before."""
    wire = Wire(WireConfig(retry=FAST_RETRY))
    who = Identity("demo-user", "demo-consumer-key", "127.0.0.1", "t", Secret("demo-access-token"))
    t = RequestTemplate.trading(wire, sb.url, who, Secret("no-session-yet"))
    assert t.send("GET", ORDERS).status_code == 401  # the route is made, before the mount
    wire.session_init(sb.url, who)  # mounts <host>/session/
    login = contract.LOGIN_USERID[1]
    sb.control.fault(login, status=503, count=1)
    r = t.send("POST", login, json={"userid": "demo-user", "password": "demo-password"})
    assert r.status_code == 200
    assert sb.control.stats()["calls"]["POST " + login] == 2  # the 503, then the retry
    wire.close()


def test_an_odd_path_is_quoted_as_requests_quotes_it(session: KSSession) -> None:
    fast = template_of(session).send("GET", "/reports/1.0/orders x\udcff%41")
    slow = through_wire(session, "GET", "/reports/1.0/orders x\udcff%41")
    assert fast.url == slow.url and fast.url.endswith("/reports/1.0/orders%20x%ED%B3%BFA")
    assert fast.status_code == slow.status_code == 404


def test_a_callers_requests_session_is_used_as_it_is(sb: Sandbox) -> None:
    http = requests.Session()
    answers: list[int] = []
    http.hooks["response"].append(lambda r, **kw: answers.append(r.status_code))
    wire = Wire(http=http)
    t = RequestTemplate(wire, sb.url, {"Accept": "application/json"})
    assert t.send("GET", ORDERS).status_code == 401  # no tokens: the sandbox says so
    assert answers == [401]  # through the caller's session, its hooks included
    http.close()


def test_a_callers_auth_runs_after_the_template_headers(session: KSSession) -> None:
    seen: list[str] = []

    def auth(r: requests.PreparedRequest) -> requests.PreparedRequest:
        seen.append(r.headers["sessionToken"])  # the template's secrets are in already
        r.headers["X-Signed"] = "yes"
        return r

    r = template_of(session).send("GET", ORDERS, auth=auth)
    assert r.status_code == 200 and r.request.headers["X-Signed"] == "yes"
    assert seen == [r.request.headers["sessionToken"]]


def test_bad_caller_headers_and_bodies_get_the_wire_errors(session: KSSession) -> None:
    t = template_of(session)
    for kwargs in ({"headers": {"X-Bad": "a\r\nb"}}, {"json": {"price": float("nan")}}):
        with pytest.raises(Exception) as fast:
            t.send("POST", ORDER, **kwargs)  # type: ignore[arg-type]
        with pytest.raises(Exception) as slow:
            through_wire(session, "POST", ORDER, **kwargs)
        assert type(fast.value) is type(slow.value), kwargs
        assert str(fast.value) == str(slow.value)
    host, injected = session.snapshot().host, {"consumerKey": "k\r\nX: y"}
    with pytest.raises(Exception) as fast:
        RequestTemplate(session.wire, host, injected).send("GET", ORDERS)
    with pytest.raises(Exception) as slow:
        session.wire.send("GET", host + ORDERS, headers=injected)
    assert type(fast.value) is type(slow.value) and str(fast.value) == str(slow.value)


def test_threads_share_one_template(session: KSSession) -> None:
    t = template_of(session)
    answers: list[requests.Response] = []

    def worker() -> None:
        answers.extend(t.send("GET", ORDERS) for _ in range(25))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert len(answers) == 200 and {r.status_code for r in answers} == {200}
    assert len({id(r.request.headers) for r in answers}) == 200  # each request its own


def test_the_session_token_lives_only_in_each_request(session: KSSession) -> None:
    t = template_of(session)
    token = session.snapshot().session_token
    assert token is not None
    assert token.reveal() not in repr(t)
    assert all(isinstance(v, Secret) for v in t._secrets.values())
    first = t.send("GET", ORDERS)
    first.request.headers["sessionToken"] = "[redacted]"  # what seal() does to an error's answer
    again = t.send("GET", ORDERS)  # the template is not touched by it
    assert again.status_code == 200


def test_a_refused_host_never_leaves_the_machine(sb: Sandbox) -> None:
    wire = Wire(WireConfig(retry=RetryPolicy(total=0)))
    with listening() as attacker:  # 127.0.0.2: loopback, but not an allowed host
        t = RequestTemplate(wire, f"http://127.0.0.2:{attacker.port}/apim", {"Accept": "x"},
                            {"sessionToken": Secret("tok")})  # fmt: skip
        with pytest.raises(UnsafeRedirect, match=r"127\.0\.0\.2"):
            t.send("GET", ORDERS)
        # user info smuggled in by the path: the host decided is the attacker's
        t = RequestTemplate(wire, sb.url.rsplit("/apim", 1)[0], {},
                            {"sessionToken": Secret("tok")})  # fmt: skip
        with pytest.raises(UnsafeRedirect):
            t.send("GET", f"@127.0.0.2:{attacker.port}/x")
        with pytest.raises(UnsafeRedirect):
            send_prepared(wire, "GET", f"http://127.0.0.2:{attacker.port}/x", {})
        time.sleep(0.1)  # a connection, had one been made, is counted by now
        assert attacker.connections == 0
    wire.close()


def test_a_dripped_answer_ends_at_the_deadline() -> None:
    with dripping("body") as drip:
        wire = Wire(WireConfig(timeout=(1.0, 1.0), retry=FAST_RETRY, deadline=0.6))
        t = RequestTemplate(wire, drip.url, {"Accept": "application/json"})
        started = time.monotonic()
        with pytest.raises(RequestTimeout, match=r"deadline of 0\.6s"):
            t.send("GET", ORDERS)
        took = time.monotonic() - started
        wire.close()
        assert 0.6 <= took < 1.6
        assert drip.connections == 1  # not retried past its deadline
        assert 0 < drip.sent < 40


def test_a_get_is_retried_on_503_and_a_post_is_not(sb: Sandbox, session: KSSession) -> None:
    t = template_of(session)
    sb.control.fault(ORDERS, status=503, retry_after=2, count=1)
    r = t.send("GET", ORDERS)
    assert r.status_code == 200 and SLEEPS == [2.0]  # Retry-After honoured, by the sleeper
    assert sb.control.stats()["calls"]["GET " + ORDERS] == 2
    sb.control.fault(ORDER, status=503, count=1)
    r = t.send("POST", ORDER, json=BODY)
    assert r.status_code == 503
    assert sb.control.stats()["calls"]["POST " + ORDER] == 1


def test_a_transport_failure_is_typed_and_reaches_no_secret(sb: Sandbox) -> None:
    creds = make_credentials(access_token=BEARER)
    s = KSSession(creds, host=sb.url, retry=FAST_RETRY, timeout=(2.0, 2.0))
    try:
        who = Identity("demo-user", "demo-consumer-key", "127.0.0.1", "t", Secret(BEARER))
        t = RequestTemplate.trading(s.wire, sb.url, who, Secret("fast-session-token-42"))
        sb.control.fault(ORDERS, drop=True, count=10)
        with pytest.raises(NetworkError) as info:
            t.send("GET", ORDERS)
        err = info.value
        assert err.__context__ is None and err.__cause__ is None
        assert ORDERS in str(err)
        assert hunt(err, [BEARER, "fast-session-token-42"]) == []
        dead = RequestTemplate.trading(s.wire, "http://127.0.0.1:9/apim", who,
                                       Secret("fast-session-token-42"))  # fmt: skip
        with pytest.raises(NetworkError, match="refused") as info:
            dead.send("GET", ORDERS)
        assert hunt(info.value, [BEARER, "fast-session-token-42"]) == []
    finally:
        s.close()


def test_a_secret_header_that_cannot_be_sent_is_refused_by_name() -> None:
    wire = Wire()
    with pytest.raises(Exception, match="sessionToken") as info:
        RequestTemplate(wire, "http://127.0.0.1:9/apim", {}, {"sessionToken": Secret("a\r\nb")})
    assert "a\r\nb" not in str(info.value)
    assert hunt(info.value, ["a\r\nb"]) == []


def _child(template: RequestTemplate, parents_pool: int, out: multiprocessing.Queue[Any]) -> None:
    try:
        r = template.send("GET", ORDERS)
        route = template._route
        assert route is not None
        out.put((r.status_code, id(route.pool) != parents_pool, route.pid == os.getpid()))
    except BaseException as exc:  # reported to the parent
        out.put(repr(exc))


@pytest.mark.skipif(sys.platform == "win32", reason="fork")
def test_a_forked_child_sends_on_a_pool_of_its_own(session: KSSession) -> None:
    t = template_of(session)
    assert t.send("GET", ORDERS).status_code == 200
    route = t._route
    assert route is not None
    ctx = multiprocessing.get_context("fork")
    out: multiprocessing.Queue[object] = ctx.Queue()
    child = ctx.Process(target=_child, args=(t, id(route.pool), out))
    child.start()
    got = out.get(timeout=30)
    child.join(30)
    assert got == (200, True, True)
    assert t.send("GET", ORDERS).status_code == 200  # the parent's pool still serves
    assert t._route is route


def test_benchmark_runs_at_smoke_size() -> None:
    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    sys.path.insert(0, str(bench))
    try:
        import common
        import get_four_arms
    finally:
        sys.path.remove(str(bench))
    accounts = (DEMO_ACCOUNT, *(Account(u, "demo-password", "1234") for u in common.BENCH_USERS))
    with run_sandbox(SandboxConfig(accounts=accounts)) as sb:
        result = get_four_arms.run(common.Target(sb.url, sb.control, "in-process"), smoke=True)
    assert result.failed(smoke=True) == []
    assert result.data["requests"] == 5 * 2 * 10
    assert set(result.data["medians_us"]) == set(result.data["cpu_us"])

