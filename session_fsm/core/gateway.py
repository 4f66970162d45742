"""The gateway (Bearer) token: its refresh from ``access_token_provider``, single flight.

The provider is asked once per rejected Bearer generation, however many callers met the
rejection: the first takes the session's lock and asks; the others find the generation moved
on and carry on with the new token. The new token and its generation are published in the
snapshot, like every other part of the session's state.
"""

from __future__ import annotations

from ..credentials import as_secret
from ..errors import GatewayAuthError, KSError
from ..logs import emit
from ..table import State
from ..validation import secret_header
from .calls import Identity
from .effects import Flow, Lock, Unlock
from .engine import SessionCore, after_failure, same_session
from .snapshot import Snapshot


def refresh(
    core: SessionCore,
    rejected: int,
    *,
    locked: bool = False,
    sent: Snapshot | None = None,
    cause: GatewayAuthError | None = None,
) -> Flow[bool]:
    """Replace the Bearer token of generation ``rejected`` from the provider; False when there
    is no provider. True at once when another caller already replaced it.

    ``locked``: the caller holds the session's lock (an edge's call, whose failure takes the
    gateway edge itself). Otherwise the lock is taken here, and a refresh that cannot give a
    token (no provider, the provider failed or gave nothing) takes the ``gateway_rejected``
    edge for ``cause`` (the 900901 that ``sent``, the caller's snapshot, met) before the lock is
    released, unless the session moved on meanwhile: so the callers waiting on the lock find
    the session moved, and raise, instead of asking the provider again.
    """
    if locked:
        return replace(core, rejected)
    timeout = core.config.relogin_timeout
    if not (yield Lock(timeout, waiter=True)):
        raise GatewayAuthError(
            f"gave up after {timeout:g}s waiting for another thread's gateway token refresh",
            hint="raise relogin_timeout, or retry",
        )
    try:
        snap = core.snap
        if rejected != snap.bearer_generation:
            return True  # another caller replaced that token meanwhile
        if sent is not None and not same_session(snap, sent):
            # The session moved on since this request was sent: another caller took the
            # gateway edge (or logged out), or a new session exists. Only a provider can help
            # a new session; without one, a late rejection does not take its edge.
            no_help = core.credentials.access_token_provider is None
            if snap.state is not State.AUTHENTICATED or no_help:
                raise cause or GatewayAuthError("the gateway token was rejected")
        try:
            refreshed = replace(core, rejected)
        except KSError:
            if cause is not None:
                yield from after_failure(core, cause)
            raise
        if not refreshed and cause is not None:
            yield from after_failure(core, cause)
        return refreshed
    finally:
        yield Unlock()


def replace(core: SessionCore, rejected: int) -> bool:
    """Ask the provider for a new Bearer token (the session's lock held)."""
    snap = core.snap
    if rejected != snap.bearer_generation:
        return True  # another caller replaced that token meanwhile
    provider = core.credentials.access_token_provider
    if provider is None:
        return False
    try:
        produced = provider()
    except Exception as exc:  # the provider's text may hold a token: name its type only
        raise GatewayAuthError(f"access_token_provider failed: {type(exc).__name__}") from None
    # Checked like Credentials.access_token: a non-empty header-safe string, or an error
    # naming the provider before the bad token is sent.
    token = as_secret(produced, "access_token_provider")
    del produced  # no raising frame below keeps the plain token in a local
    token = secret_header("access_token_provider's token", token)
    c = core.credentials
    who = Identity(c.userid, c.consumer_key, c.ip, c.app_id, token)
    core.snap = core.snap.evolve(who=who, bearer_generation=snap.bearer_generation + 1)
    emit(core.log, "info", "gateway_token_refreshed", session_id=core.session_id)
    return True
