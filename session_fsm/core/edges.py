"""The call each edge of the table makes, as a flow, and what it leaves for the edge.

Each flow is named by the table's ``call`` of its edges: it runs after the guards, yields its
session call(s) and store effects, and returns ``(changes, deferred)``: the snapshot fields the
new state is published with, and an error to raise once the edge is taken (a logout whose call
failed still forgets the tokens). A call that raises leaves the state as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..credentials import SecretProvider, asks_the_application, produce
from ..errors import Call, GatewayAuthError, KSError, SessionExpired
from ..hosts import check_url
from ..logs import emit
from ..models import ResLogin, ResSession2FA, ResSessionInit, UserCredentials, UserDetails
from ..secret import Secret
from ..stores import StoredSession
from . import gateway
from .calls import SessionCall, result_of
from .effects import Ask, Delete, Flow, Load, Save
from .engine import SessionCore
from .snapshot import Snapshot

Changes = tuple[dict[str, Any], KSError | None]


def call(core: SessionCore, make: Callable[[Snapshot], SessionCall]) -> Flow[Any]:
    """Make a session call and read its result; on a rejected Bearer token, refresh it once
    from ``access_token_provider`` (if any) and call again."""
    snap = core.snap
    try:
        answer = yield make(snap)
        return result_of(answer)
    except GatewayAuthError:
        refreshed = yield from gateway.refresh(core, snap.bearer_generation, locked=True)
        if not refreshed:
            raise
    answer = yield make(core.snap)
    return result_of(answer)


def secret_of(provider: SecretProvider, what: str) -> Flow[Secret]:
    """The password or access code from ``provider``: the library's own providers (a literal,
    an environment variable, a TOTP secret) are asked here; the application's own code (a
    function, a provider class of its own: it may wait for a person, or be async) through the
    driver, so an async session's event loop never waits on it."""
    if asks_the_application(provider):
        secret: Secret = yield Ask(provider, what)
        return secret
    return produce(provider, what)


def session_init(core: SessionCore, snap: Snapshot) -> Flow[Changes]:
    """GET session/init; an allowed redirect becomes the session's host."""
    origin = core.origin
    res: ResSessionInit = yield from call(core, lambda s: SessionCall(Call.INIT, origin, s.who))  # type: ignore[arg-type]
    host = origin
    if res.redirect is not None:
        url = redirect_url(res.redirect.host, res.redirect.port)
        check_url(url, *core.allowed)
        host = url.rstrip("/")
    return {"host": host}, None


def login_with_user_id(core: SessionCore, snap: Snapshot) -> Flow[Changes]:
    """POST session/login/userid: user id + password -> one-time token."""
    provider = core.credentials.password_provider
    assert provider is not None  # guarded by has_password
    body = UserCredentials(core.credentials.userid, (yield from secret_of(provider, "password")))
    host = snap.host
    res: ResLogin = yield from call(core, lambda s: SessionCall(Call.LOGIN, host, s.who, body))  # type: ignore[arg-type]
    return {"one_time_token": res.one_time_token, "ott_time": core.clock()}, None


def generate_session2_fa(core: SessionCore, snap: Snapshot) -> Flow[Changes]:
    """POST session/2FA/accesscode: one-time token + access code -> session token."""
    provider = core.credentials.access_code_provider
    ott = snap.one_time_token
    assert provider is not None and ott is not None  # guarded
    body = UserDetails(core.credentials.userid, (yield from secret_of(provider, "access_code")))
    host = snap.host
    res: ResSession2FA = yield from call(
        core,
        lambda s: SessionCall(Call.TWO_FA, host, s.who, body, ott),  # type: ignore[arg-type]
    )
    return (yield from new_session(core, snap, res))


def refresh_session(core: SessionCore, snap: Snapshot) -> Flow[Changes]:
    """login + 2FA from Authenticated: the one-time token stays in this flow; the snapshot
    keeps the old session token until the new one is published with the edge."""
    c = core.credentials
    password, code = c.password_provider, c.access_code_provider
    assert password is not None and code is not None  # guarded
    host = snap.host
    login = UserCredentials(c.userid, (yield from secret_of(password, "password")))
    res: ResLogin = yield from call(core, lambda s: SessionCall(Call.LOGIN, host, s.who, login))  # type: ignore[arg-type]
    ott = res.one_time_token
    details = UserDetails(c.userid, (yield from secret_of(code, "access_code")))
    res2: ResSession2FA = yield from call(
        core,
        lambda s: SessionCall(Call.TWO_FA, host, s.who, details, ott),  # type: ignore[arg-type]
    )
    return (yield from new_session(core, snap, res2))


def new_session(core: SessionCore, snap: Snapshot, res: ResSession2FA) -> Flow[Changes]:
    """The fields of a new session token, saved to the store under the next generation."""
    stored = yield Load(core.key)
    gen = max(snap.generation, stored.generation if stored else 0) + 1
    now = core.clock()
    record = StoredSession(snap.host, core.credentials.userid, res.session_token, gen, now)
    if (yield Save(core.key, record)) is False:
        # Fenced: another process saved a session as new or newer while our lock had
        # lapsed. Ours stays in use; on its next 401 the stored one is adopted.
        emit(core.log, "warning", "session_save_refused", session_id=core.session_id,
             generation=gen)  # fmt: skip
    return {"session_token": res.session_token, "generation": gen, "login_time": now}, None


def session_logout(core: SessionCore, snap: Snapshot) -> Flow[Changes]:
    """DELETE session/logout; the tokens are forgotten even when it fails (the error is
    raised once the edge is taken). Never deletes another process's newer stored session."""
    token = snap.session_token
    assert token is not None  # Authenticated holds one
    deferred: KSError | None = None
    try:
        answer = yield SessionCall(Call.LOGOUT, snap.host, snap.who, token=token)  # type: ignore[arg-type]
        result_of(answer)
    except SessionExpired:
        pass  # already gone on the server: the goal of logout is met
    except KSError as exc:
        deferred = exc
    stored = yield Load(core.key)
    if stored is not None and stored.generation <= snap.generation:
        yield Delete(core.key)
    return {}, deferred


def redirect_url(host: str, port: int | None) -> str:
    """Turn a redirect's host (full URL or bare name) into a base URL."""
    if "://" in host:
        return host.rstrip("/")
    netloc = host if port in (None, 443) else f"{host}:{port}"
    return f"https://{netloc}/apim"


#: Each ``call`` named in the table -> its flow.
EDGE_CALLS: dict[str, Callable[[SessionCore, Snapshot], Flow[Changes]]] = {
    "session_init": session_init,
    "login_with_user_id": login_with_user_id,
    "generate_session2_fa": generate_session2_fa,
    "refresh_session": refresh_session,
    "session_logout": session_logout,
}
