"""Re-login: a request's snapshot, renewal on expiry (single flight), the proactive refresh,
and what a trading request does with a rejected answer (the replay rule).

- :func:`ready`: the one snapshot a request is sent with, renewing first when needed. In the
  soft window before ``max_session_age`` one caller takes the ``refresh`` edge (Authenticated
  -> Authenticated) while the others carry on with the still-good token; a failed refresh is
  recorded as a failed ``refresh`` and tried again later; past the hard deadline everyone waits
  for one renewal.
- :func:`renew`: a new session unless one newer than the caller's already exists; callers
  wait for whoever renews (single flight per generation), and across processes the store's
  lock and record do the same.
- :func:`request`: send, and on an expired session (401, or 403 "Invalid session") renew and
  replay once when the request may be sent again; on a rejected Bearer token (900901) refresh
  it once per Bearer generation and replay. See :func:`replayable` for the rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from .. import table
from ..errors import (
    APIError,
    GatewayAuthError,
    InvalidTransition,
    KSError,
    MalformedAnswer,
    NotReplayable,
    ReloginNeedsHuman,
    SessionExpired,
    WrongDomain,
)
from ..logs import emit
from ..retry import IDEMPOTENT_METHODS
from ..table import State
from . import gateway
from .calls import Answer
from .connect import walk, with_store
from .cooldown import fresh
from .effects import Discard, Flow, Lock, ReadAnswer, Reply, Send, Unlock
from .engine import (
    SessionCore,
    after_failure,
    ensure_loaded,
    fire,
    same_session,
    stored_newer,
)
from .engine import adopt as adopt_stored
from .machine import GUARDS
from .snapshot import FAILED, Snapshot

#: The shortest wait before a failed soft refresh is tried again (the wait is a quarter of the
#: time left to the hard deadline, at least this).
SOFT_RETRY_MIN = 1.0


@dataclass(frozen=True, slots=True)
class Outgoing:
    """What the core needs to know of a trading request (the driver keeps the request itself):
    ``method`` and ``where`` (``"GET /reports/1.0/orders"``) name it; ``streamed``: its body
    is a stream (never sent twice)."""

    method: str
    where: str
    streamed: bool = False
    #: The path (below the session's host) or the absolute URL asked for: what the log names.
    target: str = ""

    def logged_path(self, snap: Snapshot) -> str:
        """The URL path the request went to with ``snap`` (never the query string)."""
        target = self.target
        url = target if "://" in target else snap.host + target
        return urlsplit(url).path


def where(method: str, path: str) -> str:
    """``"GET /reports/1.0/orders"`` for a path below the host (an absolute URL: its path);
    never the query string."""
    if "://" in path:
        path = urlsplit(path).path
    return f"{method.upper()} {path.partition('?')[0].partition('#')[0]}"


def streamed_body(body: object) -> bool:
    """Whether a request body is a stream (a file, a generator, a multipart form: it can be
    sent only once). No body, bytes, str and form fields (a mapping, or a list or tuple of
    pairs, which the client encodes again for every send) are not."""
    return not (body is None or isinstance(body, (bytes, str, Mapping, list, tuple)))


def replayable(method: str, streamed: bool, replay_posts: bool = True) -> bool:
    """Whether a request may be sent again after a re-login: its body can be sent twice (no body,
    bytes, str or form fields; never a stream, see :func:`streamed_body`), and its method is
    idempotent (GET, HEAD, PUT, DELETE, OPTIONS) or it is a POST/PATCH and ``replay_posts``
    is on (the server refused it with a 401 before acting on it)."""
    if streamed:
        return False
    return method.upper() in IDEMPOTENT_METHODS or replay_posts


def ready(core: SessionCore) -> Flow[Snapshot]:
    """The one snapshot a trading request is sent with, renewing first when needed (see the
    module docstring). Before the first connect() and after logout() it raises
    InvalidTransition."""
    if not core.loaded:
        if not (yield Lock(core.config.relogin_timeout)):
            raise _waited(core)
        try:
            yield from ensure_loaded(core)
        finally:
            yield Unlock()
    snap = core.snap
    if snap.state is State.AUTHENTICATED:
        deadlines = core.deadlines(snap)
        if deadlines is None:
            return snap
        now = core.clock()
        if now < deadlines[0]:
            return snap
        if now >= deadlines[1]:
            return (yield from renew(core, snap.generation, "deadline"))
        if not core.config.auto_relogin:
            return snap  # a proactive renewal is a re-login too: off (the hard one raises)
        if snap.refreshing or (snap.refresh_retry_at is not None and now < snap.refresh_retry_at):
            return snap  # under way, or a failed refresh of this session is tried again later
        return (yield from refresh_soft(core, snap))
    if snap.generation == 0 or snap.state is State.LOGGED_OUT or not core.config.auto_relogin:
        raise _not_authenticated(snap)
    return (yield from renew(core, snap.generation, "not_authenticated"))


def ready_or_none(core: SessionCore, out: Outgoing) -> Flow[Snapshot | None]:
    """:func:`ready` for an auth object (``requests``' or httpx's), whose contract is to
    return answers, never to raise: None when no usable session can be had now (the renewal
    failed, or waiting for another caller's renewal timed out). The caller then sends ``out``
    without the session's headers, so the server answers it (401) and that answer is returned;
    what happened is in the session's history (the failed renewal) and the log
    (``request_not_renewed``). Before the first connect() and after logout() it raises
    :func:`ready`'s InvalidTransition: a program's mistake, not a server's answer."""
    try:
        return (yield from ready(core))
    except KSError as exc:
        snap = core.snap
        if isinstance(exc, InvalidTransition) and (
            snap.generation == 0 or snap.state is State.LOGGED_OUT
        ):
            raise
        emit(core.log, "warning", "request_not_renewed", session_id=core.session_id,
             method=out.method, path=out.logged_path(snap), error=type(exc).__name__)  # fmt: skip
        return None


def _not_authenticated(snap: Snapshot) -> InvalidTransition:
    return InvalidTransition(
        f"requests need Authenticated, session is {snap.state.value}: call connect() first",
        state=snap.state.value,
        trigger="request",
    )


def _waited(core: SessionCore) -> SessionExpired:
    timeout = core.config.relogin_timeout
    return SessionExpired(
        f"gave up after {timeout:g}s waiting for another thread's re-login",
        hint="raise relogin_timeout, or retry",
    )


def refresh_soft(core: SessionCore, snap: Snapshot) -> Flow[Snapshot]:
    """Renew ``snap`` ahead of its hard deadline without making anyone wait: whoever gets the
    lock takes the ``refresh`` edge; the others, and this caller if it fails, carry on with
    ``snap``."""
    if not (yield Lock(0.0, wait=False)):
        return snap  # someone is renewing (or logging out): carry on with the current token
    try:
        if same_session(core.snap, snap):
            core.snap = core.snap.evolve(refreshing=True)
            try:
                return (yield from _refresh_locked(core, snap))
            finally:
                if core.snap.refreshing:
                    core.snap = core.snap.evolve(refreshing=False)
    finally:
        yield Unlock()
    return (yield from ready(core))  # the session moved meanwhile: decide on its new snapshot


def _refresh_locked(core: SessionCore, snap: Snapshot) -> Flow[Snapshot]:
    def take() -> Flow[Snapshot]:
        newer = yield from stored_newer(core, snap.generation)
        if newer is not None:
            yield from adopt_stored(core, newer, reason="store")
        else:
            yield from fire(core, "refresh", reason="soft_deadline")
        return core.snap

    try:
        return (yield from with_store(core, take()))
    except KSError as exc:
        current = core.snap
        if not same_session(current, snap):  # the failure left Authenticated (gateway token
            raise  # rejected, user on another host): the old token is no use any more
        deadlines = core.deadlines(snap)
        assert deadlines is not None  # a soft window implies deadlines
        now = core.clock()
        wait = max(SOFT_RETRY_MIN, (deadlines[1] - now) / 4)
        core.snap = current.evolve(refresh_retry_at=now + wait, refreshing=False)
        emit(core.log, "warning", "soft_refresh_failed", session_id=core.session_id,
             error=type(exc).__name__, retry_in=round(wait, 3))  # fmt: skip
        return core.snap


def renew(
    core: SessionCore,
    seen_generation: int,
    reason: str,
    *,
    cause: KSError | None = None,
    call: str | None = None,
    sent: Snapshot | None = None,
) -> Flow[Snapshot]:
    """A new session unless one newer than ``seen_generation`` already exists.

    ``cause`` (the server's answer) and ``call`` (the request that met it) go on the
    ``session_expired`` record, so the expiry says what caused it. ``sent``: the snapshot that
    request was sent with; a re-login that failed since then is this expiry's (its error is
    raised, not one more login per request that met the expiry).
    """
    # A re-login that fails after this one was waited for (or after its request was sent).
    failed = (sent or core.snap).relogins_failed
    if not (yield Lock(core.config.relogin_timeout, waiter=True)):
        raise _waited(core)
    try:
        snap = core.snap
        if snap.generation != seen_generation and snap.state is State.AUTHENTICATED:
            return snap  # another caller renewed while we waited
        if snap.state is State.LOGGED_OUT:  # logged out meanwhile: never undo a logout
            raise _not_authenticated(snap)
        if snap.relogins_failed != failed and snap.relogin_error is not None:
            # The re-login we waited for failed: its error, not one more login per waiter.
            raise fresh(snap.relogin_error)

        def flow() -> Flow[Snapshot]:
            newer = yield from stored_newer(core, snap.generation)
            if newer is not None:
                yield from adopt_stored(core, newer, reason="store")
                return core.snap
            if core.snap.state is State.AUTHENTICATED:
                yield from fire(core, "session_expired", reason=reason, cause=cause, call=call)
            if not core.config.auto_relogin:
                raise SessionExpired(
                    "the session expired and auto_relogin is off", hint="call connect()"
                )
            require_repeatable_secrets(core)
            return (yield from walk(core))

        try:
            return (yield from with_store(core, flow()))
        except KSError as exc:
            count = core.snap.relogins_failed + 1
            core.snap = core.snap.evolve(relogins_failed=count, relogin_error=fresh(exc))
            raise
    finally:
        yield Unlock()


def require_repeatable_secrets(core: SessionCore) -> None:
    """An automatic re-login needs a password and an access code it can ask for again."""
    snap = core.snap
    missing = [g for g in ("has_password", "has_access_code") if not GUARDS[g](core, snap)]
    if missing:
        exc = ReloginNeedsHuman(
            f"automatic re-login needs {' and '.join(table.GUARDS[g].needs for g in missing)}"
        )
        core.record("connect", snap.state, FAILED, exc, reason="needs_human")
        raise exc


def gateway_rejected(
    core: SessionCore, exc: GatewayAuthError | WrongDomain, sent_with: Snapshot | None = None
) -> Flow[None]:
    """A trading call's Bearer token was rejected for good, or the user belongs to another
    host: take the internal edge (the next request re-initialises and logs in). When the
    session has moved on since ``sent_with`` (another caller met the same answer first),
    nothing more is done."""
    timeout = core.config.relogin_timeout
    if not (yield Lock(timeout)):
        raise _waited(core)
    try:
        if sent_with is None or same_session(core.snap, sent_with):
            yield from after_failure(core, exc)
    finally:
        yield Unlock()


def request(
    core: SessionCore, out: Outgoing, *, map_errors: bool
) -> Flow[tuple[Reply, KSError | None]]:
    """One trading request: its snapshot, its answer, and on an expired session or rejected
    Bearer token the renewal and one replay. Returns the final reply and the error the caller
    raises: with ``map_errors``, the typed error of a non-2xx answer; always, the error that
    stopped a renewal (the reply is then the original answer)."""
    snap = core.usable()
    if snap is None:
        snap = yield from ready(core)
    assert snap.who is not None
    reply: Reply = yield Send(snap, snap.who)
    return (yield from answered(core, out, reply, snap, map_errors=map_errors))


def answered(
    core: SessionCore, out: Outgoing, reply: Reply, snap: Snapshot, *, map_errors: bool
) -> Flow[tuple[Reply, KSError | None]]:
    """What :func:`request` does with the ``reply`` to ``out`` sent with ``snap`` (also run
    by a plain ``requests`` auth's response hook, whose first send requests makes)."""
    status = reply.status
    if 200 <= status < 300 or (status not in (401, 403) and not map_errors):
        return reply, None
    err = yield from _error_of(core, out, reply)
    if status in (401, 403) and isinstance(err, (GatewayAuthError, SessionExpired)):
        try:
            reply = yield from _recover(core, out, reply, err, snap)
        except KSError as exc:  # could not be renewed: the original answer, and why
            path = out.logged_path(snap)
            emit(core.log, "warning", "request_not_renewed", session_id=core.session_id,
                 method=out.method, path=path, error=type(exc).__name__)  # fmt: skip
            return reply, exc
        if 200 <= reply.status < 300 or not map_errors:
            return reply, None
        err = yield from _error_of(core, out, reply)
    if isinstance(err, WrongDomain):  # the user moved host: re-init on the next request
        yield from gateway_rejected(core, err)  # (whoever sent it: session.auth users too)
    if not map_errors:
        return reply, err if isinstance(err, MalformedAnswer) else None
    return reply, err


def _error_of(core: SessionCore, out: Outgoing, reply: Reply) -> Flow[KSError]:
    """The typed error of a non-2xx reply; a fault body of the wrong shape is recorded (the
    state stays) and is the error."""
    answer: Answer = yield ReadAnswer(reply)
    try:
        return answer.error(out.where)
    except MalformedAnswer as exc:
        core.record("request", core.snap.state, FAILED, exc, reason="malformed_answer")
        return exc


def _recover(
    core: SessionCore, out: Outgoing, reply: Reply, err: APIError, sent: Snapshot
) -> Flow[Reply]:
    yield Discard(reply)
    if isinstance(err, GatewayAuthError):
        # Without a new token the gateway edge is taken in the refresh, under the lock.
        if not (yield from gateway.refresh(core, sent.bearer_generation, sent=sent, cause=err)):
            raise err
        _check_replayable(core, out, reply, err, "gateway token refreshed")
        now = core.snap  # a newer session, if another caller renewed meanwhile
        snap = now if now.state is State.AUTHENTICATED else sent
        return (yield from _replay(core, out, reply, snap, "gateway token refreshed"))
    fresh = yield from renew(core, sent.generation, "expired", cause=err, call=out.where,
                             sent=sent)  # fmt: skip
    _check_replayable(core, out, reply, err, "session renewed")
    return (yield from _replay(core, out, reply, fresh, "session renewed"))


def _check_replayable(
    core: SessionCore, out: Outgoing, reply: Reply, err: APIError, done: str
) -> None:
    if replayable(out.method, out.streamed, core.config.replay_posts):
        return
    why = "its body is a stream" if out.streamed else "replay_posts is off"
    raise NotReplayable(
        f"{done}, but the {out.method} was not sent again ({why})",
        status=reply.status,
        fault_code=err.fault_code,
    )


def _replay(
    core: SessionCore, out: Outgoing, first: Reply, snap: Snapshot, why: str
) -> Flow[Reply]:
    emit(core.log, "info", "request_replayed", session_id=core.session_id, method=out.method,
         path=out.logged_path(snap), reason=why, generation=snap.generation)  # fmt: skip
    who = core.snap.who if core.snap.who is not None else snap.who
    assert who is not None
    bearer = core.snap.bearer_generation
    again: Reply = yield Send(snap, who, replay_of=first)
    if again.status == 401:
        try:
            err = (yield ReadAnswer(again)).error(out.where)
        except MalformedAnswer:
            return again  # read again, and recorded, by the caller that maps errors
        # Same edge as on a first answer, unless another caller replaced the token since.
        if isinstance(err, GatewayAuthError) and bearer == core.snap.bearer_generation:
            yield from gateway_rejected(core, err, snap)
    return again


__all__ = [
    "Outgoing",
    "answered",
    "ready",
    "ready_or_none",
    "renew",
    "replayable",
    "request",
    "where",
]
